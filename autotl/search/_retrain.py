"""Train a stored recipe again: export any trial of a study, or refit the best on train + validation.

No per-trial checkpoints are kept (they would fill the disk on long searches). A trial's
recipe, its number (which seeds it), and the dataset's split settings are in the study,
so training it again on the same data and device gives the same model.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from .. import export
from ..data import load_dataset
from ..errors import AutoTLError
from ..space import TrialConfig
from ..train import fit, resolve_device
from ._best import add_onnx


def export_trial(
    study: optuna.Study, number: int, out: str | Path, *, device: str = "auto", weights_dir=None, say=lambda text: None
) -> tuple[Path, float, float]:
    """Train trial ``number``'s recipe again for the epochs it ran and export its best epoch to ``out``.

    Returns (model dir, the accuracy stored for the trial, the accuracy of the retrained model).
    """
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise AutoTLError(f"the study has no trial {number}: trials are numbered 0 to {len(trials) - 1}")
    trial = trials[number]
    if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED) or not trial.user_attrs.get("history"):
        raise AutoTLError(
            f"trial {number} is {trial.state.name.lower()} and finished no epoch: pick a complete or "
            f"pruned trial (the report's trial table lists them)"
        )
    if not trial.user_attrs.get("config"):
        raise AutoTLError(f"trial {number} stored no recipe (a custom objective that does not call ctx.fit)")
    data = _dataset(study)
    config = TrialConfig.from_dict(trial.user_attrs["config"])
    say(
        f"training trial {number}'s recipe again for {len(trial.user_attrs['history'])} epoch(s) "
        f"(trials keep no checkpoints): {config.describe()}"
    )
    result = fit(
        config,
        data,
        number=number,
        device=resolve_device(device),
        weights_dir=weights_dir,
        seed=data.seed,
        epochs=len(trial.user_attrs["history"]),
        soup=bool(trial.user_attrs.get("soup_epochs")),
    )
    stored = float((trial.user_attrs.get("metrics") or {}).get("accuracy", float("nan")))
    model_dir = export.save(result, out, extra=dict(trial=number, value=result.metrics["accuracy"], dataset=data.spec))
    add_onnx(model_dir, data, say)
    return model_dir, stored, result.metrics["accuracy"]


def refit_best(study, best, data, model_dir, device, weights_dir, seed, say=print) -> None:
    """Retrain the best recipe on train + validation for its best epoch count, and export that model.

    The model keeps the trial's validation metrics: its own validation images were trained on.
    """
    epochs = best.user_attrs.get("best_epoch")
    if not best.user_attrs.get("config") or not epochs:
        say("refit skipped: the best trial stored no recipe (a custom objective that does not call ctx.fit)")
        return
    config = TrialConfig.from_dict(best.user_attrs["config"])
    merged = data.with_validation_in_train()
    say(
        f"refit: training trial #{best.number}'s recipe on {merged.count('train')} images (train + validation) "
        f"for {epochs} epoch(s)"
    )
    result = fit(
        config,
        merged,
        number=best.number,
        device=device,
        weights_dir=weights_dir,
        seed=seed,
        epochs=epochs,
        keep_last=True,
    )
    result.metrics = dict(best.user_attrs.get("metrics") or {})
    facts = dict(
        trial=best.number, train_images=merged.count("train"), epochs=epochs, seconds=round(result.wall_seconds, 3)
    )
    export.save(result, model_dir, extra=dict(trial=best.number, value=best.values[0], dataset=data.spec, refit=facts))
    study.set_user_attr("refit", facts)


def _dataset(study):
    """The study's dataset, loaded with the split settings it was searched with."""
    info = study.user_attrs.get("dataset") or {}
    if not info.get("path"):
        raise AutoTLError("the study does not say which dataset it searched: export from a run made by autotl search")
    try:
        data = load_dataset(
            info["path"],
            val_fraction=info.get("val_fraction", 0.2),
            seed=info.get("seed", 0),
            max_per_class=info.get("max_per_class"),
            allow_outside_paths=info.get("allow_outside_paths", False),
            image_size=info.get("image_size", 224),
            cache_dir=study.user_attrs.get("cache_dir"),
            progress=True,
        )
    except AutoTLError as error:
        raise AutoTLError(f"cannot load the study's dataset again ({error})") from error
    if list(data.classes) != list(info.get("classes", data.classes)):
        raise AutoTLError(
            f"the dataset at {info['path']} has changed classes since the search: export needs the same data"
        )
    return data
