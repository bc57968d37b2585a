"""``model.onnx`` in an exported folder: written from the folder's own weights, checked in ONNX Runtime.

The exporter is PyTorch's current one (``torch.onnx.export(dynamo=True)``); the batch axis is
dynamic. The export is checked once, right after it is written, against PyTorch's
probabilities on a few validation images, and the check is recorded in config.json.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ._card import write_card
from ._folder import CONFIG, ONNX, RECORD, plain_model, read_config

INPUT, OUTPUT = "pixels", "logits"
TOLERANCE = 1e-4  # largest probability difference from PyTorch that the check accepts


def add_onnx(model_dir: str | Path, images: torch.Tensor) -> dict:
    """Write ``model_dir/model.onnx`` (unless there is one) and check it on ``images`` (uint8 N x 3 x S x S).

    Returns the check's record. A model that does not export gets a warning and no
    ``model.onnx``; the folder is otherwise unchanged.
    """
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    if (model_dir / ONNX).is_file() and config.record.get("onnx"):
        return config.record["onnx"]
    if config.record.get("format") != 2:
        warnings.warn(
            f"no model.onnx: {model_dir} was written by an earlier autotl; export it again "
            f"(autotl export RUN_DIR --trial N) for a folder with model.onnx",
            stacklevel=2,
        )
        return {}
    model, pre = plain_model(model_dir, config), config.preprocessing
    x = pre.normalize(images)
    staging = model_dir / f".{ONNX}.{os.getpid()}"
    try:
        check = _written_and_checked(model, x, staging)
        if check:
            os.replace(staging, model_dir / ONNX)
            _record(model_dir, check)
        return check
    finally:
        staging.unlink(missing_ok=True)  # a failed check, or a Ctrl-C during the export, leaves nothing behind


def _written_and_checked(model: torch.nn.Module, x: torch.Tensor, path: Path) -> dict:
    """Export to ``path``, compare ONNX Runtime's probabilities with PyTorch's on ``x``; {} (and a warning) if not."""
    try:
        _export(model, x, path)
        got = torch.from_numpy(session(path).run(None, {INPUT: x.numpy()})[0]).softmax(1).numpy()
    except Exception as error:  # noqa: BLE001 - the exporter and the runtime raise many kinds
        warnings.warn(
            f"no model.onnx: {model.__class__.__name__} did not export to ONNX ({str(error)[:160]}); "
            f"the safetensors model is unaffected",
            stacklevel=3,
        )
        return {}
    with torch.inference_mode():
        expected = model(x).float().softmax(1).numpy()
    check = dict(
        checked_images=len(x),
        max_probability_difference=float(f"{np.abs(got - expected).max():.3g}"),
        runtime="onnxruntime",
        input=INPUT,
        output=OUTPUT,
    )
    if check["max_probability_difference"] > TOLERANCE:
        warnings.warn(
            f"no model.onnx: ONNX Runtime's probabilities differ from PyTorch's by "
            f"{check['max_probability_difference']} (more than {TOLERANCE})",
            stacklevel=3,
        )
        return {}
    return check


def _export(model: torch.nn.Module, x: torch.Tensor, path: Path) -> None:
    """Export with a dynamic batch axis; the exporter's own chatter is kept off the user's terminal."""
    example = x[:2] if len(x) >= 2 else torch.cat([x, x])  # a batch of one would fix the batch axis at 1
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            None,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )
        program.save(str(path), external_data=False)


def session(path: str | Path):
    """An ONNX Runtime session on the CPU for ``path``."""
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _record(model_dir: Path, check: dict) -> None:
    """Add the check to config.json's autotl record (written to a temporary name, then renamed), and to the card."""
    config = json.loads((model_dir / CONFIG).read_text())
    config.setdefault(RECORD, {})["onnx"] = check
    staging = model_dir / f".{CONFIG}.{os.getpid()}"
    staging.write_text(json.dumps(config, indent=2, default=str))
    os.replace(staging, model_dir / CONFIG)
    write_card(model_dir, read_config(model_dir))
