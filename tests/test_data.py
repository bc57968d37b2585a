"""Data in: every layout, every pixel format, and every hard error a user can hit."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import make_photo_folder
from PIL import Image

from autotl import DatasetError, load_dataset
from autotl.data import decode, resize


def test_pixel_modes_all_become_rgb_uint8(tmp_path):
    images = {
        "l.png": Image.new("L", (10, 6), 128),
        "p.png": Image.new("RGB", (10, 6), (10, 200, 30)).convert("P"),
        "rgba.png": Image.new("RGBA", (10, 6), (255, 0, 0, 0)),
        "cmyk.jpg": Image.new("CMYK", (10, 6), (0, 255, 255, 0)),
        "la.png": Image.new("LA", (10, 6), (50, 255)),
    }
    for name, image in images.items():
        image.save(tmp_path / name)
        pixels = decode(tmp_path / name)
        assert pixels.shape == (6, 10, 3) and pixels.dtype == np.uint8, name
    assert (decode(tmp_path / "rgba.png") == 255).all()  # fully transparent -> white, not black
    assert abs(int(decode(tmp_path / "cmyk.jpg")[0, 0, 0]) - 255) < 8  # CMYK red stays red


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    ramp = np.arange(60, dtype=np.uint16).reshape(6, 10) * 1000 + 5000
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    pixels = decode(tmp_path / "deep.png")
    assert pixels.shape == (6, 10, 3)
    assert pixels[:, :, 0].min() < 30 and pixels[:, :, 0].max() > 200  # clipping would make it all 255


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (20, 10), (0, 0, 255))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert decode(tmp_path / "rotated.jpg").shape == (20, 10, 3)


def test_resize_gives_square_of_the_asked_size():
    assert resize(np.zeros((30, 50, 3), np.uint8), 16).shape == (16, 16, 3)
    assert resize(np.zeros((8, 8, 3), np.uint8), 64).shape == (64, 64, 3)


def test_class_folders_are_split_stratified_and_reproducibly(photo_folder):
    a = load_dataset(str(photo_folder), val_fraction=0.25, seed=3)
    b = load_dataset(str(photo_folder), val_fraction=0.25, seed=3)
    assert a.classes == sorted(["astronaut", "coffee", "brick"])
    assert a.count("val") == 12 and a.count("train") == 36
    assert (a.split_of == b.split_of).all()
    val_labels = a.labels[a.indices("val")]
    assert np.bincount(val_labels).tolist() == [4, 4, 4]
    images, labels = next(a.batches(a.indices("train"), 32, batch_size=64))
    assert images.shape == (36, 3, 32, 32) and images.dtype == torch.uint8 and labels.shape == (36,)
    assert a.store.folder == b.store.folder  # decoded once: the second load found the cache


def test_train_val_test_folders_are_kept(tmp_path):
    for split in ("train", "val", "test"):
        make_photo_folder(tmp_path / "data" / split, per_class=4, seed=hash(split) % 100)
    data = load_dataset(str(tmp_path / "data"))
    assert (data.count("train"), data.count("val"), data.count("test")) == (12, 12, 12)


def test_csv_with_splits(tmp_path, photo_folder):
    rows = ["path,label,split"]
    for i, file in enumerate(sorted(photo_folder.rglob("*.png"))):
        rows.append(f"{file.relative_to(photo_folder)},{file.parent.name},{'val' if i % 4 == 0 else 'train'}")
    (photo_folder / "labels.csv").write_text("\n".join(rows))
    data = load_dataset(str(photo_folder / "labels.csv"))
    assert data.count("val") == 12 and data.count("train") == 36


def test_unreadable_files_are_skipped_with_one_warning(tmp_path):
    root = make_photo_folder(tmp_path / "d", per_class=5)
    (root / "coffee" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "brick" / "empty.png").write_bytes(b"")
    (root / "brick" / "notes.txt").write_text("not an image")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(str(root))
    messages = [str(w.message) for w in caught if "skipped" in str(w.message)]
    assert len(messages) == 1 and "3 unreadable" in messages[0] and "broken.jpg" in messages[0]
    assert len(data.labels) == 15


def test_builtin_digits_has_a_fixed_test_split_and_caps():
    data = load_dataset("builtin:digits", max_per_class=10)
    assert len(data.classes) == 10
    assert data.count("test") == 100 and data.count("train") + data.count("val") == 100


def test_fashion_mnist_missing_says_how_to_install(monkeypatch, tmp_path):
    from autotl.data import _sources

    monkeypatch.setattr(_sources, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("builtin:fashion-mnist")


def _one_class(root):
    make_photo_folder(root, per_class=3, photos=("coffee",))


def _unreadable_class(root):
    make_photo_folder(root, per_class=3)
    for file in (root / "brick").iterdir():
        file.write_bytes(b"garbage")


def _empty_class(root):
    make_photo_folder(root, per_class=3)
    (root / "empty").mkdir()


def _csv_missing_file(root):
    make_photo_folder(root, per_class=3)
    (root / "data.csv").write_text("path,label\ncoffee/000.png,coffee\ncoffee/nope.png,coffee\n")


def _csv_missing_column(root):
    make_photo_folder(root, per_class=3)
    (root / "data.csv").write_text("file,label\ncoffee/000.png,coffee\n")


HARD_ERRORS = {
    "missing path": (lambda root: None, "missing", "does not exist"),
    "file not folder": (lambda root: (root.mkdir(), (root / "x.jpg").write_bytes(b"x")), "x.jpg", "is a file"),
    "no images": (lambda root: root.mkdir(), "", "no class folders"),
    "one class": (_one_class, "", "at least two"),
    "class without readable image": (_unreadable_class, "", "'brick' has no readable image"),
    "class folder empty": (_empty_class, "", "holds no images"),
    "csv row names a missing file": (_csv_missing_file, "data.csv", "line 3"),
    "csv missing column": (_csv_missing_column, "data.csv", "lacks the column(s) path"),
}


@pytest.mark.parametrize("case", sorted(HARD_ERRORS))
def test_hard_errors_are_one_line_and_exit_2(case, tmp_path, capsys):
    from autotl.cli import main

    build, relative, expected = HARD_ERRORS[case]
    root = tmp_path / "data"
    build(root)
    out = tmp_path / "earlier-run"
    out.mkdir()
    (out / "study.db").write_bytes(b"an earlier run")
    code = main(["search", "--dataset", str(root / relative) if relative else str(root), "--out", str(out)])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("warning:")]
    assert code == 2
    assert len(err) == 1 and err[0].startswith("autotl: error:") and expected in err[0], err
    assert (out / "study.db").read_bytes() == b"an earlier run"


def test_csv_paths_cannot_leave_the_csv_folder_unless_allowed(tmp_path, photo_folder):
    inner = tmp_path / "csvdir"
    inner.mkdir()
    rows = ["path,label"] + [f"{f},{f.parent.name}" for f in sorted(photo_folder.rglob("*.png"))]
    (inner / "outside.csv").write_text("\n".join(rows))
    with pytest.raises(DatasetError, match="outside the CSV's folder"):
        load_dataset(str(inner / "outside.csv"))
    assert len(load_dataset(str(inner / "outside.csv"), allow_outside_paths=True).labels) == 48


def _hand_resize(pixels, size, interpolation="bicubic"):
    """autotl's resize before it called torchvision: Resize(size) + CenterCrop(size) arithmetic by hand, on PIL."""
    modes = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
    height, width = pixels.shape[:2]
    if height == width == size:
        return pixels
    short, long = min(height, width), max(height, width)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if width <= height else (new_long, size)
    image = Image.fromarray(pixels)
    if (new_h, new_w) != (height, width):
        image = image.resize((new_w, new_h), modes.get(interpolation, Image.BICUBIC))
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _hand_resize_batch(images, size, interpolation="bicubic"):
    """autotl's resize_batch before it called torchvision (PIL per image to enlarge, torch interpolate to shrink)."""
    modes = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
    if images.shape[-1] == size:
        return images
    if size > images.shape[-1]:
        resample = modes.get(interpolation, Image.BICUBIC)
        rows = images.permute(0, 2, 3, 1).numpy()
        enlarged = [np.asarray(Image.fromarray(row).resize((size, size), resample)) for row in rows]
        return torch.from_numpy(np.stack(enlarged)).permute(0, 3, 1, 2).contiguous()
    mode = interpolation if interpolation in ("bilinear", "bicubic") else "bicubic"
    out = torch.nn.functional.interpolate(
        images.float(), size=(size, size), mode=mode, align_corners=False, antialias=True
    )
    return out.round_().clamp_(0, 255).to(torch.uint8)


INTERPOLATIONS = ["bilinear", "bicubic", "nearest", "lanczos", "hamming"]  # hamming: an unknown name, bicubic


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_torchvision_resize_gives_the_hand_written_resizes_pixels(interpolation):
    from autotl.data._decode import resize_batch

    rng = np.random.default_rng(0)
    shapes = [(37, 23), (23, 50), (40, 40), (10, 14), (31, 47), (47, 31), (32, 50), (17, 17), (1, 9)]
    for height, width in shapes:
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        for size in (16, 17, 32, 64):
            got, expected = resize(pixels, size, interpolation), _hand_resize(pixels, size, interpolation)
            assert np.array_equal(got, expected), (height, width, size)
    squares = torch.from_numpy(rng.integers(0, 256, (4, 3, 40, 40), dtype=np.uint8))
    for size in (13, 24, 40, 57, 80):  # shrink (one batch, as a tensor), the same, enlarge (per image, PIL)
        got, expected = resize_batch(squares, size, interpolation), _hand_resize_batch(squares, size, interpolation)
        assert got.dtype == torch.uint8 and torch.equal(got, expected), size
