"""Find the labelled images a user points at: class folders, split folders, a CSV, a built-in.

Each source yields ``Sample`` records (where the pixels come from, the class name and an
optional split); decoding happens later, once, in ``_dataset``.
"""

from __future__ import annotations

import csv
import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError

SPLITS = ("train", "val", "test")
FASHION_MNIST_DIR = Path(os.environ.get("AUTOTL_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


@dataclass(frozen=True)
class Sample:
    """One labelled image: a file path, or pixels already in memory (built-in datasets)."""

    label: str
    split: str | None = None
    path: Path | None = None
    pixels: np.ndarray | None = None

    @property
    def name(self) -> str:
        return printable(self.path) if self.path is not None else f"<{self.label}>"


def printable(name) -> str:
    """A file or class name as text that any stream, JSON, HTML or Markdown takes: bytes that are not valid UTF-8
    (names made on other systems reach Python as surrogate escapes, as os.fsdecode gives them) become ``\\xNN``."""
    return str(name).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def find_samples(spec: str, allow_outside_paths: bool = False) -> list[Sample]:
    """Samples for a dataset spec: a folder, a ``.csv`` file, or ``builtin:NAME``.

    A CSV's paths must stay inside the CSV's folder unless ``allow_outside_paths``.
    """
    if spec.startswith("builtin:"):
        return _builtin(spec.split(":", 1)[1])
    path = Path(spec).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset path {spec!r} does not exist: pass an image folder, a CSV file or builtin:digits")
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return _csv(path, allow_outside_paths)
        raise DatasetError(f"dataset {spec!r} is a file, but a folder of class subfolders (or a .csv file) is expected")
    subdirs = {p.name for p in path.iterdir() if p.is_dir()}
    if "train" in subdirs:
        samples = []
        for split in SPLITS:
            if split in subdirs:
                samples += _class_folders(path / split, split)
        return samples
    return _class_folders(path, None)


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _class_folders(root: Path, split: str | None) -> list[Sample]:
    classes = [p for p in _visible(root) if p.is_dir()]
    if not classes:
        raise DatasetError(f"no class folders in {root}: put each class's images in a subfolder named after the class")
    samples = []
    for folder in classes:
        files = [p for p in _visible(folder) if p.is_file()]
        if not files:
            raise DatasetError(f"class folder {folder} holds no images: add images or remove the folder")
        samples += [Sample(label=printable(folder.name), split=split, path=p) for p in files]
    return samples


def _csv(path: Path, allow_outside_paths: bool = False) -> list[Sample]:
    # surrogateescape: a path that is not valid UTF-8 (as ``autotl predict`` writes one) names its file's bytes
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in ("path", "label") if c not in columns]
        if missing:
            raise DatasetError(
                f"CSV {path} lacks the column(s) {', '.join(missing)}: "
                f"its header must name path,label (and optionally split); it has {columns}"
            )
        reader.fieldnames = columns
        samples = []
        for line, row in enumerate(reader, start=2):
            file = path.parent / row["path"].strip()
            if not allow_outside_paths and not file.resolve().is_relative_to(path.parent.resolve()):
                raise DatasetError(
                    f"CSV {path} line {line} names {row['path']!r}, outside the CSV's folder: move the "
                    f"images under it, or pass --allow-outside-paths if you trust this CSV"
                )
            if not file.is_file():
                raise DatasetError(
                    f"CSV {path} line {line} names {row['path']!r}, which is not a file "
                    f"(paths are relative to the CSV's folder)"
                )
            split = (row.get("split") or "").strip().lower() or None
            if split is not None and split not in SPLITS:
                raise DatasetError(f"CSV {path} line {line} has split {split!r}: use train, val or test")
            samples.append(Sample(label=printable(row["label"].strip()), split=split, path=file))
    if not samples:
        raise DatasetError(f"CSV {path} has no rows: add one row per image (path,label)")
    return samples


def _builtin(name: str) -> list[Sample]:
    if name == "digits":
        return _digits()
    if name == "fashion-mnist":
        return _fashion_mnist()
    raise DatasetError(f"unknown built-in dataset {name!r}: use builtin:digits or builtin:fashion-mnist")


def _digits() -> list[Sample]:
    """scikit-learn's 1,797 8x8 digits; a fixed stratified quarter is the test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    index = np.arange(len(pixels))
    _, test = train_test_split(index, test_size=0.25, stratify=digits.target, random_state=0)
    is_test = np.zeros(len(pixels), bool)
    is_test[test] = True
    return [
        Sample(
            label=str(t), split="test" if is_test[i] else "train", pixels=np.repeat(pixels[i][:, :, None], 3, axis=2)
        )
        for i, t in enumerate(digits.target)
    ]


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _fashion_mnist() -> list[Sample]:
    """Fashion-MNIST from Debian's dataset-fashion-mnist files (train and t10k as test)."""
    samples = []
    for prefix, split in (("train", "train"), ("t10k", "test")):
        files = {}
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            found = [FASHION_MNIST_DIR / f"{prefix}-{kind}{ext}" for ext in (".gz", "")]
            found = [p for p in found if p.is_file()]
            if not found:
                raise DatasetError(
                    f"Fashion-MNIST files are not in {FASHION_MNIST_DIR}: install them with "
                    f"'apt-get install dataset-fashion-mnist' (or set AUTOTL_FASHION_MNIST_DIR)"
                )
            files[kind] = found[0]
        images, labels = _read_idx(files["images-idx3-ubyte"]), _read_idx(files["labels-idx1-ubyte"])
        samples += [
            Sample(label=FASHION_MNIST_CLASSES[y], split=split, pixels=np.repeat(img[:, :, None], 3, axis=2))
            for img, y in zip(images, labels)
        ]
    return samples
