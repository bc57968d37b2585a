"""What the terminal shows during a search: trial i of N, its recipe, epochs, best so far."""

from __future__ import annotations

import sys


class Progress:
    """Prints one line per trial start, per epoch, and per trial end, to stderr."""

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

    def epoch(self, record: dict, best: dict, max_epochs: int) -> None:
        done = record.get("epochs_done", record["epoch"])
        where = (
            f"epoch {record['epoch']}/{max_epochs}"
            if done == record["epoch"]
            else f"report {record['epoch']} (epoch {done:.2f}/{max_epochs})"
        )
        self.say(
            f"    {where}  val acc {record['val_accuracy']:.3f}  "
            f"f1 {record['val_macro_f1']:.3f}  loss {record['val_loss']:.3f}  ({record['seconds']:.1f} s)"
        )

    def trial_ended(self, number: int, state: str, value, reason: str, best_value, best_number) -> None:
        score = f"{value:.4f}" if value is not None else "-"
        best = f"{best_value:.4f} (trial #{best_number})" if best_value is not None else "none yet"
        self.say(f"    -> trial #{number} {state}, score {score}: {reason} | best so far {best}")
