"""Adding a setting to TrialConfig means editing space/_config.py and the YAML spaces, nothing else.

On a copy of the autotl package whose TrialConfig has one more field (``ema_decay``, added
by text, as a developer would), a YAML space samples it, trials store their records as the
search does (no training), and the report shows the new setting: a column of the recipes
and of the trials table, a panel of the recipe plots titled as the field says, and an
axis of the parallel coordinates. A report that lists the settings itself fails this.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import autotl

pytestmark = pytest.mark.slow  # a subprocess that imports autotl (and torch): about 10 s on 2 cores

FIELD = '    ema_decay: float = setting(0.0, "EMA decay", "log")\n'
BEFORE = "    max_epochs: int = setting("
SPACE = """
max_epochs: 2
backbone: resnet18
ema_decay:
  choices: [0.9, 0.99]
optimizer:
  choices:
    adamw: {lr: {low: 1.0e-4, high: 1.0e-2, log: true}}
lr_schedule:
  choices: [constant, cosine]
"""
# Run with the copy first on PYTHONPATH: sample recipes from the space, store what the search stores, write the report.
SCRIPT = """
import json, sys
import optuna
import autotl
from autotl import report
from autotl.records import Metrics, Report, TrialRecord
from autotl.space import load_space

space = load_space(sys.argv[1])
study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
for number in range(6):
    trial = study.ask()
    config = space.sample(trial)
    accuracy = 0.5 + 0.05 * number
    TrialRecord(
        history=[Report(report=1, epoch=1.0, val_accuracy=accuracy, val_loss=1 - accuracy)],
        best_report=1,
        reports=1,
        backbone=config.backbone,
        strategy=config.strategy,
        config=config.to_dict(),
        metrics=Metrics(accuracy=accuracy, loss=1 - accuracy),
    ).write(trial)
    study.tell(trial, accuracy)
report.write(study, sys.argv[2])
configs = report.config_records(study)
print(json.dumps({"package": autotl.__file__, "columns": list(configs.columns), "ema": configs["ema_decay"].tolist()}))
"""


def _figure(page: str, name: str) -> str:
    """The div and drawing script of one figure of the page."""
    start = page.index(f'id="figure-{name}"')
    return page[start : page.index("</script>", start)]


def test_a_new_trial_config_field_shows_in_the_report_without_touching_it(tmp_path):
    copy = tmp_path / "src" / "autotl"
    shutil.copytree(pathlib.Path(autotl.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    config = copy / "space" / "_config.py"
    source = config.read_text(encoding="utf-8")
    assert source.count(BEFORE) == 1, "max_epochs moved: put the new field elsewhere"
    config.write_text(source.replace(BEFORE, FIELD + BEFORE), encoding="utf-8")
    (tmp_path / "ema.yaml").write_text(SPACE, encoding="utf-8")
    page_path = tmp_path / "report.html"
    env = {**os.environ, "PYTHONPATH": str(copy.parent)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "ema.yaml"), str(page_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # not the checkout: ``python -c`` puts the working directory first on sys.path
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert pathlib.Path(found["package"]).parent == copy  # the copy ran, not the installed package
    assert "ema_decay" in found["columns"]  # a column of the recipes
    assert sorted(set(found["ema"])) == [0.9, 0.99]  # really sampled, both values
    page = page_path.read_text(encoding="utf-8")
    assert "<th>ema_decay</th>" in page[page.index('<section id="trials">') :]  # the sampled param
    assert '"EMA decay"' in _figure(page, "recipe")  # a panel's title
    assert '"EMA decay"' in _figure(page, "parallel")  # an axis
