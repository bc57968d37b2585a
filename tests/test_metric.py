"""The user's metric (--metric): it is the study's objective, what the trials report and keep, what picks the best
trial and what the exported model records; imbalanced classes get a hint and a validation split that holds them."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import optuna
import pytest
from conftest import make_photo_folder

from autotl import load_dataset
from autotl.cli import main
from autotl.errors import AutoTLError
from autotl.records import Metrics, TrialRecord, report_score
from autotl.train import prediction_score
from autotl.train._fit import _ahead
from autotl.trials import best_trial, study_metric

HINT = "pass --metric macro_f1"


@pytest.fixture(scope="module")
def imbalanced_folder(tmp_path_factory):
    """Three classes of real-photo crops: 40, 12 and 12 images (the largest over 3 times the smallest)."""
    root = tmp_path_factory.mktemp("imbalanced") / "photos"
    make_photo_folder(root, per_class=12, size=32, photos=("coffee", "brick"))
    make_photo_folder(root, per_class=40, size=32, seed=1, photos=("astronaut",))
    return root


def test_prediction_scores_are_scikit_learns():
    truth, predicted = np.array([0, 0, 0, 0, 1, 2]), np.array([0, 0, 0, 0, 0, 2])
    assert prediction_score(truth, predicted) == pytest.approx(5 / 6)
    assert prediction_score(truth, predicted, "balanced_accuracy") == pytest.approx((1 + 0 + 1) / 3)
    f1_zero = 2 * 4 / (2 * 4 + 1)  # class 0: 4 right, 1 false positive, no false negative
    assert prediction_score(truth, predicted, "macro_f1") == pytest.approx((f1_zero + 0 + 1) / 3)


def test_the_kept_report_is_the_best_by_the_metric():
    """A report of lower accuracy but higher macro-F1 replaces the kept one only when the metric is macro-F1."""
    kept = dict(accuracy=0.9, macro_f1=0.5, balanced_accuracy=0.55, loss=0.4, report=1)
    later = dict(accuracy=0.8, macro_f1=0.7, balanced_accuracy=0.75, loss=0.5)
    assert _ahead(later, 2, kept, 100, "macro_f1") and _ahead(later, 2, kept, 100, "balanced_accuracy")
    assert not _ahead(later, 2, kept, 100, "accuracy")


def test_the_best_trial_is_the_best_by_the_studys_metric():
    """Trial values are the metric: the tie-break picks the higher macro-F1, whatever the accuracy."""
    study = optuna.create_study(direction="maximize")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["macro_f1"])
    for f1, accuracy in [(0.60, 0.95), (0.80, 0.85)]:
        attrs = TrialRecord(metrics=Metrics(accuracy=accuracy, macro_f1=f1, loss=0.3), val_images=100).attrs()
        study.add_trial(optuna.trial.create_trial(value=f1, user_attrs=attrs))
    assert study_metric(study) == "macro_f1"
    assert best_trial(study).number == 1


def test_a_small_class_gets_a_minimum_of_validation_images(imbalanced_folder, photo_folder):
    data = load_dataset(str(imbalanced_folder), val_fraction=0.2, seed=3)
    counts = dict(zip(data.classes, data.class_counts("val").tolist()))
    # 40 / 12 / 12 images: stratified about 8 / 2 / 2, then the small classes topped up to a third of their images
    assert counts["brick"] == counts["coffee"] == 4 and counts["astronaut"] in (8, 9), counts
    assert set(data.indices("val")).isdisjoint(data.indices("train"))
    assert data.count("train") + data.count("val") == 64
    balanced = load_dataset(str(photo_folder), val_fraction=0.25)
    assert balanced.class_counts("val").tolist() == [4, 4, 4]  # as stratified: a balanced split is kept


def test_metric_reaches_the_objective_the_reports_and_the_exported_model(imbalanced_folder, tmp_path, capsys):
    """A real search scored by macro-F1 from the CLI: study objective, intermediate values, trial values, the
    best trial and the exported model's record all macro-F1; no imbalance hint (the user chose); a rerun with
    another metric on the same run directory is refused in one line."""
    out = tmp_path / "run"
    args = ["search", "--dataset", str(imbalanced_folder), "--space", "quick", "--n-trials", "2"]
    assert main([*args, "--max-epochs", "2", "--metric", "macro_f1", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert HINT not in captured.err
    assert "best validation macro_f1:" in captured.out
    study = optuna.load_study(study_name="autotl", storage=f"sqlite:///{out / 'study.db'}")
    assert study.metric_names == ["macro_f1"] and study_metric(study) == "macro_f1"
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete
    for trial in complete:
        record = TrialRecord.of(trial)
        assert trial.value == pytest.approx(record.metrics.macro_f1)
        checked = {e.report: report_score(e, "macro_f1") for e in record.history if e.val_loss is not None}
        assert checked and trial.intermediate_values == pytest.approx(checked)  # a slice's inner reports: unchecked
    best = best_trial(study)
    assert best.value == pytest.approx(max(t.value for t in complete), abs=1 / TrialRecord.of(best).val_images)
    saved = json.loads((out / "best_model" / "config.json").read_text())["autotl"]
    assert saved["metric"] == "macro_f1" and saved["value"] == pytest.approx(best.value)
    assert "scored its trials by macro_f1" in (out / "best_model" / "README.md").read_text()
    with pytest.raises(AutoTLError, match="--metric"):
        import autotl

        autotl.search(str(imbalanced_folder), space="quick", n_trials=3, out=out, progress=False, metric="accuracy")


def test_the_imbalance_hint_is_printed_once_and_only_for_imbalanced_classes(
    imbalanced_folder, photo_folder, tmp_path, capsys
):
    quick = ["--space", "quick", "--n-trials", "1", "--max-epochs", "1", "--no-rank", "--no-warm-start"]
    assert main(["search", "--dataset", str(imbalanced_folder), *quick, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert err.count(HINT) == 1, err
    assert re.search(r"'astronaut' has 3\d training images, '(brick|coffee)' 8\)", err), err
    assert main(["search", "--dataset", str(photo_folder), *quick, "--out", str(tmp_path / "b")]) == 0
    assert HINT not in capsys.readouterr().err


def test_a_bad_metric_is_one_line_and_exit_code_2(photo_folder, tmp_path, capsys):
    code = main(["search", "--dataset", str(photo_folder), "--metric", "f1", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "unknown metric 'f1'" in err[0] and "macro_f1" in err[0], err
    space = tmp_path / "space.yaml"
    space.write_text("extends: quick\nmetric: recall\n")
    code = main(["search", "--dataset", str(photo_folder), "--space", str(space), "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "metric must be one of" in err[0], err


def test_a_per_class_metric_on_imbalanced_classes_warm_starts_with_balanced_sampling(imbalanced_folder, photo_folder):
    """The default space's warm start trains with balanced sampling (best for macro-F1 on benchmarks/imbalance.py)
    when the metric is per-class and the classes are imbalanced; otherwise with plain cross-entropy."""
    from autotl.search import SearchOptions
    from autotl.search._progress import Progress
    from autotl.search._run import _load, _open_study, _start

    def warm_start(folder, metric, out):
        options = SearchOptions(metric=metric, rank=False, out=out, progress=False)
        setup = _load(str(folder), options)
        study = _open_study(setup, options)
        _start(study, setup, options, Progress(1, enabled=False))
        return {t.system_attrs["fixed_params"].get("class_balance") for t in study.get_trials(deepcopy=False)}

    assert warm_start(imbalanced_folder, "macro_f1", imbalanced_folder.parent / "a") == {"balanced_sampling"}
    assert warm_start(imbalanced_folder, "accuracy", imbalanced_folder.parent / "b") == {"none"}
    assert warm_start(photo_folder, "macro_f1", photo_folder.parent / "c") == {"none"}
