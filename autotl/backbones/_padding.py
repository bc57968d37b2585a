"""TensorFlow 'SAME' padding without the padded copy: the same numbers, less memory traffic.

timm's ``Conv2dSame`` (every stride-2 convolution of the ``tf_`` models, the EfficientNet-Lites
among them) pads its input with ``F.pad`` on each call: a full copy of the activation forward
and another backward. Where the padding is symmetric the convolution can pad by itself. Where
it is one pixel more at the bottom and right, a depthwise convolution on the CPU gets the
same result, without the copy, from its kernel padded by a zero row and column at the top and
left and symmetric padding one pixel wider. Other cases keep timm's way. Outputs are
identical to timm's, and so are the gradients that this change touches (tests/test_backbones.py).
``python benchmarks/same_padding.py`` measures the gain (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers.conv2d_same import Conv2dSame
from timm.layers.padding import get_same_padding, pad_same

from ._depthwise import conv2d


class _FastConv2dSame(Conv2dSame):
    """``Conv2dSame`` with the same outputs, its padding folded into the convolution where that is exact."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing() or torch.jit.is_scripting():
            return super().forward(x)  # an exported TorchScript model keeps timm's size-agnostic padding
        (kh, kw), (sh, sw), (dh, dw) = self.weight.shape[-2:], self.stride, self.dilation
        pad_h, pad_w = get_same_padding(x.shape[-2], kh, sh, dh), get_same_padding(x.shape[-1], kw, sw, dw)
        odd_h, odd_w = pad_h % 2, pad_w % 2
        weight, padding = self.weight, (pad_h // 2, pad_w // 2)
        if odd_h or odd_w:
            # the odd pixel goes at the bottom/right; a depthwise kernel shifted by a zero row/column reads exactly
            # those windows (on the CPU; measured slower for dense convolutions and below 28 px)
            if (
                x.device.type == "cpu"
                and self.groups == self.in_channels > 1
                and self.dilation == (1, 1)
                and min(x.shape[-2:]) >= 28
            ):
                weight, padding = F.pad(weight, (odd_w, 0, odd_h, 0)), (pad_h // 2 + odd_h, pad_w // 2 + odd_w)
            else:  # timm's way: pad the input
                x, padding = pad_same(x, (kh, kw), self.stride, self.dilation), (0, 0)
        return conv2d(x, weight, self.bias, self.stride, padding, self.dilation, self.groups)


def fast_same_padding(model: torch.nn.Module) -> torch.nn.Module:
    """Switch every timm ``Conv2dSame`` in ``model`` to the copy-free version (same parameters, same outputs)."""
    for module in model.modules():
        if type(module) is Conv2dSame:
            module.__class__ = _FastConv2dSame
    return model
