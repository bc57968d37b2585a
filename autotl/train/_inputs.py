"""What the trainable part of a network takes, for any images of the dataset.

Raw images (read from the cache at the run's resolution) or, when the frozen prefix is a
fixed function of the image (no augmentation, no mixup), the prefix's outputs, computed
once per image and cached across reports, runs and trials.
"""

from __future__ import annotations

import functools
import hashlib
import math

import numpy as np
import torch

from ..data import ImageDataset
from ._device import autocast, channels_last
from ._prefix import FEATURES, Features, split

VAL_CHECK_IMAGES = 1000  # intermediate reports score this many validation images (stratified) when there are more
EVAL_BATCH = 256


def validation_check(dataset: ImageDataset, size: int | None = None) -> np.ndarray:
    """The validation images scored at each report: all of them, or a fixed stratified ``size`` of them."""
    size = size or VAL_CHECK_IMAGES
    val = dataset.indices("val")
    if len(val) <= size:
        return val
    from sklearn.model_selection import train_test_split  # here, not at the top: predicting never needs it

    labels = dataset.labels[val]
    try:
        part, _ = train_test_split(val, train_size=size, stratify=labels, random_state=dataset.seed)
    except ValueError:  # a class with a single validation image cannot be stratified
        part = np.random.default_rng(dataset.seed).choice(val, size=size, replace=False)
    return np.sort(part)


class Inputs:
    """Images, or the frozen prefix's cached outputs, for positions of the training and validation splits."""

    def __init__(self, dataset, pre, device):
        self.dataset, self.pre, self.device = dataset, pre, device
        self.features = {}  # split -> (Features, dataset positions of its rows), when the prefix is cached
        self.prefix = None
        self.after_prefix = None  # the network that takes the prefix's outputs (None: nothing is cached)

    @property
    def cached(self) -> bool:
        """The training images' prefix outputs are cached (the network trains on them)."""
        return "train" in self.features

    def scoring(self, network):
        """The network that scores the validation images: the rest after the prefix when their outputs are cached."""
        return self.after_prefix if "val" in self.features else network

    @property
    def feature_seconds(self) -> float:
        """Seconds the prefix has spent on the training images' features (shared by runs that share them)."""
        return self.seconds_on("train")

    def seconds_on(self, split: str) -> float:
        """Seconds the prefix has spent on ``split``'s features (0 when they are not cached)."""
        return self.features[split][0].seconds if split in self.features else 0.0

    def images(self, index) -> torch.Tensor:
        """uint8 images of ``index`` (dataset positions) on the device."""
        x = self.dataset.images(index, self.pre.size, self.pre.interpolation)
        if self.device.type == "cuda":
            x = x.pin_memory()
        return x.to(self.device, non_blocking=True)

    def eval_input(self, index) -> torch.Tensor:
        return channels_last(self.pre.normalize(self.images(index)))

    def cached_rows(self, split: str, rows: torch.Tensor) -> torch.Tensor:
        """Prefix outputs of ``rows`` (positions in ``split``'s index), computing those not yet cached."""
        store, index = self.features[split]

        def compute(missing):
            with torch.no_grad(), autocast(self.device):
                return self.prefix(self.eval_input(index[missing.numpy()]))

        return store.get(rows, compute)

    def batches(self, split: str, index, positions=None):
        """(inputs, labels) of ``index`` (dataset positions) in evaluation form; ``positions`` in the split's rows."""
        for start in range(0, len(index), EVAL_BATCH):
            part = index[start : start + EVAL_BATCH]
            labels = torch.from_numpy(self.dataset.labels[part].astype(np.int64))
            if split in self.features:
                rows = torch.from_numpy(np.asarray(positions[start : start + EVAL_BATCH], dtype=np.int64))
                yield channels_last(self.cached_rows(split, rows)), labels
            else:
                yield self.eval_input(part), labels


def split_prefix(model, dataset, pre, device, config, cache_key: tuple, train_index, val_index):
    """(network to train, Inputs, 'hit'/'miss'/'off'): the frozen prefix cut off when its outputs can be cached.

    ``cache_key`` names the pretrained weights (backbone, weights folder, pretrained); None turns caching off.
    With augmentation or mixup the training images differ every step and the whole model trains ('off'), but the
    validation images do not: their prefix outputs are still cached, so each check runs only the rest of the
    network (``Inputs.after_prefix``).
    """
    inputs = Inputs(dataset, pre, device)
    if cache_key is None:
        return model, inputs, "off"
    example = inputs.eval_input(train_index[:2])
    parts = split(model, example)
    if parts is None:
        return model, inputs, "off"
    prefix, network = parts
    with torch.no_grad():
        shape = tuple(prefix.eval()(example).shape[1:])
    fixed = config.augment_strength == 0 and config.regularizer != "mixup"  # the training inputs are fixed too
    splits = ([("train", train_index)] if fixed else []) + [("val", val_index)]
    if not FEATURES.fits(4 * math.prod(shape) * sum(len(index) for _, index in splits)):
        return model, inputs, "off"  # too large to keep: the frozen prefix runs every step (without a graph)
    key = cache_key + (len(prefix), pre.size, pre.interpolation, str(device), dataset.spec, str(dataset.store.folder))
    hits = FEATURES.hits
    inputs.prefix, inputs.after_prefix = prefix.eval(), network
    for name, index in splits:
        images = hashlib.blake2b(np.asarray(index, dtype=np.int64).tobytes(), digest_size=16).hexdigest()
        store = FEATURES.get(key + (name, images), functools.partial(Features, len(index), shape, device))
        inputs.features[name] = (store, index)
    if not fixed:
        return model, inputs, "off"
    return network, inputs, ("hit" if FEATURES.hits > hits and inputs.features["train"][0].done.all() else "miss")
