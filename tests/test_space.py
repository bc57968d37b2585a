"""Search spaces: the shipped YAML files load, sample conditionally, and mistakes name the key."""

from __future__ import annotations

import optuna
import pytest

from autotl import SpaceError, TrialConfig, load_space


def test_default_space_samples_every_setting_and_strength_only_for_its_regularizer():
    space = load_space("default")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_regularizers = set()
    for _ in range(40):
        trial = study.ask()
        config = space.sample(trial)
        seen_regularizers.add(config.regularizer)
        strengths = [k for k in trial.params if k.endswith("regularizer_strength")]
        if config.regularizer == "none":
            assert strengths == []
        else:
            assert strengths == [f"{config.regularizer}.regularizer_strength"]
        assert f"{config.optimizer}.lr" in trial.params
        study.tell(trial, 0.0)
    assert len(seen_regularizers) >= 6


def test_start_from_is_a_valid_first_trial():
    for name in ("default", "quick"):
        space = load_space(name)
        study = optuna.create_study()
        study.enqueue_trial(space.start_params())
        config = space.sample(study.ask())
        for key, value in space.start_from.items():
            assert getattr(config, key) == value, (name, key)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("backbone: {choices: []}", "backbone: choices must be a non-empty list"),
        ("learning_rate: 0.1", "learning_rate is not a setting autotl knows"),
        ("optimizer: {choices: [adam]}", "'adam' is not allowed; use one of adamw, sgd"),
        ("lr: {low: 0, high: 1, log: true}", "a log range needs low > 0"),
        ("lr: {low: 1, high: 0.1}", "low <= high"),
        ("max_epochs: 0", "max_epochs must be a positive whole number"),
        ("start_from: {speed: 3}", "unknown setting 'speed'"),
        ("lr: [1, 2", "is not valid YAML"),
    ],
)
def test_mistakes_name_the_file_and_key(tmp_path, text, expected):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError) as error:
        load_space(str(path))
    assert expected in str(error.value) and str(path) in str(error.value)


def test_unknown_space_name_lists_the_known_ones():
    with pytest.raises(SpaceError, match="default, quick"):
        load_space("nope")


def test_config_describes_itself_in_words():
    text = TrialConfig(
        frozen_depth=0.4, optimizer="adamw", lr=3e-4, regularizer="l2sp", regularizer_strength=1e-3
    ).describe()
    assert "first 40% of blocks frozen" in text and "adamw at 0.0003" in text and "l2sp 0.001" in text
