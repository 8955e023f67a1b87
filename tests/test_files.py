"""Every text file we read, as users bring them: a byte-order mark and CRLF ends (what Windows Notepad saves) are read
as the same data; a key given twice is refused in one line naming the key and the file, as a mistyped key is; a
mistyped key's message names the closest valid one. Field cases c15 (BOM params) and c18 (a key twice).

    .venv/bin/pytest tests/test_files.py -q
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import FIELD_CASES, needs_field_cases
from tests.test_config import main_without_training
from trial.config import ConfigError, load_arch_file, load_params_file, resolve
from trial.files import FileFormatError, loads_yaml
from trial.search_space import SearchSpaceError, load_space


def windows(text: str) -> bytes:
    """`text` as Windows Notepad saves it: a UTF-8 byte-order mark, CRLF line ends."""
    return ("\ufeff" + text.replace("\n", "\r\n")).encode("utf-8")


PARAMS = {".json": '{\n  "_comment": "a baseline",\n  "learning_rate": 0.01,\n  "optimizer": {"_name": "sgd"}\n}\n',
          ".yaml": "_comment: a baseline\nlearning_rate: 0.01\noptimizer:\n  _name: sgd\n"}
TWICE = {".json": '{"optimizer": {"_name": "sgd", "momentum": 0.9, "momentum": 0.5}}',
         ".yaml": "optimizer:\n  _name: sgd\n  momentum: 0.9\n  momentum: 0.5\n"}


@pytest.mark.parametrize("ext", [".json", ".yaml"])
def test_params_file_with_a_byte_order_mark_and_crlf_reads_as_the_same_data(tmp_path, ext):
    plain, notepad = tmp_path / f"plain{ext}", tmp_path / f"notepad{ext}"
    plain.write_text(PARAMS[ext])
    notepad.write_bytes(windows(PARAMS[ext]))
    assert notepad.read_bytes()[:3] == b"\xef\xbb\xbf" and b"\r\n" in notepad.read_bytes()
    assert load_params_file(str(notepad)) == load_params_file(str(plain)) == \
        {"learning_rate": 0.01, "optimizer": {"_name": "sgd"}}
    # an architecture file is a params file
    arch = tmp_path / f"arch{ext}"
    arch.write_bytes(windows('{"family": "nas", "nas_arch": {"cell": "conv3"}}' if ext == ".json" else
                             "family: nas\nnas_arch:\n  cell: conv3\n"))
    assert load_arch_file(str(arch))["nas_arch"] == {"cell": "conv3"}


@pytest.mark.parametrize("ext", [".json", ".yaml"])
def test_a_key_given_twice_is_refused_naming_the_key_and_the_file(tmp_path, ext):
    path = tmp_path / f"params{ext}"
    path.write_bytes(windows(TWICE[ext]))           # nested, and with Notepad's BOM: refused all the same
    with pytest.raises(ConfigError) as err:
        load_params_file(str(path))
    message = str(err.value)
    assert "'momentum' twice" in message and str(path) in message and "\n" not in message


def test_yaml_merge_keys_may_still_override():
    assert loads_yaml("base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  x: 3\n")["d"] == {"x": 3, "y": 2}
    with pytest.raises(FileFormatError, match=r"gives 'x' twice \(line 4\)"):
        loads_yaml("d:\n  y: 1\n  x: 1\n  x: 2\n", "d.yml")


def test_search_space_with_a_byte_order_mark_and_a_key_twice(tmp_path):
    space = '{\n  "filters": {"_type": "choice", "_value": [8, 16]},\n  "lr": {"_type": "loguniform", ' \
            '"_value": [0.001, 0.1]}\n}\n'
    path = tmp_path / "space.json"
    path.write_bytes(windows(space))
    assert load_space(str(path)) == json.loads(space)
    path.write_bytes(windows(space.replace('"lr"', '"filters"')))
    with pytest.raises(SearchSpaceError, match=f"search space {path} gives 'filters' twice; keep one"):
        load_space(str(path))
    path.write_text('{"lr": {"_type": "loguniforn", "_value": [0.001, 0.1]}}')
    with pytest.raises(SearchSpaceError, match="unknown _type 'loguniforn' \\(did you mean 'loguniform'\\?\\)"):
        load_space(str(path))


def test_json_summaries_read_with_a_byte_order_mark(tmp_path):
    from experiments.results.compare import CompareError, load_summaries
    summary = {"dataset": "fmnist", "protocol": "train_val", "epochs": 1, "seeds": [0, 1], "smoke": True,
               "groups": {"winner1_a": {"test_accuracies": [0.9, 0.91]}}}
    path = tmp_path / "summary.json"
    path.write_bytes(windows(json.dumps(summary, indent=2)))
    assert load_summaries([path])[1]["winner1_a"]["test_accuracies"] == [0.9, 0.91]
    path.write_bytes(windows(json.dumps(summary).replace('"epochs": 1', '"epochs": 1, "epochs": 2')))
    with pytest.raises(CompareError, match="gives 'epochs' twice"):
        load_summaries([path])


@pytest.mark.parametrize("label_last", [False, True])
def test_digit_recognizer_csv_with_a_byte_order_mark_and_crlf(tmp_path, label_last):
    from trial.data import read_csv
    rng = np.random.default_rng(0)
    pixels, labels = rng.integers(0, 256, (5, 784)), np.arange(5)
    names = [f"pixel{i}" for i in range(784)]
    header = names + ["label"] if label_last else ["label"] + names
    rows = [[*p, y] if label_last else [y, *p] for p, y in zip(pixels, labels)]
    path = tmp_path / "train.csv"
    path.write_bytes(windows("\n".join(",".join(map(str, r)) for r in [header, *rows]) + "\n"))
    x, y = read_csv(path)
    assert (y == labels).all() and (x == pixels).all()


def test_an_unknown_key_or_value_names_the_closest_valid_one():
    with pytest.raises(ConfigError, match=r"unknown parameter 'learning_rat' \(did you mean 'learning_rate'\?\); "
                                          r"valid parameters: dataset"):
        resolve({"learning_rat": 0.1})
    with pytest.raises(ConfigError, match=r"value 'adamm' \(did you mean 'adam'\?\); valid values"):
        resolve({"optimizer": "adamm"})
    with pytest.raises(ConfigError, match=r"unknown parameter 'zzzz'; valid parameters"):   # nothing near: no guess
        resolve({"zzzz": 1})


def fake_train_main(monkeypatch, tmp_path, argv, capsys):
    """`python -m trial ARGV` with training replaced: exit code, the config it would train, what it said on stderr."""
    code, cfg = main_without_training(monkeypatch, tmp_path, argv)
    return code, cfg, capsys.readouterr().err


@needs_field_cases
def test_field_case_c15_notepad_params_train_as_written(monkeypatch, tmp_path, capsys):
    """c15: UTF-8 with a byte-order mark and CRLF ends, as Notepad saves; refused before as 'Unexpected UTF-8 BOM'."""
    case = FIELD_CASES / "c15_params_bom.json"
    assert case.read_bytes().startswith(b"\xef\xbb\xbf") and b"\r\n" in case.read_bytes()
    code, cfg, err = fake_train_main(monkeypatch, tmp_path, ["--params", case], capsys)
    assert code == 0, err
    assert cfg.learning_rate == 0.001


@needs_field_cases
def test_field_case_c18_a_key_given_twice_is_refused(monkeypatch, tmp_path, capsys):
    """c18: learning_rate given twice; before, the first value was dropped without a word."""
    case = FIELD_CASES / "c18_params_duplicate_key.json"
    code, cfg, err = fake_train_main(monkeypatch, tmp_path, ["--params", case], capsys)
    assert code == 2 and cfg is None
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "'learning_rate' twice" in lines[0] and str(case) in lines[0], err
    assert not (tmp_path / "out").exists()


# ---- issue 29, other members of the kind: encodings PowerShell and Excel save, and what JSON does not allow
@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32"])
@pytest.mark.parametrize("ext", [".json", ".yaml"])
def test_utf16_and_utf32_with_a_byte_order_mark_read_as_the_same_data(tmp_path, ext, codec):
    """PowerShell's `>` and Notepad's "Unicode" save UTF-16 with a mark; before: a UnicodeDecodeError traceback."""
    path = tmp_path / f"params{ext}"
    bom = {"utf-16": b"", "utf-16-be": b"\xfe\xff", "utf-32": b""}[codec]    # Python's utf-16/32 write their mark
    path.write_bytes(bom + PARAMS[ext].replace("\n", "\r\n").encode(codec))
    assert load_params_file(str(path)) == {"learning_rate": 0.01, "optimizer": {"_name": "sgd"}}


def test_utf16_search_space_reads(tmp_path):
    path = tmp_path / "space.json"
    path.write_bytes('{"learning_rate": {"_type": "loguniform", "_value": [0.001, 0.1]}}\r\n'.encode("utf-16"))
    assert load_space(str(path))["learning_rate"]["_value"] == [0.001, 0.1]


@pytest.mark.parametrize("content,words", [
    ('{"learning_rate": 0.1, "x": "caf\xe9"}'.encode("latin-1"), ("is not UTF-8 text (byte 0xe9", "save it as UTF-8")),
    (b"", ("is empty",)),
    (b"  \r\n", ("is empty",)),
    (b'{"learning_rate": 0.1,}', ("no comma before a closing",)),
    (b'{"learning_rate": 0.1, // the default\n}', ("JSON allows no comments",)),
    (b"{'learning_rate': 0.1}", ("double quotes",)),
], ids=["latin-1", "empty", "blank", "trailing-comma", "comment", "single-quotes"])
def test_a_params_file_json_cannot_take_is_one_line_saying_what(tmp_path, content, words):
    path = tmp_path / "params.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_params_file(str(path))
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert all(w in str(err.value) for w in words), err.value


def test_yaml_with_tabs_says_so():
    with pytest.raises(FileFormatError, match="YAML indents with spaces, never tabs"):
        loads_yaml("optimizer:\n\t_name: sgd\n", "p.yaml")


def test_a_search_space_nni_reads_as_yaml_is_accepted(tmp_path):
    """NNI's ExperimentConfig reads a search-space file json.loads refuses as YAML (trailing commas, # comments): the
    check and debug mode take what NNI takes; a key twice is still refused."""
    path = tmp_path / "space.json"
    path.write_text('{"learning_rate": {"_type": "choice", "_value": [0.1, 0.01,]},  # the usual\n}\n')
    assert load_space(str(path)) == {"learning_rate": {"_type": "choice", "_value": [0.1, 0.01]}}
    path.write_text('{"conv_layers": {"_type": "choice", "_value": [{"_name": "a", "filters_1": 8, "filters_1": 16}]}}')
    with pytest.raises(SearchSpaceError, match="'filters_1' twice"):
        load_space(str(path))
    path.write_text("")
    with pytest.raises(SearchSpaceError, match="is empty"):
        load_space(str(path))


def test_digit_recognizer_csv_in_utf16(tmp_path):
    from trial.data import read_csv
    pixels = np.random.default_rng(0).integers(0, 256, (3, 784))
    header = ["label"] + [f"pixel{i}" for i in range(784)]
    rows = [header] + [[y, *p] for y, p in zip(range(3), pixels)]
    path = tmp_path / "train.csv"
    path.write_bytes("\r\n".join(",".join(map(str, r)) for r in rows).encode("utf-16"))
    x, y = read_csv(path)
    assert (y == np.arange(3)).all() and (x == pixels).all()
