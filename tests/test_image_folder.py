"""Datasets given by path (trial/images.py, trial/folder.py): what users bring, each case with its expected outcome.
Tiny generated images (24-40 px, a few per class) in folders, a CSV manifest and an .npz; every format Pillow writes
and every mode; what is refused is refused in one line naming the file and the fix.

    .venv/bin/pytest tests/test_image_folder.py -q
"""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trial import config, data, folder, images
from trial.config import ConfigError, resolve
from trial.data import DatasetError

TOP, BOTTOM = 60, 180   # the two halves of the test pattern: a resize or a rotation that goes wrong moves them


def halves(width: int = 32, height: int = 24) -> np.ndarray:
    a = np.full((height, width), BOTTOM, np.uint8)
    a[: height // 2] = TOP
    return a


def picture(seed: int, grey: bool = False, side: int = 28) -> Image.Image:
    """A small image unique to `seed` (no accidental duplicates), its class legible from its brightness."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 80, (side, side + seed % 5, 1 if grey else 3)).astype(np.uint8) + np.uint8(40 * (seed % 3))
    return Image.fromarray(a[..., 0] if grey else a)


def make_folder(root: Path, classes=("cat", "dog", "eel"), per_class: int = 6, grey: bool = False) -> Path:
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            picture(3 * (10 * i + c) + c, grey).save(root / name / f"{i}.png")
    return root


# ------------------------------------------------------------------------------------------------- images.py
def _save_pattern(path: Path, fmt: str, mode: str) -> None:
    grey = Image.fromarray(halves())
    if mode == "L":
        image = grey
    elif mode == "RGB":
        image = grey.convert("RGB")
    elif mode == "P":
        image = grey.convert("P")
    elif mode == "I;16":
        image = Image.fromarray(halves().astype(np.uint16) * 257)
    elif mode == "CMYK":
        image = grey.convert("RGB").convert("CMYK")
    elif mode in ("RGBA", "LA"):   # the bottom half transparent: a viewer shows white there
        image = grey.convert(mode[:-1] if mode == "RGBA" else "L").convert(mode)
        alpha = np.full(halves().shape, 255, np.uint8)
        alpha[12:] = 0
        image.putalpha(Image.fromarray(alpha))
    extra = {"lossless": True} if fmt == "WEBP" else {"quality": 95} if fmt == "JPEG" else {}
    image.save(path, fmt, **extra)


CASES = [("PNG", m) for m in ("L", "RGB", "RGBA", "P", "I;16", "LA")] + \
    [("JPEG", "L"), ("JPEG", "RGB"), ("JPEG", "CMYK"), ("BMP", "RGB"), ("BMP", "L"), ("GIF", "P"), ("GIF", "L"),
     ("TIFF", "RGB"), ("TIFF", "CMYK"), ("TIFF", "I;16"), ("WEBP", "RGB"), ("WEBP", "RGBA")]


@pytest.mark.parametrize("fmt,mode", CASES, ids=[f"{f}-{m}" for f, m in CASES])
def test_each_format_and_mode_reads_as_a_viewer_shows_it(tmp_path, fmt, mode):
    path = tmp_path / f"x.{fmt.lower()}"
    _save_pattern(path, fmt, mode)
    viewed = images.open_as_viewed(path)
    assert viewed.mode == ("L" if mode in ("L", "P", "I;16", "LA") else "RGB")
    a = images.to_array(viewed, 16, "crop", 3 if viewed.mode == "RGB" else 1).astype(int)
    assert a.shape == (3 if viewed.mode == "RGB" else 1, 16, 16) and a.dtype == np.int64
    bottom = 255 if mode in ("RGBA", "LA") else BOTTOM     # transparency over white
    assert abs(a[:, :5].mean() - TOP) < 6 and abs(a[:, -5:].mean() - bottom) < 6, (a[:, :5].mean(), a[:, -5:].mean())


@pytest.mark.parametrize("orientation,stored", [(3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_90),
                                                (8, Image.Transpose.ROTATE_270)])
def test_exif_orientation_is_applied(tmp_path, orientation, stored):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(halves()).transpose(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    viewed = np.asarray(images.open_as_viewed(tmp_path / "phone.jpg"), dtype=int)
    assert viewed.shape == (24, 32)                               # upright: as wide as the original
    assert abs(viewed[:8].mean() - TOP) < 6 and abs(viewed[-8:].mean() - BOTTOM) < 6


def test_a_photo_over_the_size_limit_is_drafted_if_jpeg_else_refused(tmp_path, monkeypatch):
    Image.fromarray(halves(320, 240)).save(tmp_path / "big.jpg", quality=95)
    Image.fromarray(halves(320, 240)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)              # 76,800 pixels: a decompression bomb now
    assert images.header(tmp_path / "big.png")[:2] == (320, 240)
    viewed = images.open_as_viewed(tmp_path / "big.jpg", min_side=16)   # decoded at 1/8: 40x30
    assert viewed.size == (40, 30) and Image.MAX_IMAGE_PIXELS == 2000
    with pytest.raises(images.ImageError, match="big.png: 320x240 pixels is over .*; resize it"):
        images.open_as_viewed(tmp_path / "big.png")


def test_resize_modes_keep_the_aspect_ratio():
    wide = Image.fromarray(np.concatenate([np.full((20, 20), 0, np.uint8), np.full((20, 40), 100, np.uint8)], 1))
    crop = images.to_array(wide, 10, "crop", 1)[0]                # centre square: the 100 part mostly
    pad = images.to_array(wide, 12, "pad", 1, background=255)[0]  # whole image 12x4, white bars above and below
    assert crop.shape == (10, 10) and crop[:, -3:].min() == 100
    assert (pad[0] == 255).all() and (pad[-1] == 255).all() and pad[6, 0] == 0 and pad[6, -1] == 100


# ------------------------------------------------------------------------------------------------- folders
def test_a_folder_with_what_users_bring(isolated_env):
    """Nested folders, hidden and system files, non-images, upper-case extensions, spaces and non-ASCII names."""
    root = make_folder(isolated_env / "photos", classes=("cat", "dog"))
    (root / "cat" / "2019" / "summer").mkdir(parents=True)
    picture(101).save(root / "cat" / "2019" / "summer" / "Beach Day é.JPG", "JPEG")
    picture(104).save(root / "dog" / "ünïcödé name.png")
    for hidden in (root / ".DS_Store", root / "cat" / "Thumbs.db", root / "dog" / "._0.png"):
        hidden.write_bytes(b"\0\1junk")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("about")
    found = folder.audit(root)
    assert found.ok, found.problems
    assert found.classes == ["cat", "dog"]
    assert sum(found.counts[s]["cat"] for s in folder.SPLITS) == 7 and \
        sum(found.counts[s]["dog"] for s in folder.SPLITS) == 7
    assert sorted(found.hidden) == [".DS_Store", "cat/Thumbs.db", "dog/._0.png"]
    assert found.not_images == ["cat/notes.txt"] and found.outside == ["README.md"]
    assert found.channels == 3 and found.image_size == 28 and "median shorter side 28" in found.image_size_note
    d = folder.load(root)
    n = len(d.splits.train_y) + len(d.splits.test_y)
    assert n == 14 and tuple(d.splits.train_x.shape[1:]) == (3, 28, 28) and d.info.classes == ("cat", "dog")


def test_grey_images_give_one_channel_and_a_colour_image_three(isolated_env):
    root = make_folder(isolated_env / "grey", grey=True)
    assert folder.load(root).info.shape == (1, 28, 28)
    picture(7).save(root / "cat" / "colour.png")                    # one colour image: the dataset is RGB
    assert folder.load(root).info.shape == (3, 28, 28)


def test_a_corrupt_jpeg_and_a_truncated_png_are_refused_naming_them_or_skipped(isolated_env, capsys):
    root = make_folder(isolated_env / "bad")
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is no jpeg")
    whole = (root / "dog" / "0.png").read_bytes()
    (root / "dog" / "cut.png").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DatasetError) as err:
        folder.load(root)
    line = str(err.value)
    assert "\n" not in line and "cat/broken.jpg" in line and "dog/cut.png" in line and "skip_bad_images" in line
    assert not list((isolated_env / "cache").glob("*.pt"))             # nothing cached for a refused dataset
    d = folder.load(root, folder.FolderOptions(skip_bad_images=True))
    assert d.info.skipped_images == 2 and d.info.metrics()["skipped_images"] == 2
    assert len(d.splits.train_y) + len(d.splits.test_y) == 18


def test_a_one_image_class_is_refused_with_the_counts(isolated_env):
    root = make_folder(isolated_env / "small")
    (root / "fox").mkdir()
    picture(55).save(root / "fox" / "only.png")
    found = folder.audit(root)
    assert found.small_classes == {"fox": 1}
    with pytest.raises(DatasetError, match=r"'fox' \(1\).*need 3 per class.*cat 6, dog 6, eel 6, fox 1"):
        folder.load(root)


def test_an_empty_class_folder_is_refused(isolated_env):
    root = make_folder(isolated_env / "empty")
    (root / "ghost").mkdir()
    with pytest.raises(DatasetError, match=r"'ghost' \(0\)"):
        folder.load(root)


def test_duplicates_across_splits_are_refused_or_dropped_and_within_a_class_listed(isolated_env):
    root = isolated_env / "split"
    make_folder(root / "train")
    make_folder(root / "test", per_class=2)     # the same bytes as train's first two of each class: leakage
    (root / "train" / "cat" / "again.png").write_bytes((root / "train" / "cat" / "3.png").read_bytes())
    found = folder.audit(root)
    assert len(found.duplicates_across) == 6 and ["train/cat/3.png", "train/cat/again.png"] in \
        [sorted(g) for g in found.duplicates_within]
    with pytest.raises(DatasetError, match="leakage.*test/cat/0.png = train/cat/0.png.*drop_duplicates"):
        folder.load(root)
    d = folder.load(root, folder.FolderOptions(drop_duplicates=True))
    assert d.audit.dropped_duplicates == 7 and len(d.splits.test_y) == 6 and len(d.splits.train_y) == 12
    train = {bytes(x.numpy().tobytes()) for x in d.splits.train_x}
    assert not train & {bytes(x.numpy().tobytes()) for x in d.splits.test_x}


def test_given_val_and_test_folders_and_mean_std_from_train_only(isolated_env):
    root = isolated_env / "given"
    for split, value, n in (("train", 50, 4), ("val", 120, 2), ("test", 200, 2)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((24, 24), value + i + 10 * (c == "b"), np.uint8)).save(root / split / c / f"{i}.png")
    d = folder.load(root)
    assert d.audit.test_split == "given by the dataset" and len(d.val_y) == 4 and len(d.splits.test_y) == 4
    assert abs(d.info.mean[0] * 255 - 56.5) < 0.5                        # train's 50..63, not val's or test's
    dev = data.prepare(str(root), 5000, 0, torch.device("cpu"), options=folder.FolderOptions())
    assert len(dev.val_y) == 4 and len(dev.train_y) == 8                 # the given val split, val_size unused


def test_a_csv_manifest(isolated_env):
    root = isolated_env / "manifest"
    (root / "imgs").mkdir(parents=True)
    rows = ["File Name,Label,split"]
    for i in range(12):
        picture(i).save(root / "imgs" / f"{i}.jpg", quality=95)
        rows.append(f"imgs/{i}.jpg,{['ant', 'bee'][i % 2]},{'test' if i >= 10 else 'train'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8-sig")
    d = folder.load(root / "labels.csv")
    assert d.info.classes == ("ant", "bee") and len(d.splits.test_y) == 2 and len(d.splits.train_y) == 10
    (root / "bad.csv").write_text("picture,kind\nimgs/0.jpg,ant\n")
    with pytest.raises(DatasetError, match="no image path column .*; rename the column"):
        folder.load(root / "bad.csv")


def test_a_csv_manifest_in_utf16_with_crlf(isolated_env):
    """Excel's "Unicode text" and PowerShell save UTF-16 with a byte-order mark; before: 'cannot be read as a CSV
    manifest ('utf-8' codec can't decode byte 0xff ...)' (issue 29)."""
    root = isolated_env / "manifest16"
    (root / "imgs").mkdir(parents=True)
    rows = ["path,label"]
    for i in range(10):
        picture(i).save(root / "imgs" / f"{i}.png")
        rows.append(f"imgs/{i}.png,{['ant', 'bee'][i % 2]}")
    (root / "labels.csv").write_bytes("\r\n".join(rows).encode("utf-16"))
    d = folder.load(root / "labels.csv")
    assert d.info.classes == ("ant", "bee") and 0 < len(d.splits.train_y) <= 10


def test_an_npz(isolated_env):
    rng = np.random.default_rng(0)
    y = np.array([2, 10] * 8)
    x = rng.integers(0, 255, (16, 20, 20)).astype(np.uint8)
    np.savez(isolated_env / "set.npz", x=x, y=y, x_test=x[:4], y_test=y[:4])
    d = folder.load(isolated_env / "set.npz", folder.FolderOptions(image_size=20, drop_duplicates=True))
    assert d.info.classes == ("2", "10") and d.info.shape == (1, 20, 20)    # numeric labels sorted as numbers
    assert torch.equal(d.splits.test_x[:, 0], torch.from_numpy(x[:4]))
    assert d.audit.dropped_duplicates == 4                                  # x_test repeats x: train copies dropped
    np.savez(isolated_env / "float.npz", x=x / 255.0, y=y)
    with pytest.raises(DatasetError, match=r"float64.*multiply by 255"):
        folder.load(isolated_env / "float.npz")


# ------------------------------------------------------------------------------------------------- cache and splits
def test_the_cache_is_reused_and_invalidated_when_a_file_changes(isolated_env, monkeypatch):
    root = make_folder(isolated_env / "cached")
    decodes = []
    real = folder._decode
    monkeypatch.setattr(folder, "_decode", lambda *a: decodes.append(1) or real(*a))
    first = folder.load(root)
    again = folder.load(root)
    assert len(decodes) == 1 and torch.equal(first.splits.train_x, again.splits.train_x)
    picture(99).save(root / "dog" / "0.png")                             # a file changes (size and mtime)
    changed = folder.load(root)
    assert len(decodes) == 2 and not torch.equal(first.splits.train_x, changed.splits.train_x)
    assert len(list((isolated_env / "cache").glob("folder-*.pt"))) == 1  # the stale decode removed


def test_the_test_split_never_moves(isolated_env):
    root = make_folder(isolated_env / "stable", per_class=8)
    first = folder.load(root)
    split_file, = (isolated_env / "cache").glob("*.split.json")
    listed = json.loads(split_file.read_text())["test"]
    assert len(listed) == 5 and {label for _, label in listed} == {"cat", "dog", "eel"}
    resized = folder.load(root, folder.FolderOptions(image_size=16, resize_mode="pad"))   # another cache, same test
    assert torch.equal(first.splits.test_y, resized.splits.test_y)
    picture(500).save(root / "cat" / "new.png")                         # added later: goes to training
    grown = folder.load(root)
    assert torch.equal(grown.splits.test_x, first.splits.test_x) and len(grown.splits.train_y) == 20
    keep, val, _ = folder.carve_validation(grown.splits.train_y, grown.train_groups, 5000, 0)
    keep2, val2, _ = folder.carve_validation(grown.splits.train_y, grown.train_groups, 5000, 0)
    assert torch.equal(val, val2) and len(val) == 4 and not set(keep.tolist()) & set(val.tolist())


def test_the_class_imbalance_is_measured_and_flagged(isolated_env):
    root = make_folder(isolated_env / "skewed", classes=("few", "many"), per_class=4)
    for i in range(4, 12):
        picture(1000 + i).save(root / "many" / f"{i}.png")
    found = folder.audit(root)
    assert found.imbalanced and found.imbalance > 2.5
    assert any("balanced accuracy" in line for line in found.lines())
    assert folder.load(root).info.imbalance == found.imbalance


# ------------------------------------------------------------------------------------------------- config and trial
def test_config_takes_a_path_and_refuses_what_cannot_work(isolated_env, monkeypatch):
    root = make_folder(isolated_env / "cfg")
    monkeypatch.chdir(isolated_env)
    cfg = resolve({"dataset": "cfg", "image_size": 32})
    assert cfg.dataset == str(root.resolve()) and cfg.image_size == 32
    assert {f.name: f.default for f in fields(folder.FolderOptions)} == \
        {f.name: config.FIELDS[f.name].default for f in fields(folder.FolderOptions)}
    assert "image_size" not in resolve({}).to_dict()                    # old configs keep their digests
    for params, words in (({"dataset": "no/such/dir"}, "neither a dataset name"),
                          ({"dataset": "fmnist", "image_size": 32}, r"image_size shape\(s\) datasets given by path"),
                          ({"dataset": "cfg", "tta": "mirror"}, "mirror_safe is false"),
                          ({"dataset": "cfg", "resize_mode": "squash"}, "crop, pad")):
        with pytest.raises(ConfigError, match=words):
            resolve(params)
    assert resolve({"dataset": "cfg", "tta": "mirror", "mirror_safe": True}).tta == "mirror"


def test_the_audit_command_exits_1_on_a_refused_dataset(isolated_env, capsys):
    root = make_folder(isolated_env / "cli")
    assert data.main([str(root)]) == 0 and "3 classes, 18 images used" in capsys.readouterr().out
    (root / "cat" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert data.main([str(root), "--image-size", "16"]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM: 1 file does not decode as an image: cat/x.png" in out and "16x16" in out


def test_a_plain_trial_trains_on_a_folder(isolated_env, torch_one_thread):
    from trial.train import train
    root = make_folder(isolated_env / "trial", classes=("a", "b", "c", "d"), per_class=5)
    cfg = resolve({"dataset": str(root), "epochs": 1, "filters": 4, "dense_units": 8, "batch_size": 8,
                   "augment": True, "image_size": 24})
    result = train(cfg, output_dir=isolated_env / "run")
    final = json.loads((isolated_env / "run" / "final.json").read_text())
    assert final["num_classes"] == 4 and final["image_size"] == 24 and "test_accuracy" in final
    assert result.model(torch.zeros(2, 3, 24, 24)).shape == (2, 4)
