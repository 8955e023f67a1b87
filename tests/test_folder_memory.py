"""A dataset given by path past the machine's memory is refused in one line with the figures and the fix, before the
decode and before prepare's float32 copies (trial/folder.py's memory checks, simulated by replacing
folder.available_memory); a later trial maps the cache file; the folder-decode benchmark writes its fields.

    .venv/bin/pytest tests/test_folder_memory.py -q
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_image_folder import make_folder
from trial import data, folder
from trial.data import DatasetError

REPO = Path(__file__).resolve().parents[1]
SIZE = 32   # image_size of the tests' folders: 3 x 32 x 32 = 3,072 bytes an image


def _memory(monkeypatch, free: int) -> None:
    monkeypatch.setattr(folder, "available_memory", lambda: free + folder.MEMORY_RESERVE)


def test_a_decode_that_would_not_fit_is_refused_before_decoding(isolated_env, monkeypatch):
    root = make_folder(isolated_env / "photos", per_class=6)          # 18 images, 55,296 bytes at 32x32
    decodes = []
    real = folder._decode
    monkeypatch.setattr(folder, "_decode", lambda *a: decodes.append(1) or real(*a))
    _memory(monkeypatch, 18 * 3 * SIZE * SIZE - 1)                     # one byte short
    with pytest.raises(DatasetError) as err:
        folder.load(root, folder.FolderOptions(image_size=SIZE))
    line = str(err.value)
    assert "\n" not in line and not decodes
    assert "decoding 18 images at 3x32x32 needs 0.00 GB" in line and "lower image_size (28 fits" in line
    assert "PROBLEM: decoding 18 images" in "\n".join(folder.audit(root, folder.FolderOptions(image_size=SIZE))
                                                       .lines())
    folder._REFUSED.clear()
    _memory(monkeypatch, 18 * 3 * SIZE * SIZE)                         # exactly enough
    fd = folder.load(root, folder.FolderOptions(image_size=SIZE))
    assert decodes == [1] and len(fd.splits.train_x) + len(fd.splits.test_x) == 18


def test_prepare_refuses_float_copies_that_would_not_fit_and_names_a_subset_that_does(isolated_env, monkeypatch):
    root = make_folder(isolated_env / "photos", per_class=20)         # 60 images: 48 train (val drawn), 12 test
    options = folder.FolderOptions(image_size=SIZE)
    full = data.prepare(str(root), 5000, 0, torch.device("cpu"), options=options)   # enough memory: as today
    n, v, t = len(full.train_x), len(full.val_x), len(full.test_x)
    need = folder.training_memory(n, v, t, (3, SIZE, SIZE))
    _memory(monkeypatch, need - 1)
    with pytest.raises(DatasetError) as err:
        data.prepare(str(root), 5000, 0, torch.device("cpu"), options=options)
    line = str(err.value)
    assert "\n" not in line and f"training on {n} images (+ {v} validation, {t} test) at 3x32x32" in line
    assert "set eval_test false" in line and "lower image_size" in line
    subset = int(re.search(r"set train_subset (\d+) \(fits now\)", line).group(1))
    assert 0 < subset < n and folder.training_memory(subset, v, t, (3, SIZE, SIZE)) <= need - 1
    d = data.prepare(str(root), 5000, 0, torch.device("cpu"), train_subset=subset, options=options)
    assert len(d.train_x) == subset and d.train_x.dtype == torch.float32
    d = data.prepare(str(root), 5000, 0, torch.device("cpu"), with_test=False, options=options)  # test not held
    assert len(d.train_x) == n and len(d.test_x) == 0


def test_training_memory_counts_the_float_copies_and_the_largest_transient():
    per = 3 * 64 * 64
    counted = per * (4 * (43000 + 5000 + 12000) + 5 * 43000)
    assert folder.training_memory(43000, 5000, 12000, (3, 64, 64)) == int(folder.TRAINING_HEADROOM * counted)


def test_a_later_load_maps_the_cache_file_and_reads_the_same_images(isolated_env):
    if not Path("/proc/self/maps").is_file():
        pytest.skip("needs /proc/self/maps (Linux)")
    root = make_folder(isolated_env / "photos")
    first = folder.load(root, folder.FolderOptions(image_size=SIZE))
    later = folder.load(root, folder.FolderOptions(image_size=SIZE))
    pt = next((isolated_env / "cache").glob("folder-*.pt"))
    assert str(pt) in Path("/proc/self/maps").read_text()
    assert torch.equal(first.splits.train_x, later.splits.train_x) and later.splits.train_x.dtype == torch.uint8


@pytest.mark.slow
@pytest.mark.timeout(660)
def test_the_folder_decode_benchmark_writes_sane_figures(tmp_path):
    out = tmp_path / "fd.json"
    done = subprocess.run([sys.executable, "-m", "experiments.studies.folder_decode", "--images", "40",
                           "--cache-images", "60", "--cache-size", "16", "--rounds", "1", "--repeats", "1",
                           "--work", str(tmp_path / "work"), "--json", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)   # ~30 s quiet; minutes on shared cores
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.read_text())
    for pipeline in ("ours", "torchvision"):
        assert r[pipeline]["images"] == 40 and r[pipeline]["images_per_s"] > 0 and r[pipeline]["wall_s"] > 0
    assert r["ours_vs_torchvision"] == pytest.approx(r["ours"]["images_per_s"] / r["torchvision"]["images_per_s"])
    for key in ("photo", "cache"):
        later = r["later_load"][key]
        assert 0 < later["load_s"] < 60 and later["prepare_s"] > 0 and later["torch_load_unmapped_s"] > 0
    mem = r["memory"]
    assert mem["images"] == 60 and mem["tensor_bytes"] == mem["expected_bytes"] == 60 * 3 * 16 * 16
    assert mem["cache_file_bytes"] >= mem["tensor_bytes"] and mem["training_memory_estimate_mb"] > 0
    past = r["past_memory"]
    assert past["refused"] and past["need_gb"] > past["available_gb"] and "lower image_size" in past["message"]
    assert r["machine"]["cores"] >= 1 and isinstance(r["machine"]["cpu_flags"], list)
    assert "ours vs torchvision" in done.stdout
    assert not (tmp_path / "work" / "caches").exists()   # decoded caches removed; the generated folders kept
    assert (tmp_path / "work" / "jpegs-40-256x192.done").is_file()
