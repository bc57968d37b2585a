"""Datasets in: find the images, decode each once into an on-disk cache, split them, serve batches."""

from ._augment import augment, mixup
from ._dataset import ImageDataset, load_dataset
from ._decode import decode, model_input, resize, to_rgb, unreadable_because
from ._sources import printable

__all__ = [
    "ImageDataset",
    "load_dataset",
    "decode",
    "resize",
    "model_input",
    "to_rgb",
    "unreadable_because",
    "printable",
    "augment",
    "mixup",
]
