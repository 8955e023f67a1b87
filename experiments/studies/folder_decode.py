"""A folder of JPEGs decoded once, against torchvision reading the same files, and what its cache costs later trials:
speed and memory side by side in one run (issue 28, item 7).

    python -m experiments.studies.folder_decode --json results/folder-decode/folder-decode.json   # ~10 min, 2 cores
    python -m experiments.studies.folder_decode --images 40 --cache-images 60 --cache-size 16 --rounds 1 \\
        --repeats 1 --work /tmp/fd --json /tmp/fd.json                                            # smoke, seconds

Each measurement runs in a fresh Python process, as a trial does, on the same files:
  a. ours: trial.folder.load (the path every trial takes) on a folder of --images JPEGs, cold (an empty cache): the
     walk, hashing every file, the headers, the audit, the test split, the decode to --size x --size (shorter side,
     then the centre crop; JPEGs decoded at a reduced scale where that still covers --size), mean and std, writing
     the cache. Images/s and wall seconds;
  b. torchvision: ImageFolder + DataLoader (Resize(--size, LANCZOS as ours) + CenterCrop + PILToTensor,
     num_workers --workers, batch --batch) reading the same files once into one uint8 tensor. (a) and (b) alternate
     over --rounds rounds after one read of every file (both read from the page cache); the ratio is the median of
     the per-round ratios (studies.benchmark.paired_ratio);
  c. a later trial: trial.folder.load with the cache in place (what trial.data.prepare does first), seconds (median
     of --repeats processes), for the folder above and for --cache-images JPEGs decoded at --cache-size (60,000
     64x64 RGB by default); the whole prepare to float32 tensors; torch.load of the same file without mmap;
  d. memory of that cache: its tensors' bytes, the process's RSS growth on the load, after reading every page of it,
     and at prepare's peak, against trial.folder.training_memory's estimate;
  e. past the machine's memory: trial.folder.load of the --images folder at an image_size whose uint8 cache would
     take twice the memory available (--huge-size to choose one): the refusal's line and how long it took.
The generated folders (photo-like: smooth random colour fields with sensor-like noise, 10 classes, JPEG quality 90)
are kept under --work and reused; --folder PATH measures a folder of class folders of your own instead.
The JSON holds ours, torchvision, ours_vs_torchvision, later_load, memory, past_memory, machine and the command.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from trial import REPO

PHOTO_SIZES = ((256, 192), (320, 240), (384, 288), (512, 384), (192, 256), (288, 384))   # width, height, pixels
SMALL_SIZES = ((64, 64), (80, 64), (96, 72), (72, 96))    # the --cache-images folder: sources of a 64x64 cache
CLASSES = 10
QUALITY = 90              # JPEG quality, as cameras and phones save
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
VAL_SIZE = 5000           # the config's default val_size: what prepare carves in (c)


# ---------------------------------------------------------------------------------------------------- the folders
def _image(i: int, sizes) -> tuple[np.ndarray, int]:
    """Image i (uint8 [H, W, 3]) and its class: a smooth colour field at two scales plus noise, unique to i."""
    from PIL import Image
    rng = np.random.default_rng(i)
    w, h = sizes[i % len(sizes)]
    coarse = Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    fine = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    a = (np.asarray(coarse, np.int16) * 3 + np.asarray(fine, np.int16)) // 4
    a += rng.integers(-10, 11, (h, w, 1), dtype=np.int16)   # grain: photos do not compress like flat fields
    return np.clip(a, 0, 255).astype(np.uint8), i % CLASSES


def _write_images(job: tuple[str, int, int, tuple]) -> int:
    from PIL import Image
    root, start, stop, sizes = job
    for i in range(start, stop):
        a, c = _image(i, sizes)
        Image.fromarray(a).save(Path(root) / f"class{c}" / f"{i:06d}.jpg", quality=QUALITY)
    return stop - start


def make_folder(work: Path, n: int, sizes, workers: int) -> tuple[Path, dict]:
    """<work>/jpegs-<n>-<W>x<H>.../class<k>/<i>.jpg: n JPEGs, generated once (a .done file beside it says it is
    complete) and reused. Returns (root, {images, bytes, generated_s (0 when reused)})."""
    root = work / f"jpegs-{n}-{sizes[0][0]}x{sizes[0][1]}"
    done = root.with_suffix(".done")
    seconds = 0.0
    if not done.is_file():
        shutil.rmtree(root, ignore_errors=True)
        for c in range(CLASSES):
            (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        step = max(1, min(500, n // (4 * workers) or 1))
        with Pool(workers) as pool:
            sum(pool.imap_unordered(_write_images, [(str(root), s, min(n, s + step), sizes)
                                                    for s in range(0, n, step)]))
        seconds = time.perf_counter() - t0
        done.write_text(json.dumps({"images": n, "sizes": sizes, "seconds": seconds}) + "\n")
    return root, {"path": str(root), "images": n, "bytes": _folder_bytes(root), "generated_s": seconds}


def _folder_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def _warm(root: Path) -> float:
    """Read every file once, so that both pipelines read from the page cache: seconds it took."""
    t0 = time.perf_counter()
    for f in root.rglob("*"):
        if f.is_file():
            f.read_bytes()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------------- child processes
def _rss() -> int:
    import psutil
    return psutil.Process().memory_info().rss


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux reports KiB


def _ours(root: str, size: int) -> dict:
    from trial import folder
    t0 = time.perf_counter()
    fd = folder.load(root, folder.FolderOptions(image_size=size))
    wall = time.perf_counter() - t0
    n = sum(len(t) for t in (fd.splits.train_x, fd.splits.test_x, fd.val_x) if t is not None)
    return {"images": n, "wall_s": wall, "images_per_s": n / wall, "peak_rss_mb": _peak_rss() / 2 ** 20,
            "cache_bytes": sum(p.stat().st_size for p in folder.cache_dir().glob("folder-*.pt"))}


def _torchvision(root: str, size: int, workers: int, batch: int) -> dict:
    import torch
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder
    t0 = time.perf_counter()
    tf = T.Compose([T.Resize(size, T.InterpolationMode.LANCZOS), T.CenterCrop(size), T.PILToTensor()])
    ds = ImageFolder(root, transform=tf)
    out = torch.empty((len(ds), 3, size, size), dtype=torch.uint8)   # kept, as our cache keeps them
    labels = torch.empty(len(ds), dtype=torch.int64)
    at = 0
    for x, y in torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, shuffle=False):
        out[at:at + len(x)], labels[at:at + len(x)] = x, y
        at += len(x)
    wall = time.perf_counter() - t0
    return {"images": at, "wall_s": wall, "images_per_s": at / wall, "peak_rss_mb": _peak_rss() / 2 ** 20,
            "workers": workers, "batch": batch}


def _later(root: str, size: int) -> dict:
    """A later trial's data path with the cache in place: folder.load, every page read, prepare, torch.load unmapped."""
    import gc

    import torch

    from trial import data, folder
    options = folder.FolderOptions(image_size=size)
    rss0 = _rss()
    t0, c0 = time.perf_counter(), time.process_time()
    fd = folder.load(root, options)
    load_s, load_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    rss_load = _rss()
    tensors = [t for t in (fd.splits.train_x, fd.splits.test_x, fd.val_x) if t is not None]
    tensor_bytes = sum(t.numel() * t.element_size() for t in tensors)
    t0 = time.perf_counter()
    checksum = sum(int(t.view(-1)[::4096].sum(dtype=torch.int64)) for t in tensors)   # a byte of every page
    read_s = time.perf_counter() - t0
    rss_read = _rss()
    t0 = time.perf_counter()
    d = data.prepare(root, VAL_SIZE, 0, torch.device("cpu"), options=options)
    prepare_s = time.perf_counter() - t0
    estimate = folder.training_memory(len(d.train_x), len(d.val_x), len(d.test_x), fd.info.shape)
    rss_prepare, peak = _rss(), _peak_rss()
    del d, fd, tensors
    gc.collect()
    pt = max(folder.cache_dir().glob("folder-*.pt"), key=lambda p: p.stat().st_mtime)
    t0 = time.perf_counter()
    torch.load(pt, weights_only=True)
    unmapped_s = time.perf_counter() - t0
    mb = 2 ** 20
    return {"load_s": load_s, "load_cpu_s": load_cpu_s, "read_every_page_s": read_s, "prepare_s": prepare_s, "torch_load_unmapped_s": unmapped_s,
            "tensor_bytes": tensor_bytes, "cache_file_bytes": pt.stat().st_size,
            "rss_start_mb": rss0 / mb, "rss_growth_on_load_mb": (rss_load - rss0) / mb,
            "rss_growth_after_reading_mb": (rss_read - rss0) / mb, "rss_after_prepare_mb": rss_prepare / mb,
            "peak_rss_mb": peak / mb, "peak_growth_mb": (peak - rss0) / mb,
            "training_memory_estimate_mb": estimate / mb, "checksum": checksum}


def _huge(root: str, size: int) -> dict:
    from trial import folder
    from trial.data import DatasetError
    t0 = time.perf_counter()
    try:
        folder.load(root, folder.FolderOptions(image_size=size))
        message, refused = "", False
    except DatasetError as err:
        message, refused = str(err), True
    return {"image_size": size, "refused": refused, "message": message, "seconds": time.perf_counter() - t0,
            "available_gb": folder.available_memory() / 1e9, "peak_rss_mb": _peak_rss() / 2 ** 20}


CHILDREN = {"ours": _ours, "torchvision": _torchvision, "later": _later, "huge": _huge}


def _child() -> None:
    """Entry point of a measuring process: argv[1] is JSON {kind, args}; prints RESULT <json> on stdout."""
    job = json.loads(sys.argv[1])
    print("RESULT " + json.dumps(CHILDREN[job["kind"]](*job["args"])), flush=True)


def measure(kind: str, *args, cache: Path) -> dict:
    """Run CHILDREN[kind](*args) in a fresh Python process whose dataset cache is `cache`; its result dict.
    Raises RuntimeError with the child's last output when it fails."""
    env = {**os.environ, "CNNSEARCH_CACHE": str(cache)}
    code = "from experiments.studies.folder_decode import _child; _child()"
    done = subprocess.run([sys.executable, "-c", code, json.dumps({"kind": kind, "args": args})], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{kind} measurement failed (exit {done.returncode}): {done.stdout[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# ---------------------------------------------------------------------------------------------------- the study
def machine() -> dict:
    import PIL
    import psutil
    import torch
    import torchvision
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags |= set(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    vm = psutil.virtual_memory()
    return {"cpu": model, "cores": os.cpu_count(), "cpu_flags": [f for f in CPU_FLAGS if f in flags],
            "memory_total_gb": vm.total / 1e9, "memory_available_gb": vm.available / 1e9,
            "load_average": os.getloadavg(), "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "pillow": PIL.__version__}


def busy(seconds: float = 1.0, share: float = 10.0) -> list[str]:
    """Other processes using more than `share` % of a core over `seconds`: what shared the cores with this run."""
    import psutil
    procs = [p for p in psutil.process_iter(["pid", "cmdline"]) if p.pid != os.getpid()]
    for p in procs:
        try:
            p.cpu_percent(None)
        except psutil.Error:
            pass
    time.sleep(seconds)
    out = []
    for p in procs:
        try:
            used = p.cpu_percent(None)
        except psutil.Error:
            continue
        if used > share:
            out.append(f"{used:.0f}% pid {p.pid}: {' '.join(p.info['cmdline'] or [])[:100]}")
    return out


def huge_side(n: int, channels: int = 3) -> int:
    """An image_size (a multiple of 64) whose uint8 cache of n images takes about twice the memory available now."""
    from trial import folder
    return int(math.ceil(math.sqrt(2 * folder.available_memory() / (n * channels)) / 64) * 64)


def _summary(runs: list[dict]) -> dict:
    return {"runs": runs, "images_per_s": float(np.median([r["images_per_s"] for r in runs])),
            "wall_s": float(np.median([r["wall_s"] for r in runs])), "images": runs[0]["images"]}


def _later_summary(runs: list[dict]) -> dict:
    return {"runs": runs, **{k: float(np.median([r[k] for r in runs])) for k in
                             ("load_s", "load_cpu_s", "read_every_page_s", "prepare_s", "torch_load_unmapped_s")}}


def run(args) -> dict:
    from .benchmark import paired_ratio
    work = Path(args.work).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    caches = work / "caches"
    shutil.rmtree(caches, ignore_errors=True)
    result = {"command": "python -m experiments.studies.folder_decode " + " ".join(sys.argv[1:] if args.argv is None
                                                                                 else args.argv),
              "machine": machine(), "size": args.size, "workers": args.workers, "batch": args.batch,
              "rounds": args.rounds, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "busy_at_start": busy()}
    if args.folder:
        root = Path(args.folder).expanduser().resolve()
        files = sum(1 for f in root.rglob("*") if f.is_file())
        result["folder"] = {"path": str(root), "files": files, "bytes": _folder_bytes(root), "generated_s": 0.0}
    else:
        root, result["folder"] = make_folder(work, args.images, PHOTO_SIZES, args.workers)
        result["folder"]["sizes"] = PHOTO_SIZES
    _say(f"folder {root}: {result['folder']['bytes'] / 1e6:.0f} MB"
         + (f", generated in {result['folder']['generated_s']:.0f} s" if result["folder"]["generated_s"] else ""))
    result["folder"]["warm_read_s"] = _warm(root)
    ours, tv = [], []
    for r in range(args.rounds):
        for kind in (("ours", "torchvision") if r % 2 == 0 else ("torchvision", "ours")):
            if kind == "ours":
                shutil.rmtree(caches / "photo", ignore_errors=True)   # cold: the first trial's decode
                ours.append(measure("ours", str(root), args.size, cache=caches / "photo"))
            else:
                tv.append(measure("torchvision", str(root), args.size, args.workers, args.batch, cache=caches / "tv"))
            last = (ours if kind == "ours" else tv)[-1]
            _say(f"round {r + 1} {kind}: {last['images']} images in {last['wall_s']:.1f} s, "
                 f"{last['images_per_s']:.0f} images/s")
    result["ours"], result["torchvision"] = _summary(ours), _summary(tv)
    result["ours_vs_torchvision"] = paired_ratio([o["images_per_s"] for o in ours], [t["images_per_s"] for t in tv])
    later = {"photo": _later_summary([measure("later", str(root), args.size, cache=caches / "photo")
                                      for _ in range(args.repeats)])}
    _say(f"later trial, {result['ours']['images']} images at {args.size}: load {later['photo']['load_s']:.3f} s")
    if args.cache_images:
        small, result["cache_folder"] = make_folder(work, args.cache_images, SMALL_SIZES, args.workers)
        _warm(small)
        result["cache_decode"] = measure("ours", str(small), args.cache_size, cache=caches / "small")
        _say(f"decoded {result['cache_decode']['images']} images at {args.cache_size}: "
             f"{result['cache_decode']['images_per_s']:.0f} images/s")
        later["cache"] = _later_summary([measure("later", str(small), args.cache_size, cache=caches / "small")
                                         for _ in range(args.repeats)])
        first = later["cache"]["runs"][0]
        c, s = 3, args.cache_size
        result["memory"] = {"images": result["cache_decode"]["images"], "shape": [c, s, s],
                            "expected_bytes": result["cache_decode"]["images"] * c * s * s,
                            **{k: first[k] for k in ("tensor_bytes", "cache_file_bytes", "rss_start_mb",
                                                     "rss_growth_on_load_mb", "rss_growth_after_reading_mb",
                                                     "rss_after_prepare_mb", "peak_rss_mb", "peak_growth_mb",
                                                     "training_memory_estimate_mb")}}
        _say(f"later trial, {result['memory']['images']} images at {s}: load {later['cache']['load_s']:.3f} s")
    result["later_load"] = later
    side = args.huge_size or huge_side(result["ours"]["images"])
    result["past_memory"] = measure("huge", str(root), side, cache=caches / "huge")
    result["past_memory"]["need_gb"] = result["ours"]["images"] * 3 * side * side / 1e9
    result["machine"]["load_average_end"] = os.getloadavg()
    result["busy_at_end"] = busy()
    if not args.keep_caches:
        shutil.rmtree(caches, ignore_errors=True)
    return result


def _say(line: str) -> None:
    print(f"[folder_decode] {line}", file=sys.stderr, flush=True)


def report(result: dict) -> list[str]:
    """The result as the lines the command prints."""
    m, o, t = result["machine"], result["ours"], result["torchvision"]
    out = [f"machine: {m['cpu']}, {m['cores']} cores, flags {' '.join(m['cpu_flags']) or 'none of ' + str(CPU_FLAGS)}, "
           f"{m['memory_total_gb']:.1f} GB ({m['memory_available_gb']:.1f} available); load average at start "
           f"{m['load_average'][0]:.2f}, at end {m['load_average_end'][0]:.2f}",
           f"folder: {result['folder']['path']} ({result['folder']['bytes'] / 1e6:.0f} MB), decoded to "
           f"{result['size']}x{result['size']}",
           f"{'pipeline':<34} {'images':>7} {'wall s':>8} {'images/s':>9}",
           f"{'ours (trial.folder.load, cold)':<34} {o['images']:>7} {o['wall_s']:>8.1f} {o['images_per_s']:>9.0f}",
           f"{'torchvision ImageFolder+DataLoader':<34} {t['images']:>7} {t['wall_s']:>8.1f} {t['images_per_s']:>9.0f}",
           f"ours vs torchvision: {result['ours_vs_torchvision']:.2f}x (median of {result['rounds']} paired rounds; "
           f"{result['workers']} DataLoader workers, batch {result['batch']})"]
    for key, what in (("photo", f"{o['images']} images at {result['size']}"), ("cache", "the --cache-images cache")):
        if key in result["later_load"]:
            lat = result["later_load"][key]
            out.append(f"later trial, {what}: folder.load {lat['load_s']:.3f} s (mapped; CPU {lat['load_cpu_s']:.3f} s), "
                       f"reading every page "
                       f"{lat['read_every_page_s']:.3f} s, whole prepare {lat['prepare_s']:.2f} s, torch.load "
                       f"unmapped {lat['torch_load_unmapped_s']:.3f} s")
    if "memory" in result:
        mem = result["memory"]
        out.append(f"cache of {mem['images']} images {'x'.join(map(str, mem['shape']))}: {mem['tensor_bytes'] / 1e6:.0f} "
                   f"MB of uint8 (expected {mem['expected_bytes'] / 1e6:.0f} MB, file {mem['cache_file_bytes'] / 1e6:.0f}"
                   f" MB); RSS +{mem['rss_growth_on_load_mb']:.0f} MiB on load, +{mem['rss_growth_after_reading_mb']:.0f}"
                   f" MiB after reading every page, peak +{mem['peak_growth_mb']:.0f} MiB in prepare (estimate "
                   f"{mem['training_memory_estimate_mb']:.0f} MiB)")
    p = result["past_memory"]
    out.append(f"past memory: image_size {p['image_size']} needs {p['need_gb']:.1f} GB, {p['available_gb']:.1f} GB "
               f"available: {'refused' if p['refused'] else 'NOT refused'} in {p['seconds']:.1f} s: {p['message']}")
    return out


def main(argv: list[str] | None = None) -> int:
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(prog="python -m experiments.studies.folder_decode",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=20000, help="JPEGs to generate (default 20000)")
    p.add_argument("--folder", help="measure this folder of class folders instead of generating one")
    p.add_argument("--size", type=int, default=64, help="image_size both pipelines decode to, pixels (default 64)")
    p.add_argument("--workers", type=int, default=cores, help=f"DataLoader workers (default: cores, {cores})")
    p.add_argument("--batch", type=int, default=256, help="DataLoader batch size (default 256)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of (a) and (b) (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="later-trial loads, each a fresh process (default 3)")
    p.add_argument("--cache-images", type=int, default=60000, help="images of the cache measured in (c) and (d); "
                   "0 leaves it out (default 60000)")
    p.add_argument("--cache-size", type=int, default=64, help="their image_size, pixels (default 64)")
    p.add_argument("--huge-size", type=int, default=0, help="image_size of (e); 0: twice the memory available")
    p.add_argument("--work", default=str(Path.home() / ".cache" / "cnnsearch-folder-decode"),
                   help="where the generated folders are kept and reused")
    p.add_argument("--keep-caches", action="store_true", help="keep the decoded caches under --work/caches")
    p.add_argument("--json", default="folder-decode.json")
    args = p.parse_args(argv)
    args.argv = argv
    for name in ("images", "size", "workers", "batch", "rounds", "repeats", "cache_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.cache_images < 0 or args.huge_size < 0:
        p.error("--cache-images and --huge-size must be 0 or more")
    if args.folder and not Path(args.folder).expanduser().is_dir():
        p.error(f"--folder {args.folder!r} is not a folder; give a folder of class folders of images")
    result = run(args)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(report(result)))
    print(f"-> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
