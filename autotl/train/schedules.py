"""Learning-rate schedules as pure functions of the optimizer step.

``lr_factor(step, ...)`` is the multiplier of the base learning rate at optimizer step
``step`` (0-based). Warmup is linear over ``warmup_steps``; the schedule proper starts
counting after it.
"""

from __future__ import annotations

import math

WSD_DECAY = 0.2  # wsd: the share of the steps that the learning rate decays over, at the end


def lr_factor(
    step: int,
    *,
    schedule: str,
    total_steps: int,
    warmup_steps: int = 0,
    step_gamma: float = 0.1,
    step_every: int | None = None,
) -> float:
    """Multiplier of the base learning rate at optimizer step ``step``.

    - constant: 1
    - step: ``step_gamma`` ** (k // step_every), by default dropping at 1/3 and 2/3 of training
    - cosine: 0.5 * (1 + cos(pi * k / K)), from 1 to 0 over the K steps after warmup
    - inv_sqrt: 1 / sqrt(k + 1), i.e. lr_k = lr_0 / sqrt(k) with k counted from 1
    - wsd: warmup-stable-decay; 1 until the last WSD_DECAY share of the K steps, then 1 - sqrt of the
      share of the decay done (Hägele et al., 2024): any prefix of the stable phase can be continued
      or ended with a short decay (``cool_down``), so a run's length need not be known when it starts
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    k = step - warmup_steps
    remaining = max(1, total_steps - warmup_steps)
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        every = step_every or max(1, math.ceil(remaining / 3))
        return step_gamma ** (k // every)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(k, remaining) / remaining))
    if schedule == "inv_sqrt":
        return 1.0 / math.sqrt(k + 1)
    if schedule == "wsd":
        stable = remaining - max(1, round(WSD_DECAY * remaining))
        return cool_down(1.0, k - stable, remaining - stable) if k >= stable else 1.0
    raise ValueError(f"unknown lr_schedule {schedule!r}: use constant, step, cosine, inv_sqrt or wsd")


def cool_down(start: float, step: int, steps: int) -> float:
    """The multiplier ``step`` steps into a decay of ``steps`` steps from ``start`` to 0, by 1 - sqrt (the
    cooldown shape Hägele et al. found best)."""
    return start * (1.0 - math.sqrt(min(1.0, max(0, step) / max(1, steps))))
