"""The HTML report, on small in-memory studies filled by hand (no training)."""

import optuna
import plotly.graph_objects as go
import pytest
from optuna.trial import TrialState
from plotly.offline import get_plotlyjs

from autotl import report
from autotl.report import _html, _records

EVIL = "<script>alert(1)</script>"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _history(accuracies):
    return [
        {
            "epoch": epoch,
            "train_loss": 1.0 / epoch,
            "val_loss": 1.2 / epoch,
            "val_accuracy": accuracy,
            "val_macro_f1": accuracy - 0.05,
            "seconds": 2.0,
        }
        for epoch, accuracy in enumerate(accuracies, start=1)
    ]


def _ask(study, i):
    trial = study.ask()
    trial.suggest_categorical("backbone", ["resnet18", "convnext_atto", EVIL])
    trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    trial.suggest_int("frozen_depth", 0, 4)
    if i % 2:
        trial.suggest_float("regularizer_strength", 0.0, 0.5)  # conditional param
    return trial


def _complete(study, i, accuracies):
    trial = _ask(study, i)
    for epoch, accuracy in enumerate(accuracies, start=1):
        trial.report(accuracy, epoch)
    for key, value in {
        "history": _history(accuracies),
        "best_epoch": accuracies.index(max(accuracies)) + 1,
        "epochs_run": len(accuracies),
        "wall_seconds": 2.0 * len(accuracies),
        "params_total": 11_000_000,
        "params_trainable": 500_000,
        "end_reason": "completed",
        "backbone": trial.params["backbone"],
    }.items():
        trial.set_user_attr(key, value)
    study.tell(trial, max(accuracies))


def _study(n_complete=4, pruned=True, failed=True):
    study = optuna.create_study(direction="maximize", study_name=f"demo {EVIL}")
    study.set_user_attr(
        "dataset",
        {
            "path": f"/data/{EVIL}",
            "classes": ["cat", EVIL],
            "n_train": 80,
            "n_val": 20,
            "n_test": 10,
            "val_fraction": 0.2,
            "seed": 0,
        },
    )
    for key, value in {
        "space": "default",
        "max_epochs": 3,
        "device": "cpu",
        "n_trials": 6,
        "timeout": None,
        "model_dir": f"/models/{EVIL}",
        "started_at": "2024-01-01T00:00:00",
    }.items():
        study.set_user_attr(key, value)
    for i in range(n_complete):
        _complete(study, i, [0.5, 0.6 + 0.05 * i, 0.62 + 0.05 * i])
    if pruned:
        trial = _ask(study, 10)
        trial.report(0.3, 1)
        trial.set_user_attr("end_reason", "pruned by the pruner after epoch 1")
        study.tell(trial, state=TrialState.PRUNED)  # no history: curves fall back to reports
    if failed:
        trial = _ask(study, 11)
        trial.set_user_attr("error", f"RuntimeError: {EVIL}")
        trial.set_user_attr("end_reason", "non-finite loss at epoch 1")
        study.tell(trial, state=TrialState.FAIL)
    return study


def test_trial_records_have_one_row_per_trial_with_params():
    study = _study()
    trials = report.trial_records(study)
    assert len(trials) == 6
    assert trials["number"].tolist() == list(range(6))
    assert trials["state"].tolist() == ["complete"] * 4 + ["pruned", "fail"]
    for column in _records.TRIAL_COLUMNS:
        assert column in trials.columns
    for param in ("backbone", "lr", "frozen_depth", "regularizer_strength"):
        assert f"param_{param}" in trials.columns
    assert trials["value"].iloc[3] == pytest.approx(0.77)
    assert trials["params_total"].iloc[0] == 11_000_000
    assert trials["param_regularizer_strength"].isna().sum() == 3  # asked for odd i only
    assert "RuntimeError" in trials["error"].iloc[5]


def test_curve_records_use_history_and_fall_back_to_reports():
    curves = report.curve_records(_study())
    assert list(curves.columns) == _records.CURVE_COLUMNS
    assert len(curves) == 4 * 3 + 1  # 4 complete trials x 3 epochs + 1 pruned report
    pruned = curves[curves["state"] == "pruned"]
    assert pruned["epoch"].tolist() == [1]
    assert pruned["val_accuracy"].tolist() == [0.3]
    assert pruned["val_loss"].isna().all()
    assert curves[curves["trial"] == 0]["val_macro_f1"].notna().all()


def test_summary_counts_and_best():
    info = _records.summary(_study())
    assert (info["complete"], info["pruned"], info["failed"], info["running"]) == (4, 1, 1, 0)
    assert info["best_trial"] == 3
    assert info["best_value"] == pytest.approx(0.77)
    assert "lr" in info["best_params"]
    assert info["user_attrs"]["dataset"]["n_train"] == 80


def test_write_makes_one_self_contained_escaped_page(tmp_path):
    path = report.write(_study(), tmp_path / "sub" / "report.html")
    assert path == tmp_path / "sub" / "report.html"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]  # no .tmp left
    page = path.read_text(encoding="utf-8")
    assert page.count(get_plotlyjs()) == 1
    assert EVIL not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown, but as text
    for section in ("summary", "history", "curves", "importance", "parallel", "trials"):
        assert f'<section id="{section}">' in page
    assert 'id="figure-importance"' in page
    assert '<table class="trials">' in page
    table = page[page.index('<table class="trials">') :]
    assert table.count("<th>backbone</th>") == 1  # param_backbone duplicates the backbone column


def test_plotly_escapes_script_tags_in_figure_json():
    fig = go.Figure(go.Scatter(x=[1], y=[1], name=EVIL))
    fig.update_layout(xaxis={"tickvals": [1], "ticktext": ["</script><b>&"]})
    div = _html.figure_html(fig, "figure-test")
    assert EVIL not in div
    assert div.lower().count("</script") == 1  # only the figure's own closing tag


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_complete": 0, "pruned": False, "failed": False},
        {"n_complete": 1, "pruned": False, "failed": False},
        {"n_complete": 0, "pruned": True, "failed": True},
        {"n_complete": 1, "pruned": True, "failed": False},
    ],
)
def test_write_small_studies(tmp_path, kwargs):
    study = _study(**kwargs)
    study.ask()  # a running trial with nothing recorded
    page = report.write(study, tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.count(get_plotlyjs()) == 1
    assert EVIL not in page
    assert "No parameter importances: they need at least 2 complete trials" in page


def test_importances_explain_why_they_are_missing():
    study = optuna.create_study()
    for i in range(3):
        trial = study.ask()
        trial.suggest_categorical("optimizer", ["adamw"])  # never varies
        study.tell(trial, float(i))
    frame, reason = _records.param_importances(study)
    assert frame.empty
    assert "more than one value" in reason
