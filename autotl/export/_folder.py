"""The exported model folder: timm's own format (``model.safetensors`` + a Hub ``config.json``).

``config.json`` is what ``timm.models.save_config_for_hf`` writes, so
``timm.create_model("local-dir:DIR", pretrained=True)`` rebuilds the model and timm's data
pipeline finds its preprocessing; autotl's own record (recipe, metrics, trial) sits under
the one key ``"autotl"``. Folders written before that (autotl's first schema) still load.
Writing is atomic: a half-written folder never replaces a good one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from timm.models import save_for_hf

from .. import backbones
from ..backbones import Preprocessing
from ..errors import ModelDirError
from ._card import write_card

WEIGHTS, CONFIG, ONNX, CARD = "model.safetensors", "config.json", "model.onnx", "README.md"
RECORD = "autotl"  # the config.json key that holds autotl's own record
ENSEMBLE = "ensemble"  # the key of that record that makes a folder an ensemble of model folders
CROP = dict(crop_pct=1.0, crop_mode="center")  # autotl resizes the shorter side to the input size, then centre-crops


@dataclass
class ModelConfig:
    """What a model folder says, whichever schema wrote it."""

    architecture: str
    classes: list[str]
    model_args: dict
    preprocessing: Preprocessing
    record: dict  # autotl's record: hyperparameters, metrics, best_report, trial, value, dataset, ...


def save(result, model_dir: str | Path, *, extra: dict | None = None) -> Path:
    """Write a trial's model to ``model_dir`` as a timm model folder, replacing what was there atomically."""
    model_dir = Path(model_dir)
    model = result.model.to("cpu").eval()
    pre = result.preprocessing
    record = dict(
        format=2,
        hyperparameters=result.config.to_dict(),
        metrics=result.metrics,
        best_report=result.record.best_report,
        **(extra or {}),
    )
    with staged(model_dir) as staging:
        save_for_hf(
            model,
            str(staging),
            model_config=dict(label_names=list(result.classes)),
            model_args=dict(img_size=pre.size) if backbones.fixed_input_size(model) else None,
            safe_serialization=True,
            data_config=dict(
                input_size=(3, pre.size, pre.size),
                interpolation=pre.interpolation,
                mean=tuple(pre.mean),
                std=tuple(pre.std),
                **CROP,
            ),
        )
        config = json.loads((staging / CONFIG).read_text())
        config[RECORD] = record
        write_config(staging, config)
    return model_dir


@contextlib.contextmanager
def staged(model_dir: Path):
    """A temporary folder beside ``model_dir`` to write into; it replaces ``model_dir`` atomically when the block
    ends, and is deleted if the block fails."""
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}.", dir=model_dir.parent))
    try:
        yield staging
        _replace_dir(staging, model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_config(folder: Path, config: dict) -> None:
    """Write ``config.json`` and the model card that it describes."""
    (folder / CONFIG).write_text(json.dumps(config, indent=2, default=str))
    write_card(folder, read_config(folder))


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


def read_config(model_dir: str | Path) -> ModelConfig:
    """The folder's config.json, in either schema; ModelDirError when it is missing or unreadable."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirError(
            f"model folder {model_dir} does not exist: pass the best_model/ folder of a finished search"
        )
    if not (model_dir / CONFIG).is_file():
        raise ModelDirError(f"{model_dir} has no {CONFIG}: pass the best_model/ folder of a finished search")
    try:
        config = json.loads((model_dir / CONFIG).read_text())
        if not (model_dir / WEIGHTS).is_file() and ENSEMBLE not in config.get(RECORD, {}):
            raise ModelDirError(f"{model_dir} has no {WEIGHTS}: pass the best_model/ folder of a finished search")
        return _timm_schema(config) if RECORD in config else _first_schema(config)
    except (ValueError, KeyError, TypeError, IndexError) as error:
        raise ModelDirError(
            f"{model_dir}/{CONFIG} is damaged ({error.__class__.__name__}: {str(error)[:120]}): "
            f"rerun the search to export it again"
        ) from error


def _timm_schema(config: dict) -> ModelConfig:
    cfg = config["pretrained_cfg"]
    pre = Preprocessing(
        size=int(cfg["input_size"][-1]),
        interpolation=cfg["interpolation"],
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
    )
    args = {k: v for k, v in config.get("model_args", {}).items() if k != "num_classes"}
    return ModelConfig(config["architecture"], list(config["label_names"]), args, pre, config[RECORD])


def _first_schema(config: dict) -> ModelConfig:
    """autotl's first config.json: preprocessing and classes at the top level, next to the record."""
    p = config["preprocessing"]
    pre = Preprocessing(size=p["size"], interpolation=p["interpolation"], mean=tuple(p["mean"]), std=tuple(p["std"]))
    return ModelConfig(
        config["architecture"], list(config["classes"]), dict(config.get("model_kwargs", {})), pre, config
    )


def record(model_dir: str | Path) -> dict:
    """autotl's record of the model in ``model_dir``; {} when there is none or it is unreadable."""
    try:
        return read_config(model_dir).record
    except ModelDirError:
        return {}


def plain_model(model_dir: str | Path, config: ModelConfig | None = None) -> torch.nn.Module:
    """The folder's model as plain timm builds it (no autotl changes), weights loaded, in eval mode; an ensemble
    folder's members so, averaged (``_ensemble``)."""
    import timm
    from safetensors.torch import load_file

    config = config or read_config(model_dir)
    if ENSEMBLE in config.record:
        from ._ensemble import ensemble_model

        return ensemble_model(model_dir, config)
    model = timm.create_model(
        config.architecture, pretrained=False, num_classes=len(config.classes), **config.model_args
    )
    model.load_state_dict(load_file(str(Path(model_dir) / WEIGHTS)))
    return model.eval()
