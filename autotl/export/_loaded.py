"""An exported model loaded to predict, through PyTorch or ONNX Runtime."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..backbones import fast_same_padding
from ..data import decode, model_input, to_rgb, unreadable_because
from ..errors import AutoTLError, ModelDirError
from ._folder import ONNX, ModelConfig, plain_model, read_config
from ._onnx import INPUT, session

RUNTIMES = ("torch", "onnx")
DECODE_THREADS = max(2, min(8, os.cpu_count() or 1))


class LoadedModel:
    """An exported model ready to predict: ``predict(images)`` gives class names."""

    def __init__(self, config: ModelConfig, model: torch.nn.Module | None = None, onnx_session=None):
        self.classes = config.classes
        self.preprocessing = config.preprocessing
        self.config = config.record
        self.model = model
        self.session = onnx_session
        self.runtime = "onnx" if onnx_session is not None else "torch"

    def pixels(self, images) -> torch.Tensor:
        """uint8 N x 3 x S x S tensor from paths, PIL images or HxWx3 uint8 arrays (files decoded in threads)."""
        images = list(images)
        with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
            return (
                torch.stack(list(pool.map(self.one_image, images)))
                if images
                else torch.zeros(0, 3, self.preprocessing.size, self.preprocessing.size, dtype=torch.uint8)
            )

    def one_image(self, image) -> torch.Tensor:
        """One image as the model takes it; AutoTLError naming the file when it cannot be read."""
        pre = self.preprocessing
        if isinstance(image, (str, os.PathLike)):
            try:
                rgb = decode(image, pre.size)
            except Exception as error:  # noqa: BLE001 - PIL raises many kinds; the reason is named
                raise AutoTLError(f"{image} cannot be read as an image ({unreadable_because(error)})") from error
        elif isinstance(image, Image.Image):
            rgb = to_rgb(image)
        else:
            rgb = np.asarray(image, dtype=np.uint8)
        return model_input(rgb, pre.size, pre.interpolation)

    def logits(self, pixels: torch.Tensor) -> np.ndarray:
        """The model's outputs for uint8 N x 3 x S x S pixels."""
        x = self.preprocessing.normalize(pixels)
        if self.session is not None:
            return self.session.run(None, {INPUT: x.numpy()})[0]
        with torch.inference_mode():
            return self.model(x).float().numpy()

    def probabilities(self, pixels: torch.Tensor) -> np.ndarray:
        """Class probabilities for uint8 N x 3 x S x S pixels, columns in ``self.classes`` order."""
        return torch.from_numpy(self.logits(pixels)).softmax(1).numpy()

    def predict_proba(self, images, batch_size: int = 64) -> np.ndarray:
        """Class probabilities, one row per image, columns in ``self.classes`` order."""
        out = [
            self.probabilities(self.pixels(images[start : start + batch_size]))
            for start in range(0, len(images), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def predict(self, images) -> list[str]:
        """The most likely class name of each image."""
        return [self.classes[i] for i in self.predict_proba(images).argmax(1)]


def load_model(model_dir: str | Path, *, runtime: str = "torch") -> LoadedModel:
    """Load an exported model folder (as written by ``autotl search``) to predict with PyTorch or ONNX Runtime."""
    model_dir = Path(model_dir)
    if runtime not in RUNTIMES:
        raise AutoTLError(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
    config = read_config(model_dir)
    if runtime == "onnx":
        if not (model_dir / ONNX).is_file():
            raise ModelDirError(
                f"{model_dir} has no {ONNX} (written by an earlier autotl, or the model did not "
                f"export): use --runtime torch, or export it again with autotl export"
            )
        return LoadedModel(config, onnx_session=session(model_dir / ONNX))
    try:
        model = fast_same_padding(plain_model(model_dir, config))
    except Exception as error:  # noqa: BLE001 - safetensors and timm each raise their own
        raise ModelDirError(
            f"{model_dir} is damaged ({error.__class__.__name__}: {str(error)[:120]}): rerun the "
            f"search to export it again"
        ) from error
    return LoadedModel(config, model=model)
