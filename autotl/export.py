"""The exported model: safetensors weights + config.json (+ a TorchScript file), and loading it back.

A model directory holds everything needed to predict: the timm architecture and its
construction arguments, the class names, the preprocessing, the hyperparameters and
the validation metrics. Writing is atomic: a half-written directory never replaces a
good one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from .backbones import Preprocessing, fast_same_padding
from .data import decode, model_input, to_rgb
from .errors import ModelDirError

WEIGHTS, CONFIG, TORCHSCRIPT = "model.safetensors", "config.json", "model.torchscript.pt"


def save(result, model_dir: str | Path, *, extra: dict | None = None, torchscript: bool = True) -> Path:
    """Write a trial's best-epoch model to ``model_dir``, replacing what was there atomically."""
    model_dir = Path(model_dir)
    model = result.model.to("cpu").eval()
    pre = result.preprocessing
    config = dict(
        architecture=result.config.backbone, num_classes=len(result.classes), classes=list(result.classes),
        model_kwargs=dict(drop_rate=0.0),
        preprocessing=dict(size=pre.size, interpolation=pre.interpolation, mean=list(pre.mean), std=list(pre.std),
                           resize="shorter side to size, then centre crop"),
        hyperparameters=result.config.to_dict(), metrics=result.metrics, best_epoch=result.best_epoch,
        **(extra or {}))
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}.", dir=model_dir.parent))
    try:
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(staging / WEIGHTS))
        (staging / CONFIG).write_text(json.dumps(config, indent=2, default=str))
        if torchscript:
            example = torch.zeros(1, 3, pre.size, pre.size)
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.jit.save(torch.jit.trace(model, example), str(staging / TORCHSCRIPT))
        _replace_dir(staging, model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return model_dir


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` into ``target``'s place; if anything (a Ctrl-C) stops it halfway, the old folder is put back."""
    old = target.with_name(f".{target.name}.old.{os.getpid()}") if target.exists() else None
    try:
        if old is not None:
            os.replace(target, old)
        os.replace(new, target)
    except BaseException:
        if old is not None and old.exists() and not target.exists():
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class LoadedModel:
    """An exported model ready to predict: ``predict(images)`` gives class names."""

    def __init__(self, model: torch.nn.Module, classes: list[str], preprocessing: Preprocessing, config: dict):
        self.model = model.eval()
        self.classes = classes
        self.preprocessing = preprocessing
        self.config = config

    def pixels(self, images) -> torch.Tensor:
        """uint8 N x 3 x S x S tensor from paths, PIL images or HxWx3 uint8 arrays."""
        pre = self.preprocessing
        batch = []
        for image in images:
            if isinstance(image, (str, os.PathLike)):
                rgb = decode(image, pre.size)
            elif isinstance(image, Image.Image):
                rgb = to_rgb(image)
            else:
                rgb = np.asarray(image, dtype=np.uint8)
            batch.append(model_input(rgb, pre.size, pre.interpolation))
        return torch.stack(batch).contiguous()

    def predict_proba(self, images, batch_size: int = 64) -> np.ndarray:
        """Class probabilities, one row per image, columns in ``self.classes`` order."""
        out = []
        for start in range(0, len(images), batch_size):
            x = self.preprocessing.normalize(self.pixels(images[start:start + batch_size]))
            with torch.inference_mode():
                out.append(self.model(x).float().softmax(1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def predict(self, images) -> list[str]:
        """The most likely class name of each image."""
        return [self.classes[i] for i in self.predict_proba(images).argmax(1)]


def load_model(model_dir: str | Path) -> LoadedModel:
    """Load an exported model directory (as written by ``autotl search``)."""
    model_dir = Path(model_dir)
    for name in (CONFIG, WEIGHTS):
        if not (model_dir / name).is_file():
            raise ModelDirError(f"{model_dir} has no {name}: pass the best_model/ folder of a finished search")
    try:
        config = json.loads((model_dir / CONFIG).read_text())
        model = timm.create_model(config["architecture"], pretrained=False, num_classes=config["num_classes"],
                                  **config.get("model_kwargs", {}))
        model.load_state_dict(load_file(str(model_dir / WEIGHTS)))
        fast_same_padding(model)
        p = config["preprocessing"]
        pre = Preprocessing(size=p["size"], interpolation=p["interpolation"], mean=tuple(p["mean"]), std=tuple(p["std"]))
    except Exception as error:  # noqa: BLE001 - JSON, safetensors and timm each raise their own
        raise ModelDirError(f"{model_dir} is damaged ({error.__class__.__name__}: {str(error)[:120]}): rerun the "
                            f"search to export it again") from error
    return LoadedModel(model, config["classes"], pre, config)
