"""TrialConfig: everything one fine-tuning run needs to know, as plain values."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

OPTIMIZERS = ("adamw", "sgd")
LR_SCHEDULES = ("constant", "step", "cosine", "inv_sqrt")
REGULARIZERS = ("none", "weight_decay", "l1", "l2sp", "dropout", "drop_path", "label_smoothing", "mixup")


@dataclass
class TrialConfig:
    """One fine-tuning recipe. Defaults are a known-good recipe for small image datasets."""

    backbone: str = "tf_efficientnet_lite0"
    resolution_scale: float = 0.75
    frozen_depth: float = 0.5
    optimizer: str = "adamw"
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    warmup_epochs: int = 1
    layer_decay: float = 1.0
    regularizer: str = "label_smoothing"
    regularizer_strength: float = 0.1
    batch_size: int = 32
    augment_strength: float = 0.3
    max_epochs: int = 8
    report_every_images: int = 4096  # the pruner's unit: a report after this many training images, or each epoch

    def __post_init__(self):
        for name, allowed in (("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES), ("regularizer", REGULARIZERS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrialConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def describe(self) -> str:
        """The recipe in words, e.g. 'tf_efficientnet_lite0 at 160 px scale 0.75, first 50% of blocks frozen, ...'."""
        frozen = (
            "full fine-tuning"
            if self.frozen_depth == 0
            else "linear probe"
            if self.frozen_depth == 1
            else f"first {self.frozen_depth:.0%} of blocks frozen"
        )
        warm = (
            f" with {self.warmup_epochs} warmup epoch{'s' if self.warmup_epochs != 1 else ''}"
            if self.warmup_epochs
            else ""
        )
        reg = "no regularizer" if self.regularizer == "none" else f"{self.regularizer} {self.regularizer_strength:.3g}"
        return (
            f"{self.backbone} (x{self.resolution_scale:g} resolution), {frozen}, {self.optimizer} at {self.lr:.2g}, "
            f"{self.lr_schedule}{warm}, {reg}, batch {self.batch_size}, augment {self.augment_strength:.2f}"
        )


FIELD_NAMES = tuple(f.name for f in fields(TrialConfig))
