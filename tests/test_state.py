"""A run's training state: saved after a report and loaded in another process, it continues the run exactly;
a damaged state, or one of another run, is named in a warning and the run starts over."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from autotl import TrialConfig, load_dataset
from autotl.train import Budget, Setup, StateError, fit

pytestmark = pytest.mark.slow  # every test here fine-tunes a model

BASE = dict(
    backbone="tf_efficientnet_lite0",
    resolution_scale=0.25,
    batch_size=16,
    augment_strength=0.0,
    warmup_epochs=1,
    regularizer="none",
    lr_schedule="cosine",
    max_epochs=3,
    lr=3e-3,
)
CASES = {  # (changes to BASE, the report to pause after, pretrained)
    "lite0 full, augmented, dropout": (dict(strategy="full", augment_strength=0.3, regularizer="dropout"), 1, True),
    "lite0 frozen prefix (cached)": (dict(strategy="frozen_prefix", frozen_depth=0.5), 2, True),
    "lite0 LP-FT across its switch": (dict(strategy="lp_ft", probe_epochs=2, optimizer="sgd"), 1, True),
    "lite0 LoRA, mixup": (dict(strategy="lora", regularizer="mixup", regularizer_strength=0.4), 1, True),
    "timm test model, full, L2-SP": (
        dict(backbone="test_resnet", strategy="full", regularizer="l2sp", regularizer_strength=0.01),
        1,
        False,
    ),
}

CONTINUE = """
import json, sys, torch
from pathlib import Path
from autotl import TrialConfig, load_dataset
from autotl.train import Setup, fit

folder, config, pretrained, state, out = sys.argv[1:]
data = load_dataset(folder, val_fraction=0.25)
result = fit(TrialConfig(**json.loads(config)), data, setup=Setup(pretrained=pretrained == "1"), state_file=Path(state))
torch.save(result.model.state_dict(), out)
print(json.dumps(dict(history=[r.__dict__ for r in result.record.history], resumed_at=result.record.resumed_at)))
"""


@pytest.fixture(scope="module")
def photos(photo_folder):
    return load_dataset(str(photo_folder), val_fraction=0.25)


@pytest.mark.parametrize("case", list(CASES))
def test_a_run_paused_and_continued_in_a_new_process_ends_bit_identical(case, photos, photo_folder, tmp_path):
    changes, pause, pretrained = CASES[case]
    config = TrialConfig(**{**BASE, **changes})
    whole = fit(config, photos, setup=Setup(pretrained=pretrained))
    state = tmp_path / "state.safetensors"
    paused = fit(config, photos, setup=Setup(pretrained=pretrained), state_file=state, budget=Budget(pause_after=pause))
    assert (
        paused.paused
        and paused.model is None
        and [r.report for r in paused.record.history] == list(range(1, pause + 1))
    )
    out = tmp_path / "continued.pt"
    args = [str(photo_folder), json.dumps(config.to_dict()), "1" if pretrained else "0", str(state), str(out)]
    done = subprocess.run([sys.executable, "-c", CONTINUE, *args], capture_output=True, text=True, check=True)
    continued = json.loads(done.stdout.splitlines()[-1])
    assert continued["resumed_at"] == pause
    assert continued["history"][:pause] == [r.__dict__ for r in paused.record.history]  # the saved reports, unchanged
    for mine, theirs in zip([r.__dict__ for r in whole.record.history], continued["history"], strict=True):
        for key in ("report", "epoch", "images", "train_loss", "val_loss", "val_accuracy"):
            assert mine[key] == theirs[key], (key, mine, theirs)
    weights = torch.load(out, weights_only=True)
    for name, value in whole.model.state_dict().items():
        assert torch.equal(value, weights[name]), name


def _paused_state(photos, tmp_path, config):
    state = tmp_path / "state.safetensors"
    fit(config, photos, state_file=state, budget=Budget(pause_after=1))
    return state


def _fresh_and_warned(photos, config, state) -> tuple:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit(config, photos, state_file=state)
    return result, [str(w.message) for w in caught if "starts over" in str(w.message)]


@pytest.mark.parametrize("damage", ["a flipped byte", "cut short", "not a state file", "another format", "another run"])
def test_a_damaged_or_foreign_state_is_named_and_the_run_starts_over(damage, photos, tmp_path):
    config = TrialConfig(**{**BASE, "strategy": "full", "max_epochs": 2})
    state = _paused_state(photos, tmp_path, config)
    raw = bytearray(state.read_bytes())
    if damage == "a flipped byte":
        raw[-100] ^= 0x10
        state.write_bytes(bytes(raw))
    elif damage == "cut short":
        state.write_bytes(bytes(raw[: len(raw) // 2]))
    elif damage == "not a state file":
        state.write_text("hello")
    else:
        with safe_open(str(state), "pt") as handle:
            facts = json.loads(handle.metadata()["autotl"])
        if damage == "another format":
            facts["format"] = 999
        else:
            config = TrialConfig(**{**BASE, "strategy": "full", "max_epochs": 2, "lr": 1e-3})
        save_file(load_file(str(state)), str(state), metadata={"autotl": json.dumps(facts)})
    result, warned = _fresh_and_warned(photos, config, state)
    assert len(warned) == 1 and str(state) in warned[0], warned
    assert result.record.resumed_at is None and len(result.record.history) == 2
    fresh = fit(config, photos)
    for name, value in fresh.model.state_dict().items():
        assert torch.equal(value, result.model.state_dict()[name]), name


def test_the_state_holds_only_what_trains(photos, tmp_path):
    """A linear probe's state is its head (and optimizer): the pretrained backbone is rebuilt from its weights."""
    probe = TrialConfig(**{**BASE, "strategy": "linear_probe"})
    state = _paused_state(photos, tmp_path, probe)
    names = {n.split("/", 1)[1] for n in load_file(str(state)) if n.startswith("weights/")}
    assert names == {"classifier.weight", "classifier.bias"}
    assert state.stat().st_size < 100_000


def test_a_trial_ended_with_a_cool_down_is_trained_again_with_it(photos, tmp_path):
    """export --trial and --refit train a recipe again: a trial the scheduler finished with a cool-down after
    report 2 is repeated as paused there and cooled down, the same weights, not cut mid-schedule."""
    from autotl.records import Slice, TrialRecord
    from autotl.search._retrain import train_again

    config = TrialConfig(**{**BASE, **CASES["timm test model, full, L2-SP"][0], "max_epochs": 8})
    setup = Setup(pretrained=False)
    state = tmp_path / "state.safetensors"
    fit(config, photos, setup=setup, state_file=state, budget=Budget(pause_after=2))
    searched = fit(config, photos, setup=setup, state_file=state, budget=Budget(end_soon=True))
    assert "cool-down after report 2" in searched.record.end_reason
    record = TrialRecord(slices=[Slice(action="start", after_report=0), Slice(action="finish", after_report=2)])
    again = train_again(config, photos, record, len(searched.record.history), setup, seed=0, number=0)
    assert again.record.end_reason == searched.record.end_reason
    for name, value in searched.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[name]), name
    cut = train_again(config, photos, TrialRecord(), len(searched.record.history), setup, seed=0, number=0)
    assert "cool-down" not in cut.record.end_reason  # no finish slice: the schedule cut, as before


def test_a_paused_run_ended_now_keeps_its_best_report_without_training_more(photos, tmp_path):
    """What a search does with a paused trial it keeps for its ensemble: the state's best report, scored on all of
    validation, no step trained; without a saved report there is nothing to end at."""
    config = TrialConfig(**{**BASE, "strategy": "frozen_prefix", "frozen_depth": 0.5})
    state = tmp_path / "state.safetensors"
    paused = fit(config, photos, state_file=state, budget=Budget(pause_after=2))
    ended = fit(config, photos, state_file=state, budget=Budget(end_now=True))
    assert not ended.paused and ended.model is not None
    assert ended.record.history == paused.record.history and ended.record.best_report == paused.record.best_report
    assert "its best weights kept" in ended.record.end_reason and ended.record.val_images == photos.count("val")
    with pytest.raises(StateError):
        fit(config, photos, state_file=tmp_path / "none.safetensors", budget=Budget(end_now=True))


def test_a_slice_checks_its_last_report_and_each_epochs_end_and_trains_as_a_run_that_checks_all(photos, tmp_path):
    """A scheduler's slice of four reports, three to an epoch, scores only report 3 (an epoch's end: the kept weights
    are picked from at least an epoch's reports) and report 4 (its last, what the scheduler reads); the others keep
    their training fields, and the trial sees only the checked ones. Skipping a check changes nothing in training:
    the run ends with a whole run's weights."""
    import optuna

    changes = dict(strategy="frozen_prefix", frozen_depth=0.5, max_epochs=2, report_every_images=16)
    config = TrialConfig(**{**BASE, **changes})  # 36 training images in batches of 16: 3 reports an epoch
    whole = fit(config, photos)
    trial = optuna.create_study(direction="maximize").ask()
    state = tmp_path / "state.safetensors"
    sliced = fit(config, photos, trial, state_file=state, budget=Budget(more=4))
    history = sliced.record.history
    assert [r.epoch for r in history] == [pytest.approx(e, abs=1e-3) for e in (1 / 3, 2 / 3, 1, 4 / 3)]
    assert [r.val_accuracy is not None for r in history] == [False, False, True, True]
    assert all(r.train_loss is not None for r in history) and sliced.record.best_report in (3, 4)
    assert list(trial.storage.get_trial(trial._trial_id).intermediate_values) == [3, 4]
    ended = fit(config, photos, state_file=state)  # the rest of the schedule, as a cool-down is: every report checked
    assert [r.val_accuracy is not None for r in ended.record.history] == [False, False, True, True, True, True]
    for name, value in whole.model.state_dict().items():
        assert torch.equal(value, ended.model.state_dict()[name]), name
