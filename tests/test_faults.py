"""Faults lose nothing: a killed worker, an exception in a trial, Ctrl-C, a damaged model, CUDA OOM,
and several workers (processes, or machines on PostgreSQL) ending with exactly --n-trials."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

import autotl
from autotl import load_dataset
from autotl.cli import main
from autotl.records import TrialRecord
from autotl.search._storage import open_storage

pytestmark = pytest.mark.slow  # every test here trains, searches or runs a subprocess

FAST_ENV = dict(os.environ, AUTOTL_HEARTBEAT_S="1", AUTOTL_GRACE_S="4", PYTHONUNBUFFERED="1")


def _cli(*args):
    return [sys.executable, "-m", "autotl.cli", "search", *args]


def _states(storage, name="autotl"):
    study = optuna.load_study(study_name=name, storage=storage)
    return [t.state for t in study.trials], study


def _wait_for_running_epoch(storage, name="autotl", timeout=120):
    """Block until some trial is RUNNING (its model built and training)."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
            if any(t.state == TrialState.RUNNING for t in study.trials):
                time.sleep(1.0)
                return
        except Exception:  # noqa: BLE001 - the study may not exist yet
            pass
        time.sleep(0.2)
    raise AssertionError("no trial started running")


def _wait_for_a_saved_report(run_dir, run, timeout=300):
    """Block until a trial has saved its training state after a report (in ``run_dir``)."""
    end = time.time() + timeout
    while not list((run_dir / "trials").glob("*/state.safetensors")):
        assert run.poll() is None and time.time() < end, "no trial saved a report"
        time.sleep(0.1)


SLOW_SPACE = """
max_epochs: 3
backbone: tf_efficientnet_lite0
resolution_scale: 0.75
frozen_depth: {choices: [0.5, 0.75]}
optimizer: {choices: {adamw: {lr: {low: 3.0e-4, high: 3.0e-3, log: true}}}}
augment_strength: 0.5   # augmented, so nothing is cached: trials last a few seconds, long enough to kill
"""


def _search_args(folder, out, n_trials, *extra, scheduler="off"):
    """The command of a search whose trials each run to their end (tests/test_slices.py: the scheduler's slices)."""
    space = Path(out).parent / "slow.yaml"
    space.parent.mkdir(parents=True, exist_ok=True)
    space.write_text(SLOW_SPACE)
    return [
        *_cli("--dataset", str(folder), "--space", str(space), "--n-trials", str(n_trials), "--out", str(out)),
        *("--scheduler", scheduler),
        *extra,
    ]


def test_a_killed_worker_is_detected_and_rerun_ends_with_exactly_n_trials(tmp_path, photo_folder):
    out = tmp_path / "run"
    storage = f"sqlite:///{out / 'study.db'}"
    args = _search_args(photo_folder, out, 3)
    victim = subprocess.Popen(args, env=FAST_ENV, stderr=subprocess.DEVNULL)
    _wait_for_a_saved_report(out, victim)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert TrialState.RUNNING in _states(storage)[0]
    subprocess.run(args, env=FAST_ENV, check=True, stderr=subprocess.DEVNULL, timeout=600)
    states, study = _states(storage)
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 3
    assert TrialState.RUNNING not in states and TrialState.FAIL in states
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == failed[0].number]
    assert retried and retried[0].state != TrialState.FAIL
    assert retried[0].params.items() >= failed[0].params.items(), (failed[0], retried[0])  # the same recipe again
    assert TrialRecord.of(retried[0]).resumed_at >= 1  # it continued the lost trial's saved state
    assert (out / "best_model" / "model.safetensors").is_file()


# Ctrl-C at a chosen moment, without guessing how fast a trial is: this driver runs the CLI in-process and
# holds the search still at one hook (writing the marker file "blocked") until the test's SIGINTs have reached
# Python's handler, then lets it go on. Each SIGINT that reaches a handler writes the marker "got<count>".
CTRL_C_DRIVER = """
import os, signal, sys, time
from pathlib import Path

import atexit, collections, json
import autotl.cli, autotl.export, autotl.report
import safetensors.torch
import autotl.train._fit as _fit
from autotl.search import _run

WHERE, PRESSES, MARKS, ARGS = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:]
seen, trial, done = [], [None], set()
trained, checked = collections.Counter(), collections.Counter()  # training images and reports per trial number
atexit.register(lambda: (MARKS / "trained.json").write_text(json.dumps(trained)))

real_signal = signal.signal

def counting_signal(signum, handler):  # every SIGINT handler the search installs counts the presses it gets
    if signum == signal.SIGINT and callable(handler):
        inner = getattr(handler, "inner", handler)
        def counted(num, frame):
            seen.append(num)
            (MARKS / f"got{len(seen)}").write_text("")
            return inner(num, frame)
        counted.inner, handler = inner, counted
    previous = real_signal(signum, handler)
    return getattr(previous, "inner", previous)

signal.signal = counting_signal
signal.signal(signal.SIGINT, signal.default_int_handler)

def block(name):
    if name != WHERE or name in done:
        return
    done.add(name)
    (MARKS / "blocking").write_text(name)
    (MARKS / "blocking").rename(MARKS / "blocked")  # whole when the test sees it
    end = time.time() + 120  # a safety net only: the test presses Ctrl-C as soon as it sees the marker
    while len(seen) < PRESSES and time.time() < end:
        time.sleep(0.01)

def wrap(owner, name, wrapper):
    real = getattr(owner, name)
    setattr(owner, name, lambda *a, **k: wrapper(real, *a, **k))

def fit(real, config, dataset, trial_, *a, **k):
    trial[0] = trial_.number
    if trial_.number == 1:
        block("next_trial")  # trial #1 has started, its recipe sampled, nothing trained yet
    return real(config, dataset, trial_, *a, **k)

def augment(real, images, *a, **k):
    if trial[0] == 1:
        block("training")  # trial #1's first training step
        if checked[1]:
            block("training_report2")  # trial #1's first step after its first report, saved
    trained[trial[0]] += len(images)
    return real(images, *a, **k)

def check(real, *a, **k):
    checked[trial[0]] += 1
    return real(*a, **k)

def report_write(real, *a, **k):
    block("report")  # the report refresh after trial #0 ended
    return real(*a, **k)

def keep_best(real, study, result, data, model_dir, number, value, **k):
    if WHERE.startswith("export") and number == 1:
        value += 1.0  # so that trial #1's model always replaces trial #0's
    return real(study, result, data, model_dir, number, value, **k)

def save_file(real, *a, **k):
    out = real(*a, **k)
    if trial[0] == 1:
        block("export")  # the new model's weights are written, its config not yet
    return out

def replace(real, src, dst, *a, **k):
    out = real(src, dst, *a, **k)
    if trial[0] == 1 and Path(src).name == "best_model":
        block("export_replace")  # the old model moved aside, the new one not yet in place
    return out

wrap(_run, "fit", fit)
wrap(_fit, "augment", augment)
wrap(_fit, "check", check)
wrap(autotl.report, "write", report_write)
wrap(_run, "keep_best", keep_best)
wrap(safetensors.torch, "save_file", save_file)
wrap(os, "replace", replace)
sys.exit(autotl.cli.main(ARGS))
"""


def _wait_for_file(path, run, timeout=300):
    end = time.time() + timeout
    while not path.exists():
        if run.poll() is not None:
            raise AssertionError(f"the search ended ({run.returncode}) before {path.name}: {run.communicate()[1]}")
        if time.time() > end:
            raise AssertionError(f"no {path.name} after {timeout} s")
        time.sleep(0.05)


def _ctrl_c_at(tmp_path, photo_folder, where, presses=1, n_trials=3, max_epochs=1):
    """Run the search until ``where`` and press Ctrl-C ``presses`` times there.

    Returns the search's command line, its exit code and stderr, and when the first press arrived.
    """
    out, marks = tmp_path / "run", tmp_path / "marks"
    marks.mkdir()
    args = _search_args(
        photo_folder, out, n_trials, "--max-epochs", str(max_epochs), "--pruner", "none"
    )  # every trial completes: no luck involved
    driver = tmp_path / "driver.py"
    driver.write_text(CTRL_C_DRIVER)
    run = subprocess.Popen(
        [sys.executable, str(driver), where, str(presses), str(marks), *args[3:]],
        env=FAST_ENV,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_file(marks / "blocked", run)
        assert (marks / "blocked").read_text() == where
        for press in range(1, presses + 1):
            run.send_signal(signal.SIGINT)
            if press < presses:
                _wait_for_file(marks / f"got{press}", run)
        _, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    return args, run.returncode, err, (marks / "got1").stat().st_mtime_ns


def _assert_clean_exit_130(out, code, err, pressed_ns):
    """Exit 130, one line saying so on stderr (after the progress lines), no traceback, the report written after
    the Ctrl-C, and nothing left of a model being written (a staging folder, or an old model moved aside)."""
    assert code == 130, err
    assert "Traceback" not in err, err
    said = [line for line in err.splitlines() if line.startswith("autotl:")]
    assert said == ["autotl: interrupted; finished trials are kept in the study, rerun the same command to resume"], err
    assert (out / "report.html").stat().st_mtime_ns >= pressed_ns
    assert not [p.name for p in out.iterdir() if p.name.startswith(".best_model.") and p.name != ".best_model.lock"]


def _assert_whole_model(out, study, trials):
    """best_model/ is one whole model (config and weights load) of a complete trial among ``trials``, the one the
    study (and so the report) names as exported."""
    model = autotl.load_model(out / "best_model")
    assert model.config["trial"] in trials, model.config
    assert study.trials[model.config["trial"]].state == TrialState.COMPLETE
    assert study.user_attrs["best_model_trial"] == model.config["trial"]


def _interrupted(study):
    """The numbers of the trials marked interrupted, each checked to have a retry of its recipe queued."""
    interrupted = [t for t in study.trials if "interrupted" in t.user_attrs.get("error", "")]
    for trial in interrupted:
        retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == trial.number]
        assert trial.state == TrialState.FAIL and [t.state for t in retries] == [TrialState.WAITING], (trial, retries)
        assert retries[0].params == trial.params
    return [t.number for t in interrupted]


def _rerun_ends_with_exactly(args, storage, n):
    """Rerunning the plain command resumes: exactly ``n`` finished trials, none left running or queued."""
    subprocess.run(args, env=FAST_ENV, check=True, stderr=subprocess.DEVNULL, timeout=600)
    states, study = _states(storage)
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == n
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    return study


def test_ctrl_c_writes_report_and_model_exits_130_and_resumes(tmp_path, photo_folder):
    """Ctrl-C during the second trial's training: that trial ends, is marked interrupted and its recipe queued."""
    out, storage = tmp_path / "run", f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    args, code, err, pressed = _ctrl_c_at(tmp_path, photo_folder, "training")
    _assert_clean_exit_130(out, code, err, pressed)
    assert (out / "best_model" / "config.json").is_file()
    states, study = _states(storage)
    assert _interrupted(study) == [1] and TrialState.WAITING in states  # its configuration is queued to run again
    assert "interrupted (Ctrl-C)" in (out / "report.html").read_text()
    _assert_whole_model(out, study, {0})
    _rerun_ends_with_exactly(args, storage, 3)


def test_a_second_ctrl_c_during_training_interrupts_at_once_and_loses_nothing(tmp_path, photo_folder):
    """Ctrl-C twice during the second trial's training: the second press stops it at once, with the same result."""
    out, storage = tmp_path / "run", f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    args, code, err, pressed = _ctrl_c_at(tmp_path, photo_folder, "training", presses=2, n_trials=2)
    _assert_clean_exit_130(out, code, err, pressed)
    states, study = _states(storage)
    assert _interrupted(study) == [1] and TrialState.WAITING in states
    _assert_whole_model(out, study, {0})
    _rerun_ends_with_exactly(args, storage, 2)


def test_ctrl_c_mid_trial_then_rerun_continues_it_and_trains_only_the_rest(tmp_path, photo_folder):
    """Ctrl-C in trial #1's second report: its retry, on the rerun, continues from its first report, saved; that
    report is unchanged in its curve, and the rerun trains the trial's last two epochs only."""
    out, storage, marks = tmp_path / "run", f"sqlite:///{tmp_path / 'run' / 'study.db'}", tmp_path / "marks"
    args, code, err, pressed = _ctrl_c_at(tmp_path, photo_folder, "training_report2", n_trials=2, max_epochs=3)
    _assert_clean_exit_130(out, code, err, pressed)
    _, study = _states(storage)
    assert _interrupted(study) == [1]
    interrupted = TrialRecord.of(study.trials[1])
    assert [r.report for r in interrupted.history] == [1] and "continues it" in interrupted.error
    assert (out / "trials" / "1" / "state.safetensors").is_file()
    n_train = load_dataset(str(photo_folder)).count("train")
    first = json.loads((marks / "trained.json").read_text())
    assert n_train < first["1"] < 2 * n_train  # report 1, and the step that the Ctrl-C stopped
    (marks / "trained.json").unlink()
    rerun = subprocess.run(
        [sys.executable, str(tmp_path / "driver.py"), "nowhere", "0", str(marks), *args[3:]],
        env=FAST_ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "continuing from here" in rerun.stderr
    states, study = _states(storage)
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == 1)
    record = TrialRecord.of(retry)
    assert retry.state == TrialState.COMPLETE and record.resumed_at == 1
    assert [r.report for r in record.history] == [1, 2, 3] and record.history[0] == interrupted.history[0]
    assert retry.intermediate_values[1] == study.trials[1].intermediate_values[1]
    trained = json.loads((marks / "trained.json").read_text())
    assert trained[str(retry.number)] == 2 * n_train  # only the two epochs that were left
    assert states.count(TrialState.COMPLETE) == 2 and TrialState.WAITING not in states
    assert not list((out / "trials").glob("*/state.safetensors"))  # no state is kept once its trial ended


@pytest.mark.parametrize("where,presses", [("report", 1), ("report", 2), ("next_trial", 1)])
def test_ctrl_c_between_trials_exits_130_keeps_the_model_and_resumes(tmp_path, photo_folder, where, presses):
    """Ctrl-C (once, or twice) in the report refresh after the first trial ended, or as the second one starts
    (its recipe sampled, nothing trained): exit 130, the finished trial and its model kept, the rerun resumes."""
    out, storage = tmp_path / "run", f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    args, code, err, pressed = _ctrl_c_at(tmp_path, photo_folder, where, presses, n_trials=2)
    _assert_clean_exit_130(out, code, err, pressed)
    states, study = _states(storage)
    assert states.count(TrialState.COMPLETE) == 1 and TrialState.RUNNING not in states
    if where == "report":  # no trial was running: none is started, none is marked interrupted
        assert len(states) == 1
    else:  # the trial that had just started ends, and its recipe is queued to run again
        assert _interrupted(study) == [1] and TrialState.WAITING in states
    _assert_whole_model(out, study, {0})
    _rerun_ends_with_exactly(args, storage, 2)


@pytest.mark.parametrize("where,presses", [("export", 1), ("export_replace", 2)])
def test_ctrl_c_while_the_best_model_is_written_leaves_a_whole_model(tmp_path, photo_folder, where, presses):
    """Ctrl-C while the second trial's model replaces the first's: once, after its weights are written; or
    twice (a second Ctrl-C "interrupts at once"), after the old model is moved aside and before the new one is
    in. best_model/ is then one whole model of a complete trial, that trial is kept (or, had it been cut
    short, queued again), exit 130, and the rerun ends with exactly n trials."""
    out, storage = tmp_path / "run", f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    args, code, err, pressed = _ctrl_c_at(tmp_path, photo_folder, where, presses)
    _assert_clean_exit_130(out, code, err, pressed)
    states, study = _states(storage)
    assert TrialState.RUNNING not in states
    assert study.trials[1].state == TrialState.COMPLETE or _interrupted(study) == [1]
    _assert_whole_model(out, study, {0, 1})
    study = _rerun_ends_with_exactly(args, storage, 3)
    _assert_whole_model(out, study, {0, 1, 2})


def test_an_exception_in_one_trial_fails_it_alone(tmp_path, photo_folder):
    def objective(trial, ctx):
        config = ctx.suggest(trial)
        config.max_epochs = 1
        if trial.number == 1:
            raise RuntimeError("backbone exploded <b>")
        return ctx.fit(trial, config).metrics["accuracy"]

    result = autotl.search(
        str(photo_folder), space="quick", n_trials=2, objective=objective, out=tmp_path / "run", progress=False
    )
    states = [t.state for t in result.study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert result.study.trials[1].user_attrs["error"] == "RuntimeError: backbone exploded <b>"
    assert "backbone exploded &lt;b&gt;" in (result.run_dir / "report.html").read_text()


def test_a_search_whose_trials_all_fail_stops_with_the_error(tmp_path, photo_folder):
    def objective(trial, ctx):
        ctx.suggest(trial)
        raise RuntimeError("no such layer")

    with pytest.raises(autotl.AutoTLError, match="the last 5 trials failed, the last one with RuntimeError: no such"):
        autotl.search(
            str(photo_folder), space="quick", n_trials=2, objective=objective, out=tmp_path / "run", progress=False
        )


def test_cuda_out_of_memory_is_retried_once_at_half_the_batch(tmp_path, photo_folder, monkeypatch):
    from autotl.search import _run

    real_fit, calls = _run.fit, []

    def fit_that_runs_out_of_memory(config, *args, **kwargs):
        calls.append(config.batch_size)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real_fit(config, *args, **kwargs)

    monkeypatch.setattr(_run, "fit", fit_that_runs_out_of_memory)
    result = autotl.search(
        str(photo_folder), space="quick", n_trials=1, max_epochs=1, out=tmp_path / "run", progress=False
    )
    assert calls[:2] == [32, 16] and set(calls[2:]) <= {16}  # later slices keep the halved batch
    trial = result.study.trials[0]
    assert trial.state == TrialState.COMPLETE and "batch size 16" in trial.user_attrs["out_of_memory_retry"]


def test_a_damaged_model_is_reported_in_one_line_and_replaced_by_the_next_run(tmp_path, photo_folder, capsys):
    out = tmp_path / "run"
    autotl.search(str(photo_folder), space="quick", n_trials=1, max_epochs=1, out=out, progress=False)
    (out / "best_model" / "model.safetensors").write_bytes(b"not a tensor file")
    capsys.readouterr()
    assert main(["predict", "--model", str(out / "best_model"), str(next(photo_folder.rglob("*.png")))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is damaged" in err[0]
    (out / "best_model" / "config.json").write_text("{broken")
    autotl.search(str(photo_folder), space="quick", n_trials=2, max_epochs=1, out=out, progress=False)
    assert autotl.load_model(out / "best_model").predict([next(photo_folder.rglob("*.png"))])


def test_two_workers_on_local_storage_end_with_exactly_n_trials(tmp_path, photo_folder):
    result = autotl.search(
        str(photo_folder), space="quick", n_trials=4, max_epochs=1, workers=2, out=tmp_path / "run", progress=False
    )
    states = [t.state for t in result.study.trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 4
    assert TrialState.RUNNING not in states
    assert (result.model_dir / "model.safetensors").is_file()


POSTGRES = os.environ.get("AUTOTL_TEST_POSTGRES_URL")


def _open_fresh_studies(folder, rounds, barrier, queue):
    """One process: open a new study file each round, at the same moment as the others."""
    errors = []
    for i in range(rounds):
        barrier.wait()
        try:
            open_storage(f"sqlite:///{folder}/fresh-{i}.db")
        except Exception as error:  # noqa: BLE001 - reported to the test
            errors.append(str(error)[:200])
    queue.put(errors)


def test_workers_opening_a_fresh_study_at_the_same_moment_all_succeed(tmp_path):
    """Several workers or machines starting at once race to create the schema; none may lose and exit."""
    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_open_fresh_studies, args=(tmp_path, 4, barrier, queue)) for _ in range(4)]
    for worker in workers:
        worker.start()
    errors = [error for _ in workers for error in queue.get(timeout=300)]
    for worker in workers:
        worker.join()
    assert errors == []


def _claim_waiting_trials(url, name, queue):
    """One worker: take enqueued trials until none is left, as Optuna's ask() does."""
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    claimed = []
    while (trial_id := study._pop_waiting_trial_id()) is not None:
        claimed.append(trial_id)
    queue.put(claimed)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_each_enqueued_trial_is_claimed_by_exactly_one_worker(tmp_path, backend):
    """The warm-start recipes are enqueued trials: with --workers, each must run once, not once per worker."""
    if backend == "postgresql" and not POSTGRES:
        pytest.skip("set AUTOTL_TEST_POSTGRES_URL (.ci/run does)")
    url = f"sqlite:///{tmp_path / 'study.db'}" if backend == "sqlite" else POSTGRES
    name = f"race-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(study_name=name, storage=open_storage(url))
    for i in range(40):
        study.enqueue_trial({"x": i})
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_claim_waiting_trials, args=(url, name, queue)) for _ in range(4)]
    for worker in workers:
        worker.start()
    claimed = [trial_id for _ in workers for trial_id in queue.get(timeout=120)]
    for worker in workers:
        worker.join()
    assert sorted(claimed) == sorted(t._trial_id for t in study.get_trials())


@pytest.mark.skipif(not POSTGRES and not os.environ.get("CI"), reason="set AUTOTL_TEST_POSTGRES_URL (.ci/run does)")
@pytest.mark.parametrize("run_dirs", ["shared", "one per machine"])
def test_two_machines_share_a_postgresql_study_and_survive_a_kill(tmp_path, photo_folder, run_dirs):
    """Machine b is killed (SIGKILL) in the middle of a trial, after it saved a report. Machine a takes the trial
    over: it continues b's saved state when the machines share a run directory, and starts it over when b's state
    is out of its reach. Every recipe finishes once, and no trial is left running."""
    assert POSTGRES, "CI must provide AUTOTL_TEST_POSTGRES_URL (.ci/run starts PostgreSQL)"
    name = f"test-{uuid.uuid4().hex[:8]}"
    shared = ["--storage", POSTGRES, "--study-name", name]
    dir_a, dir_b = (tmp_path / "run", tmp_path / "run") if run_dirs == "shared" else (tmp_path / "a", tmp_path / "b")
    machine_a = _search_args(photo_folder, dir_a, 4, *shared)
    machine_b = _search_args(photo_folder, dir_b, 4, *shared)
    b = subprocess.Popen(machine_b, env=FAST_ENV, stderr=subprocess.DEVNULL)
    _wait_for_a_saved_report(dir_b, b)
    a = subprocess.Popen(machine_a, env=FAST_ENV, stderr=subprocess.DEVNULL)
    b.send_signal(signal.SIGKILL)
    b.wait()
    assert a.wait(timeout=600) == 0
    subprocess.run(machine_b, env=FAST_ENV, check=True, stderr=subprocess.DEVNULL, timeout=600)
    states, study = _states(POSTGRES, name)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4 and TrialState.RUNNING not in states
    assert len({t.system_attrs.get("failed_trial", t.number) for t in finished}) == 4  # no recipe finished twice
    (killed,) = [t for t in study.trials if t.state == TrialState.FAIL]
    (retried,) = [t for t in finished if t.system_attrs.get("failed_trial") == killed.number]
    resumed_at = TrialRecord.of(retried).resumed_at
    assert (resumed_at is not None and resumed_at >= 1) if run_dirs == "shared" else resumed_at is None


def _children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def test_a_killed_worker_of_workers_2_loses_nothing(tmp_path, photo_folder):
    out = tmp_path / "run"
    storage = f"sqlite:///{out / 'study.db'}"
    args = _search_args(photo_folder, out, 4, "--workers", "2", scheduler="freeze-thaw")
    parent = subprocess.Popen(args, env=FAST_ENV, stderr=subprocess.DEVNULL)
    _wait_for_running_epoch(storage)
    workers = [
        p
        for p in _children(parent.pid)  # the worker processes, not multiprocessing's resource tracker
        if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text(errors="ignore")
    ]
    assert len(workers) >= 2, workers
    os.kill(workers[-1], signal.SIGKILL)
    parent.wait(timeout=600)
    subprocess.run(args, env=FAST_ENV, check=True, stderr=subprocess.DEVNULL, timeout=600)
    states, _ = _states(storage)
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 4
    assert TrialState.RUNNING not in states
    assert (out / "best_model" / "model.safetensors").is_file()
