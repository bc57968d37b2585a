"""Searching smarter: LogME ranks backbones before training, warm-start recipes come first,
cost is measured, accuracy and latency can be searched together, and any trial can be exported."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from scipy.stats import multivariate_normal

import autotl
from autotl.cli import main
from autotl.export import load_model
from autotl.records import StudyRecord
from autotl.search import logme
from autotl.search._logme import evidence, maximum_evidence


def test_logme_evidence_matches_a_hand_computed_case():
    # F = [[1], [1]], y = [1, 1], alpha = beta = 1: y ~ N(0, F F^T + I) = N(0, [[2, 1], [1, 2]]),
    # det = 3, y^T C^-1 y = (2 - 1 - 1 + 2) / 3 = 2/3, so log p = -log(2 pi) - log(3)/2 - 1/3, per image / 2.
    expected = (-math.log(2 * math.pi) - math.log(3) / 2 - 1 / 3) / 2
    assert evidence(np.array([[1.0], [1.0]]), np.array([1.0, 1.0]), 1.0, 1.0) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n, d", [(30, 6), (6, 30)])
def test_logme_evidence_is_the_gaussian_marginal_and_maximised(n, d):
    rng = np.random.default_rng(0)
    f = rng.normal(size=(n, d))
    y = f @ rng.normal(size=d) + 0.5 * rng.normal(size=n)  # a linear signal: alpha and beta are finite
    marginal = multivariate_normal(np.zeros(n), f @ f.T / 0.7 + np.eye(n) / 2.3).logpdf(y)
    assert evidence(f, y, 0.7, 2.3) * n == pytest.approx(marginal, rel=1e-9)
    if n < d:
        return  # fewer images than features: every label fits exactly and the maximum runs off to beta = infinity
    best, alpha, beta = maximum_evidence(f, y)
    for a, b in [(alpha * 0.8, beta), (alpha * 1.25, beta), (alpha, beta * 0.8), (alpha, beta * 1.25)]:
        assert evidence(f, y, a, b) < best  # the fixed point is the maximum


def test_logme_scores_separating_features_above_noise():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 150)
    noise = rng.normal(size=(150, 16))
    telling = np.c_[noise, 3 * np.eye(3)[labels]]
    assert logme(telling, labels) > logme(noise, labels) + 1


SPACE = """
max_epochs: 1
backbone: {choices: [tf_efficientnet_lite0, tf_efficientnet_lite1]}
resolution_scale: 0.5
frozen_depth: {choices: [0.5, 1.0]}
optimizer: {choices: {adamw: {lr: {low: 1.0e-4, high: 1.0e-2, log: true}}, sgd: {lr: {low: 1.0e-3, high: 1.0e-1, log: true}}}}
start_from: {frozen_depth: 0.5, optimizer: adamw, lr: 1.0e-3}
warm_start:
  backbones: 2
  recipes:
    linear_probe: {frozen_depth: 1.0, lr: 5.0e-3}
    sgd: {optimizer: sgd, lr: 1.0e-2}
"""


def _no_training(trial, ctx):
    ctx.suggest(trial)
    return 0.5


@pytest.mark.slow
def test_warm_start_recipes_are_the_first_trials_recipe_by_recipe_best_backbone_first(tmp_path, photo_folder):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    result = autotl.search(
        str(photo_folder), space=str(space), n_trials=6, out=tmp_path / "run", objective=_no_training, progress=False
    )
    ranking = StudyRecord.of(result.study).backbone_ranking
    order = [s.backbone for s in ranking.scores]
    assert sorted(order) == ["tf_efficientnet_lite0", "tf_efficientnet_lite1"]
    assert ranking.scores[0].logme >= ranking.scores[1].logme and ranking.seconds > 0
    first = result.study.trials[:4]
    assert [t.user_attrs["warm_start"] for t in first] == [
        f"{r} on {b}" for r in ("linear_probe", "sgd") for b in order
    ]
    assert [t.params["backbone"] for t in first] == [order[0], order[1], order[0], order[1]]
    assert first[0].params["frozen_depth"] == 1.0 and first[0].params["adamw.lr"] == 5e-3
    assert first[2].params["optimizer"] == "sgd" and first[2].params["sgd.lr"] == 1e-2
    assert all("warm_start" not in t.user_attrs for t in result.study.trials[4:])


@pytest.mark.slow
def test_drop_backbones_leaves_out_the_far_worse_and_survives_resume(tmp_path, photo_folder):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    out = tmp_path / "run"
    result = autotl.search(
        str(photo_folder),
        space=str(space),
        n_trials=4,
        out=out,
        objective=_no_training,
        progress=False,
        drop_backbones=0.0,
    )
    scores = StudyRecord.of(result.study).backbone_ranking.scores
    assert [s.dropped for s in scores] == [False, True]
    result = autotl.search(
        str(photo_folder), space=str(space), n_trials=8, out=out, objective=_no_training, progress=False
    )
    assert {t.params["backbone"] for t in result.study.trials} == {scores[0].backbone}


@pytest.mark.slow
def test_accuracy_and_latency_search_stores_cost_and_exports_the_most_accurate(tmp_path, photo_folder, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "search",
            "--dataset",
            str(photo_folder),
            "--space",
            "quick",
            "--n-trials",
            "2",
            "--max-epochs",
            "1",
            "--out",
            str(out),
            "--objective",
            "accuracy,latency",
        ]
    )
    assert code == 0
    import optuna

    study = optuna.load_study(study_name="autotl", storage=f"sqlite:///{out / 'study.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 2
    for t in complete:
        assert t.values[1] == t.user_attrs["latency_ms"] > 0
        assert t.user_attrs["model_mb"] > 1 and 0 < t.user_attrs["train_seconds"] <= t.user_attrs["wall_seconds"]
    top = max(t.values[0] for t in complete)
    near = [t for t in complete if t.values[0] >= top - 1 / t.user_attrs["val_images"] - 1e-9]
    # within one validation image of the most accurate, the lower validation loss wins, then the faster
    best = min(near, key=lambda t: (t.user_attrs["metrics"]["loss"], t.values[1], t.number))
    exported = json.loads((out / "best_model" / "config.json").read_text())["autotl"]
    assert (exported["trial"], exported["value"], exported["latency_ms"]) == (best.number, *best.values)
    assert "Pareto front" in (out / "report.html").read_text()
    # the same run directory with the other objective is refused in one line
    code = main(["search", "--dataset", str(photo_folder), "--space", "quick", "--n-trials", "3", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "objective" in err[-1] and err[-1].startswith("autotl: error:")


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["kept", "trained again"])
def test_export_any_trial_gives_its_model_with_the_same_score(finished_run, tmp_path, capsys, weights):
    """A trial whose weights the search kept is exported from them; one without is trained again, the same."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run.run_dir, run_dir)
    kept = run_dir / "trials" / "1" / "model.safetensors"
    assert kept.is_file()
    if weights == "trained again":
        kept.unlink()
    trial = finished_run.study.trials[1]
    out = tmp_path / "trial1"
    capsys.readouterr()
    assert main(["export", str(run_dir), "--trial", "1", "--out", str(out)]) == 0
    said = capsys.readouterr().err
    assert ("kept weights" in said) == (weights == "kept") and ("training" in said) == (weights != "kept")
    config = json.loads((out / "config.json").read_text())["autotl"]
    assert (out / "model.onnx").is_file()
    assert config["trial"] == 1 and config["hyperparameters"] == trial.user_attrs["config"]
    assert config["metrics"]["accuracy"] == trial.user_attrs["metrics"]["accuracy"]
    assert config["metrics"]["loss"] == pytest.approx(trial.user_attrs["metrics"]["loss"], rel=1e-3)
    assert load_model(out).classes == ["astronaut", "brick", "coffee"]
    assert main(["export", str(run_dir), "--trial", "7"]) == 2
    assert capsys.readouterr().err.strip().endswith("trials are numbered 0 to 1")


@pytest.mark.slow
def test_refit_trains_the_best_recipe_on_train_and_validation(tmp_path, photo_folder):
    result = autotl.search(
        str(photo_folder), space="quick", n_trials=1, max_epochs=2, out=tmp_path / "run", progress=False, refit=True
    )
    config = json.loads((result.model_dir / "config.json").read_text())["autotl"]
    data = autotl.load_dataset(str(photo_folder))
    best = result.best_trial
    assert config["refit"]["train_images"] == data.count("train") + data.count("val")
    assert config["refit"]["reports"] == best.user_attrs["best_report"]
    assert config["metrics"] == best.user_attrs["metrics"]  # the trial's validation score, not the refit's
    assert StudyRecord.of(result.study).refit.trial == best.number
    assert len(load_model(result.model_dir).predict([data.pixels(0)])) == 1


def test_greedy_soup_keeps_an_epoch_only_when_validation_does_not_drop():
    import torch

    from autotl.train._soup import average, greedy_soup

    states = {e: {"w": torch.tensor([float(e)]), "n": torch.tensor(e)} for e in (1, 2, 3)}
    assert average([states[1], states[3]])["w"].item() == 2.0 and average([states[1], states[3]])["n"].item() == 1
    score = lambda s: (-abs(s["w"].item() - 2.4),)  # noqa: E731 - validation is best near w = 2.4
    candidates = [(score(states[e]), e, states[e]) for e in (2, 3, 1)]  # best first
    soup, epochs, best = greedy_soup(candidates, score)
    # (2 + 3) / 2 = 2.5 is nearer 2.4 than 2 is: kept; adding 1 gives 2.0, worse: left out
    assert epochs == [2, 3] and soup["w"].item() == 2.5
    assert best == score(soup)


@pytest.mark.slow
def test_a_souped_fit_is_never_worse_on_validation_than_its_best_report(photo_folder):
    from autotl import TrialConfig
    from autotl.train import fit

    data = autotl.load_dataset(str(photo_folder))
    config = TrialConfig(resolution_scale=0.25, frozen_depth=0.75, max_epochs=3, augment_strength=0.0, lr=3e-3)
    result = fit(config, data, soup=True)
    best_report = max(result.history, key=lambda r: (r.val_accuracy, -r.val_loss))
    assert result.metrics["accuracy"] >= best_report.val_accuracy
    if result.record.soup_reports:
        assert len(result.record.soup_reports) > 1 and result.unsouped_state is not None
        assert result.record.attrs()["soup_reports"] == result.record.soup_reports
