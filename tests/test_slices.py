"""A search in slices: trials pause and continue in one study, survive Ctrl-C and errors, and share workers."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import types
import uuid

import optuna
import pytest
from optuna.trial import TrialState

import autotl
from autotl.records import TrialRecord
from autotl.search import _run, _slices

pytestmark = pytest.mark.slow  # every test here searches

POSTGRES = os.environ.get("AUTOTL_TEST_POSTGRES_URL")
FAST_ENV = dict(os.environ, AUTOTL_HEARTBEAT_S="1", AUTOTL_GRACE_S="4", PYTHONUNBUFFERED="1")

SPACE = """
max_epochs: 2
report_every_images: 16      # a report every 16 images: several slices an epoch
backbone: tf_efficientnet_lite0
resolution_scale: 0.5
strategy:
  choices:
    linear_probe: {}
    frozen_prefix: {frozen_depth: {choices: [0.5, 0.75]}}
optimizer: {choices: {adamw: {lr: {low: 3.0e-4, high: 3.0e-3, log: true}}}}
lr_schedule: {choices: [wsd, cosine]}
batch_size: 16
augment_strength: 0.0
start_from: {strategy: frozen_prefix, frozen_depth: 0.75, lr: 1.0e-3, lr_schedule: wsd}
warm_start:
  backbones: 1
  recipes:
    probe: {strategy: linear_probe, lr: 5.0e-3}
    half: {strategy: frozen_prefix, frozen_depth: 0.5}
"""


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return str(path)


def _search(folder, space, out, **options):
    return autotl.search(str(folder), space=space, out=out, progress=False, n_trials=3, **options)


def _assert_whole_curves(study):
    """Every trial's curve is whole: its reports numbered 1..k once each, the checked ones reported to the study."""
    for trial in study.trials:
        steps = sorted(trial.intermediate_values)
        history = TrialRecord.of(trial).history
        if trial.state != TrialState.FAIL:
            assert [r.report for r in history] == list(range(1, len(history) + 1)), trial.number
            assert [r.report for r in history if r.val_accuracy is not None] == steps, trial.number  # checked ones
        slices = TrialRecord.of(trial).slices
        starts = [s.after_report for s in slices if s.action != "start" and s.ended not in ("interrupted", "fail")]
        assert starts == sorted(set(starts)), (trial.number, starts)  # no report trained twice


def _assert_ended(study):
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states, states


def test_trials_pause_continue_and_end_with_the_best_exported(tmp_path, photo_folder, space):
    result = _search(photo_folder, space, tmp_path / "run")
    study = result.study
    _assert_ended(study)
    _assert_whole_curves(study)
    records = {t.number: TrialRecord.of(t) for t in study.trials}
    labels = sorted(r.warm_start for r in records.values() if r.warm_start)
    assert labels == ["half on tf_efficientnet_lite0", "probe on tf_efficientnet_lite0"]
    assert all(r.slices and r.slices[0].action == "start" for r in records.values())
    continued = [n for n, r in records.items() if any(s.action != "start" for s in r.slices)]
    assert continued, "no trial was continued after a pause"
    assert all(records[n].resumed_at is not None for n in continued)
    best = result.best_trial
    assert best.state == TrialState.COMPLETE and autotl.load_model(result.model_dir).config["trial"] == best.number
    assert "How the time was spent" in (result.run_dir / "report.html").read_text()
    assert not list((result.run_dir / "trials").glob("*/state.safetensors"))  # no paused trial left


def test_a_leader_with_no_time_for_its_cool_down_ends_at_its_best_report_and_is_exported(
    tmp_path, photo_folder, space, monkeypatch
):
    """Where the leader's cool-down would overrun the time, the scheduler ends it at its best report instead: that
    slice trains nothing, scores the kept weights, and the trial is the exported model."""
    decide = _slices.decide

    def no_time_to_cool_down(*args, **kwargs):
        decision = decide(*args, **kwargs)
        return dataclasses.replace(decision, action="end") if decision and decision.action == "finish" else decision

    monkeypatch.setattr(_slices, "decide", no_time_to_cool_down)
    flat = lambda curve, horizon, strategy, **_: _slices.Forecast(max(y for _, y in curve), 1e-4)  # noqa: E731
    monkeypatch.setattr(_slices, "_forecast", flat)  # no trial is worth another slice: the leader ends mid-schedule
    result = _search(photo_folder, space, tmp_path / "run")
    _assert_ended(result.study)
    best = result.best_trial
    record = TrialRecord.of(best)
    assert best.state == TrialState.COMPLETE and record.slices[-1].action == "end", [s.action for s in record.slices]
    assert "ended where it stood" in record.end_reason
    assert len(record.history) == record.slices[-1].after_report  # the ending slice trained no report
    assert autotl.load_model(result.model_dir).config["trial"] == best.number


def test_ctrl_c_in_a_slice_leaves_the_trial_paused_and_the_rerun_continues_it(
    tmp_path, photo_folder, space, monkeypatch
):
    """Ctrl-C during a continued slice: the trial waits at its last saved report; the same call continues it."""
    real = _slices.Slices._train
    seen = []

    def press_ctrl_c_on_the_first_continue(self, trial, decision, started):
        if decision.action == "continue" and not seen:
            seen.append((trial.number, decision.candidate.reports))
            self.ctx.interrupt.set()  # as the first Ctrl-C does: training stops at its next step
        return real(self, trial, decision, started)

    monkeypatch.setattr(_slices.Slices, "_train", press_ctrl_c_on_the_first_continue)
    with pytest.raises(KeyboardInterrupt):
        _search(photo_folder, space, tmp_path / "run")
    (number, reports) = seen[0]
    study = optuna.load_study(study_name="autotl", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    paused = study.trials[number]
    assert paused.state == TrialState.WAITING and len(TrialRecord.of(paused).history) == reports
    before = dict(paused.intermediate_values)
    monkeypatch.setattr(_slices.Slices, "_train", real)
    result = _search(photo_folder, space, tmp_path / "run")
    _assert_ended(result.study)
    _assert_whole_curves(result.study)
    again = result.study.trials[number]
    assert {k: again.intermediate_values[k] for k in before} == before
    assert len(TrialRecord.of(again).history) > reports and TrialRecord.of(again).resumed_at is not None


def test_a_trial_that_fails_mid_slice_is_retried_from_its_last_state(tmp_path, photo_folder, space, monkeypatch):
    real, failed = _run.fit, []

    def fail_once_after_a_pause(config, dataset, trial=None, **kw):
        if kw["budget"].more is not None and kw["state_file"].is_file() and not failed:
            failed.append(trial.number)
            raise RuntimeError("a fault in the middle of a slice")
        return real(config, dataset, trial, **kw)

    monkeypatch.setattr(_run, "fit", fail_once_after_a_pause)
    study = _search(photo_folder, space, tmp_path / "run").study
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == failed[0]]
    assert study.trials[failed[0]].state == TrialState.FAIL
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert TrialRecord.of(retry).resumed_at >= 1  # continued, not started over
    _assert_ended(study)


def test_two_workers_that_both_decided_to_start_the_last_configuration_start_it_once(tmp_path):
    """Two workers read the study with one configuration left and both decide to start one: the second finds, when it
    claims, that the first took the last one (the race a PostgreSQL study of two machines once lost: 5 trials of 4)."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}")
    study.tell(study.ask(), 0.5)  # a first configuration
    study.enqueue_trial({})  # a warm-start recipe, queued (it counts once started)
    ctx = types.SimpleNamespace(run_dir=tmp_path, dataset=types.SimpleNamespace(count=lambda split: 64))
    options = dict(n_trials=2, deadline=None, policy="freeze-thaw", room=None)
    workers = [_slices.Slices(study, ctx, None, **options) for _ in range(2)]
    new = _slices.Decision(_slices.Candidate(None, label="new"), "start", "a new configuration")
    queued = _slices.Decision(_slices.Candidate(1, queued=True, label="probe"), "start", "a first slice: probe")
    assert workers[0]._claim(new) is not None
    assert workers[1]._claim(new) is None
    assert workers[1]._claim(queued) is None  # the queued recipe waits for a run that allows it
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING]


@pytest.mark.skipif(not POSTGRES and not os.environ.get("CI"), reason="set AUTOTL_TEST_POSTGRES_URL (.ci/run does)")
def test_two_machines_on_postgresql_run_each_slice_once(tmp_path, photo_folder, space):
    """Two machines start one study at once, sharing a run directory: the warm start is enqueued once, each paused
    trial is continued by one machine at a time (no report trained twice), and nothing is left open."""
    assert POSTGRES, "CI must provide AUTOTL_TEST_POSTGRES_URL (.ci/run starts PostgreSQL)"
    name = f"slices-{uuid.uuid4().hex[:8]}"
    args = [sys.executable, "-m", "autotl.cli", "search", "--dataset", str(photo_folder), "--space", space]
    args += ["--n-trials", "4", "--out", str(tmp_path / "run"), "--storage", POSTGRES, "--study-name", name]
    machines = [subprocess.Popen(args, env=FAST_ENV, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for machine in machines:
        _, err = machine.communicate(timeout=900)
        assert machine.returncode == 0, err
    study = optuna.load_study(study_name=name, storage=POSTGRES)
    _assert_ended(study)
    _assert_whole_curves(study)
    labels = [TrialRecord.of(t).warm_start for t in study.trials if "failed_trial" not in t.system_attrs]
    assert sorted(label for label in labels if label) == [
        "half on tf_efficientnet_lite0",
        "probe on tf_efficientnet_lite0",
    ]
    assert len([t for t in study.trials if "failed_trial" not in t.system_attrs]) == 4
