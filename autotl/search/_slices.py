"""Run a search slice by slice: trials stay open in the study, paused between slices, until the scheduler ends them.

A paused trial is an Optuna trial in state WAITING with reports and a saved training state
(``RUN_DIR/trials/<n>/``). A slice claims it (WAITING -> RUNNING, atomic in the storage:
with several workers or machines, each slice runs once), continues its state for one more
report, and puts it back to WAITING; a new configuration is a new trial that the sampler
fills. Finished trials are told COMPLETE as ever; at the end of the search the trials
still paused are told PRUNED ("not worth another slice"). Ctrl-C leaves the trial it
interrupts paused at its last saved report, so the same command continues it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import statistics
import time
import warnings

import optuna
from optuna.storages._heartbeat import get_heartbeat_thread
from optuna.trial import TrialState

from ..records import Slice, TrialRecord, report_score
from ..space import TrialConfig
from ..train import VAL_CHECK_IMAGES, Plan
from ..trials import best_trial, score
from ._schedule import Candidate, Decision, Forecast, decide
from ._trial_files import frozen, retry_lost, stop_when_failing

WAIT_S = 5.0
REPORTS_PER_EPOCH = 4  # a sliced trial reports at least this often an epoch: a first slice is not a whole epoch


class Slices:
    """The scheduler's loop over one study, in this process: decide, run the slice, repeat, then close."""

    def __init__(self, study, ctx, runner, *, n_trials: int, deadline, policy: str, room, forecast=None):
        self.study, self.ctx, self.runner = study, ctx, runner
        self.n_trials, self.deadline, self.policy, self.room = n_trials, deadline, policy, room
        check_images = min(VAL_CHECK_IMAGES, ctx.dataset.count("val")) or None
        train_images = ctx.dataset.count("train")
        self.val_per_check = ctx.dataset.count("val") / check_images if check_images else 1.0
        self.forecast = forecast or functools.partial(_forecast, check_images=check_images, train_images=train_images)
        self.started, self.slices = time.time(), 0

    def run(self) -> None:
        """Slices until nothing is worth one or the time is up; then the paused trials end (pruned)."""
        while True:
            if self.ctx.interrupt.is_set():
                raise KeyboardInterrupt
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
            stop_when_failing(self.study)
            decision = self.next()
            if decision is None:
                if any(t.state == TrialState.RUNNING for t in self.study.get_trials(deepcopy=False)):
                    time.sleep(WAIT_S)  # another worker's slice may make more worth doing
                    if self._seconds_left() > 0:
                        continue
                break
            self.run_slice(decision)
        self.close()

    def next(self) -> Decision | None:
        """The scheduler's decision on the trials as the study holds them now."""
        trials = self.study.get_trials(deepcopy=False)
        configurations = _configurations(trials)
        can_start = configurations < self.n_trials
        best = best_trial(self.study, trials)
        left = self._seconds_left()
        decision = decide(
            [self._candidate(t) for t in trials if t.state == TrialState.WAITING],
            left,
            score(best, self.study),
            self.forecast,
            can_start,
            start_seconds=self.room(self.study),
            policy=self.policy,
            used_share=(time.time() - self.started) / max(left + time.time() - self.started, 1e-9),
        )
        if decision is None and can_start and self.deadline is None:  # --n-trials: every configuration is tried
            decision = Decision(Candidate(None, label="new"), "start", f"configuration {configurations + 1}")
        return decision

    def run_slice(self, decision: Decision) -> None:
        """Claim the trial (or create one), train its slice, and tell the study how it ended."""
        storage = self.study._storage
        trial_id = self._claim(decision)
        if trial_id is None:
            return  # another worker took it, or started the last configuration --n-trials allows
        storage.record_heartbeat(trial_id)
        trial = optuna.Trial(self.study, trial_id)
        self.slices += 1
        self._say(decision, trial.number)
        started = time.time()
        with get_heartbeat_thread(trial_id, storage):
            self._train(trial, decision, started)

    def _claim(self, decision: Decision) -> int | None:
        """The trial the slice trains, now RUNNING for this worker alone; None if another worker was first.

        A first slice counts the configurations and starts one as a single step for every worker
        sharing the run directory (a lock file there, as machines sharing a study share it for the
        trials' saved states): two workers never both start the last configuration --n-trials allows.
        """
        number = decision.candidate.number
        if decision.action != "start" or decision.candidate.retry:
            return self._claim_waiting(number)
        with open(self.ctx.run_dir / ".start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _configurations(self.study.get_trials(deepcopy=False)) >= self.n_trials:
                return None
            if number is None:
                return self.study._storage.create_new_trial(self.study._study_id)
            return self._claim_waiting(number)

    def _claim_waiting(self, number: int) -> int | None:
        """Trial ``number``, WAITING -> RUNNING (atomic in the storage); None if another worker claimed it."""
        storage = self.study._storage
        trial_id = storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        return trial_id if storage.set_trial_state_values(trial_id, TrialState.RUNNING) else None

    def _train(self, trial, decision: Decision, started: float) -> None:
        record = self._slice_record(trial, decision, started)
        try:
            config = finer_reports(self.ctx.suggest(trial), self.ctx.dataset.count("train"))
            if decision.action == "start" and self.ctx.progress is not None:
                self.ctx.progress.say(f"    {config.describe()}")
            finish, end = decision.action == "finish", decision.action == "end"
            more = None if finish or end else decision.reports
            result = self.ctx.fit(trial, config, more=more, end_soon=finish, end_now=end)
        except optuna.TrialPruned:
            self._end(trial, record, started, TrialState.PRUNED)
            return
        except KeyboardInterrupt:
            self._pause(trial, record, started, None)
            raise
        except Exception as error:  # noqa: BLE001 - one trial's error fails it alone; a retry continues its state
            TrialRecord(error=f"{error.__class__.__name__}: {error}").write(trial)
            self._end(trial, record, started, TrialState.FAIL)
            retry_lost(self.study, frozen(trial))
            return
        self.ctx.results.pop(trial.number, None)
        if result.paused:
            self._pause(trial, record, started, result)
            return
        value = result.metrics[self.ctx.metric]
        self.runner.keep(trial, result, value)
        self._end(trial, record, started, TrialState.COMPLETE, value)

    def _pause(self, trial, record: TrialRecord, started: float, result) -> None:
        """Back to WAITING, its record written: the next slice (here, another worker, a rerun) continues it."""
        if result is not None:
            result.record.write(trial)
        record.slices[-1].seconds = round(time.time() - started, 3)
        record.slices[-1].ended = "paused" if result is not None else "interrupted"
        record.write(trial, "slices")
        self.study._storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
        self.runner.paused()

    def _end(self, trial, record: TrialRecord, started: float, state: TrialState, value=None) -> None:
        record.slices[-1].seconds = round(time.time() - started, 3)
        record.slices[-1].ended = state.name.lower()
        record.write(trial, "slices")
        self.study.tell(trial, value, state=state)
        self.runner.ended(self.study, frozen(trial))

    def close(self) -> None:
        """The trials still paused when the search ends are told PRUNED: not worth another slice (claimed first, so
        a trial another worker continues is left to it). For an ensemble, the best of them, as many as the kept
        models lack, end where they stand instead: complete, their best report's weights kept."""
        storage = self.study._storage
        waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        waiting = sorted(waiting, key=lambda t: _best_check(t, self.ctx.metric), reverse=True)
        complete = len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        spare = max(0, self.runner.keep_models - complete) if self.runner.ensemble else 0
        for t in waiting:
            reports = len(TrialRecord.of(t, "history").history)
            if not reports or not storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):
                continue  # never trained (a recipe a later run may start), or another worker continues it
            trial = optuna.Trial(self.study, t._trial_id)
            if spare and self._end_now(trial):
                spare -= 1
                continue
            TrialRecord(end_reason=f"paused after report {reports}: not worth another slice").write(trial)
            self.study.tell(trial, state=TrialState.PRUNED)
            self.runner.ended(self.study, frozen(trial))

    def _end_now(self, trial) -> bool:
        """End a paused trial at its best report for the ensemble (complete, kept); False if that fails."""
        try:
            result = self.ctx.fit(
                trial, finer_reports(self.ctx.suggest(trial), self.ctx.dataset.count("train")), end_now=True
            )
        except Exception as error:  # noqa: BLE001 - it then ends as pruned, as without an ensemble
            warnings.warn(f"trial {trial.number} could not be kept for the ensemble: {error}", stacklevel=2)
            return False
        self.ctx.results.pop(trial.number, None)
        value = result.metrics[self.ctx.metric]
        self.runner.keep(trial, result, value)
        self.study.tell(trial, value)
        self.runner.ended(self.study, frozen(trial))
        return True

    def _candidate(self, trial) -> Candidate:
        record = TrialRecord.of(trial, "history", "config", "warm_start", "strategy")
        metric = self.ctx.metric
        history = record.history  # a slice's inner reports have no score: they count, but add no point to the curve
        scored = [r for r in history if report_score(r, metric) is not None]
        strategy = record.strategy or trial.params.get("strategy")
        label = record.warm_start or strategy or ""
        if not scored:
            return Candidate(
                trial.number, strategy, queued=True, retry="failed_trial" in trial.system_attrs, label=label
            )
        epochs = history[-1].epoch or 0.0
        return Candidate(
            trial.number,
            strategy,
            curve=[(r.epoch or 0.0, report_score(r, metric)) for r in scored],
            seconds_per_report=_seconds_per_report(history),
            epochs_per_report=epochs / len(history) if epochs else 1.0,
            reports=len(history),
            last_report=self._last_report(record),
            score_seconds=_check_seconds(history) * self.val_per_check,
            label=label,
        )

    def _last_report(self, record: TrialRecord) -> int:
        config = TrialConfig.from_dict(record.config or {})
        return Plan.make(config, self.ctx.dataset.count("train")).last_report

    def _seconds_left(self) -> float:
        return self.deadline - time.time() if self.deadline is not None else float("inf")

    def _slice_record(self, trial, decision: Decision, started: float) -> TrialRecord:
        record = TrialRecord.of(frozen(trial), "slices")
        predicted = decision.predicted or Forecast(None, None)
        record.slices.append(
            Slice(
                at=round(started, 3),
                action=decision.action,
                after_report=decision.candidate.reports,
                why=decision.why,
                predicted=predicted.mean,
                predicted_std=predicted.std,
                horizon=decision.horizon,
                gain_per_second=decision.gain_per_second,
            )
        )
        record.write(trial, "slices")
        return record

    def _say(self, decision: Decision, number: int) -> None:
        show = self.ctx.progress
        if show is None:
            return
        left = self._seconds_left()
        when = f", {left:.0f} s left" if left != float("inf") else ""
        verbs = {"start": "starts", "continue": "continues", "finish": "ends with a cool-down", "end": "ends"}
        verb = verbs[decision.action]
        show.say(f"[slice {self.slices}{when}] trial #{number} {verb}: {decision.why}")


def finer_reports(config: TrialConfig, n_train: int) -> TrialConfig:
    """The recipe with a report at least REPORTS_PER_EPOCH times an epoch (on a small dataset a report is otherwise
    an epoch: slices that long leave the scheduler few choices)."""
    every = max(config.batch_size, -(-n_train // REPORTS_PER_EPOCH))
    return dataclasses.replace(config, report_every_images=min(config.report_every_images, every))


def _seconds_per_report(history) -> float | None:
    """A report's time, training and check, from the last reports: a slice checks only its last and each epoch's end,
    so its unchecked reports are charged the last check's time (a report's cost stays that of a checked one)."""
    recent = [r for r in history[-3:] if r.seconds]
    checks = _checks(history)
    check = checks[-1] if checks else 0.0
    seconds = [r.seconds + (check if r.val_loss is None else 0.0) for r in recent]
    return statistics.median(seconds) if seconds else None


def _checks(history) -> list[float]:
    """The seconds of each check (a report's time less its training), in order."""
    return [r.seconds - r.train_seconds for r in history if r.val_loss is not None and r.seconds and r.train_seconds]


def _check_seconds(history) -> float:
    """A check's time, its slowest (the first also computes a frozen prefix's outputs, as scoring all of val will)."""
    return max(_checks(history), default=0.0)


def _best_check(trial, metric: str) -> float:
    """A trial's best report on the validation check, by ``metric`` (-1 without one)."""
    scores = (report_score(r, metric) for r in TrialRecord.of(trial, "history").history)
    return max((s for s in scores if s is not None), default=-1.0)


def _configurations(trials) -> int:
    """The configurations a study has started (what --n-trials counts): not a retry, not a recipe still queued."""
    return sum(1 for t in trials if "failed_trial" not in t.system_attrs and not _unstarted(t))


def _unstarted(trial) -> bool:
    """A queued trial (a warm-start recipe) that no slice has trained yet."""
    return trial.state == TrialState.WAITING and not TrialRecord.of(trial, "history").history


def _forecast(curve, horizon, strategy, check_images: int | None = None, train_images: int | None = None) -> Forecast:
    """The learning-curve model (``_curves``) with its shipped prior, for reports scored on ``check_images`` of a
    dataset of ``train_images``."""
    from ._curves import forecast, load_prior

    predicted = forecast(curve, horizon, strategy or "any", load_prior(), check_images, train_images)
    return Forecast(predicted.mean, predicted.std)
