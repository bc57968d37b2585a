"""Faults lose nothing: a killed worker, an exception in a trial, Ctrl-C, a damaged model, CUDA OOM,
and several workers (processes, or machines on PostgreSQL) ending with exactly --n-trials."""

from __future__ import annotations

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
from autotl.cli import main
from autotl.search._run import open_storage

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


SLOW_SPACE = """
max_epochs: 3
backbone: tf_efficientnet_lite0
resolution_scale: 0.75
frozen_depth: {choices: [0.5, 0.75]}
optimizer: {choices: {adamw: {lr: {low: 3.0e-4, high: 3.0e-3, log: true}}}}
augment_strength: 0.5   # augmented, so nothing is cached: trials last a few seconds, long enough to kill
"""


def _search_args(folder, out, n_trials, *extra):
    space = Path(out).parent / "slow.yaml"
    space.parent.mkdir(parents=True, exist_ok=True)
    space.write_text(SLOW_SPACE)
    return [*_cli("--dataset", str(folder), "--space", str(space), "--n-trials", str(n_trials),
                  "--out", str(out), *extra)]


def test_a_killed_worker_is_detected_and_rerun_ends_with_exactly_n_trials(tmp_path, photo_folder):
    out = tmp_path / "run"
    storage = f"sqlite:///{out / 'study.db'}"
    args = _search_args(photo_folder, out, 3)
    victim = subprocess.Popen(args, env=FAST_ENV, stderr=subprocess.DEVNULL)
    _wait_for_running_epoch(storage)
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
    assert (out / "best_model" / "model.safetensors").is_file()


def test_ctrl_c_writes_report_and_model_exits_130_and_resumes(tmp_path, photo_folder):
    out = tmp_path / "run"
    storage = f"sqlite:///{out / 'study.db'}"
    args = _search_args(photo_folder, out, 3)
    run = subprocess.Popen(args, env=FAST_ENV, stderr=subprocess.PIPE, text=True)
    _wait_for_running_epoch(storage)
    while not (out / "best_model").exists() and run.poll() is None:  # let one trial finish first
        time.sleep(0.5)
    _wait_for_running_epoch(storage)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    assert "rerun the same command to resume" in err and "Traceback" not in err
    assert (out / "report.html").is_file() and (out / "best_model" / "config.json").is_file()
    states, study = _states(storage)
    interrupted = [t for t in study.trials if "interrupted" in t.user_attrs.get("error", "")]
    assert interrupted and TrialState.WAITING in states  # its configuration is queued to run again
    subprocess.run(args, env=FAST_ENV, check=True, stderr=subprocess.DEVNULL, timeout=600)
    states, study = _states(storage)
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 3
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states


def test_an_exception_in_one_trial_fails_it_alone(tmp_path, photo_folder):
    def objective(trial, ctx):
        config = ctx.suggest(trial)
        config.max_epochs = 1
        if trial.number == 1:
            raise RuntimeError("backbone exploded <b>")
        return ctx.fit(trial, config).metrics["accuracy"]

    result = autotl.search(str(photo_folder), space="quick", n_trials=2, objective=objective,
                           out=tmp_path / "run", progress=False)
    states = [t.state for t in result.study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert result.study.trials[1].user_attrs["error"] == "RuntimeError: backbone exploded <b>"
    assert "backbone exploded &lt;b&gt;" in (result.run_dir / "report.html").read_text()


def test_cuda_out_of_memory_is_retried_once_at_half_the_batch(tmp_path, photo_folder, monkeypatch):
    from autotl.search import _run

    real_fit, calls = _run.fit, []

    def fit_that_runs_out_of_memory(config, *args, **kwargs):
        calls.append(config.batch_size)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real_fit(config, *args, **kwargs)

    monkeypatch.setattr(_run, "fit", fit_that_runs_out_of_memory)
    result = autotl.search(str(photo_folder), space="quick", n_trials=1, max_epochs=1, out=tmp_path / "run",
                           progress=False)
    assert calls == [32, 16]
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
    result = autotl.search(str(photo_folder), space="quick", n_trials=4, max_epochs=1, workers=2,
                           out=tmp_path / "run", progress=False)
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
def test_two_machines_share_a_postgresql_study_and_survive_a_kill(tmp_path, photo_folder):
    assert POSTGRES, "CI must provide AUTOTL_TEST_POSTGRES_URL (.ci/run starts PostgreSQL)"
    name = f"test-{uuid.uuid4().hex[:8]}"
    shared = ["--storage", POSTGRES, "--study-name", name]
    machine_a = _search_args(photo_folder, tmp_path / "a", 4, *shared)
    machine_b = _search_args(photo_folder, tmp_path / "b", 4, *shared)
    a = subprocess.Popen(machine_a, env=FAST_ENV, stderr=subprocess.DEVNULL)
    b = subprocess.Popen(machine_b, env=FAST_ENV, stderr=subprocess.DEVNULL)
    _wait_for_running_epoch(POSTGRES, name)
    b.send_signal(signal.SIGKILL)
    b.wait()
    assert a.wait(timeout=600) == 0
    subprocess.run(machine_b, env=FAST_ENV, check=True, stderr=subprocess.DEVNULL, timeout=600)
    states, _ = _states(POSTGRES, name)
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 4
    assert TrialState.RUNNING not in states


def _children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def test_a_killed_worker_of_workers_2_loses_nothing(tmp_path, photo_folder):
    out = tmp_path / "run"
    storage = f"sqlite:///{out / 'study.db'}"
    args = _search_args(photo_folder, out, 4, "--workers", "2")
    parent = subprocess.Popen(args, env=FAST_ENV, stderr=subprocess.DEVNULL)
    _wait_for_running_epoch(storage)
    workers = [p for p in _children(parent.pid)  # the worker processes, not multiprocessing's resource tracker
               if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text(errors="ignore")]
    assert len(workers) >= 2, workers
    os.kill(workers[-1], signal.SIGKILL)
    parent.wait(timeout=600)
    subprocess.run(args, env=FAST_ENV, check=True, stderr=subprocess.DEVNULL, timeout=600)
    states, _ = _states(storage)
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 4
    assert TrialState.RUNNING not in states
    assert (out / "best_model" / "model.safetensors").is_file()
