"""The decoded dataset: every image decoded once, split, and kept as uint8 tensors.

Trials ask for a split at a resolution; the resized uint8 tensor is made once per
(split, resolution, interpolation) and reused by every epoch and every trial.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from ..errors import DatasetError
from . import _decode
from ._sources import Sample, find_samples


@dataclass
class ImageDataset:
    """Decoded images with integer labels, split into train / val / test.

    ``pixels`` holds each image at its original size (HxWx3 uint8); ``labels`` index
    into ``classes``; ``split_of`` says which split each image belongs to.
    """

    spec: str
    classes: list[str]
    pixels: list[np.ndarray]
    labels: np.ndarray
    split_of: np.ndarray
    val_fraction: float
    seed: int
    skipped: list[str] = field(default_factory=list)
    max_per_class: int | None = None
    allow_outside_paths: bool = False
    train_splits: tuple = ("train",)  # the splits trained on: ("train", "val") for a refit
    _cache: dict = field(default_factory=dict, repr=False)

    def indices(self, split: str) -> np.ndarray:
        if split == "train":
            return np.flatnonzero(np.isin(self.split_of, self.train_splits))
        return np.flatnonzero(self.split_of == split)

    def with_validation_in_train(self) -> "ImageDataset":
        """The same images, with the validation split also trained on (for a refit; val stays as it was)."""
        return dataclasses.replace(self, train_splits=("train", "val"), _cache={})

    def count(self, split: str) -> int:
        return len(self.indices(split))

    def tensors(self, split: str, size: int, interpolation: str = "bicubic") -> tuple[torch.Tensor, torch.Tensor]:
        """(images uint8 N x 3 x size x size, labels int64 N) for a split, made once and cached."""
        key = (split, size, interpolation)
        if key not in self._cache:
            idx = self.indices(split)
            images = np.empty((len(idx), size, size, 3), dtype=np.uint8)
            for row, i in enumerate(idx):
                images[row] = _decode.resize(self.pixels[i], size, interpolation)
            self._cache[key] = (torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                                torch.from_numpy(self.labels[idx].astype(np.int64)))
        return self._cache[key]

    def describe(self) -> dict:
        """Plain facts about the dataset, as stored in the study and shown in the report."""
        return dict(path=self.spec, classes=list(self.classes), n_train=self.count("train"),
                    n_val=self.count("val"), n_test=self.count("test"),
                    val_fraction=self.val_fraction, seed=self.seed, skipped=len(self.skipped),
                    max_per_class=self.max_per_class, allow_outside_paths=self.allow_outside_paths)


def load_dataset(spec: str, *, val_fraction: float = 0.2, seed: int = 0,
                 max_per_class: int | None = None, allow_outside_paths: bool = False) -> ImageDataset:
    """Find, decode and split a dataset (a folder, a CSV file or ``builtin:digits``).

    Images without a split go to train, and a stratified ``val_fraction`` of train
    becomes val when the dataset names no val split. ``max_per_class`` caps each
    class's images per split, for quick runs. A CSV's paths must stay inside its folder
    unless ``allow_outside_paths``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    samples = find_samples(spec, allow_outside_paths)
    if max_per_class is not None:
        samples = _cap(samples, max_per_class, seed)
    pixels, kept, skipped = _decode_all(samples)
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        warnings.warn(f"skipped {len(skipped)} unreadable file(s): {shown}", stacklevel=2)
    if not kept:
        raise DatasetError(f"no readable images in {spec}: supported are JPEG, PNG, BMP, GIF, TIFF, WebP and the like")
    classes = sorted({s.label for s in samples})
    readable = {s.label for s in kept}
    empty = [c for c in classes if c not in readable]
    if empty:
        raise DatasetError(f"class {empty[0]!r} has no readable image: add images to it or remove it")
    if len(classes) < 2:
        raise DatasetError(f"only one class ({classes[0]!r}) in {spec}: a classifier needs at least two class folders")
    labels = np.array([classes.index(s.label) for s in kept])
    split_of = np.array([s.split or "train" for s in kept], dtype=object)
    if not (split_of == "val").any():
        split_of = _split_off_val(labels, split_of, val_fraction, seed, classes)
    return ImageDataset(spec=spec, classes=classes, pixels=pixels, labels=labels, split_of=split_of,
                        val_fraction=val_fraction, seed=seed, skipped=skipped, max_per_class=max_per_class,
                        allow_outside_paths=allow_outside_paths)


def _cap(samples: list[Sample], max_per_class: int, seed: int) -> list[Sample]:
    order = np.random.default_rng(seed).permutation(len(samples))
    seen: Counter = Counter()
    kept = []
    for i in order:
        key = (samples[i].label, samples[i].split)
        if seen[key] < max_per_class:
            seen[key] += 1
            kept.append(i)
    return [samples[i] for i in sorted(kept)]


def _decode_one(sample: Sample):
    if sample.pixels is not None:
        return sample.pixels
    try:
        return _decode.decode(sample.path)
    except (OSError, ValueError, SyntaxError):
        return None


def _decode_all(samples: list[Sample]):
    with ThreadPoolExecutor(max_workers=4) as pool:
        decoded = list(pool.map(_decode_one, samples, chunksize=32))
    kept = [s for s, p in zip(samples, decoded) if p is not None]
    skipped = [s.name for s, p in zip(samples, decoded) if p is None]
    return [p for p in decoded if p is not None], kept, skipped


def _split_off_val(labels: np.ndarray, split_of: np.ndarray, val_fraction: float, seed: int,
                    classes: list[str]) -> np.ndarray:
    train = np.flatnonzero(split_of == "train")
    counts = Counter(labels[train])
    if min(counts.values()) < 2:
        rare = [c for c, n in counts.items() if n < 2]
        raise DatasetError(f"class {classes[rare[0]]!r} has fewer than 2 training images, too few to hold one out for "
                           f"validation: add images or give a val/ folder")
    n_val = max(len(counts), round(len(train) * val_fraction))
    _, val = train_test_split(train, test_size=n_val, stratify=labels[train], random_state=seed)
    split_of = split_of.copy()
    split_of[val] = "val"
    return split_of
