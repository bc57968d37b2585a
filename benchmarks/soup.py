"""Does a greedy soup of a run's best epochs beat its best epoch on held-out test images?

    python benchmarks/soup.py          # 2 datasets x 2 recipes x 3 seeds, about 15 min on 2 cores

Each fit trains once with ``soup=True``: training is the same either way (the soup is made
after the last epoch from kept checkpoints), so the best epoch's weights and the soup come
from the same run and are both scored on the test split, which neither has seen.
Writes the "Model soup" section of benchmarks/RESULTS.md and prints one JSON object last.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from anytime import FASHION, PHOTO_CROP, PHOTO_PER_CLASS, PHOTO_SIZE  # noqa: E402
from datasets import natural_photos  # noqa: E402
from results_md import write_section  # noqa: E402

from autotl import TrialConfig, load_dataset  # noqa: E402
from autotl.train import evaluate, fit  # noqa: E402

RECIPES = {
    "full_finetune": TrialConfig(
        resolution_scale=0.5, frozen_depth=0.0, optimizer="adamw", lr=5e-4, augment_strength=0.3, max_epochs=8
    ),
    "half_frozen_sgd": TrialConfig(
        resolution_scale=0.5, frozen_depth=0.5, optimizer="sgd", lr=1e-2, augment_strength=0.3, max_epochs=8
    ),
}


def test_accuracy(model, data, pre) -> float:
    batches = ((pre.normalize(x), y) for x, y in data.batches(data.indices("test"), pre.size, pre.interpolation))
    return evaluate(model.eval(), batches, device=torch.device("cpu"), num_classes=len(data.classes))["accuracy"]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="autotl-soup-"))
    train, test = natural_photos(
        work, train_per_class=PHOTO_PER_CLASS, test_per_class=30, size=PHOTO_SIZE, crop=PHOTO_CROP
    )
    csv = work / "photos.csv"  # one dataset with a test split: the train folder's images plus the test folder's
    rows = [f"{p},{p.parent.name},train" for p in sorted(train.rglob("*.png"))]
    rows += [f"{p},{p.parent.name},test" for p in sorted(test.rglob("*.png"))]
    csv.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    sets = {
        "fashion": load_dataset(FASHION["spec"], max_per_class=FASHION["max_per_class"]),
        "photos": load_dataset(str(csv), allow_outside_paths=True),
    }
    runs = []
    for name, data in sets.items():
        for recipe, config in RECIPES.items():
            for seed in range(3):
                result = fit(config, data, seed=seed, soup=True)
                souped = test_accuracy(result.model, data, result.preprocessing)
                if result.unsouped_state is not None:
                    result.model.load_state_dict(result.unsouped_state)
                    best_epoch = test_accuracy(result.model, data, result.preprocessing)
                else:
                    best_epoch = souped  # the soup kept only the best epoch: the same model
                runs.append(
                    dict(
                        dataset=name,
                        recipe=recipe,
                        seed=seed,
                        soup_epochs=result.record.soup_reports,
                        best_epoch=result.record.best_report,
                        test_best_epoch=best_epoch,
                        test_soup=souped,
                    )
                )
                print(json.dumps(runs[-1]), flush=True)
    summary = {}
    for name in sets:
        rows = [r for r in runs if r["dataset"] == name]
        gain = [r["test_soup"] - r["test_best_epoch"] for r in rows]
        summary[name] = dict(
            mean_test_best_epoch=round(statistics.mean(r["test_best_epoch"] for r in rows), 4),
            mean_test_soup=round(statistics.mean(r["test_soup"] for r in rows), 4),
            soups_formed=sum(bool(r["soup_epochs"]) for r in rows),
            runs=len(rows),
            better=sum(g > 0 for g in gain),
            worse=sum(g < 0 for g in gain),
        )
    (HERE / "soup.json").write_text(json.dumps(dict(runs=runs, summary=summary), indent=1))
    lines = [
        f"Command: `python benchmarks/soup.py`. Machine: {platform.machine()}, CPU, "
        f"{torch.get_num_threads()} threads. lite0 at x0.5 resolution, 8 epochs, 3 seeds, two recipes; "
        "test accuracy of the best epoch and of the greedy soup of the 3 best epochs, from the same run.",
        "",
        "| dataset | runs | soups formed | test acc, best epoch (mean) | test acc, soup (mean) | soup better / worse |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['runs']} | {s['soups_formed']} | {s['mean_test_best_epoch']:.4f} | "
            f"{s['mean_test_soup']:.4f} | {s['better']} / {s['worse']} |"
        )
    helped = sum(s["better"] for s in summary.values()) > sum(s["worse"] for s in summary.values())
    lines += [
        "",
        "The soup helped here, so it is worth turning on (`--soup`)."
        if helped
        else "The soup did not help on held-out test images here, so `--soup` stays off by default.",
    ]
    write_section("Model soup (issue 6)", lines)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
