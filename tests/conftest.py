"""Shared fixtures: tiny real-photo image folders made here, and one small finished search."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PHOTOS = ("astronaut", "coffee", "brick")


def _photo(name: str) -> np.ndarray:
    import skimage.data

    pixels = getattr(skimage.data, name)()
    return np.repeat(pixels[:, :, None], 3, axis=2) if pixels.ndim == 2 else pixels[:, :, :3]


def make_photo_folder(root: Path, per_class: int = 16, size: int = 48, seed: int = 0, photos=PHOTOS) -> Path:
    """root/<photo name>/*.png: random crops of a few real photographs, one class per photo."""
    rng = np.random.default_rng(seed)
    for name in photos:
        pixels = _photo(name)
        height, width = pixels.shape[:2]
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            side = int(rng.uniform(0.3, 0.6) * min(height, width))
            top, left = rng.integers(0, height - side), rng.integers(0, width - side)
            crop = Image.fromarray(pixels[top : top + side, left : left + side]).resize((size, size))
            crop.save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Converted weights go to a temporary cache, so tests never touch the user's."""
    os.environ["AUTOTL_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    yield


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory) -> Path:
    return make_photo_folder(tmp_path_factory.mktemp("photos") / "photos")


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, photo_folder):
    """A real two-trial search on the tiny photo folder (quick space), shared by several tests."""
    import autotl

    out = tmp_path_factory.mktemp("runs") / "run"
    result = autotl.search(str(photo_folder), space="quick", n_trials=2, max_epochs=2, out=out, progress=False)
    return result
