"""Each trial's files in the run directory, kept only while the search can still use them.

``RUN_DIR/trials/<n>/`` belongs to trial n and to every retry of it: a trial interrupted
by Ctrl-C, or lost with its worker, is retried as a new trial of the same recipe that
continues the same training state. The folder holds

- ``state.safetensors``: the training state after the trial's last report
  (``autotl.train``), while the trial runs or waits to be retried; deleted once it ended;
- ``model.safetensors``: a finished trial's kept weights (a plain timm state dict, with
  its recipe in the header), for the ``keep`` best complete trials only; ``autotl export
  --trial`` uses them instead of training the recipe again;
- ``val_probabilities.npy``: with ``--ensemble``, those trials' class probabilities on the
  validation split, which the greedy ensemble is selected on (``_ensemble``).

So the disk holds at most one state per running or waiting trial, plus ``keep`` models.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import AutoTLError
from ..records import TrialRecord
from ..train import save_tensors
from ..trials import Standing, best, score_index

TRIALS, STATE, MODEL, PROBABILITIES = "trials", "state.safetensors", "model.safetensors", "val_probabilities.npy"
OPEN = (TrialState.RUNNING, TrialState.WAITING)
LOST_RETRIES = 2  # a recipe that kills its worker again and again is not retried for ever
FAILING_IN_A_ROW = 5  # the search stops after this many trials in a row failed with an error
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def frozen(trial) -> FrozenTrial:
    """A running ``optuna.Trial`` as its stored FrozenTrial (which holds the system attrs a retry is known by)."""
    return trial if isinstance(trial, FrozenTrial) else trial.study._storage.get_trial(trial._trial_id)


def lineage(trial) -> int:
    """The number of the first trial of ``trial``'s recipe that it retries (its own number if none): what names
    its folder and seeds its training, so that a retry continues the same run."""
    stored = frozen(trial)
    return int(stored.system_attrs.get("failed_trial", stored.number))


def state_file(run_dir: Path, trial) -> Path:
    return Path(run_dir) / TRIALS / str(lineage(trial)) / STATE


def model_file(run_dir: Path, trial) -> Path:
    return Path(run_dir) / TRIALS / str(lineage(trial)) / MODEL


def probabilities_file(run_dir: Path, trial) -> Path:
    return Path(run_dir) / TRIALS / str(lineage(trial)) / PROBABILITIES


def retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue ``trial``'s recipe again as a new trial that continues its saved state (as Optuna's
    RetryHeartbeatStaleTrialCallback does, without copying what the lost trial recorded)."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    record = TrialRecord.of(trial)
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs=TrialRecord(warm_start=record.warm_start, strategy=record.strategy).attrs(),
            system_attrs={"failed_trial": history[0], "retry_history": history},
        )
    )


def retry_lost(study: optuna.Study, trial: FrozenTrial) -> None:
    """A trial whose worker died (its heartbeat stopped): retried, unless it already was ``LOST_RETRIES`` times."""
    if len(trial.system_attrs.get("retry_history", [])) < LOST_RETRIES:
        retry(study, trial)


def save_model(run_dir: Path, trial, result, probabilities: np.ndarray | None = None) -> None:
    """Keep a finished trial's weights (its recipe and classes in the file's header), atomically, and its
    validation probabilities when given."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in result.model.state_dict().items()}
    facts = dict(trial=trial.number, config=result.config.to_dict(), classes=result.classes, metrics=result.metrics)
    save_tensors(model_file(run_dir, trial), tensors, facts)
    if probabilities is not None:
        path = probabilities_file(run_dir, trial)
        staging = path.with_name(f".{PROBABILITIES}.partial")
        with open(staging, "wb") as handle:
            np.save(handle, probabilities)
        os.replace(staging, path)


def tidy(study: optuna.Study, run_dir: Path, keep: int) -> None:
    """Delete what no trial can use any more: the states of trials that ended and will not be retried, and the
    models of all but the ``keep`` best complete trials."""
    root = Path(run_dir) / TRIALS
    if not root.is_dir():
        return
    trials = study.get_trials(deepcopy=False)
    open_lines = {lineage(t) for t in trials if t.state in OPEN}
    kept = {lineage(t) for t in best_complete(study, trials, keep)}
    for folder in root.iterdir():
        if not folder.name.isdigit() or int(folder.name) in open_lines:
            continue  # a trial that runs (maybe in another worker, its model being kept) or waits to go on
        for path in [folder / STATE, *folder.glob(".*.partial")]:  # a write cut short by a lost worker, too
            path.unlink(missing_ok=True)
        if int(folder.name) not in kept:
            (folder / MODEL).unlink(missing_ok=True)
            (folder / PROBABILITIES).unlink(missing_ok=True)
        if not any(folder.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)


def best_complete(study: optuna.Study, trials: list[FrozenTrial], count: int) -> list[FrozenTrial]:
    """The ``count`` best complete trials, best first, by the best-trial rule (``autotl.trials.best``)."""
    left = {t.number: t for t in trials if t.state == TrialState.COMPLETE and t.values}
    chosen = []
    while left and len(chosen) < count:
        winner = best([Standing.of(t) for t in left.values()], study.directions, score_index(study))
        chosen.append(left.pop(winner.number))
    return chosen


def stop_when_failing(study) -> None:
    """Stop a search whose last FAILING_IN_A_ROW trials all failed with an error: the next would fail too."""
    ended = [t for t in study.get_trials(deepcopy=False) if t.state in (*FINISHED, TrialState.FAIL)]
    last = [TrialRecord.of(t, "error").error for t in ended[-FAILING_IN_A_ROW:]]
    failed = [e for e in last if e and not e.startswith("interrupted")]
    if len(failed) == FAILING_IN_A_ROW:
        raise AutoTLError(
            f"the last {FAILING_IN_A_ROW} trials failed, the last one with {failed[-1]}: fix that and rerun "
            f"(finished trials are kept)"
        )
