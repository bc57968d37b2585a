"""End to end: a search leaves a study, a report and a model that predicts like the trial did;
rerunning resumes; a custom objective plugs in; the CLI speaks one line per problem."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

import autotl
from autotl import TrialConfig, load_dataset
from autotl.cli import main
from autotl.export import load_model, save
from autotl.train import fit

pytestmark = pytest.mark.slow  # every test here trains, searches or runs a subprocess


def test_a_search_leaves_study_report_and_model(finished_run):
    run = finished_run.run_dir
    assert (run / "study.db").is_file() and (run / "report.html").is_file()
    assert {p.name for p in finished_run.model_dir.iterdir()} == {
        "model.safetensors",
        "config.json",
        "model.onnx",
        "README.md",
    }
    config = json.loads((finished_run.model_dir / "config.json").read_text())
    assert config["label_names"] == ["astronaut", "brick", "coffee"]
    assert config["autotl"]["metrics"]["accuracy"] == pytest.approx(finished_run.best_value)
    trials = finished_run.study.trials
    assert len(trials) == 2
    first = trials[0]
    assert first.params["frozen_depth"] == 0.75 and first.params["adamw.lr"] == 1e-3  # the start_from recipe
    for trial in trials:
        attrs = trial.user_attrs
        assert {
            "history",
            "best_report",
            "reports",
            "wall_seconds",
            "params_total",
            "params_trainable",
            "end_reason",
        } <= set(attrs)


def test_exported_model_reproduces_in_process_predictions_exactly(tmp_path, photo_folder):
    data = load_dataset(str(photo_folder), val_fraction=0.25)
    config = TrialConfig(resolution_scale=0.25, frozen_depth=0.75, max_epochs=1, augment_strength=0.0)
    result = fit(config, data)
    model_dir = save(result, tmp_path / "best_model")
    loaded = load_model(model_dir)
    val = data.indices("val")
    expected_x = data.images(val, result.preprocessing.size, result.preprocessing.interpolation).contiguous()
    with torch.inference_mode():
        expected = result.model(result.preprocessing.normalize(expected_x)).softmax(1).numpy()
    got = loaded.predict_proba([data.pixels(i) for i in val])
    assert np.array_equal(got, expected)
    files = sorted(p for p in photo_folder.rglob("*.png"))[:3]
    assert loaded.predict(files) == loaded.predict([str(f) for f in files])


def test_rerunning_resumes_and_keeps_finished_trials(tmp_path, photo_folder):
    out = tmp_path / "run"
    args = dict(space="quick", max_epochs=1, out=out, progress=False)
    first = autotl.search(str(photo_folder), n_trials=2, **args)
    before = [(t.number, t.value, t.datetime_start) for t in first.study.trials]
    again = autotl.search(str(photo_folder), n_trials=2, **args)
    assert [(t.number, t.value, t.datetime_start) for t in again.study.trials] == before  # nothing re-run
    more = autotl.search(str(photo_folder), n_trials=3, **args)
    trials = more.study.trials
    assert len(trials) == 3 and [(t.number, t.value, t.datetime_start) for t in trials[:2]] == before


def test_a_run_directory_of_another_dataset_is_refused(tmp_path, finished_run):
    with pytest.raises(autotl.AutoTLError, match="holds a study of dataset"):
        autotl.search(
            "builtin:digits", space="quick", n_trials=1, max_per_class=3, out=finished_run.run_dir, progress=False
        )


def test_a_custom_objective_can_change_the_config(tmp_path, photo_folder):
    seen = []

    def objective(trial, ctx):
        config = ctx.suggest(trial)
        config.max_epochs = 1
        result = ctx.fit(trial, config)
        seen.append((result.metrics["accuracy"], result.metrics["macro_f1"], len(result.history)))
        return result.metrics["macro_f1"]

    result = autotl.search(
        str(photo_folder), space="quick", n_trials=1, objective=objective, out=tmp_path / "run", progress=False
    )
    assert len(seen) == 1 and seen[0][2] == 1
    assert result.best_value == pytest.approx(seen[0][1])
    assert (result.model_dir / "model.safetensors").is_file()


def test_a_plain_optuna_objective_is_accepted(tmp_path, photo_folder):
    result = autotl.search(
        str(photo_folder),
        space="quick",
        n_trials=2,
        progress=False,
        out=tmp_path / "run",
        objective=lambda trial: trial.suggest_float("x", 0, 1),
    )
    assert 0 <= result.best_value <= 1 and len(result.study.trials) == 2


def test_readme_custom_objective_example_runs(tmp_path, monkeypatch):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    code = re.search(r"<!-- custom-objective -->\s*```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "reports" / "custom" / "best_model" / "config.json").is_file()


def test_cli_search_predict_and_report(tmp_path, photo_folder, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "search",
                "--dataset",
                str(photo_folder),
                "--space",
                "quick",
                "--n-trials",
                "1",
                "--max-epochs",
                "1",
                "--out",
                str(out),
                "--sampler",
                "random",
                "--pruner",
                "none",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "[slice 1] trial #0 starts" in captured.err and "val acc" in captured.err
    assert "best validation accuracy" in captured.out
    images = sorted(str(p) for p in photo_folder.rglob("*.png"))[:2]
    assert main(["predict", "--model", str(out / "best_model"), *images]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0] == "path,label,probability"
    for line, image in zip(lines[1:], images):
        path, label, probability = line.rsplit(",", 2)
        assert path == image and label in {"astronaut", "brick", "coffee"} and 0 < float(probability) <= 1
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.html").is_file()
    assert main(["evaluate", "--model", str(out / "best_model"), "--dataset", str(photo_folder)]) == 0
    printed = capsys.readouterr().out
    assert "all accuracy" in printed and "all macro_f1" in printed and "balanced_accuracy" in printed


def test_cli_rejects_unknown_sampler_and_pruner_in_one_line(tmp_path, photo_folder, capsys):
    from autotl.search import PRUNERS, SAMPLERS

    for flag, value, known in (("--sampler", "grid", SAMPLERS), ("--pruner", "nope", PRUNERS)):
        with pytest.raises(SystemExit) as stopped:  # argparse's choices, in one line
            main(["search", "--dataset", str(photo_folder), flag, value, "--out", str(tmp_path / value)])
        err = capsys.readouterr().err.strip().splitlines()
        assert stopped.value.code == 2 and len(err) == 1 and err[0].startswith("autotl search: error:"), err
        assert f"{flag}: invalid choice: {value!r}" in err[-1] and all(repr(name) in err[-1] for name in known)
        with pytest.raises(autotl.AutoTLError, match=f"unknown {flag[2:]} {value!r}: use one of"):  # the Python API
            autotl.search(str(photo_folder), space="quick", out=tmp_path / value, progress=False, **{flag[2:]: value})
    assert not any(tmp_path.iterdir())  # refused before any work


def test_unknown_backbone_fails_before_training(tmp_path, photo_folder, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("backbone: not_a_real_model\nmax_epochs: 1\n")
    code = main(["search", "--dataset", str(photo_folder), "--space", str(space), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not_a_real_model" in err[0]
    assert not (tmp_path / "r").exists()


def test_the_same_seed_samples_the_same_recipes(tmp_path, photo_folder):
    def sampled(out):
        result = autotl.search(
            str(photo_folder),
            space="default",
            n_trials=4,
            seed=5,
            out=out,
            progress=False,
            objective=lambda trial, ctx: float(len(ctx.suggest(trial).describe())),
        )
        return [t.params for t in result.study.trials]

    assert sampled(tmp_path / "a") == sampled(tmp_path / "b")


def test_a_new_trial_needs_room_for_its_first_report_before_the_deadline():
    """Not the median report: cached probe reports (about 0 s) and many short half-frozen reports must not make
    a full fine-tuning report look affordable at the end of the budget (the README's digits run started one)."""
    from autotl.search._run import _room_for_a_trial

    study = optuna.create_study(direction="maximize")
    for cache, seconds in (
        ("hit", [0.02, 0.02]),
        ("miss", [0.03, 0.03]),
        ("off", [25.3]),
        ("off", [18.3] + [17.2] * 7),
        ("off", [43.4]),
    ):
        trial = study.ask()
        trial.set_user_attr("feature_cache", cache)
        trial.set_user_attr("history", [dict(report=e, epoch=e, seconds=s) for e, s in enumerate(seconds, 1)])
        study.tell(trial, 0.5)
    assert _room_for_a_trial(study) == 43.4
    only_probes = optuna.create_study(direction="maximize")
    only_probes.add_trials([t for t in study.trials if t.user_attrs["feature_cache"] != "off"])
    assert _room_for_a_trial(only_probes) == 0.03


def test_the_warm_start_trains_a_large_dataset_of_small_images_at_a_small_resolution(photo_folder, tmp_path):
    from autotl.search._run import resolution_for_small_images
    from autotl.space import load_space

    default = load_space("default")
    text = (Path(autotl.__file__).parent / "search_spaces" / "default.yaml").read_text()
    (tmp_path / "large.yaml").write_text(text.replace("report_every_images: 4096", "report_every_images: 4"))
    large = load_space(tmp_path / "large.yaml")  # 36 training images are then 9 reports' worth: a large dataset
    digits = load_dataset("builtin:digits", max_per_class=5)  # 8-px images: 64 px is already 8 times larger
    assert digits.store.size == 8 and resolution_for_small_images(large, digits) == 0.25
    assert resolution_for_small_images(default, digits) is None  # few images: the warm start's 168 px is cheap
    photos = load_dataset(str(photo_folder))  # 48 px: the smallest input of at least 96 px
    assert resolution_for_small_images(large, photos) == 0.5
    params = default.warm_start_params(["tf_efficientnet_lite0"], resolution_scale=0.25)
    assert {p["resolution_scale"] for _, p in params} == {0.25}
