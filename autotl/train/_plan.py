"""How a run's steps fall into epochs and reports, and where its learning-rate schedule ends."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..space import TrialConfig
from .schedules import cool_down, lr_factor

COOL_DOWN_SHARE = 0.2  # a run ended early decays its learning rate over this share of the steps it trained


@dataclass
class Plan:
    """The schedule of one run: a pure function of the recipe and the number of training images, until a time
    budget shortens it (then it is part of the run's saved state).

    A warmup epoch lasts at most one report: where an epoch holds several reports (a large dataset), a warmup
    over the whole epoch would hold down every report the scheduler judges a trial by first, and it trained no
    better (RESULTS.md, "Warmup on a large dataset")."""

    batch_size: int
    steps_per_epoch: int
    steps_per_report: int
    last_report: int
    total_steps: int
    warmup_steps: int
    planned: tuple  # (reports, steps, warmup steps) before any shortening
    probe_steps: int = 0  # LP-FT: steps that train the head alone, before the schedule proper
    cool_from: int | None = None  # the step where a run ended early began its cool-down (``end_soon``)
    cool_factor: float = 1.0  # the learning rate's multiplier when its cool-down began
    cool_report: int | None = None  # the report after which it began

    @property
    def protected_steps(self) -> int:
        """The pruner is not consulted until after these steps: a probe phase and a warmup are no verdict."""
        return self.probe_steps + self.warmup_steps

    @classmethod
    def make(cls, config: TrialConfig, n_train: int, reports: int | None = None) -> Plan:
        """The recipe's schedule; ``reports`` ends the run after that many of its reports (the schedule unchanged)."""
        batch_size = min(config.batch_size, n_train)
        steps_per_epoch = n_train // batch_size + (1 if n_train % batch_size > 1 else 0)  # never a batch of 1
        reports_per_epoch = math.ceil(steps_per_epoch / max(1, config.report_every_images // batch_size))
        steps_per_report = math.ceil(steps_per_epoch / reports_per_epoch)  # an epoch in equal parts
        total_steps = steps_per_epoch * config.max_epochs
        probe_steps = min(config.probe_epochs * steps_per_epoch, total_steps // 2) if config.strategy == "lp_ft" else 0
        warmup_steps = min(config.warmup_epochs * steps_per_report, (total_steps - probe_steps) // 2)
        last_report = config.max_epochs * reports_per_epoch
        if reports:
            last_report = min(reports, last_report)
        planned = (last_report, total_steps, warmup_steps)
        return cls(
            batch_size, steps_per_epoch, steps_per_report, last_report, total_steps, warmup_steps, planned, probe_steps
        )

    def shorten(self, report: int, seconds_left: float, seconds_per_report: float) -> None:
        """End the schedule where the time does (never later than planned), so the learning rate still anneals."""
        if self.cool_from is not None:
            return  # already ending
        reports, steps, warmup = self.planned
        self.last_report = max(report, min(reports, report + int(seconds_left / max(seconds_per_report, 1e-3))))
        self.total_steps = min(steps, self.last_report * self.steps_per_report)
        self.probe_steps = min(self.probe_steps, self.total_steps // 2)
        self.warmup_steps = min(warmup, (self.total_steps - self.probe_steps) // 2)

    def end_soon(self, report: int, step: int, schedule: str, probe_scale: float) -> None:
        """End the run after a cool-down: the learning rate falls from where it is to 0 over COOL_DOWN_SHARE of
        the steps trained so far (at least one report), so a run of any length ends annealed. A run
        already ending (its planned end, or a cool-down begun) is left as it is."""
        reports = max(1, math.ceil(COOL_DOWN_SHARE * step / self.steps_per_report))
        if self.cool_from is not None or report + reports >= self.last_report:
            return
        self.cool_factor = self.lr_factor(step, schedule, probe_scale)
        self.cool_from, self.cool_report, self.last_report = step, report, report + reports
        self.total_steps = step + reports * self.steps_per_report
        if step < self.probe_steps:
            self.probe_steps = self.total_steps  # a probe ended early stays a probe

    @property
    def shortened(self) -> bool:
        return self.last_report < self.planned[0]

    def lr_factor(self, step: int, schedule: str, probe_scale: float) -> float:
        """The learning rate's multiplier at ``step``: constant while probing, then warmup and the schedule; in a
        cool-down, falling from where it began to 0."""
        if self.cool_from is not None and step >= self.cool_from:
            return cool_down(self.cool_factor, step - self.cool_from, self.total_steps - self.cool_from)
        if step < self.probe_steps:
            return probe_scale
        return lr_factor(
            step - self.probe_steps,
            schedule=schedule,
            total_steps=self.total_steps - self.probe_steps,
            warmup_steps=self.warmup_steps,
        )

    def epochs_done(self, step: int) -> float:
        return round(step / self.steps_per_epoch, 4)
