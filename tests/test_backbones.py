"""Backbones: the offline EfficientNet-Lite weights convert into timm's format and are real."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_sample_image
from timm.data import ImageNetInfo

from autotl import WeightsError, backbones
from autotl.backbones import _weights
from autotl.data import resize


def test_converted_lite0_still_recognises_a_real_photograph():
    model = backbones.create("tf_efficientnet_lite0", 1000).eval()
    pre = backbones.preprocessing("tf_efficientnet_lite0")
    info = ImageNetInfo()
    tops = {}
    for name in ("china.jpg", "flower.jpg"):
        x = torch.from_numpy(resize(np.array(load_sample_image(name)), pre.size, pre.interpolation)).permute(2, 0, 1)[
            None
        ]
        with torch.inference_mode():
            top5 = model(pre.normalize(x)).topk(5).indices[0].tolist()
        tops[name] = [info.index_to_description(i) for i in top5]
    assert {"palace", "bell cote", "monastery", "church"} & set(tops["china.jpg"]), tops
    assert "daisy" in tops["flower.jpg"], tops


def test_preprocessing_comes_from_the_pretrained_config():
    pre = backbones.preprocessing("tf_efficientnet_lite0")
    assert (pre.size, pre.interpolation, pre.mean, pre.std) == (224, "bicubic", (0.5,) * 3, (0.5,) * 3)
    assert backbones.preprocessing("tf_efficientnet_lite2", 0.5).size == 128  # 260 px native, halved


def test_a_changed_weight_file_is_refused(tmp_path, monkeypatch):
    package = tmp_path / "fake_pkg"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models" / "efficientnet-lite0-57934424.pth").write_bytes(b"tampered")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = _weights.OFFLINE_CATALOG["tf_efficientnet_lite0"]
    monkeypatch.setitem(_weights.OFFLINE_CATALOG, "tf_efficientnet_lite0", (entry[0], "fake_pkg", *entry[2:]))
    monkeypatch.setenv("AUTOTL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsError, match="checksum"):
        _weights.offline_file("tf_efficientnet_lite0")


def test_a_weights_dir_comes_first(tmp_path):
    from safetensors.torch import save_file

    model = backbones.create("tf_efficientnet_lite0", 1000, pretrained=False)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "tf_efficientnet_lite0.safetensors"))
    assert backbones.find_weights("tf_efficientnet_lite0", tmp_path).kind == "folder"
    mine = backbones.create("tf_efficientnet_lite0", 4, weights_dir=tmp_path)
    assert torch.equal(mine.conv_stem.weight, model.conv_stem.weight)


def test_a_backbone_without_weights_fails_clearly():
    with pytest.raises(WeightsError, match="unknown backbone"):
        backbones.check_available(["no_such_net"])


@pytest.mark.parametrize("size", [(112, 112), (100, 76)])
def test_fast_cpu_layers_give_timm_s_outputs_and_gradients(size):
    """SAME padding folded into the convolutions (_padding.py) and the depthwise 5x5 weight gradient as a grouped
    convolution (_depthwise.py): timm's forward exactly, its backward to float rounding."""
    import timm
    from timm.layers.conv2d_same import Conv2dSame

    from autotl.backbones._depthwise import _DepthwiseConv2d

    ours = backbones.create("tf_efficientnet_lite0", 1000).train()  # the pretrained head: a new one starts at 0
    theirs = timm.create_model("tf_efficientnet_lite0").train()
    theirs.load_state_dict(ours.state_dict())
    assert sum(type(m) is Conv2dSame for m in theirs.modules()) == 5
    assert not any(type(m) is Conv2dSame for m in ours.modules())  # all five switched
    assert (
        sum(type(m) is _DepthwiseConv2d for m in ours.modules()) == 7
    )  # the stride-1 5x5 ones; the 2 stride-2 ones are SAME
    x = torch.randn(4, 3, *size, generator=torch.Generator().manual_seed(0))
    outputs = []
    for model in (ours, theirs):
        model.to(memory_format=torch.channels_last).zero_grad()
        out = model(x.contiguous(memory_format=torch.channels_last))
        out.square().sum().backward()
        outputs.append((out.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (ours_out, ours_grad), (theirs_out, theirs_grad) = outputs
    assert ours_out.abs().max() > 1
    assert torch.equal(ours_out, theirs_out)
    regrouped = set()
    for name, grad in theirs_grad.items():
        assert grad.abs().max() > 0, name
        if not torch.equal(ours_grad[name], grad):  # summed in another order: equal to float rounding
            assert (ours_grad[name] - grad).abs().max() <= 1e-5 * grad.abs().max(), name
            regrouped.add(name)
    assert regrouped == {n for n, p in ours.named_parameters() if n.endswith("conv_dw.weight") and p.shape[-1] == 5}
