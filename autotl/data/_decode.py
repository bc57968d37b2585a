"""Turn any image file into RGB uint8 pixels, and resize them the way the model expects.

Decoding and resizing live here alone so that training, evaluation and an exported
model's ``predict`` see exactly the same pixels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

_INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


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


def decode(path) -> np.ndarray:
    """Read one image file into RGB uint8; raises OSError/ValueError if it is not an image."""
    with Image.open(path) as image:
        image.load()
        return to_rgb(image)


def resize(pixels: np.ndarray, size: int, interpolation: str = "bicubic") -> np.ndarray:
    """Resize the shorter side to ``size`` and centre-crop to a ``size`` x ``size`` square."""
    height, width = pixels.shape[:2]
    if (height, width) == (size, size):
        return pixels
    scale = size / min(height, width)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = Image.fromarray(pixels).resize((new_w, new_h), _INTERPOLATION.get(interpolation, Image.Resampling.BICUBIC))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)
