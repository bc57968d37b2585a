"""The weight gradient of a large depthwise kernel on the CPU, as one grouped convolution.

oneDNN computes a depthwise convolution's weight gradient quickly for 3x3 kernels but not
for the 5x5 ones of the EfficientNets, where it costs several times the layer's forward pass. The same
gradient is itself a convolution: ``grad_w[c] = sum over n of x[n, c] * grad_out[n, c]``
(a correlation, dilated by the stride), which one grouped convolution with a group per
(image, channel) computes, faster (``python benchmarks/depthwise.py``, numbers in
benchmarks/RESULTS.md). Kernels under 5 keep oneDNN's. The forward pass and
the input gradient are oneDNN's own; the weight gradient equals oneDNN's to float rounding
(tests/test_backbones.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MIN_KERNEL = 5  # 3x3 (and the 4x4 of a shifted 3x3, _padding.py) measured faster in oneDNN


class _DepthwiseConv(torch.autograd.Function):
    """A bias-free depthwise convolution whose backward computes the weight gradient as a grouped convolution."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, ctx.stride, ctx.padding, (1, 1), False, (0, 0), x.shape[1], (True, False, False)
            )[0]
        if ctx.needs_input_grad[1]:
            n, c, h, w = x.shape
            kh, kw = weight.shape[-2:]
            per_image = F.conv2d(
                x.contiguous().view(1, n * c, h, w),
                grad.contiguous().view(n * c, 1, *grad.shape[-2:]),
                None,
                1,
                ctx.padding,
                ctx.stride,
                n * c,
            )  # the stride becomes the dilation
            grad_w = per_image[..., :kh, :kw].reshape(n, c, kh, kw).sum(0).unsqueeze(1)
        return grad_x, grad_w, None, None


def conv2d(x, weight, bias, stride, padding, dilation, groups) -> torch.Tensor:
    """``F.conv2d``, through ``_DepthwiseConv`` where that is faster: a CPU depthwise kernel of 5 or more, training."""
    if (
        bias is None
        and x.device.type == "cpu"
        and groups == x.shape[1] == weight.shape[0]
        and weight.shape[1] == 1
        and min(weight.shape[-2:]) >= MIN_KERNEL
        and tuple(dilation) == (1, 1)
        and not isinstance(padding, str)
        and torch.is_grad_enabled()
        and (x.requires_grad or weight.requires_grad)
    ):
        return _DepthwiseConv.apply(x, weight, tuple(stride), tuple(padding))
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


class _DepthwiseConv2d(torch.nn.Conv2d):
    """An ``nn.Conv2d`` (depthwise, kernel of 5 or more) whose training steps use ``conv2d`` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing() or torch.jit.is_scripting():
            return super().forward(x)
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def fast_depthwise_gradients(model: torch.nn.Module) -> torch.nn.Module:
    """Switch ``model``'s plain depthwise convolutions with kernels of 5 or more to ``_DepthwiseConv2d``."""
    for module in model.modules():
        if (
            type(module) is torch.nn.Conv2d
            and module.groups == module.in_channels == module.out_channels > 1
            and min(module.kernel_size) >= MIN_KERNEL
            and module.padding_mode == "zeros"
        ):
            module.__class__ = _DepthwiseConv2d
    return model
