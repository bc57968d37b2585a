"""TrialConfig: everything one fine-tuning run needs to know, as plain values."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

OPTIMIZERS = ("adamw", "sgd")
LR_SCHEDULES = ("constant", "step", "cosine", "inv_sqrt")
REGULARIZERS = ("none", "weight_decay", "l1", "l2sp", "dropout", "drop_path", "label_smoothing", "mixup")
STRATEGIES = ("full", "frozen_prefix", "linear_probe", "lp_ft", "surgical", "bitfit", "norm_only", "lora")
SURGICAL_GROUPS = ("early", "middle", "late")  # thirds of the backbone's blocks, input side first
LORA_LAYERS = ("all", "late")  # every linear and 1x1 convolution of the body, or those in its later half


@dataclass
class TrialConfig:
    """One fine-tuning recipe. Defaults are a known-good recipe for small image datasets."""

    backbone: str = "tf_efficientnet_lite0"
    resolution_scale: float = 0.75
    strategy: str = "frozen_prefix"  # what trains: see STRATEGIES and backbones.trainable
    frozen_depth: float = 0.5  # frozen_prefix: share of blocks frozen from the input side
    probe_epochs: int = 1  # lp_ft: epochs of training the head alone before everything trains
    probe_lr_scale: float = 10.0  # lp_ft: the head's learning rate while probing, as a multiple of lr
    surgical_group: str = "late"  # surgical: the one third of the blocks that trains (with the head)
    lora_rank: int = 8  # lora: rank of the low-rank update of each adapted weight
    lora_alpha: float = 16.0  # lora: the update is scaled by alpha / rank
    lora_layers: str = "all"  # lora: which linear and 1x1 convolution layers are adapted
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
        for name, allowed in VOCABULARY.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        self._name_the_strategy()

    def _name_the_strategy(self) -> None:
        """One name per recipe: a frozen prefix of none or all blocks is full fine-tuning or a linear probe.

        Spaces and trials from before strategies existed set only ``frozen_depth``; they keep
        their meaning, and the report groups them with the strategies they are.
        """
        if self.strategy == "frozen_prefix" and self.frozen_depth in (0, 1):
            self.strategy = "full" if self.frozen_depth == 0 else "linear_probe"
        if self.strategy != "frozen_prefix":
            self.frozen_depth = 1.0 if self.strategy == "linear_probe" else 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrialConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def strategy_words(self) -> str:
        """What trains, in words, e.g. 'first 50% of blocks frozen' or 'LoRA rank 8 on all layers'."""
        return {
            "full": "full fine-tuning",
            "linear_probe": "linear probe",
            "frozen_prefix": f"first {self.frozen_depth:.0%} of blocks frozen",
            "lp_ft": f"LP-FT ({self.probe_epochs} probe epoch{'s' if self.probe_epochs != 1 else ''}, then all)",
            "surgical": f"surgical ({self.surgical_group} blocks and head)",
            "bitfit": "BitFit (biases and head)",
            "norm_only": "norm layers and head",
            "lora": f"LoRA rank {self.lora_rank}, alpha {self.lora_alpha:g} on {self.lora_layers} layers",
        }[self.strategy]

    def describe(self) -> str:
        """The recipe in words, e.g. 'tf_efficientnet_lite0 at 160 px scale 0.75, first 50% of blocks frozen, ...'."""
        frozen = self.strategy_words()
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


# The settings that mean something under some strategies only (a recipe stores them all).
# A frozen depth of 0 or 1 is full fine-tuning or a linear probe, so it means something there too.
STRATEGY_SETTINGS = {
    "frozen_depth": ("full", "frozen_prefix", "linear_probe"),
    "probe_epochs": ("lp_ft",),
    "probe_lr_scale": ("lp_ft",),
    "surgical_group": ("surgical",),
    "lora_rank": ("lora",),
    "lora_alpha": ("lora",),
    "lora_layers": ("lora",),
}
VOCABULARY = {
    "optimizer": OPTIMIZERS,
    "lr_schedule": LR_SCHEDULES,
    "regularizer": REGULARIZERS,
    "strategy": STRATEGIES,
    "surgical_group": SURGICAL_GROUPS,
    "lora_layers": LORA_LAYERS,
}
FIELD_NAMES = tuple(f.name for f in fields(TrialConfig))
