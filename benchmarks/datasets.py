"""Small real-photo datasets assembled from photographs that ship with scikit-image and scikit-learn.

``natural_photos`` makes a 12-class task: each class is one photograph, each image a crop
of it at a random position and scale, resized to 64x64. Train and test crops are centred
in disjoint cells of a 4x4 checkerboard over the photo, so no test crop is centred where
a training crop was.

    python benchmarks/datasets.py OUT_DIR     # writes OUT_DIR/photos-train and OUT_DIR/photos-test
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ["astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel",
          "hubble_deep_field", "moon", "retina", "rocket"]


def _photo(name: str) -> np.ndarray:
    import skimage.data

    pixels = getattr(skimage.data, name)()
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return pixels[:, :, :3]


def _crops(pixels: np.ndarray, count: int, cells: set, rng, size: int, crop: tuple) -> list[Image.Image]:
    height, width = pixels.shape[:2]
    out = []
    while len(out) < count:
        side = max(4, int(rng.uniform(*crop) * min(height, width)))
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        if (int(cy * 4 / height), int(cx * 4 / width)) not in cells:
            continue
        top = int(np.clip(cy - side / 2, 0, height - side))
        left = int(np.clip(cx - side / 2, 0, width - side))
        piece = Image.fromarray(pixels[top:top + side, left:left + side])
        out.append(piece.resize((size, size), Image.Resampling.BICUBIC))
    return out


def natural_photos(root: str | Path, train_per_class: int = 50, test_per_class: int = 30, size: int = 64,
                   seed: int = 0, crop: tuple = (0.2, 0.45)) -> tuple[Path, Path]:
    """Write ``root/photos-train/<class>/*.png`` and ``root/photos-test/<class>/*.png``.

    ``crop``: the range of a crop's side as a fraction of the photo's shorter side; small
    crops (say 0.05 to 0.1) show little of a photo and make the task harder.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    train_cells = {(r, c) for r in range(4) for c in range(4) if (r + c) % 2 == 0}
    test_cells = {(r, c) for r in range(4) for c in range(4)} - train_cells
    for name in PHOTOS:
        pixels = _photo(name)
        for folder, count, cells in (("photos-train", train_per_class, train_cells),
                                     ("photos-test", test_per_class, test_cells)):
            target = root / folder / name
            target.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(_crops(pixels, count, cells, rng, size, crop)):
                image.save(target / f"{name}_{i:03d}.png")
    return root / "photos-train", root / "photos-test"


if __name__ == "__main__":
    train, test = natural_photos(sys.argv[1] if len(sys.argv) > 1 else "data")
    print(train, test)
