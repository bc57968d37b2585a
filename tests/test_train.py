"""The trial loop: what is frozen stays frozen, penalties and schedules follow their formulas,
hopeless trials are pruned, and fine-tuning a real backbone beats chance."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import optuna
import pytest
import torch

from autotl import TrialConfig, backbones, load_dataset
from autotl.train import Plan, Setup, fit
from autotl.train.regularizers import L2SP
from autotl.train.schedules import lr_factor

pytestmark = pytest.mark.slow  # every test here fine-tunes a model

FAST = dict(
    backbone="tf_efficientnet_lite0",
    resolution_scale=0.25,
    batch_size=16,
    augment_strength=0.0,
    warmup_epochs=0,
    regularizer="none",
    lr_schedule="constant",
)


@pytest.fixture(scope="module")
def photos(photo_folder):
    return load_dataset(str(photo_folder), val_fraction=0.25)


def test_frozen_blocks_keep_their_weights_and_statistics(photos):
    config = TrialConfig(**FAST, frozen_depth=0.5, max_epochs=2, optimizer="sgd", lr=0.05)
    result = fit(config, photos)
    pretrained = backbones.create(config.backbone, len(photos.classes)).state_dict()
    groups = backbones.body_groups(result.model)
    frozen = {n for names in groups[: round(0.5 * len(groups))] for n in names}
    trained = result.model.state_dict()
    frozen_modules = {n.rsplit(".", 1)[0] for n in frozen}
    frozen_buffers = {k for k in trained if k.rsplit(".", 1)[0] in frozen_modules}  # BatchNorm running stats too
    assert frozen and frozen_buffers > frozen
    for name in frozen_buffers:
        assert torch.equal(trained[name], pretrained[name]), name
    moved = [
        n
        for n in trained
        if n not in frozen_buffers
        and "classifier" not in n
        and trained[n].is_floating_point()
        and not torch.equal(trained[n], pretrained[n])
    ]
    assert moved, "the unfrozen blocks should have trained"
    assert result.record.params_trainable < result.record.params_total


def test_no_gradient_reaches_a_frozen_parameter(photos):
    model = backbones.create("tf_efficientnet_lite0", 3)
    backbones.freeze(model, 0.75)
    x, y = next(photos.batches(photos.indices("train"), 32))
    loss = torch.nn.functional.cross_entropy(model(x[:4].float() / 255), y[:4])
    loss.backward()
    for name, param in model.named_parameters():
        assert (param.grad is None) != param.requires_grad, name


def test_linear_probe_trains_only_the_head():
    model = backbones.create("tf_efficientnet_lite0", 5)
    backbones.freeze(model, 1.0)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"classifier.weight", "classifier.bias"}


def test_l2sp_is_zero_at_start_and_grows_as_weights_move():
    model = backbones.create("tf_efficientnet_lite0", 3)
    penalty = L2SP(model, strength=0.5, head_names={"classifier.weight", "classifier.bias"})
    assert penalty.penalty().item() == 0.0
    weight = model.conv_stem.weight
    with torch.no_grad():
        weight.add_(0.01)
    small = penalty.penalty().item()
    assert small == pytest.approx(0.5 * 0.5 * weight.numel() * 0.01**2, rel=1e-3)
    with torch.no_grad():
        weight.add_(0.01)
    assert penalty.penalty().item() == pytest.approx(4 * small, rel=1e-3)
    with torch.no_grad():
        model.classifier.weight.add_(1.0)  # the new head has no pretrained value: not penalised
    assert penalty.penalty().item() == pytest.approx(4 * small, rel=1e-3)


@pytest.mark.parametrize("step", [0, 50, 79, 80, 90, 99])
def test_wsd_is_constant_then_decays_by_one_minus_sqrt_over_its_last_fifth(step):
    expected = 1.0 if step < 80 else 1 - math.sqrt((step - 80) / 20)
    assert lr_factor(step, schedule="wsd", total_steps=100) == pytest.approx(expected)


def test_a_run_ended_early_cools_down_from_where_its_learning_rate_is():
    """end_soon: from the current multiplier to 0 over a fifth of the steps done (at least a report), whatever the
    schedule; a second call, or a run already at its planned end, changes nothing."""
    config = TrialConfig(max_epochs=10, lr_schedule="cosine", warmup_epochs=0, report_every_images=10_000)
    plan = Plan.make(config, n_train=320)  # batch 32: 10 steps an epoch, a report an epoch
    before = plan.lr_factor(50, "cosine", 1.0)
    plan.end_soon(report=5, step=50, schedule="cosine", probe_scale=1.0)
    assert (plan.cool_from, plan.last_report, plan.total_steps) == (50, 6, 60)
    assert plan.lr_factor(50, "cosine", 1.0) == pytest.approx(before)
    assert plan.lr_factor(55, "cosine", 1.0) == pytest.approx(before * (1 - math.sqrt(0.5)))
    plan.end_soon(report=5, step=50, schedule="cosine", probe_scale=1.0)
    assert plan.last_report == 6
    planned_end = Plan.make(config, n_train=320)
    planned_end.end_soon(report=9, step=90, schedule="cosine", probe_scale=1.0)
    assert planned_end.cool_from is None and planned_end.last_report == 10


@pytest.mark.parametrize("n_train, warmup_steps", [(320, 10), (48_000, 32)])
def test_a_warmup_epoch_lasts_at_most_one_report(n_train, warmup_steps):
    """A report an epoch (320 images): the warmup is the epoch; 12 reports an epoch (48,000 images, a report every
    1,024): the warmup is the first report's 32 steps, so the scheduler does not judge a trial by warmup reports."""
    config = TrialConfig(max_epochs=8, warmup_epochs=1, batch_size=32, report_every_images=1024)
    plan = Plan.make(config, n_train=n_train)
    assert plan.warmup_steps == warmup_steps == plan.steps_per_report
    assert plan.lr_factor(warmup_steps, "cosine", 1.0) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("step", [0, 1, 5, 17, 29, 30, 59, 99])
def test_schedules_match_their_formulas(step):
    total, warmup = 100, 10
    assert lr_factor(step, schedule="constant", total_steps=total) == 1.0
    assert lr_factor(step, schedule="step", total_steps=90) == 0.1 ** (step // 30)
    assert lr_factor(step, schedule="cosine", total_steps=total) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * step / total))
    )
    assert lr_factor(step, schedule="inv_sqrt", total_steps=total) == pytest.approx(1 / math.sqrt(step + 1))
    warm = lr_factor(step, schedule="cosine", total_steps=total, warmup_steps=warmup)
    if step < warmup:
        assert warm == pytest.approx((step + 1) / warmup)
    else:
        assert warm == pytest.approx(0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))))


def test_fine_tuning_beats_chance_clearly(photos):
    config = TrialConfig(**{**FAST, "resolution_scale": 0.5}, frozen_depth=0.75, max_epochs=4, lr=3e-3)
    result = fit(config, photos)
    assert result.metrics["accuracy"] >= 0.75  # chance is 1/3
    assert [(h.report, h.epoch) for h in result.history] == [(1, 1), (2, 2), (3, 3), (4, 4)]
    assert result.history[-1].train_loss < result.history[0].train_loss


def test_a_hopeless_trial_is_pruned(photos):
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    )
    good = TrialConfig(**{**FAST, "resolution_scale": 0.5}, frozen_depth=0.75, max_epochs=3, lr=3e-3)
    study.optimize(lambda t: fit(good, photos, t).metrics["accuracy"], n_trials=1)
    hopeless = TrialConfig(**{**FAST, "resolution_scale": 0.5}, frozen_depth=1.0, max_epochs=3, lr=0.0)  # never learns
    study.optimize(lambda t: fit(hopeless, photos, t).metrics["accuracy"], n_trials=1)
    trial = study.trials[1]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["reports"] < 3 and "pruned by the pruner" in trial.user_attrs["end_reason"]


def test_a_non_finite_loss_prunes_with_the_reason(photos):
    study = optuna.create_study(direction="maximize")
    config = TrialConfig(**FAST, frozen_depth=0.0, optimizer="sgd", lr=float("inf"), max_epochs=2)  # weights blow up
    study.optimize(lambda t: fit(config, photos, t).metrics["accuracy"], n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert "non-finite" in trial.user_attrs["end_reason"]


@pytest.mark.parametrize("frozen_depth", [0.5, 1.0])
def test_cached_prefix_trains_step_for_step_like_uncached(photos, frozen_depth):
    from autotl.train._prefix import FEATURES

    FEATURES.clear()
    config = TrialConfig(**FAST, frozen_depth=frozen_depth, max_epochs=2, lr=3e-3)
    plain = fit(config, photos, setup=Setup(cache_prefix=False))
    first = fit(config, photos)
    again = fit(config, photos)
    assert [r.record.feature_cache for r in (plain, first, again)] == ["off", "miss", "hit"]
    # the prefix's passes are recorded where they happen, the first epoch and the first check: one-time work, which a
    # cost model can tell from what every report repeats
    one_time = [(r.feature_seconds, r.check_feature_seconds) for r in (*first.history, *again.history)]
    assert one_time[0][0] > 0 and one_time[0][1] > 0 and one_time[1:] == [(0.0, 0.0)] * 3
    assert {(r.feature_seconds, r.check_feature_seconds) for r in plain.history} == {(None, None)}
    for other in (first, again):
        for a, b in zip(plain.history, other.history):
            assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4)
            assert a.val_loss == pytest.approx(b.val_loss, rel=1e-4)
        trained = other.model.state_dict()
        for name, value in plain.model.state_dict().items():
            assert torch.allclose(value.float(), trained[name].float(), atol=1e-5), name


@pytest.mark.parametrize("recipe", [{"augment_strength": 0.5}, {"regularizer": "mixup", "regularizer_strength": 0.4}])
def test_augmented_trials_train_on_images_but_check_on_the_cached_prefix(photos, recipe):
    """Augmented (or mixed-up) images differ every step, so the whole model trains on them; the validation images do
    not, so a half-frozen run's checks read the prefix's cached outputs: computed at the first check only, and
    scoring exactly as the whole model does (the run without the cache, step for step)."""
    from autotl.train._prefix import FEATURES

    FEATURES.clear()
    config = TrialConfig(**{**FAST, **recipe}, frozen_depth=0.5, max_epochs=2, lr=3e-3)
    plain, cached = fit(config, photos, setup=Setup(cache_prefix=False)), fit(config, photos)
    assert plain.record.feature_cache == cached.record.feature_cache == "off"
    assert [r.check_feature_seconds for r in plain.history] == [None, None]
    first, later = cached.history
    assert first.check_feature_seconds > 0 and later.check_feature_seconds == 0.0 and first.feature_seconds is None
    for a, b in zip(plain.history, cached.history, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4)
        assert a.val_loss == pytest.approx(b.val_loss, rel=1e-4) and a.val_accuracy == b.val_accuracy


def test_a_check_on_the_cached_prefix_turns_the_heads_dropout_off(photos):
    """The head's dropout reads the whole model's mode: scoring only the part after the prefix must still switch it
    off, or each check of a dropout recipe would be noisy. Scored straight after training (the model in training
    mode), the same weights give the same score twice."""
    from autotl.train._build import build
    from autotl.train._fit import score

    config = TrialConfig(
        **{**FAST, "regularizer": "dropout", "regularizer_strength": 0.5}, frozen_depth=1.0, max_epochs=1
    )
    run = build(config, photos, Setup(), seed=0)
    assert run.inputs.cached
    torch.nn.init.normal_(run.model.get_classifier().weight)  # a new head starts at zero: dropout would not show
    scores = []
    for _ in range(2):
        backbones.train_mode(run.model, run.frozen)
        scores.append(score(run, run.split.check, run.split.check_rows))
    assert scores[0] == scores[1]


def test_compiled_training_matches_eager(photos):
    """--compile really compiles the training step and trains like eager (a cached linear probe: a small graph)."""
    from torch._dynamo.utils import counters

    config = TrialConfig(**FAST, frozen_depth=1.0, max_epochs=2, lr=3e-3)
    eager = fit(config, photos)
    graphs = counters["stats"]["unique_graphs"]
    compiled = fit(config, photos, setup=Setup(compile=True))
    assert counters["stats"]["unique_graphs"] > graphs
    for a, b in zip(eager.history, compiled.history, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4)
        assert a.val_accuracy == b.val_accuracy


FAULTS_AROUND_A_TRIAL = """
import resource, sys, torch
from autotl import TrialConfig, load_dataset
from autotl.train import Setup, fit

def page_faults():  # five 64 MB blocks, each freed at once, as activations are after a step
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.ones(64 << 20, dtype=torch.uint8)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

first = page_faults()
fit(TrialConfig(**{FAST!r}, frozen_depth=1.0, max_epochs=1), load_dataset(sys.argv[1], val_fraction=0.25))
page_faults()
print(first, page_faults())
"""


@pytest.mark.parametrize("setting", ["kept", "turned off"])
def test_training_on_the_cpu_keeps_freed_memory_for_the_next_step(photo_folder, setting):
    # in a fresh process: the setting is process-wide (glibc's mallopt) and this one has trained already
    env = {**os.environ, "AUTOTL_KEEP_FREED_MEMORY": "1" if setting == "kept" else "0"}
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_AROUND_A_TRIAL.replace("{FAST!r}", repr(FAST)), str(photo_folder)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    before, after = map(int, out.split()[-2:])
    assert before > 5 * 16000 * 0.9  # glibc maps each 64 MB block afresh: 16,384 pages of 4 KB
    if setting == "kept":
        assert after < before / 20, (before, after)
    else:
        assert after > before * 0.9, (before, after)


def test_a_large_dataset_reports_every_n_images_on_a_validation_subset_and_scores_on_all_of_it(photos, monkeypatch):
    from autotl.train import _inputs

    monkeypatch.setattr(_inputs, "VAL_CHECK_IMAGES", 6)  # 12 val images: reports score 6 of them, 2 per class
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    config = TrialConfig(**{**FAST, "batch_size": 8}, frozen_depth=0.75, max_epochs=2, lr=3e-3, report_every_images=16)
    result = fit(config, photos, trial)
    # 36 train images in batches of 8 make 5 steps an epoch, split into reports of at most 2 steps: 3 a report
    assert [r.report for r in result.history] == [1, 2, 3, 4, 5, 6]
    assert [r.epoch for r in result.history] == [0.4, 0.8, 1.0, 1.4, 1.8, 2.0]
    assert sorted(trial.storage.get_trial(trial._trial_id).intermediate_values) == [1, 2, 3, 4, 5, 6]
    check = _inputs.validation_check(photos)
    assert len(check) == 6 and sorted(photos.labels[check].tolist()) == [0, 0, 1, 1, 2, 2]
    pre = result.preprocessing
    val = photos.indices("val")
    with torch.inference_mode():
        predicted = result.model(pre.normalize(photos.images(val, pre.size).contiguous())).argmax(1)
    truth = torch.from_numpy(photos.labels[val])
    assert result.metrics["accuracy"] == pytest.approx(float((predicted == truth).float().mean()))
    # the final scoring keeps every validation image's probabilities: the best model's analysis reads them
    # instead of running the model over validation again, and finds what that pass finds
    from autotl.search._best import analyse

    assert result.val_probabilities.shape == (12, 3)
    assert (result.val_probabilities.argmax(1) == predicted.numpy()).all()
    kept = analyse(result, photos)
    result.val_probabilities = None
    again = analyse(result, photos)
    assert kept.confusion == again.confusion and kept.per_class == again.per_class
    assert [m.probability for m in kept.misclassified] == pytest.approx([m.probability for m in again.misclassified])
