"""The files a user hands us and the files we write, read and written one way everywhere.

Reading: every text file (params, architecture and search-space JSON, YAML, summaries) is decoded as UTF-8 with an
optional byte-order mark (what Windows Notepad saves) and any line ends; a key given twice in one JSON object or YAML
mapping is refused, naming the key and the file, as a mistyped key is (JSON and PyYAML would keep the last value
without a word). Writing: each file goes to a temporary file in the same folder and is renamed over its name, so a
full disk, a read-only folder or a kill leaves the previous file or none, never a truncated one; `write_files` stages
several and renames them in order, the last (final.json) only once every other is in place. A file that cannot be
written raises OutputError, one line naming the path and the cause.

    params = read_json("baselines/deep_cnn.json")          # FileFormatError: "... gives 'lr' twice; keep one"
    write_files({out / "best.pt": lambda tmp: torch.save(state, tmp), out / "final.json": json_text(final)})
"""
from __future__ import annotations

import codecs
import difflib
import json
import os
import secrets
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any


class FileFormatError(ValueError):
    """A file that is not the JSON/YAML it should be, or gives a key twice; the message names the file."""


class OutputError(OSError):
    """An output that could not be written (full disk, read-only folder, a file where a folder should be); the
    message is one line naming the path and the cause."""


def closest(word: str, choices: Iterable[str]) -> str:
    """" (did you mean 'x'?)" for the valid name nearest a mistyped one (difflib), or "" when none is near."""
    match = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


# byte-order marks -> codec; UTF-32's come first (UTF-32-LE's mark begins with UTF-16-LE's)
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))


def text_encoding(path: str | Path) -> str:
    """The codec a text file is read with: UTF-16 or UTF-32 by their byte-order mark (what PowerShell's `>` and
    Notepad's "Unicode" save), else UTF-8 with an optional mark. For readers of their own (pandas' read_csv)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    return next((codec for bom, codec in _BOMS if head.startswith(bom)), "utf-8-sig")


def read_text(path: str | Path) -> str:
    """A text file's contents: UTF-8 with or without a byte-order mark, or UTF-16/32 with one (see text_encoding),
    line ends as "\\n" whatever they were. Raises FileFormatError for other encodings (one line, with the fix)."""
    data = Path(path).read_bytes()
    codec = next((codec for bom, codec in _BOMS if data.startswith(bom)), "utf-8-sig")
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as err:
        raise FileFormatError(f"{path} is not {codec.removesuffix('-sig').upper()} text (byte {data[err.start]:#04x} "
                              f"at offset {err.start}): save it as UTF-8") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _unique_pairs(source: str) -> Callable[[list[tuple[str, Any]]], dict]:
    def hook(pairs: list[tuple[str, Any]]) -> dict:
        out: dict = {}
        for key, value in pairs:
            if key in out:
                raise FileFormatError(f"{source} gives {key!r} twice; keep one")
            out[key] = value
        return out
    return hook


def loads_json(text: str, source: str = "JSON text") -> Any:
    """JSON text -> data, refusing a key given twice in any object. Raises FileFormatError naming `source`."""
    try:
        return json.loads(text.removeprefix("\ufeff"), object_pairs_hook=_unique_pairs(source))
    except json.JSONDecodeError as err:
        if not text.strip().removeprefix("\ufeff"):
            raise FileFormatError(f"{source} is empty: write the JSON it should hold (e.g. {{}})") from None
        raise FileFormatError(f"{source} is not valid JSON: {err}{_json_hint(err)}") from None


def _json_hint(err: json.JSONDecodeError) -> str:
    """What a JSON error near `err.pos` most likely is: what editors and Python let people write, JSON does not."""
    rest = err.doc[err.pos:].lstrip()
    if rest.startswith(("//", "/*", "#")):
        return "; JSON allows no comments: remove it"
    if rest.startswith(("}", "]")) and err.doc[:err.pos].rstrip().endswith(","):
        return "; JSON allows no comma before a closing } or ]: remove it"
    if rest.startswith("'"):
        return "; JSON strings and keys take double quotes"
    return ""


def read_json(path: str | Path) -> Any:
    """A JSON file -> data (see read_text and loads_json). Raises OSError when unreadable, FileFormatError."""
    return loads_json(read_text(path), str(path))


def loads_yaml(text: str, source: str = "YAML text") -> Any:
    """YAML text -> plain data (safe_load: no tags that build Python objects), refusing a key given twice in any
    mapping (merge keys `<<` may still be overridden, as YAML means them). Raises FileFormatError naming `source`."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen = set()
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        duplicate = key in seen
                        seen.add(key)
                    except TypeError:   # an unhashable key: SafeLoader's own error follows
                        continue
                    if duplicate:
                        raise FileFormatError(f"{source} gives {key!r} twice (line {key_node.start_mark.line + 1}); "
                                              f"keep one")
            return super().construct_mapping(node, deep)

    try:
        return yaml.load(text, Loader=UniqueKeyLoader)   # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        tabs = "; YAML indents with spaces, never tabs: replace them" if "'\\t'" in str(err) else ""
        raise FileFormatError(f"{source} is not plain YAML data: {' '.join(str(err).split())}{tabs}") from None


def read_yaml(path: str | Path) -> Any:
    """A YAML file -> plain data (see read_text and loads_yaml). Raises OSError when unreadable, FileFormatError."""
    return loads_yaml(read_text(path), str(path))


def read_data(path: str | Path) -> Any:
    """A JSON file, or YAML by its extension (.yml, .yaml)."""
    return read_yaml(path) if str(path).endswith((".yml", ".yaml")) else read_json(path)


def json_text(data: Any, **kwargs) -> str:
    """Indented JSON with a final newline: how every JSON output of this project is written."""
    return json.dumps(data, indent=2, **kwargs) + "\n"


# what goes into a file: its text, its bytes, or a function that writes the file at the path it is given
Content = str | bytes | Callable[[Path], Any]


def _cause(err: OSError) -> str:
    return err.strerror or str(err) or type(err).__name__


def _stage(path: Path, content: Content) -> Path:
    """`content` written to a new temporary file beside `path` (same folder: the rename cannot cross disks; the
    file's mode follows the umask, as a plain write's does)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        if callable(content):
            content(tmp)
        else:
            with open(tmp, "xb") as fh:
                fh.write(content.encode() if isinstance(content, str) else content)
                fh.flush()
                os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_files(files: Mapping[str | Path, Content]) -> None:
    """Write every file of `files`, in its order, each whole or not at all: all are staged as temporary files first,
    then renamed over their names, so a failure while staging (a full disk) leaves every previous file as it was, and
    the last file (final.json: the mark of a complete run) appears only once all the others are in place. Folders are
    made as needed. Raises OutputError naming the path and the cause."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, content in files.items():
            path = Path(path)
            make_dir(path.parent)
            try:
                staged.append((_stage(path, content), path))
            except OSError as err:
                raise OutputError(f"cannot write {path}: {_cause(err)}") from None
            except RuntimeError as err:   # torch.save reports a failed write as RuntimeError ("... file write failed")
                raise OutputError(f"cannot write {path}: {' '.join(str(err).split())}") from None
        for i, (tmp, path) in enumerate(staged):
            try:
                os.replace(tmp, path)
            except OSError as err:
                raise OutputError(f"cannot write {path}: {_cause(err)}") from None
            staged[i] = (path, path)
    finally:
        for tmp, path in staged:
            if tmp != path:
                tmp.unlink(missing_ok=True)


def write_file(path: str | Path, content: Content) -> None:
    """One file, whole or not at all (see write_files)."""
    write_files({path: content})


def remove_file(path: str | Path) -> None:
    """Remove a file if it is there. Raises OutputError (a read-only folder) naming the path and the cause."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):   # a read-only disk refuses even to unlink what is not there
        return
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        raise OutputError(f"cannot remove {path}: {_cause(err)}") from None


def make_dir(path: str | Path) -> Path:
    """A folder for outputs, made with its parents if missing. Raises OutputError (a file in the way, a read-only
    parent) naming the path and the cause: for a file in the way, that file (mkdir's own "File exists" or "Not a
    directory" names neither it nor what to do)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        blocker = next((p for p in (path, *path.parents) if p.exists()), None)
        cause = f"{blocker} is a file, not a folder" if blocker is not None and not blocker.is_dir() else _cause(err)
        raise OutputError(f"cannot create folder {path}: {cause}") from None
    return path


def writable_dir(path: str | Path) -> Path:
    """make_dir, and a file created and removed there: a read-only folder or disk passes mkdir unnoticed. For commands
    whose first output comes after minutes of work (a report, a retraining, an export), checked before that work.
    Raises OutputError naming the folder and the cause."""
    path = make_dir(path)
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise OutputError(f"cannot write in folder {path}: {_cause(err)}") from None
    return path
