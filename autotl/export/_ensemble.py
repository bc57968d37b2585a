"""An ensemble folder: its members' model folders, their weights, and one model that averages their probabilities.

``RUN_DIR/ensemble_model/`` holds ``member_0/``, ``member_1/``, ... (each a timm model folder,
as ``best_model/`` is), and a ``config.json`` that names them with their weights under
``autotl.ensemble``, together with the ensemble's input (the best member's) in timm's keys, so
that ``read_config``, ``load_model``, ``autotl predict`` and ``autotl evaluate`` take the
folder as they take a single model. A member trained at another input size (or
normalisation) gets the ensemble's input resized in the graph (``Adapted``). The
ensemble's output is the log of the weighted average of the members' probabilities: a
softmax of it gives the average back, so every caller that takes logits takes it
unchanged; ``model.onnx`` computes the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ._folder import CONFIG, ENSEMBLE, RECORD, plain_model, read_config, save, staged, write_config

ARCHITECTURE = "autotl_ensemble"
PROBABILITY_FLOOR = 1e-12  # the log of a probability of 0 would be -inf


class Adapted(torch.nn.Module):
    """A member whose own input differs from the ensemble's: the ensemble's normalised pixels are taken back to
    [0, 1], resized (bilinear) to the member's size and normalised as the member was trained."""

    def __init__(self, model: torch.nn.Module, own, given):
        super().__init__()
        self.model, self.size = model, own.size
        for name, values in (
            ("given_mean", given.mean),
            ("given_std", given.std),
            ("mean", own.mean),
            ("std", own.std),
        ):
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.given_std + self.given_mean
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.model((x - self.mean) / self.std)


def adapted(model: torch.nn.Module, own, given) -> torch.nn.Module:
    """``model`` fed the ensemble's input (``given`` preprocessing): as it is when ``own`` is the same."""
    return model if own == given else Adapted(model, own, given)


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


def save_ensemble(members: list, weights: list[float], model_dir: str | Path, record: dict, given=None) -> Path:
    """Write the members (TrialResults, their trial numbers in ``record["members"]``) and the ensemble's config to
    ``model_dir``, replacing what was there atomically. ``record``: what autotl stores about the ensemble;
    ``given``: the ensemble's input preprocessing (default: the first member's)."""
    model_dir = Path(model_dir)
    with staged(model_dir) as staging:
        for index, (result, trial) in enumerate(zip(members, record["members"])):
            save(result, staging / member_folder(index), extra=dict(trial=trial["trial"]))
        first = json.loads((staging / member_folder(0) / CONFIG).read_text())
        pretrained_cfg = dict(first["pretrained_cfg"])
        if given is not None:
            pretrained_cfg.update(
                input_size=[3, given.size, given.size],
                interpolation=given.interpolation,
                mean=list(given.mean),
                std=list(given.std),
            )
        config = dict(
            architecture=ARCHITECTURE,
            num_classes=first["num_classes"],
            label_names=first["label_names"],
            pretrained_cfg=pretrained_cfg,
        )
        config[RECORD] = dict(format=2, **record)
        config[RECORD][ENSEMBLE] = [
            dict(folder=member_folder(i), trial=m["trial"], weight=w)
            for i, (m, w) in enumerate(zip(record["members"], weights))
        ]
        del config[RECORD]["members"]
        write_config(staging, config)
    return model_dir


def ensemble_model(model_dir: str | Path, config) -> Ensemble:
    """The ensemble of the folder's members (each as plain timm builds it), in eval mode."""
    members = config.record[ENSEMBLE]
    models = []
    for folder in (Path(model_dir) / m["folder"] for m in members):
        own = read_config(folder)
        models.append(adapted(plain_model(folder, own), own.preprocessing, config.preprocessing))
    return Ensemble(models, [float(m["weight"]) for m in members]).eval()
