"""Which trial wins and when a trial may be pruned: near-ties go to the lower validation loss
(in the search, the report and the export alike), no trial is pruned during its warmup,
and a trial is compared only with trials of its own strategy."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from autotl import TrialConfig, export, load_dataset
from autotl.report import strategy_records
from autotl.search._best import keep_best
from autotl.search._plugins import make_pruner
from autotl.space import load_space
from autotl.train import Setup, fit
from autotl.trials import Standing, best, best_trial

MAXIMIZE = [optuna.study.StudyDirection.MAXIMIZE]


def _trial(accuracy: float, loss: float, val_images: int = 72) -> optuna.trial.FrozenTrial:
    return create_trial(
        value=accuracy, user_attrs={"metrics": {"accuracy": accuracy, "loss": loss}, "val_images": val_images}
    )


def test_equal_accuracy_goes_to_the_lower_loss_and_near_ties_are_within_one_image():
    study = optuna.create_study(direction="maximize")
    for accuracy, loss in ((1.0, 0.30), (1.0, 0.05), (1.0, 0.20), (71 / 72, 0.01), (70 / 72, 0.001)):
        study.add_trial(_trial(accuracy, loss))
    assert best_trial(study).number == 3, "one image behind, but far more sure: a near-tie it wins"
    study = optuna.create_study(direction="maximize")
    for accuracy, loss in ((1.0, 0.30), (1.0, 0.05), (70 / 72, 0.001)):
        study.add_trial(_trial(accuracy, loss))
    assert best_trial(study).number == 1, "two images behind is no tie: the lower loss among the most accurate"


def test_exact_ties_on_accuracy_and_loss_go_to_the_earlier_trial():
    first, second = Standing((0.9,), 3, 0.2, 10), Standing((0.9,), 7, 0.2, 10)
    assert best([second, first], MAXIMIZE) is first
    assert best([Standing((None,), 1, 0.1, 10), second], MAXIMIZE) is second, "a missing value ranks last"


@pytest.fixture(scope="module")
def photos(photo_folder):
    return load_dataset(str(photo_folder), val_fraction=0.25)


QUICK = dict(
    backbone="test_resnet",
    resolution_scale=0.5,
    batch_size=16,
    augment_strength=0.0,
    regularizer="none",
    lr_schedule="constant",
    max_epochs=1,
)


@pytest.mark.slow
def test_of_two_equally_accurate_trials_the_lower_loss_one_is_exported_and_reported(photos, tmp_path):
    study = optuna.create_study(direction="maximize")
    model_dir = tmp_path / "best_model"
    results = []
    for number, loss in ((0, 0.40), (1, 0.10), (2, 0.25)):  # the second is best, whatever the order
        result = fit(TrialConfig(**QUICK), photos, setup=Setup(pretrained=False), number=number)
        result.record.metrics = dataclasses.replace(result.record.metrics, accuracy=1.0, loss=loss)
        results.append(result)
        keep_best(study, result, photos, model_dir, number, 1.0)
        study.add_trial(create_trial(value=1.0, user_attrs=result.record.attrs("metrics", "val_images", "config")))
    assert export.record(model_dir)["trial"] == 1
    assert best_trial(study).number == 1
    strategies = strategy_records(study)
    assert strategies["best_trial"].tolist() == [1], "the report's strategy table names the same trial"


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return True


@pytest.mark.slow
@pytest.mark.parametrize(
    "settings, first_prunable_report",
    [
        (dict(warmup_epochs=0), 1),
        (dict(warmup_epochs=1), 2),
        (dict(warmup_epochs=1, strategy="lp_ft", probe_epochs=1), 3),
    ],
)
def test_no_trial_is_pruned_during_its_warmup(photos, settings, first_prunable_report):
    study = optuna.create_study(direction="maximize", pruner=_AlwaysPrune())
    trial = study.ask()
    config = TrialConfig(**{**QUICK, "max_epochs": 4, **settings})
    with pytest.raises(optuna.TrialPruned, match=f"after report {first_prunable_report}$"):
        fit(config, photos, trial, setup=Setup(pretrained=False))


def _run_with_curve(study, strategy: str, curve: list[float]) -> bool:
    """Report ``curve`` for a trial of ``strategy``; True when it was pruned on the way."""
    trial = study.ask()
    trial.set_user_attr("strategy", strategy)
    for step, value in enumerate(curve, start=1):
        trial.report(value, step)
        if trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            return True
    study.tell(trial, curve[-1])
    return False


def test_a_trial_is_compared_only_with_trials_of_its_own_strategy():
    study = optuna.create_study(direction="maximize", pruner=make_pruner("median", 4))
    for _ in range(4):  # linear probes: high at once, flat after
        assert not _run_with_curve(study, "linear_probe", [0.9, 0.9, 0.9, 0.9])
    assert not _run_with_curve(study, "full", [0.3, 0.6, 0.8, 0.95]), "a slow starter is not judged by probes"
    assert _run_with_curve(study, "linear_probe", [0.5, 0.5, 0.5, 0.5]), "a bad probe is still pruned"


def test_spaces_written_before_strategies_keep_their_meaning(tmp_path):
    assert TrialConfig.from_dict({"frozen_depth": 1.0}).strategy == "linear_probe"
    assert TrialConfig.from_dict({"frozen_depth": 0.0}).strategy == "full"
    assert TrialConfig.from_dict({"frozen_depth": 0.25}).strategy == "frozen_prefix"
    old = tmp_path / "old.yaml"
    old.write_text("backbone: tf_efficientnet_lite0\nfrozen_depth: {choices: [0.0, 0.5, 1.0]}\n")
    space = load_space(old)
    seen = set()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        config = space.sample(study.ask())
        seen.add((config.strategy, config.frozen_depth))
    assert seen == {("full", 0.0), ("frozen_prefix", 0.5), ("linear_probe", 1.0)}


def test_a_space_can_extend_another(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("extends: default\nbackbone: tf_efficientnet_lite0\nmax_epochs: 3\n")
    space, default = load_space(mine), load_space("default")
    assert space.backbones() == ["tf_efficientnet_lite0"] and space.max_epochs == 3
    assert space.values("strategy") == default.values("strategy") and space.warm_start == default.warm_start
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(Exception, match="not another search space"):
        load_space(tmp_path / "loop.yaml")


@pytest.mark.slow
def test_the_broad_space_offline_stops_at_once_naming_weights_dir(photo_folder, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "autotl.cli", "search", "--dataset", str(photo_folder), "--space", "broad"]
        + ["--n-trials", "1", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert "--weights-dir" in last and "resnet50" in last, last
