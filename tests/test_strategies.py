"""Fine-tuning strategies: each trains exactly what it should, on every timm family;
LP-FT fine-tunes from its probed head; a LoRA model exports as a plain timm model."""

from __future__ import annotations

import math

import pytest
import timm
import torch

from autotl import TrialConfig, backbones, load_dataset
from autotl.backbones._strategies import LORA_TAG, NORMS
from autotl.space import STRATEGIES
from autotl.train import Setup, _build, _fit, fit

FAMILIES = ("test_resnet", "test_convnext", "test_vit", "mobilenetv3_small_050")  # random weights: no download
FAST = dict(
    resolution_scale=0.5,
    batch_size=8,
    augment_strength=0.0,
    warmup_epochs=0,
    regularizer="none",
    lr_schedule="constant",
    lora_rank=4,
)


def _adapted(arch: str, strategy: str, pretrained: bool = False, **settings) -> torch.nn.Module:
    model = backbones.create(arch, 3, pretrained=pretrained)
    if strategy == "lora":
        backbones.add_lora(model, rank=4)
    backbones.train_only(model, strategy, **settings)
    return model


def _should_train(model, strategy: str, name: str, **settings) -> bool:
    """Each strategy's rule, written independently of autotl's: does parameter ``name`` train?"""
    if name in backbones.head_names(model) or strategy in ("full",):
        return True
    if strategy == "bitfit":
        return name.endswith(".bias") and LORA_TAG not in name
    if strategy == "norm_only":
        module = model.get_submodule(name.rpartition(".")[0])
        return isinstance(module, NORMS)
    if strategy == "lora":
        return LORA_TAG in name
    groups = backbones.body_groups(model)
    if strategy == "frozen_prefix":
        return all(name not in g for g in groups[: round(settings["frozen_depth"] * len(groups))])
    if strategy == "surgical":  # the late third: the groups after the first two thirds, rounded up
        position = next(i for i, g in enumerate(groups) if name in g)
        return settings["surgical_group"] == "late" and position >= math.ceil(2 * len(groups) / 3)
    return False  # linear_probe, lp_ft's probe phase: the head alone


def _steps(model, count: int = 3) -> tuple[dict, dict]:
    """A few SGD steps in training mode on random images; (gradients of the last step, buffers before)."""
    size = model.pretrained_cfg["input_size"][-1] // 2
    if backbones.fixed_input_size(model):
        model.set_input_size(img_size=size)
    frozen = backbones.frozen_modules(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    generator = torch.Generator().manual_seed(0)
    for _ in range(count):
        backbones.train_mode(model, frozen)
        optimizer.zero_grad()
        x = torch.randn(4, 3, size, size, generator=generator)
        torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0])).backward()
        optimizer.step()
    return {n: p.grad for n, p in model.named_parameters()}, before


@pytest.mark.parametrize("arch", FAMILIES)
@pytest.mark.parametrize(
    "strategy, settings",
    [
        ("full", {}),
        ("linear_probe", {}),
        ("frozen_prefix", {"frozen_depth": 0.5}),
        ("surgical", {"surgical_group": "late"}),
        ("bitfit", {}),
        ("norm_only", {}),
        ("lora", {}),
    ],
)
def test_each_strategy_trains_exactly_its_parameters(arch, strategy, settings):
    model = _adapted(arch, strategy, **settings)
    grads, before = _steps(model)
    trained = [n for n, g in grads.items() if g is not None and g.abs().sum() > 0]
    for name, grad in grads.items():
        if _should_train(model, strategy, name, **settings):
            assert grad is not None, f"{strategy} on {arch}: {name} should train"
        else:
            assert grad is None, f"{strategy} on {arch}: {name} got a gradient"
    assert trained, f"{strategy} on {arch}: nothing trained"
    frozen = {id(b) for module in backbones.frozen_modules(model) for b in module.buffers()}
    for name, buffer in model.named_buffers():  # a frozen block's BatchNorm statistics do not move
        if id(buffer) in frozen:
            assert torch.equal(buffer, before[name]), f"{strategy} on {arch}: {name} moved"


def test_surgical_groups_split_the_blocks_in_thirds():
    model = backbones.create("test_resnet", 3, pretrained=False)
    body = {n for g in backbones.body_groups(model) for n in g}
    seen = set()
    for group in ("early", "middle", "late"):
        backbones.train_only(model, "surgical", surgical_group=group)
        trained = {n for n, p in model.named_parameters() if p.requires_grad} - backbones.head_names(model)
        assert trained and trained <= body and not trained & seen
        seen |= trained
    assert seen == body


def test_lora_on_real_lite0_weights_trains_only_its_factors_and_keeps_batchnorm_still():
    model = _adapted("tf_efficientnet_lite0", "lora", pretrained=True)
    grads, before = _steps(model, count=3)  # the head starts at zero: gradients reach the body from step 2
    lora = [n for n in grads if LORA_TAG in n]
    assert lora and all(grads[n] is not None and grads[n].abs().sum() > 0 for n in lora)
    assert all(grads[n] is None for n in grads if LORA_TAG not in n and n not in backbones.head_names(model))
    after = model.state_dict()
    stats = [k for k in after if k.endswith("running_mean")]
    assert stats and all(torch.equal(after[k], before[k]) for k in stats)


def test_a_merged_lora_model_is_a_plain_timm_model_with_the_same_outputs():
    model = _adapted("test_vit", "lora")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("lora_b"):
                param.normal_(0, 0.05)  # an update that changes the outputs
    model.eval()
    x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    adapted = model(x)
    plain = timm.create_model("test_vit", pretrained=False, num_classes=3).eval()
    assert not torch.allclose(plain(x), adapted, atol=1e-3)
    plain.load_state_dict(backbones.merge_lora(model).state_dict())  # strict: the same keys as timm's
    torch.testing.assert_close(plain(x), adapted, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["tf_efficientnet_lite0", *FAMILIES])
@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
@pytest.mark.parametrize("weight_decay,layer_decay", [(0.0, 1.0), (0.05, 0.75)])
def test_timms_optimizer_factory_gives_the_layer_decay_groups(arch, optimizer, weight_decay, layer_decay):
    """The optimizer comes from timm's factory; its groups are timm's layer-decay groups, as when autotl built
    them itself, except that what a model names in ``no_weight_decay()`` (a ViT's position embedding) is not
    decayed; SGD keeps Nesterov momentum 0.9."""
    config = TrialConfig(
        backbone=arch, optimizer=optimizer, lr=0.1, layer_decay=layer_decay, regularizer="weight_decay"
    )
    config.regularizer_strength = weight_decay
    model = backbones.create(arch, 3, pretrained=False)
    names = {id(p): n for n, p in model.named_parameters()}
    exempt = {n for n in names.values() if n in model.no_weight_decay()} if hasattr(model, "no_weight_decay") else set()

    def groups(param_groups, decay_exempt=()):
        return sorted(
            (
                tuple(sorted(names[id(p)] for p in g["params"] if names[id(p)] not in decay_exempt)),
                g.get("lr_scale", 1.0),
                g["weight_decay"],
            )
            for g in param_groups
        )

    made = _build._optimizer(model, config)
    by_hand = timm.optim.param_groups_layer_decay(model, weight_decay=weight_decay, layer_decay=layer_decay)
    assert groups(made.param_groups, exempt) == groups([g for g in by_hand if g["params"]], exempt)
    moved = {names[id(p)] for g in made.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert exempt <= moved
    assert type(made) is {"adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[optimizer]
    if optimizer == "sgd":
        assert made.defaults["momentum"] == 0.9 and made.defaults["nesterov"] is True


@pytest.fixture(scope="module")
def photos(photo_folder):
    return load_dataset(str(photo_folder), val_fraction=0.25)


@pytest.mark.slow
@pytest.mark.parametrize("arch", FAMILIES)
def test_every_strategy_runs_a_trial_on_every_family(arch, photos):
    for strategy in STRATEGIES:
        config = TrialConfig(backbone=arch, strategy=strategy, max_epochs=2, probe_epochs=1, **FAST)
        result = fit(config, photos, setup=Setup(pretrained=False))
        assert result.record.end_reason == "completed" and len(result.history) == 2
        assert 0 < result.record.params_trainable <= result.record.params_total
        names = set(result.model.state_dict())
        assert names == set(timm.create_model(arch, pretrained=False, num_classes=3).state_dict()), strategy


@pytest.mark.slow
def test_lp_ft_fine_tunes_from_the_probed_head(photos, monkeypatch):
    arch = "tf_efficientnet_lite0"
    pretrained = backbones.create(arch, 3).state_dict()
    seen = {}
    switch, step = _build.Run.fine_tune_all, _fit.train_step

    def spy(run):
        state = run.model.state_dict()
        head = backbones.head_names(run.model)
        seen["head"] = {n: state[n].clone() for n in head}
        seen["body unchanged"] = all(torch.equal(state[n], pretrained[n]) for n in state if n not in head)
        seen["report"] = seen["reports done"] + 1
        switch(run)

    def counting_step(run, state):
        seen["reports done"] = state.report
        return step(run, state)

    monkeypatch.setattr(_build.Run, "fine_tune_all", spy)
    monkeypatch.setattr(_fit, "train_step", counting_step)
    config = TrialConfig(backbone=arch, strategy="lp_ft", probe_epochs=1, max_epochs=2, lr=1e-3, **FAST)
    result = fit(config, photos)
    assert seen["report"] == 2, "the switch comes after the probe epoch"
    assert seen["body unchanged"], "the probe phase trains the head alone"
    assert all(v.abs().sum() > 0 for v in seen["head"].values()), "the head was probed (it starts at zero)"
    assert result.record.params_trainable == result.record.params_total
    body = [n for n in pretrained if n not in seen["head"] and pretrained[n].is_floating_point()]
    trained = result.model.state_dict()
    assert any(not torch.equal(trained[n], pretrained[n]) for n in body), "the fine-tuning phase trains the body"


@pytest.mark.slow
def test_an_exported_lora_vit_at_a_smaller_size_opens_in_timm_and_autotl_with_the_same_outputs(photos, tmp_path):
    from autotl import export, load_model

    config = TrialConfig(backbone="test_vit", strategy="lora", max_epochs=1, **FAST)
    result = fit(config, photos, setup=Setup(pretrained=False))
    export.save(result, tmp_path / "model")
    pixels = (torch.rand(2, 3, 80, 80, generator=torch.Generator().manual_seed(2)) * 255).to(torch.uint8)
    with torch.no_grad():
        expected = result.model.eval()(result.preprocessing.normalize(pixels))
        in_timm = timm.create_model(f"local-dir:{tmp_path / 'model'}", pretrained=True).eval()
        torch.testing.assert_close(in_timm(result.preprocessing.normalize(pixels)), expected)
    torch.testing.assert_close(torch.from_numpy(load_model(tmp_path / "model").logits(pixels)), expected)
