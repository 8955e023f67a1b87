"""`predict` classifies what an image viewer shows, in the model's own input convention: field case c05 (a phone photo
with an EXIF orientation tag) and the other members of its kind, each a real file written with Pillow, classified by
the MNIST model handed in ../shared/field_cases/model_mnist. The field case runs the script as a process; the other
tests call its main in this process, with the model loaded once (torch.export.load takes seconds).

    .venv/bin/pytest tests/test_predict.py -q
"""
from __future__ import annotations

import contextlib
import functools
import io
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from experiments.results import predict
from tests.conftest import FIELD_CASES, REPO

MODEL = FIELD_CASES / "model_mnist"
pytestmark = pytest.mark.skipif(not (MODEL / "model.pt2").is_file(), reason=f"{MODEL} is absent")
PREDICT = REPO / "experiments" / "results" / "predict.py"
UPRIGHT = {7: FIELD_CASES / "c05_exif" / "upright_00_label7.png", 2: FIELD_CASES / "c05_exif" / "upright_01_label2.png"}


load_once = functools.cache(predict.load)


def run(*paths, process: bool = False) -> tuple[int, dict[str, tuple[str, str]], list[str]]:
    """`predict.py MODEL PATHS`: its status, {path: (class, note)} from stdout and the lines of stderr."""
    argv = [str(MODEL), *map(str, paths)]
    if process:
        proc = subprocess.run([sys.executable, str(PREDICT), *argv], capture_output=True, text=True, timeout=120)
        status, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    else:
        out, err = io.StringIO(), io.StringIO()
        with mock.patch.object(predict, "load", load_once), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            status = predict.main(argv)
        stdout, stderr = out.getvalue(), err.getvalue()
    rows = {}
    for line in stdout.splitlines():
        path, label, _, *note = line.split("\t")
        rows[path] = (label, note[0] if note else "")
    return status, rows, stderr.strip().splitlines()


def grey(label: int) -> Image.Image:
    return Image.open(UPRIGHT[label]).convert("L")


# Pillow's transpose that a viewer undoes for each EXIF orientation (2..8): the file stores the image this way
STORED = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
          5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_270}


def test_field_case_phone_photos_are_read_upright():
    status, rows, errors = run(*sorted((FIELD_CASES / "c05_exif").iterdir()), process=True)
    assert status == 0 and not errors
    labels = {path.rsplit("/", 1)[-1]: label for path, (label, _) in rows.items()}
    assert labels == {"phone_00_label7.jpg": "7", "phone_01_label2.jpg": "2", "upright_00_label7.png": "7",
                      "upright_01_label2.png": "2"}


def test_every_exif_orientation(tmp_path):
    paths = {}
    for label in UPRIGHT:
        for orientation, op in STORED.items():
            exif = Image.Exif()
            exif[0x0112] = orientation
            path = tmp_path / f"{label}_o{orientation}.jpg"
            grey(label).transpose(op).save(path, exif=exif, quality=95)
            paths[path] = str(label)
    status, rows, _ = run(*paths)
    assert status == 0
    assert {p: rows[str(p)][0] for p in paths} == {p: v for p, v in paths.items()}


def test_ink_on_paper_is_inverted_and_says_so(tmp_path):
    path = tmp_path / "paper.png"
    Image.fromarray(255 - np.asarray(grey(7))).save(path)
    status, rows, _ = run(path, UPRIGHT[7])
    assert rows[str(path)][0] == "7" and "inverted" in rows[str(path)][1]
    assert rows[str(UPRIGHT[7])][1] == ""                          # already light on dark: nothing converted


def test_the_aspect_ratio_is_kept(tmp_path):
    wide = Image.new("L", (700, 280), 0)
    wide.paste(grey(2), (380, 0))                                  # the digit off-centre on a wide canvas
    tall = Image.new("L", (280, 600), 0)
    tall.paste(grey(7), (0, 40))
    paths = {tmp_path / "wide.png": "2", tmp_path / "tall.png": "7"}
    wide.save(tmp_path / "wide.png")
    tall.save(tmp_path / "tall.png")
    _, rows, _ = run(*paths)
    assert {p: rows[str(p)][0] for p in paths} == {p: v for p, v in paths.items()}


def test_colour_modes_bit_depths_and_transparency(tmp_path):
    a = np.asarray(grey(7))
    files = {}
    Image.fromarray(a).convert("P").save(files.setdefault("palette.png", tmp_path / "palette.png"))
    Image.fromarray(a.astype(np.uint16) * 257).save(files.setdefault("grey16.png", tmp_path / "grey16.png"))
    Image.fromarray(a).convert("RGB").convert("CMYK").save(files.setdefault("cmyk.jpg", tmp_path / "cmyk.jpg"))
    ink = Image.new("RGBA", (280, 280), (0, 0, 0, 0))                # black strokes on a transparent sheet:
    ink.putalpha(Image.fromarray(a))                                 # a viewer shows black on white
    ink.save(files.setdefault("transparent.png", tmp_path / "transparent.png"))
    frames = [Image.fromarray(a), Image.fromarray(np.asarray(grey(2)))]
    frames[0].save(files.setdefault("anim.gif", tmp_path / "anim.gif"), save_all=True, append_images=frames[1:])
    assert Image.open(files["grey16.png"]).mode.startswith("I")
    status, rows, errors = run(*files.values())
    assert status == 0 and not errors
    assert {name: rows[str(path)][0] for name, path in files.items()} == {name: "7" for name in files}
    assert "inverted" in rows[str(files["transparent.png"])][1]


def test_paths_that_are_not_images_get_one_line_each(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(UPRIGHT[2].read_bytes()[:200])
    status, rows, errors = run(text, tmp_path, truncated, tmp_path / "missing.png", UPRIGHT[2])
    assert status == 1
    assert rows == {str(UPRIGHT[2]): ("2", "")}                    # the readable one is still classified
    assert len(errors) == 4 and all(line.startswith("error: ") for line in errors)
    assert errors[0] == f"error: {tmp_path}: a folder, not an image; give the images in it (e.g. {tmp_path}/*.png)"
    for path, line in zip((tmp_path, text, truncated, tmp_path / "missing.png"), errors):
        assert str(path) in line


def test_photos_keep_their_aspect_by_a_centred_crop():
    sys.path.insert(0, str(PREDICT.parent))
    try:
        from predict import read_image
    finally:
        sys.path.remove(str(PREDICT.parent))
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/wide.png"
        a = np.zeros((32, 96, 3), dtype=np.uint8)
        a[:, :32] = (255, 0, 0)            # red | green | blue thirds: the centred square is the green one
        a[:, 32:64] = (0, 255, 0)
        a[:, 64:] = (0, 0, 255)
        Image.fromarray(a).save(path)
        x, note = read_image(path, (3, 32, 32), "cifar10")
    assert x.shape == (3, 32, 32) and note == ""
    assert x[1].mean() > 200 and x[0].mean() < 60 and x[2].mean() < 60


def test_field_cases_coloured_backgrounds_and_a_transparent_canvas_read_as_their_digit():
    """c16: the same 7 as chalk on a green board and on red, blue ink on cream, red pen on white; c10: white ink on a
    transparent canvas. Each is read as a 7, and a converted one says how."""
    files = sorted((FIELD_CASES / "c16_colour_backgrounds").iterdir()) + sorted((FIELD_CASES / "c10_alpha").iterdir())
    status, rows, errors = run(*files)
    assert status == 0 and not errors
    assert {path: label for path, (label, _) in rows.items()} == {str(f): "7" for f in files}
    assert "colour" in rows[str(FIELD_CASES / "c16_colour_backgrounds" / "white_chalk_on_green_board.png")][1]
    assert "transparent" in rows[str(FIELD_CASES / "c10_alpha" / "white_ink_on_transparent.png")][1]


def test_a_coloured_drawing_of_our_own_and_black_ink_on_a_transparent_canvas(tmp_path):
    """Beyond the handed files: a 2 drawn in yellow on purple, and dark strokes on a transparent canvas (composited
    over white, where they show, then inverted as ink on paper)."""
    strokes = np.asarray(grey(2)) > 128
    coloured = np.zeros((*strokes.shape, 3), np.uint8)
    coloured[:] = (90, 30, 120)
    coloured[strokes] = (240, 220, 40)
    Image.fromarray(coloured).resize((112, 112)).save(tmp_path / "yellow_on_purple.png")
    rgba = np.zeros((*strokes.shape, 4), np.uint8)
    rgba[..., 3] = strokes * 255                            # black ink where the strokes are, transparent elsewhere
    Image.fromarray(rgba, "RGBA").resize((112, 112)).save(tmp_path / "black_on_transparent.png")
    status, rows, errors = run(tmp_path / "yellow_on_purple.png", tmp_path / "black_on_transparent.png")
    assert status == 0 and not errors
    assert rows[str(tmp_path / "yellow_on_purple.png")][0] == "2"
    assert rows[str(tmp_path / "black_on_transparent.png")][0] == "2"


def test_field_case_a_200_megapixel_photo_is_classified_beside_a_small_one():
    """c17: a 16320x12240 JPEG (what a 200-megapixel phone camera writes) raised Pillow's DecompressionBombError and
    stopped the call; it is decoded at reduced size, and both files are classified."""
    files = sorted((FIELD_CASES / "c17_200mp_photo").iterdir())
    status, rows, errors = run(*files)
    assert status == 0 and not errors
    assert {path: label for path, (label, _) in rows.items()} == {str(f): "7" for f in files}
