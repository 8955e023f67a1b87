"""The data the GPU check (experiments/studies/gpu_check.py) needs, copied into the checkout so that it travels with
the code to a GPU machine that sees only the working tree (at most 64 MiB of it) and not ../shared, with a manifest of
sha256 hashes that the check verifies before it uses a byte.

    python -m experiments.studies.gpu_data --data-dir ../shared/data     # writes gpu_data/ (~39 MiB), prints sizes
    python -m experiments.studies.gpu_data --check                        # re-hash gpu_data/ against its manifest

What it writes, in the layouts trial/data.py reads (so `--data-dir gpu_data` works for every entry point, `python -m
trial` included), from the files of ../shared/data (shared/data/README.md says where those come from):

    gpu_data/CIFAR10/cifar-10-batches-bin/data_batch_{1..5}.bin.xz   the first 2,500 records of each training batch
    gpu_data/CIFAR10/cifar-10-batches-bin/test_batch.bin.xz          the first 5,000 test records
    gpu_data/FashionMNIST/raw/{train,t10k}-{images,labels}-idx?-ubyte.gz   the first 10,000 / 2,000 images
    gpu_data/MANIFEST.json    each file's sha256 and size, images per class, the source files' sha256, the commit

Why a CIFAR-10 subset and not Fashion-MNIST alone: the accuracy check runs airbench94, a CIFAR-10 recipe, against its
reference port (experiments/studies/airbench_reference.py), which reads 3x32x32 images only. CIFAR-10 hardly
compresses (xz with a delta filter, as ../shared/data stores it: ~2,060 bytes per image against 3,073 raw), so all
60,000 images would take 118 MiB; 12,500 training + 5,000 test images take ~34 MiB. The source batches are shuffled
(shared/data/README.md), so the first records of each are a fair sample (~10% per class; the manifest has the counts).
Fashion-MNIST (~430 bytes per image gzipped) is the dataset of the shipped GPU search (nni_configs/fmnist_gpu.yml):
the trial-start and shared-GPU measurements run its trials on 10,000 + 2,000 images (~5 MiB). With the working tree
(~10 MiB) the carried total stays near 50 MiB; this command prints it and fails above 64 MiB.

gpu_data/ is git-ignored: name it in the GPU tool's `carry`. Only the standard library is needed to verify it
(`verify`), so the GPU side can refuse a missing or damaged copy in one line before importing anything heavy.
"""
from __future__ import annotations

import argparse
import datetime
import gzip
import hashlib
import json
import lzma
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "gpu_data"
MANIFEST = "MANIFEST.json"
CARRY_LIMIT_MIB = 64          # what the GPU tool carries: the working tree plus the named ignored folders
MIB = 2 ** 20
CIFAR_FOLDER = "CIFAR10/cifar-10-batches-bin"
CIFAR_RECORD = 1 + 3 * 32 * 32      # a label byte, then 1,024 R, 1,024 G, 1,024 B
CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
FMNIST_FOLDER = "FashionMNIST/raw"
# xz as ../shared/data writes CIFAR-10 (`xz -lvv`: --delta=dist=1 --lzma2=dict=8MiB): neighbouring pixels differ little
XZ_FILTERS = [{"id": lzma.FILTER_DELTA, "dist": 1}, {"id": lzma.FILTER_LZMA2, "preset": 6}]


class DataCheckError(RuntimeError):
    """gpu_data/ is missing, incomplete, altered or too large; the message (one line) says which file and what to do."""


@dataclass(frozen=True)
class Sizes:
    """Images taken from the source: CIFAR-10 training images (split evenly over its 5 batches) and test images,
    Fashion-MNIST training and test images."""
    cifar_train: int = 12500
    cifar_test: int = 5000
    fmnist_train: int = 10000
    fmnist_test: int = 2000


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read(path: Path) -> bytes:
    opener = {".xz": lzma.open, ".gz": gzip.open}.get(path.suffix, open)
    try:
        with opener(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError, lzma.LZMAError) as err:
        raise DataCheckError(f"{path} cannot be read ({err}); check the source with shared/data/verify.py") from None


def _source(folder: Path, base: str) -> Path:
    for ext in ("", ".gz", ".xz"):
        if (folder / (base + ext)).is_file():
            return folder / (base + ext)
    raise DataCheckError(f"{folder / base}[.gz|.xz] not found: pass --data-dir, the folder that holds CIFAR10/ and "
                         f"FashionMNIST/ (../shared/data)")


def _class_counts(labels: bytes) -> list[int]:
    return [labels.count(bytes([c])) for c in range(10)]


def _cifar(source: Path, out: Path, train: int, test: int) -> dict:
    if train % len(CIFAR_BATCHES):
        raise DataCheckError(f"--cifar-train {train} must be a multiple of {len(CIFAR_BATCHES)} (an equal share of "
                             f"each training batch)")
    per_batch = train // len(CIFAR_BATCHES)
    folder = out / CIFAR_FOLDER
    folder.mkdir(parents=True)
    counts, sources = {"train": [0] * 10, "test": [0] * 10}, {}
    for base, n, split in [(b, per_batch, "train") for b in CIFAR_BATCHES] + [("test_batch", test, "test")]:
        path = _source(source / CIFAR_FOLDER, base + ".bin")
        raw = _read(path)
        if len(raw) % CIFAR_RECORD or len(raw) // CIFAR_RECORD < n:
            raise DataCheckError(f"{path} holds {len(raw) / CIFAR_RECORD:g} records; {n} are needed")
        records = raw[:n * CIFAR_RECORD]
        (folder / f"{base}.bin.xz").write_bytes(lzma.compress(records, format=lzma.FORMAT_XZ, filters=XZ_FILTERS))
        counts[split] = [a + b for a, b in zip(counts[split], _class_counts(records[::CIFAR_RECORD]))]
        sources[str(path.relative_to(source))] = sha256(path)
    return {"train_images": train, "test_images": test, "train_per_class": counts["train"],
            "test_per_class": counts["test"], "source_sha256": sources,
            "selection": f"the first {per_batch} records of each of data_batch_1..5 and the first {test} of test_batch"}


def _idx_head(raw: bytes, path: Path) -> tuple[tuple[int, ...], int]:
    if len(raw) < 4 or raw[:3] != b"\0\0\x08":
        raise DataCheckError(f"{path} is not an IDX uint8 file")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return dims, 4 + 4 * ndim


def _fmnist(source: Path, out: Path, train: int, test: int) -> dict:
    folder = out / FMNIST_FOLDER
    folder.mkdir(parents=True)
    info, sources = {}, {}
    for prefix, n, split in (("train", train, "train"), ("t10k", test, "test")):
        for kind, idx in (("images", 3), ("labels", 1)):
            base = f"{prefix}-{kind}-idx{idx}-ubyte"
            path = _source(source / FMNIST_FOLDER, base)
            raw = _read(path)
            dims, start = _idx_head(raw, path)
            if dims[0] < n:
                raise DataCheckError(f"{path} holds {dims[0]} items; {n} are needed")
            item = 1
            for d in dims[1:]:
                item *= d
            body = raw[start:start + n * item]
            head = struct.pack(">BBBB", 0, 0, 0x08, len(dims)) + struct.pack(f">{len(dims)}I", n, *dims[1:])
            # mtime 0: the same subset gives the same bytes, and so the same hash, on every run
            (folder / f"{base}.gz").write_bytes(gzip.compress(head + body, mtime=0))
            sources[str(path.relative_to(source))] = sha256(path)
            if kind == "labels":
                info[f"{split}_per_class"] = _class_counts(body)
        info[f"{split}_images"] = n
    return {**info, "source_sha256": sources, "selection": f"the first {train} training and {test} test images"}


def _code_version() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=30).stdout.strip() != ""
        return {"commit": commit or None, "uncommitted_changes": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "uncommitted_changes": None}


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): {"sha256": sha256(p), "bytes": p.stat().st_size}
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST}


def build(source: Path, out: Path = DEFAULT_OUT, sizes: Sizes = Sizes()) -> dict:
    """Write the subsets of `source` (a data directory in ../shared/data's layout) to `out` with MANIFEST.json and
    return the manifest; a folder already at `out` is replaced only if it is one of ours (it has a manifest) or is
    empty. The result is read back through trial.data.load, the harness's own loader, before it is kept. Raises
    DataCheckError (one line) for missing or short source files."""
    source, out = Path(source), Path(out)
    if out.exists() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise DataCheckError(f"{out} exists and is not a gpu_data folder (no {MANIFEST}); choose another --out")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent if out.parent.is_dir() else None))
    tmp.chmod(0o755)     # mkdtemp's 0700 would follow the folder to the GPU machine
    try:
        datasets = {"cifar10": _cifar(source, tmp, sizes.cifar_train, sizes.cifar_test),
                    "fmnist": _fmnist(source, tmp, sizes.fmnist_train, sizes.fmnist_test)}
        _load_back(tmp, datasets)
        files = _files(tmp)
        manifest = {"files": files, "total_bytes": sum(f["bytes"] for f in files.values()), "datasets": datasets,
                    "source": str(source.resolve()), "code": _code_version(), "command": sys.argv,
                    "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _load_back(root: Path, datasets: dict) -> None:
    """Read the written files with trial.data.load (a private cache, thrown away): the layout is the harness's."""
    from trial import data as data_mod
    saved = os.environ.get("CNNSEARCH_CACHE")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["CNNSEARCH_CACHE"] = cache
        try:
            for name, d in datasets.items():
                s = data_mod.load(name, root, download=False)
                if (len(s.train_x), len(s.test_x)) != (d["train_images"], d["test_images"]):
                    raise DataCheckError(f"{root}: trial.data.load read {len(s.train_x)}/{len(s.test_x)} {name} "
                                         f"images, {d['train_images']}/{d['test_images']} were written")
        finally:
            if saved is None:
                os.environ.pop("CNNSEARCH_CACHE", None)
            else:
                os.environ["CNNSEARCH_CACHE"] = saved


def verify(root: Path = DEFAULT_OUT) -> dict:
    """Check every file of `root` against its MANIFEST.json (sha256 and size; no file missing, none extra: an extra
    data_batch_1.bin would shadow data_batch_1.bin.xz in trial.data) and return the manifest. Standard library only.
    Raises DataCheckError with a one-line reason."""
    root = Path(root)
    fix = "rebuild it here with `python -m experiments.studies.gpu_data --data-dir ../shared/data` and carry gpu_data"
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        expected = manifest["files"]
    except FileNotFoundError:
        raise DataCheckError(f"{root / MANIFEST} not found: the GPU check's data is missing; {fix}") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataCheckError(f"{root / MANIFEST} is unreadable ({err}); {fix}") from None
    present = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != MANIFEST}
    missing, extra = sorted(set(expected) - present), sorted(present - set(expected))
    if missing:
        raise DataCheckError(f"{root / missing[0]} is missing; {fix}")
    if extra:
        raise DataCheckError(f"{root / extra[0]} is not in {MANIFEST} (it could shadow the checked files); remove it "
                             f"or {fix}")
    for name, want in sorted(expected.items()):
        path = root / name
        if path.stat().st_size != want["bytes"] or sha256(path) != want["sha256"]:
            raise DataCheckError(f"{path} does not match {MANIFEST} (sha256 or size differ: damaged or altered); "
                                 f"{fix}")
    return manifest


def carried_bytes(data_root: Path) -> dict:
    """What the GPU tool carries: the working tree (tracked and untracked files git does not ignore) plus the
    data folder; the tree is None where git cannot list it."""
    data = sum(p.stat().st_size for p in Path(data_root).rglob("*") if p.is_file())
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, timeout=60, check=True).stdout.split(b"\0")
        tree = sum((REPO / os.fsdecode(p)).stat().st_size for p in listed if p and (REPO / os.fsdecode(p)).is_file())
    except (OSError, subprocess.SubprocessError):
        tree = None
    return {"data_bytes": data, "tree_bytes": tree, "total_bytes": data + (tree or 0)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.studies.gpu_data", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, help="the source: a folder with CIFAR10/ and FashionMNIST/ "
                   "(../shared/data)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write (default: gpu_data/ in the checkout)")
    p.add_argument("--check", action="store_true", help="only verify --out against its manifest")
    for field, default in Sizes().__dict__.items():
        p.add_argument(f"--{field.replace('_', '-')}", type=int, default=default, metavar="N",
                       help=f"images (default {default:,})")
    args = p.parse_args(argv)
    try:
        if not args.check:
            if args.data_dir is None:
                p.error("--data-dir is required to build (or give --check)")
            build(args.data_dir, args.out, Sizes(args.cifar_train, args.cifar_test, args.fmnist_train,
                                                 args.fmnist_test))
        manifest = verify(args.out)
    except DataCheckError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    size = carried_bytes(args.out)
    tree = "unknown (git could not list it)" if size["tree_bytes"] is None else f"{size['tree_bytes'] / MIB:.1f} MiB"
    print(f"{args.out}: {len(manifest['files'])} files, {size['data_bytes'] / MIB:.1f} MiB, sha256 checked; "
          + ", ".join(f"{name} {d['train_images']:,} train + {d['test_images']:,} test"
                      for name, d in manifest["datasets"].items()))
    print(f"carried to the GPU machine: {size['total_bytes'] / MIB:.1f} MiB of {CARRY_LIMIT_MIB} MiB "
          f"(working tree {tree} + data {size['data_bytes'] / MIB:.1f} MiB)")
    if size["total_bytes"] > CARRY_LIMIT_MIB * MIB:
        print(f"error: over the {CARRY_LIMIT_MIB} MiB the GPU tool carries; lower --cifar-train/--cifar-test",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
