"""Turn any image file into RGB uint8 pixels, and resize them the way the model expects.

Decoding and resizing live here alone so that training, evaluation and an exported
model's ``predict`` see the same pixels: an image is first made a square of at most the
size it is needed at (its shorter side, if smaller), then batches are resized to each
trial's resolution with ``resize_batch``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms import InterpolationMode

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")  # any other name is taken as bicubic


def to_rgb(image: Image.Image) -> np.ndarray:
    """An HxWx3 uint8 array from a PIL image of any mode, EXIF orientation applied.

    16- and 32-bit greyscale is scaled to 8 bits (not clipped); transparency is laid
    over white; palette, CMYK, LA and the rest go through PIL's own conversion.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        grey = np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def decode(path, size: int | None = None) -> np.ndarray:
    """Read one image file into RGB uint8; raises if it is not an image (or too large to decode safely).

    With ``size``, a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) whose
    shorter side still covers ``size``: several times faster than a full decode, and the
    full-size pixels never exist.
    """
    with Image.open(path) as image:
        if size is not None:
            width, height = image.size
            scale = size / max(1, min(width, height))
            if scale < 1:
                image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
        image.load()
        return to_rgb(image)


def side(path) -> int:
    """An image file's shorter side in pixels, read from its header alone."""
    with Image.open(path) as image:
        return min(image.size)


def _mode(interpolation: str) -> InterpolationMode:
    return InterpolationMode(interpolation if interpolation in _INTERPOLATIONS else "bicubic")


def resize(pixels: np.ndarray, size: int, interpolation: str = "bicubic") -> np.ndarray:
    """Resize the shorter side to ``size`` and centre-crop a ``size`` x ``size`` square.

    torchvision's ``Resize(size)`` + ``CenterCrop(size)`` on the PIL image: the eval transform
    timm builds from an exported model's config, so the two give the same pixels.
    """
    if pixels.shape[0] == pixels.shape[1] == size:
        return pixels
    image = TF.resize(Image.fromarray(pixels), size, _mode(interpolation))
    return np.asarray(TF.center_crop(image, size), dtype=np.uint8)


def resize_batch(images: torch.Tensor, size: int, interpolation: str = "bicubic") -> torch.Tensor:
    """uint8 N x 3 x S x S squares -> uint8 N x 3 x size x size.

    Shrinking resizes the whole batch at once, as a tensor (antialiased; bilinear or bicubic,
    the modes torchvision's tensor resize antialiases). Enlarging (images smaller than the
    model's input) goes image by image through ``resize``, timm's transform on PIL, so that
    an exported model given a small image through timm sees the pixels it trained on.
    """
    if images.shape[-1] == size:
        return images
    if size > images.shape[-1]:
        enlarged = [resize(row, size, interpolation) for row in images.permute(0, 2, 3, 1).numpy()]
        return torch.from_numpy(np.stack(enlarged)).permute(0, 3, 1, 2).contiguous()
    mode = InterpolationMode(interpolation) if interpolation in ("bilinear", "bicubic") else InterpolationMode.BICUBIC
    return TF.resize(images, [size, size], mode, antialias=True)


def square(pixels: np.ndarray, size: int, interpolation: str = "bicubic") -> np.ndarray:
    """The square an image is kept as: ``size`` px, or its shorter side when that is smaller (never upscaled)."""
    return resize(pixels, min(size, min(pixels.shape[:2])), interpolation)


def model_input(pixels: np.ndarray, size: int, interpolation: str = "bicubic") -> torch.Tensor:
    """One image (HxWx3 uint8) as a model sees it: uint8 3 x size x size, made the way training made it."""
    kept = torch.from_numpy(np.array(square(pixels, size, interpolation))).permute(2, 0, 1)
    return resize_batch(kept[None], size, interpolation)[0]


def unreadable_because(error: Exception) -> str:
    """Why a file could not be used, in a few words."""
    if isinstance(error, Image.DecompressionBombError):
        return "too large to decode safely (a decompression bomb?)"
    if isinstance(error, UnidentifiedImageError):
        return "not an image format PIL can read"
    text = str(error).splitlines()[0] if str(error) else error.__class__.__name__
    return text[:80]
