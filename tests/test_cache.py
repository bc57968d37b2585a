"""The decoded-image cache: built once, shared, rebuilt when the files change or it is damaged; bad files skipped."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import _photo, make_photo_folder
from PIL import Image

from autotl import load_dataset
from autotl.data import decode, resize


@pytest.fixture
def folder(tmp_path):
    return make_photo_folder(tmp_path / "photos", per_class=6, size=40)


def _load(folder, cache):
    return load_dataset(str(folder), image_size=64, cache_dir=cache)


def test_a_second_load_reuses_the_cache_and_reads_the_same_pixels(folder, tmp_path):
    first = _load(folder, tmp_path / "cache")
    built = (first.store.folder / "images.u8").stat().st_mtime_ns
    second = _load(folder, tmp_path / "cache")
    assert second.store.folder == first.store.folder
    assert (second.store.folder / "images.u8").stat().st_mtime_ns == built  # not written again
    assert first.store.size == 40  # the images' own size: small images are not upscaled
    index = first.indices("train")
    assert np.array_equal(first.images(index, 32).numpy(), second.images(index, 32).numpy())


@pytest.mark.parametrize("change", ["changed", "added", "removed"])
def test_the_cache_is_rebuilt_when_a_file_changes_is_added_or_removed(folder, tmp_path, change):
    before = _load(folder, tmp_path / "cache")
    first = sorted((folder / "coffee").iterdir())[0]
    if change == "changed":
        Image.fromarray(np.full((40, 40, 3), 7, np.uint8)).save(first)
        os.utime(first, ns=(1, 1))  # a new modification time even within the clock's resolution
    elif change == "added":
        Image.fromarray(np.full((40, 40, 3), 7, np.uint8)).save(folder / "coffee" / "new.png")
    else:
        first.unlink()
    after = _load(folder, tmp_path / "cache")
    assert after.store.folder != before.store.folder
    counts = {"changed": 18, "added": 19, "removed": 17}
    assert len(after.labels) == counts[change]
    if change == "changed":
        row = np.flatnonzero([name == str(first) for name in _names(folder)])[0]
        assert (after.pixels(int(row)) == 7).all()


def _names(folder):
    return [str(p) for c in sorted(folder.iterdir()) for p in sorted(c.iterdir())]


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "metadata"])
def test_a_damaged_cache_is_rebuilt_not_trusted(folder, tmp_path, damage):
    good = _load(folder, tmp_path / "cache")
    expected = good.images(np.arange(len(good.labels)), 40).numpy()
    rows = good.store.folder / "images.u8"
    if damage == "truncated":
        os.truncate(rows, rows.stat().st_size - 100)
    elif damage == "flipped byte":
        with open(rows, "r+b") as handle:
            handle.seek(12345)
            byte = handle.read(1)
            handle.seek(12345)
            handle.write(bytes([byte[0] ^ 0xFF]))
    else:
        (good.store.folder / "meta.json").write_text("{not json")
    rebuilt = _load(folder, tmp_path / "cache")
    assert np.array_equal(rebuilt.images(np.arange(len(rebuilt.labels)), 40).numpy(), expected)


BUILD = """
import sys
from autotl import load_dataset
data = load_dataset(sys.argv[1], image_size=64, cache_dir=sys.argv[2])
print(data.store.folder)
"""


@pytest.mark.slow  # two subprocesses
def test_two_processes_building_the_same_cache_at_once_end_with_one_valid_cache(tmp_path):
    folder = make_photo_folder(tmp_path / "photos", per_class=40, size=120)
    cache = tmp_path / "cache"
    runs = [
        subprocess.Popen([sys.executable, "-c", BUILD, str(folder), str(cache)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300)[0].strip() for run in runs]
    assert all(run.returncode == 0 for run in runs)
    assert outputs[0] == outputs[1]
    entries = [p for p in Path(outputs[0]).parent.iterdir() if not p.name.startswith(".lock")]
    assert [p.name for p in entries] == ["64"]  # one cache, no leftover temporary folder
    data = _load(folder, cache)
    assert str(data.store.folder) == outputs[0]


def test_a_jpeg_decoded_at_reduced_size_matches_a_full_decode_and_resize(tmp_path):
    photo = Image.fromarray(_photo("astronaut")).resize((2048, 1536), Image.Resampling.BICUBIC)
    photo.save(tmp_path / "big.jpg", quality=92)
    full = resize(decode(tmp_path / "big.jpg"), 224)
    reduced_pixels = decode(tmp_path / "big.jpg", 224)
    assert min(reduced_pixels.shape[:2]) < 1536 / 2  # it really decoded at a reduced scale
    reduced = resize(reduced_pixels, 224)
    difference = np.abs(full.astype(int) - reduced.astype(int))
    assert difference.mean() < 2.0 and np.percentile(difference, 99) < 16


def test_a_decompression_bomb_and_a_truncated_image_are_skipped_with_a_warning_naming_them(folder, tmp_path):
    bomb = folder / "brick" / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 400 megapixels in a few kB: PIL refuses to decode it
    truncated = folder / "coffee" / "cut.jpg"
    Image.fromarray(_photo("coffee")).save(truncated, quality=90)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = _load(folder, tmp_path / "cache")
    message = " ".join(str(w.message) for w in caught)
    assert "bomb.png" in message and "decompression bomb" in message and "cut.jpg" in message
    assert len(data.labels) == 18 and len(data.skipped) == 2
