"""An ensemble folder: its members' model folders, their weights, and one model that averages their probabilities.

``RUN_DIR/ensemble_model/`` holds ``member_0/``, ``member_1/``, ... (each a timm model folder,
as ``best_model/`` is), and a ``config.json`` that names them with their weights under
``autotl.ensemble``, together with the members' shared preprocessing in timm's keys, so
that ``read_config``, ``load_model``, ``autotl predict`` and ``autotl evaluate`` take the
folder as they take a single model. The ensemble's output is the log of the weighted
average of the members' probabilities: a softmax of it gives the average back, so every
caller that takes logits takes it unchanged; ``model.onnx`` computes the same.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

from ._card import write_card
from ._folder import CONFIG, ENSEMBLE, RECORD, _replace_dir, plain_model, read_config, save

ARCHITECTURE = "autotl_ensemble"
PROBABILITY_FLOOR = 1e-12  # the log of a probability of 0 would be -inf


class Ensemble(torch.nn.Module):
    """Members' class probabilities, averaged with ``weights``; returns the average's log (its softmax is the
    average)."""

    def __init__(self, members: list[torch.nn.Module], weights: list[float]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32) / sum(weights))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        average = sum(w * m(x).float().softmax(1) for w, m in zip(self.weights, self.members))
        return average.clamp_min(PROBABILITY_FLOOR).log()


def member_folder(index: int) -> str:
    return f"member_{index}"


def save_ensemble(members: list, weights: list[float], model_dir: str | Path, record: dict) -> Path:
    """Write the members (TrialResults, their trial numbers in ``record["members"]``) and the ensemble's config to
    ``model_dir``, replacing what was there atomically. ``record``: what autotl stores about the ensemble."""
    model_dir = Path(model_dir)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}.", dir=model_dir.parent))
    try:
        for index, (result, trial) in enumerate(zip(members, record["members"])):
            save(result, staging / member_folder(index), extra=dict(trial=trial["trial"]))
        first = json.loads((staging / member_folder(0) / CONFIG).read_text())
        config = dict(
            architecture=ARCHITECTURE,
            num_classes=first["num_classes"],
            label_names=first["label_names"],
            pretrained_cfg=first["pretrained_cfg"],
        )
        config[RECORD] = dict(format=2, **record)
        config[RECORD][ENSEMBLE] = [
            dict(folder=member_folder(i), trial=m["trial"], weight=w)
            for i, (m, w) in enumerate(zip(record["members"], weights))
        ]
        del config[RECORD]["members"]
        (staging / CONFIG).write_text(json.dumps(config, indent=2, default=str))
        write_card(staging, read_config(staging))
        _replace_dir(staging, model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return model_dir


def ensemble_model(model_dir: str | Path, config) -> Ensemble:
    """The ensemble of the folder's members (each as plain timm builds it), in eval mode."""
    members = config.record[ENSEMBLE]
    models = [plain_model(d, read_config(d)) for d in (Path(model_dir) / m["folder"] for m in members)]
    return Ensemble(models, [float(m["weight"]) for m in members]).eval()
