"""Small real-photo datasets assembled from photographs that ship with scikit-image and scikit-learn.

``natural_photos`` makes a 12-class task: each class is one photograph, each image a crop
of it at a random position and scale, resized to 64x64. Train and test crops are centred
in disjoint cells of a 4x4 checkerboard over the photo, so no test crop is centred where
a training crop was.

``phone_photos`` makes full-size camera files for scale benchmarks: 4000x3000 JPEGs of roughly
0.5-1 MB, some stored in portrait with an EXIF Orientation tag, as phones write them.

    python benchmarks/datasets.py OUT_DIR                    # writes OUT_DIR/photos-train and OUT_DIR/photos-test
    python benchmarks/datasets.py --phone-photos OUT_DIR [--n 1000]   # writes OUT_DIR/<class>/<class>_0001.jpg ...
"""

from __future__ import annotations

import argparse
import os
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = [
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "moon",
    "retina",
    "rocket",
]


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
        piece = Image.fromarray(pixels[top : top + side, left : left + side])
        out.append(piece.resize((size, size), Image.Resampling.BICUBIC))
    return out


def natural_photos(
    root: str | Path,
    train_per_class: int = 50,
    test_per_class: int = 30,
    size: int = 64,
    seed: int = 0,
    crop: tuple = (0.2, 0.45),
) -> tuple[Path, Path]:
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
        for folder, count, cells in (
            ("photos-train", train_per_class, train_cells),
            ("photos-test", test_per_class, test_cells),
        ):
            target = root / folder / name
            target.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(_crops(pixels, count, cells, rng, size, crop)):
                image.save(target / f"{name}_{i:03d}.png")
    return root / "photos-train", root / "photos-test"


PHONE_JPEG_QUALITY = 88
ORIENTATION = 0x0112  # EXIF tag; 6 means "rotate 90 degrees clockwise to display"
_worker_photos: dict[str, np.ndarray] = {}


def _phone_photo(job: tuple) -> None:
    """Write one phone-style JPEG (runs in a pool worker); written to a temporary name, then renamed."""
    path, name, seed, class_index, number, size = job
    if name not in _worker_photos:
        _worker_photos[name] = _photo(name)
    pixels = _worker_photos[name]
    rng = np.random.default_rng([seed, class_index, number])
    width, height = size
    photo_height, photo_width = pixels.shape[:2]
    largest = min(photo_width, photo_height * width / height)  # widest crop with the output's aspect ratio
    crop_width = max(8, int(rng.uniform(0.5, 1.0) * largest))
    crop_height = max(6, int(crop_width * height / width))
    top = int(rng.integers(0, photo_height - crop_height + 1))
    left = int(rng.integers(0, photo_width - crop_width + 1))
    crop = pixels[top : top + crop_height, left : left + crop_width].astype(np.float32)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop *= rng.uniform(0.85, 1.15) * rng.uniform(0.93, 1.07, size=3)  # brightness, then a slight colour cast
    image = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8))
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[ORIENTATION] = 1
    if rng.random() < 0.1:  # held upright: pixels stored rotated, the tag says how to turn them back
        image = image.transpose(Image.Transpose.ROTATE_90)
        exif[ORIENTATION] = 6
    partial = path.with_name(f".{path.name}.partial")
    image.save(partial, "JPEG", quality=PHONE_JPEG_QUALITY, exif=exif)
    os.replace(partial, path)


def phone_photos(
    root: str | Path,
    n_images: int = 1000,
    n_classes: int = 10,
    size: tuple = (4000, 3000),
    seed: int = 0,
    workers: int = 2,
) -> Path:
    """Write ``root/<class>/<class>_0001.jpg ...``: ``n_images`` camera-sized JPEGs (``size`` is width, height).

    Each class is one photograph of ``PHOTOS``; each image a random crop of it (position,
    scale, horizontal flip, brightness and colour), upscaled bicubically. About 1 in 10 is
    stored in portrait, rotated, with EXIF Orientation 6, so ``PIL.ImageOps.exif_transpose``
    gives the upright picture. Files already there are kept, so a second call is instant;
    files of this naming beyond ``n_images`` or ``n_classes`` (from a larger earlier call)
    are removed.
    """
    if not 1 <= n_classes <= len(PHOTOS):
        raise ValueError(f"n_classes must be between 1 and {len(PHOTOS)}, got {n_classes}")
    root = Path(root)
    classes = PHOTOS[:n_classes]
    per_class = [n_images // n_classes + (i < n_images % n_classes) for i in range(n_classes)]
    digits = max(4, len(str(max(per_class))))
    jobs, expected = [], set()
    for class_index, (name, count) in enumerate(zip(classes, per_class)):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(1, count + 1):
            path = folder / f"{name}_{number:0{digits}d}.jpg"
            expected.add(path)
            if not path.is_file():
                jobs.append((path, name, seed, class_index, number, tuple(size)))
    for name in PHOTOS:
        for stale in (root / name).glob(f"{name}_*.jpg"):
            if stale not in expected and stale.stem[len(name) + 1 :].isdigit():
                stale.unlink()
        if name not in classes and (root / name).is_dir() and not any((root / name).iterdir()):
            (root / name).rmdir()
    if jobs and workers > 1:
        with Pool(workers) as pool:
            for _ in pool.imap_unordered(_phone_photo, jobs, chunksize=4):
                pass
    else:
        for job in jobs:
            _phone_photo(job)
    return root


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="data", help="where natural_photos writes its two splits")
    parser.add_argument("--phone-photos", metavar="OUT_DIR", help="write phone-style 4000x3000 JPEGs here instead")
    parser.add_argument("--n", type=int, default=1000, help="how many phone photos (default 1000)")
    parser.add_argument("--workers", type=int, default=2, help="processes for phone photos (default 2)")
    args = parser.parse_args()
    if args.phone_photos:
        print(phone_photos(args.phone_photos, n_images=args.n, workers=args.workers))
    else:
        train, test = natural_photos(args.out_dir)
        print(train, test)
