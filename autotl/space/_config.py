"""TrialConfig: everything one fine-tuning run needs to know, as plain values.

Each setting is declared once, here: its type (how a space samples it and how the
report types its column), its default, and how the report shows it (``title``,
``scale``: number, log or category; ``strategies``: the strategies it means something
under). Adding a setting means adding a field here and, to search it, a line in the
YAML spaces; the sampler, the stored record and the report's table, recipe plots and
parallel coordinates pick it up.
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, field, fields

OPTIMIZERS = ("adamw", "sgd")
LR_SCHEDULES = ("constant", "step", "cosine", "inv_sqrt", "wsd")
REGULARIZERS = ("none", "weight_decay", "l1", "l2sp", "dropout", "drop_path", "label_smoothing", "mixup")
STRATEGIES = ("full", "frozen_prefix", "linear_probe", "lp_ft", "surgical", "bitfit", "norm_only", "lora")
SURGICAL_GROUPS = ("early", "middle", "late")  # thirds of the backbone's blocks, input side first
LORA_LAYERS = ("all", "late")  # every linear and 1x1 convolution of the body, or those in its later half
CLASS_BALANCE = ("none", "inverse", "sqrt_inverse", "balanced_sampling", "focal")  # autotl.train.class_balance


def setting(default, title: str, scale: str = "number", strategies: tuple = (), shown: bool = True):
    """A TrialConfig field with how the report shows it; ``strategies``: where it means something (default: all).

    ``shown=False`` keeps it out of the report's recipe plots (it has a section of its own, or is a budget).
    """
    return field(default=default, metadata=dict(title=title, scale=scale, strategies=strategies, shown=shown))


@dataclass
class TrialConfig:
    """One fine-tuning recipe. Defaults are a known-good recipe for small image datasets."""

    backbone: str = setting("tf_efficientnet_lite0", "backbone", "category", shown=False)
    resolution_scale: float = setting(0.75, "resolution (share of the pretrained input)")
    strategy: str = setting("frozen_prefix", "strategy (what trains)", "category")  # see STRATEGIES
    # a frozen depth of 0 or 1 is full fine-tuning or a linear probe, so it means something there too
    frozen_depth: float = setting(
        0.5, "frozen depth (share of blocks)", strategies=("full", "frozen_prefix", "linear_probe")
    )
    probe_epochs: int = setting(1, "LP-FT: probe epochs", strategies=("lp_ft",))  # the head alone, then everything
    probe_lr_scale: float = setting(10.0, "LP-FT: probe learning-rate multiple", "log", strategies=("lp_ft",))
    surgical_group: str = setting("late", "surgical: blocks trained", "category", strategies=("surgical",))
    lora_rank: int = setting(8, "LoRA rank", "log", strategies=("lora",))
    lora_alpha: float = setting(16.0, "LoRA alpha", "log", strategies=("lora",))  # the update is scaled by alpha/rank
    lora_layers: str = setting("all", "LoRA layers", "category", strategies=("lora",))
    optimizer: str = setting("adamw", "optimizer", "category")
    lr: float = setting(1e-3, "learning rate", "log")
    lr_schedule: str = setting("cosine", "schedule", "category")
    warmup_epochs: int = setting(1, "warmup epochs")
    layer_decay: float = setting(1.0, "layer-wise learning-rate decay")
    regularizer: str = setting("label_smoothing", "regularizer", "category")
    regularizer_strength: float = setting(0.1, "regularizer strength", "log")
    class_balance: str = setting("none", "class balance (loss and sampling)", "category")
    focal_gamma: float = setting(2.0, "focal loss gamma")  # only with class_balance focal
    batch_size: int = setting(32, "batch size", "log")
    augment_strength: float = setting(0.3, "augmentation strength")
    max_epochs: int = setting(8, "most epochs", shown=False)
    # a report (to the pruner, and a point of the curve) after this many training images, or each epoch
    report_every_images: int = setting(4096, "training images per report", "log", shown=False)

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

    def applicable(self) -> dict:
        """The settings as a dict, None where they mean nothing for this recipe (a LoRA rank of a full fine-tune,
        a strength without a regularizer): stored defaults that, plotted, would look like choices."""
        values = self.to_dict()
        for f in fields(self):
            if f.metadata["strategies"] and self.strategy not in f.metadata["strategies"]:
                values[f.name] = None
        if self.regularizer == "none":
            values["regularizer_strength"] = None
        if self.class_balance != "focal":
            values["focal_gamma"] = None
        return values

    @classmethod
    def from_dict(cls, values: dict) -> TrialConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def strategy_named(cls, settings: dict) -> str | None:
        """The strategy that ``settings`` (a stored recipe, or a trial's params) name, normalised; None when they
        name none. A recipe from before strategies existed names it by its frozen depth alone."""
        given = {k: settings[k] for k in ("strategy", "frozen_depth") if settings.get(k) is not None}
        if not given:
            return None
        try:
            return cls.from_dict(given).strategy
        except (TypeError, ValueError):  # a name this version does not know: as stored
            return None if given.get("strategy") is None else str(given["strategy"])

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
        balance = {
            "none": "",
            "inverse": ", classes weighted 1/n",
            "sqrt_inverse": ", classes weighted 1/sqrt(n)",
            "balanced_sampling": ", class-balanced batches",
            "focal": f", focal loss (gamma {self.focal_gamma:g})",
        }[self.class_balance]
        return (
            f"{self.backbone} (x{self.resolution_scale:g} resolution), {frozen}, {self.optimizer} at {self.lr:.2g}, "
            f"{self.lr_schedule}{warm}, {reg}{balance}, batch {self.batch_size}, augment {self.augment_strength:.2f}"
        )


VOCABULARY = {
    "optimizer": OPTIMIZERS,
    "lr_schedule": LR_SCHEDULES,
    "regularizer": REGULARIZERS,
    "strategy": STRATEGIES,
    "surgical_group": SURGICAL_GROUPS,
    "lora_layers": LORA_LAYERS,
    "class_balance": CLASS_BALANCE,
}
FIELD_NAMES = tuple(f.name for f in fields(TrialConfig))
SETTING_TYPES = typing.get_type_hints(TrialConfig)  # name -> int, float or str: how a space samples it
# The settings that mean something under some strategies only (a recipe stores them all).
STRATEGY_SETTINGS = {f.name: f.metadata["strategies"] for f in fields(TrialConfig) if f.metadata["strategies"]}
