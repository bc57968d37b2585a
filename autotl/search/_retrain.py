"""Any trial of a study as a model, and the best recipe refitted on train + validation.

A trial's recipe, its number (which seeds it), and the dataset's split settings are in
the study, so training it again on the same data and device gives the same model; the
search keeps the weights of its best trials (``_trial_files``), which are exported
without training.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import optuna
from optuna.trial import TrialState
from safetensors.torch import load_file

from .. import backbones, export
from ..data import load_dataset
from ..errors import AutoTLError
from ..records import Metrics, Refit, StudyRecord, TrialRecord
from ..space import TrialConfig
from ..train import Budget, Setup, TrialResult, evaluate, fit, read_facts, resolve_device
from ..trials import study_metric
from ._best import add_onnx
from ._trial_files import lineage, model_file


def export_trial(
    study: optuna.Study,
    number: int,
    out: str | Path,
    *,
    run_dir: str | Path | None = None,
    device: str = "auto",
    weights_dir=None,
    say=lambda text: None,
) -> tuple[Path, float, float]:
    """Export trial ``number``'s model to ``out``: its kept weights (``run_dir/trials/``) when the search kept
    them, else its recipe trained again for the reports it ran, keeping its best report.

    Returns (model dir, the score stored for the trial, the exported model's score on validation), both by the
    study's metric.
    """
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise AutoTLError(f"the study has no trial {number}: trials are numbered 0 to {len(trials) - 1}")
    trial, record = trials[number], TrialRecord.of(trials[number])
    if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED) or not record.history:
        raise AutoTLError(
            f"trial {number} is {trial.state.name.lower()} and finished no report: pick a complete or "
            f"pruned trial (the report's trial table lists them)"
        )
    if not record.config:
        raise AutoTLError(f"trial {number} stored no recipe (a custom objective that does not call ctx.fit)")
    data, setup, metric = _dataset(study), Setup(resolve_device(device), weights_dir), study_metric(study)
    kept = model_file(run_dir, trial) if run_dir is not None else None
    if kept is not None and kept.is_file():
        say(f"exporting trial {number}'s kept weights ({kept})")
        result = kept_result(kept, record, data, setup.device)
    else:
        config = TrialConfig.from_dict(record.config)
        say(f"training trial {number}'s recipe again for {len(record.history)} report(s): {config.describe()}")
        soup = bool(record.soup_reports)
        again = dict(soup=soup, metric=metric)
        result = train_again(config, data, record, len(record.history), setup, data.seed, lineage(trial), **again)
    stored = getattr(record.metrics, metric, None) if record.metrics else None
    got = result.metrics[metric]
    model_dir = export.save(result, out, extra=dict(trial=number, value=got, metric=metric, dataset=data.spec))
    add_onnx(model_dir, data, say)
    return model_dir, float("nan") if stored is None else stored, got


def kept_result(path: Path, record: TrialRecord, data=None, device="cpu", facts: dict | None = None) -> TrialResult:
    """A finished trial's kept weights as a result to export: scored again on ``data``'s validation split, or, without
    ``data``, with the metrics the trial stored (no pass over the images). ``facts``: the file's, when read."""
    facts = facts or read_facts(path)
    config = TrialConfig.from_dict(facts["config"])
    pre = backbones.preprocessing(config.backbone, config.resolution_scale)
    model = backbones.create(config.backbone, len(facts["classes"]), pretrained=False, input_size=pre.size)
    model.load_state_dict(load_file(str(path)))
    model = model.to(device).eval()
    if data is None:
        record = dataclasses.replace(record, metrics=record.metrics or Metrics(**facts["metrics"]))
    else:
        val = data.indices("val")
        batches = ((pre.normalize(x.to(device)), y) for x, y in data.batches(val, pre.size, pre.interpolation))
        metrics = evaluate(model, batches, device=device, num_classes=len(facts["classes"]))
        record = dataclasses.replace(record, metrics=Metrics(**metrics), val_images=len(val))
    return TrialResult(config, record, list(facts["classes"]), pre, model=model.to("cpu"))


def refit_best(study, best, data, model_dir, setup: Setup, seed: int, say=print) -> None:
    """Retrain the best recipe on train + validation for its best report's count of reports, and export that model.

    The model keeps the trial's validation metrics: its own validation images were trained on.
    """
    record = TrialRecord.of(best)
    if not record.config or not record.best_report:
        say("refit skipped: the best trial stored no recipe (a custom objective that does not call ctx.fit)")
        return
    config = TrialConfig.from_dict(record.config)
    merged = data.with_validation_in_train()
    say(
        f"refit: training trial #{best.number}'s recipe on {merged.count('train')} images (train + validation) "
        f"for {record.best_report} report(s)"
    )
    result = train_again(config, merged, record, record.best_report, setup, seed, lineage(best), keep_last=True)
    result.record.metrics = record.metrics
    facts = Refit(best.number, merged.count("train"), record.best_report, round(result.record.wall_seconds, 3))
    extra = dict(trial=best.number, value=best.values[0], metric=study_metric(study), dataset=data.spec)
    extra["refit"] = dataclasses.asdict(facts)
    export.save(result, model_dir, extra=extra)
    StudyRecord(refit=facts).write(study)


def train_again(config, data, record: TrialRecord, reports: int, setup: Setup, seed: int, number: int, **keep):
    """The trial's recipe trained again for ``reports`` reports, as the search trained it: where the scheduler
    ended it with a cool-down after report R (its "finish" slice), the run pauses after R and cools down from
    there, so the model is the annealed one the search scored, not one cut mid-schedule."""
    cool_after = next((s.after_report for s in reversed(record.slices or []) if s.action == "finish"), None)
    if cool_after is None or not 0 < cool_after < reports:
        return fit(config, data, setup=setup, budget=Budget(reports=reports), seed=seed, number=number, **keep)
    with tempfile.TemporaryDirectory(prefix="autotl-retrain-") as folder:
        state = Path(folder) / "state.safetensors"
        again = dict(setup=setup, seed=seed, number=number, state_file=state, **keep)
        fit(config, data, budget=Budget(pause_after=cool_after), **again)
        return fit(config, data, budget=Budget(end_soon=True), **again)


def _dataset(study):
    """The study's dataset, loaded with the split settings it was searched with."""
    record = StudyRecord.of(study)
    known = record.dataset
    if known is None or not known.path:
        raise AutoTLError("the study does not say which dataset it searched: export from a run made by autotl search")
    try:
        data = load_dataset(
            known.path,
            val_fraction=known.val_fraction if known.val_fraction is not None else 0.2,
            seed=known.seed or 0,
            max_per_class=known.max_per_class,
            allow_outside_paths=bool(known.allow_outside_paths),
            image_size=known.image_size or 224,
            cache_dir=record.cache_dir,
            progress=True,
        )
    except AutoTLError as error:
        raise AutoTLError(f"cannot load the study's dataset again ({error})") from error
    if known.classes and list(data.classes) != known.classes:
        raise AutoTLError(f"the dataset at {known.path} has changed classes since the search: export needs the same")
    return data
