"""What saving a trial's training state after every report costs, on the README's digits command.

    python benchmarks/state.py          # 3 recipes x 2 arms, about 10 min on 2 cores

The recipes are the default space's warm start on digits (the first trials of
``autotl search --dataset builtin:digits``): a linear probe, half the blocks frozen with
SGD, a full fine-tune. Each is trained twice, one after the other in this process: with
a state file (saved after every report) and without. For the run that saves, every save
is timed where it happens (``save_state``) and their sum set against the reports' time;
the two arms' report times are compared too. Also the state file's size. Writes the "Saving
the training state" section of benchmarks/RESULTS.md and prints one JSON object last.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results_md import write_section  # noqa: E402

from autotl import load_dataset, load_space  # noqa: E402
from autotl.train import _fit, fit  # noqa: E402

REPORTS = 4  # reports (here: epochs) per run


def warm_start_configs():
    space = load_space("default")
    for label, params in space.warm_start_params(["tf_efficientnet_lite0"]):
        yield label, space.sample(optuna.trial.FixedTrial(params))


def timed_saves(seconds: list):
    """``_fit.save_state``, timing each call into ``seconds``."""
    real = _fit.save_state

    def save(*args, **kwargs):
        started = time.perf_counter()
        real(*args, **kwargs)
        seconds.append(time.perf_counter() - started)

    return save


def measure(label, config, data, folder: Path) -> dict:
    config.max_epochs = REPORTS
    plain = fit(config, data)
    saves: list[float] = []
    _fit.save_state, real = timed_saves(saves), _fit.save_state
    try:
        state = folder / f"{label.split()[0]}.safetensors"
        saving = fit(config, data, state_file=state)
        size = state.stat().st_size
    finally:
        _fit.save_state = real
    reports = [r.seconds for r in saving.history]
    return dict(
        recipe=label,
        strategy=config.strategy,
        report_seconds=round(statistics.median(reports), 3),
        saves=len(saves),
        save_seconds=round(statistics.median(saves), 4),
        save_share=round(sum(saves) / sum(reports), 4),
        state_mb=round(size / 1e6, 2),
        report_seconds_without_saving=round(statistics.median(r.seconds for r in plain.history), 3),
    )


def main() -> dict:
    torch.manual_seed(0)
    data = load_dataset("builtin:digits", image_size=224)
    folder = Path(tempfile.mkdtemp(prefix="autotl-state-"))
    rows = [measure(label, config, data, folder) for label, config in warm_start_configs()]
    result = dict(
        rows=rows,
        worst_save_share=max(r["save_share"] for r in rows),
        machine=dict(cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads()),
        torch=torch.__version__,
    )
    table = [
        "| recipe | report (s) | saves | save (s) | saving / training | state file (MB) | report without saving (s) |",
        "|---|---|---|---|---|---|---|",
    ] + [
        f"| {r['recipe']} | {r['report_seconds']} | {r['saves']} of {REPORTS} | {r['save_seconds']} | "
        f"{r['save_share']:.2%} | {r['state_mb']} | {r['report_seconds_without_saving']} |"
        for r in rows
    ]
    intro = (
        "`python benchmarks/state.py`: the default space's warm-start recipes on `builtin:digits` (the README's "
        f"command), {REPORTS} reports each, trained with a state file and without, one after the other. Report and "
        "save times are medians; a save is timed where it happens; saving / training is all the saves' time over all "
        "the reports' (a run saves after a report unless that would cost over 5% of its time since the last save)."
    )
    write_section("Saving the training state", [intro, "", *table])
    (HERE / "state.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
