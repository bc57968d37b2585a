"""Datasets in: find the images, decode them once, split them, keep them as uint8 tensors."""

from ._augment import augment, mixup
from ._dataset import ImageDataset, load_dataset
from ._decode import decode, resize, to_rgb

__all__ = ["ImageDataset", "load_dataset", "decode", "resize", "to_rgb", "augment", "mixup"]
