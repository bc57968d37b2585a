"""What the terminal shows during a search: trial i of N, its recipe, its reports, best so far."""

from __future__ import annotations

import sys


class Progress:
    """Prints one line per trial start, per report, and per trial end, to stderr."""

    def __init__(self, total: int, enabled: bool = True, stream=None, prefix: str = ""):
        self.total, self.enabled, self.stream, self.prefix = total, enabled, stream or sys.stderr, prefix
        self.position = 1

    def say(self, text: str) -> None:
        if self.enabled:
            print(self.prefix + text, file=self.stream, flush=True)

    def trial_started(self, position: int, number: int, config, note: str | None = None) -> None:
        self.say(
            f"[trial {position}/{self.total}] #{number}: {config.describe()}"
            + (f"  (warm start: {note})" if note else "")
        )

    def report(self, entry, max_epochs: int, restored: bool = False) -> None:
        """One report's line (``entry``: an ``autotl.records.Report``); a restored one says it was saved before."""
        where = (
            f"epoch {entry.epoch:g}/{max_epochs}"
            if entry.epoch == entry.report
            else f"report {entry.report} (epoch {entry.epoch:.2f}/{max_epochs})"
        )
        scores = (
            f"val acc {entry.val_accuracy:.3f}  f1 {entry.val_macro_f1:.3f}  loss {entry.val_loss:.3f}"
            if entry.val_loss is not None
            else f"train loss {entry.train_loss:.3f}, not checked (inside a slice)"
        )
        self.say(
            f"    {where}  {scores}  "
            + ("(saved before: continuing from here)" if restored else f"({entry.seconds:.1f} s)")
        )

    def trial_ended(self, number: int, state: str, value, reason: str, best_value, best_number) -> None:
        score = f"{value:.4f}" if value is not None else "-"
        best = f"{best_value:.4f} (trial #{best_number})" if best_value is not None else "none yet"
        self.say(f"    -> trial #{number} {state}, score {score}: {reason} | best so far {best}")
