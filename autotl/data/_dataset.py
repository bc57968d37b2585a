"""The dataset: an index of labelled images (splits, labels) and their decoded-image cache.

Nothing in a process holds the decoded dataset: trials ask for batches of rows at their
resolution, read from the on-disk cache (``_store``) and resized as a batch.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DatasetError
from . import _decode
from ._sources import Sample, find_samples
from ._store import ImageStore, open_store

DEFAULT_IMAGE_SIZE = 224
MIN_VAL_PER_CLASS = 10  # validation images a class gets when its training images allow (a third at most)


@dataclass
class ImageDataset:
    """Labelled images split into train / val / test, their pixels in an on-disk cache.

    ``labels`` index into ``classes``; ``split_of`` says which split each image belongs
    to; ``rows`` is each image's row in ``store`` (squares of ``store.size`` px).
    """

    spec: str
    classes: list[str]
    labels: np.ndarray
    split_of: np.ndarray
    rows: np.ndarray
    store: ImageStore
    val_fraction: float
    seed: int
    skipped: list[str] = dataclasses.field(default_factory=list)
    max_per_class: int | None = None
    allow_outside_paths: bool = False
    train_splits: tuple = ("train",)  # the splits trained on: ("train", "val") for a refit

    def indices(self, split: str) -> np.ndarray:
        if split == "train":
            return np.flatnonzero(np.isin(self.split_of, self.train_splits))
        return np.flatnonzero(self.split_of == split)

    def with_validation_in_train(self) -> ImageDataset:
        """The same images, with the validation split also trained on (for a refit; val stays as it was)."""
        return dataclasses.replace(self, train_splits=("train", "val"))

    def count(self, split: str) -> int:
        return len(self.indices(split))

    def class_counts(self, split: str) -> np.ndarray:
        """How many images of each class ``split`` holds, in the order of ``classes``."""
        return np.bincount(self.labels[self.indices(split)], minlength=len(self.classes))

    def images(self, index, size: int, interpolation: str = "bicubic") -> torch.Tensor:
        """uint8 N x 3 x size x size images (``index``: positions in this dataset), read and resized as one batch."""
        pixels = torch.from_numpy(self.store.read(self.rows[np.asarray(index)])).permute(0, 3, 1, 2)
        return _decode.resize_batch(pixels, size, interpolation)

    def batches(self, index, size: int, interpolation: str = "bicubic", batch_size: int = 256):
        """(images, labels) batches of ``index`` in order, at ``size`` px; the labels as int64."""
        index = np.asarray(index)
        for start in range(0, len(index), batch_size):
            part = index[start : start + batch_size]
            yield self.images(part, size, interpolation), torch.from_numpy(self.labels[part].astype(np.int64))

    def pixels(self, i: int) -> np.ndarray:
        """Image ``i`` as kept in the cache (HxWx3 uint8), for thumbnails."""
        return self.store.read([self.rows[i]])[0]

    def describe(self) -> dict:
        """Plain facts about the dataset, as stored in the study and shown in the report."""
        return dict(
            path=self.spec,
            classes=list(self.classes),
            n_train=self.count("train"),
            n_val=self.count("val"),
            n_test=self.count("test"),
            val_fraction=self.val_fraction,
            seed=self.seed,
            skipped=len(self.skipped),
            max_per_class=self.max_per_class,
            allow_outside_paths=self.allow_outside_paths,
            image_size=self.store.size,
        )


def load_dataset(
    spec: str,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_per_class: int | None = None,
    allow_outside_paths: bool = False,
    image_size: int = DEFAULT_IMAGE_SIZE,
    cache_dir=None,
    progress: bool = False,
) -> ImageDataset:
    """Find, decode (once, into the cache) and split a dataset (a folder, a CSV file or ``builtin:NAME``).

    Images without a split go to train, and a stratified ``val_fraction`` of train
    becomes val when the dataset names no val split (at least MIN_VAL_PER_CLASS images
    of each class where a third of the class allows). ``max_per_class`` caps each
    class's images per split, for quick runs. A CSV's paths must stay inside its folder
    unless ``allow_outside_paths``. Images are cached as squares of ``image_size`` px
    (the largest any trial asks for; smaller images keep their size) under ``cache_dir``
    (default ``~/.cache/autotl/images``); ``progress`` shows a bar while decoding.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    samples = find_samples(spec, allow_outside_paths)
    if max_per_class is not None:
        samples = _cap(samples, max_per_class, seed)
    store = open_store(samples, image_size, cache_dir=cache_dir, progress=progress)
    kept_rows = np.array([i for i in range(len(samples)) if i not in store.failed], dtype=np.int64)
    kept = [samples[i] for i in kept_rows]
    skipped = [samples[i].name for i in sorted(store.failed)]
    if skipped:
        named = [f"{samples[i].name} ({store.failed[i]})" for i in sorted(store.failed)[:5]]
        shown = ", ".join(named) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
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
    return ImageDataset(
        spec=spec,
        classes=classes,
        labels=labels,
        split_of=split_of,
        rows=kept_rows,
        store=store,
        val_fraction=val_fraction,
        seed=seed,
        skipped=skipped,
        max_per_class=max_per_class,
        allow_outside_paths=allow_outside_paths,
    )


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


def _split_off_val(
    labels: np.ndarray, split_of: np.ndarray, val_fraction: float, seed: int, classes: list[str]
) -> np.ndarray:
    train = np.flatnonzero(split_of == "train")
    counts = Counter(labels[train])
    if min(counts.values()) < 2:
        rare = [c for c, n in counts.items() if n < 2]
        raise DatasetError(
            f"class {classes[rare[0]]!r} has fewer than 2 training images, too few to hold one out for "
            f"validation: add images or give a val/ folder"
        )
    from sklearn.model_selection import train_test_split  # here, not at the top: loading a model never splits

    n_val = max(len(counts), round(len(train) * val_fraction))
    _, val = train_test_split(train, test_size=n_val, stratify=labels[train], random_state=seed)
    split_of = split_of.copy()
    split_of[val] = "val"
    split_of[_more_of_small_classes(labels, split_of, seed)] = "val"
    return split_of


def _more_of_small_classes(labels: np.ndarray, split_of: np.ndarray, seed: int) -> np.ndarray:
    """Training images that move to validation so that each class has MIN_VAL_PER_CLASS there, where a third of
    the class allows and no more than the largest class holds there: a stratified split of an imbalanced dataset
    holds out 4 images of a 20-image class, too few to tell whether the model ever predicts it. A balanced
    dataset (every class as many validation images as the largest holds) keeps its split as it was."""
    rng, moved = np.random.default_rng(seed), []
    classes = np.unique(labels[split_of != "test"])
    held = {c: int(np.sum((split_of == "val") & (labels == c))) for c in classes}
    most = max(held.values())
    for c in classes:
        train = np.flatnonzero((split_of == "train") & (labels == c))
        wanted = min(MIN_VAL_PER_CLASS, (len(train) + held[c]) // 3, most) - held[c]
        if wanted > 0:
            moved.append(rng.choice(train, size=wanted, replace=False))
    return np.concatenate(moved) if moved else np.array([], dtype=int)
