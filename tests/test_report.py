"""The HTML report, on small studies filled by hand with ask/tell (no training)."""

import base64
import io
import os
import shutil
import time
import uuid

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go
import pytest
from optuna.trial import TrialState
from PIL import Image
from plotly.offline import get_plotlyjs

from autotl import report
from autotl.cli import main
from autotl.records import (
    DatasetInfo,
    EnsembleRecord,
    Metrics,
    Report,
    Slice,
    StudyRecord,
    TrialRecord,
    report_score,
)
from autotl.report import _figures, _html, _records
from autotl.space import STRATEGIES, TrialConfig

EVIL = "<script>alert(1)</script>"
EVIL_TEXT = "&lt;script&gt;alert(1)&lt;/script&gt;"
CLASSES = ["cat", EVIL, "dog"]

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _png(seed: int, side: int = 32) -> str:
    pixels = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _history(accuracies):
    """A curve with two reports per epoch."""
    return [
        Report(
            report=number,
            epoch=number / 2,
            images=64 * number,
            train_loss=1.0 / number,
            val_loss=1.2 / number,
            val_accuracy=accuracy,
            val_macro_f1=accuracy - 0.05,
            seconds=2.0,
            train_seconds=1.5,
        )
        for number, accuracy in enumerate(accuracies, start=1)
    ]


def _config(trial):
    """The recipe the trainer stores (TrialConfig.to_dict()), from the sampled params."""
    regularizer = trial.params.get("regularizer", "none")
    return {
        "backbone": trial.params["backbone"],
        "resolution_scale": 0.5,
        "frozen_depth": trial.params["frozen_depth"],
        "optimizer": "adamw",
        "lr": trial.params["adamw.lr"],
        "lr_schedule": trial.params["lr_schedule"],
        "warmup_epochs": 1,
        "layer_decay": 1.0,
        "regularizer": regularizer,
        "regularizer_strength": trial.params.get(f"{regularizer}.regularizer_strength", 0.0),
        "batch_size": 32,
        "augment_strength": 0.3,
        "max_epochs": 3,
    }


def _ask(study, i, backbones=("resnet18", "convnext_atto", EVIL)):
    trial = study.ask()
    trial.suggest_categorical("backbone", list(backbones))
    trial.suggest_float("adamw.lr", 1e-5, 1e-1, log=True)
    trial.suggest_categorical("frozen_depth", [0.0, 0.4, 1.0])
    trial.suggest_categorical("lr_schedule", ["constant", "cosine"])
    regularizer = trial.suggest_categorical("regularizer", ["none", "l2sp"])
    if regularizer == "l2sp":
        trial.suggest_float("l2sp.regularizer_strength", 1e-4, 1e-1, log=True)  # conditional
    return trial


def _finish(study, trial, accuracies, state=TrialState.COMPLETE, metric="accuracy"):
    """Report and tell the trial's scores by ``metric`` (accuracy or macro_f1), as the trainer does."""
    history = _history(accuracies)
    for entry in history:
        trial.report(report_score(entry, metric), entry.report)
    best = max(accuracies)
    metrics = Metrics(accuracy=best, macro_f1=best - 0.05, loss=0.5)
    TrialRecord(
        history=history,
        best_report=accuracies.index(best) + 1,
        reports=len(accuracies),
        wall_seconds=2.0 * len(accuracies),
        params_total=11_000_000,
        params_trainable=500_000,
        end_reason="completed" if state == TrialState.COMPLETE else "pruned after report 1",
        backbone=trial.params["backbone"],
        config=_config(trial),
        metrics=metrics,
    ).write(trial)
    if state == TrialState.COMPLETE:
        study.tell(trial, getattr(metrics, metric))
    else:
        study.tell(trial, state=state)


def analysis(classes=CLASSES, n_wrong=5, bad_thumbnail=None):
    """A best_model_analysis like autotl/search/_best.py writes."""
    n = len(classes)
    confusion = [[8 if r == c else (r + c) % 2 for c in range(n)] for r in range(n)]
    wrong = [
        {
            "true": classes[i % n],
            "predicted": classes[(i + 1) % n],
            "probability": 0.9 - 0.01 * i,
            "thumbnail": _png(i),
        }
        for i in range(n_wrong)
    ]
    if bad_thumbnail is not None:
        wrong.append({"true": classes[0], "predicted": classes[1], "probability": 0.5, "thumbnail": bad_thumbnail})
    per_class = [
        {"cls": name, "precision": 0.8, "recall": 0.9, "f1": 0.85, "support": sum(confusion[i])}
        for i, name in enumerate(classes)
    ]
    return {
        "classes": list(classes),
        "confusion": confusion,
        "per_class": per_class,
        "misclassified": wrong,
        "n_val": sum(map(sum, confusion)),
    }


def make_study(
    n_complete=4,
    pruned=True,
    failed=True,
    storage=None,
    best_analysis=True,
    classes=CLASSES,
    backbones=("resnet18", "convnext_atto", EVIL),
    n_wrong=5,
    n_pruned=1,
    study_name=f"demo {EVIL}",
    metric="accuracy",
):
    """A study shaped like a real search's: study attrs, trial attrs, a best-model analysis; scored by
    ``metric`` (accuracy or macro_f1, as ``--metric`` chose)."""
    study = optuna.create_study(
        direction="maximize", study_name=study_name, storage=storage, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    if metric != "accuracy":
        study.set_metric_names([metric])
    StudyRecord(
        dataset=DatasetInfo(
            path=f"/data/{EVIL}",
            classes=list(classes),
            n_train=80,
            n_val=20,
            n_test=10,
            val_fraction=0.2,
            seed=0,
            skipped=0,
        ),
        space="default",
        max_epochs=3,
        device="cpu",
        n_trials=6,
        timeout=None,
        model_dir="/somewhere/run/best_model",
        started_at="2024-01-01T00:00:00+00:00",
    ).write(study)
    for i in range(n_complete):
        _finish(study, _ask(study, i, backbones), [0.5, 0.6 + 0.05 * i, 0.62 + 0.05 * i], metric=metric)
    for i in range(n_pruned if pruned else 0):
        trial = _ask(study, 10 + i, backbones)
        trial.report(0.3, 1)
        trial.set_user_attr("end_reason", "pruned by the pruner after report 1")
        study.tell(trial, state=TrialState.PRUNED)  # no history: curves fall back to reports
    if failed:
        trial = _ask(study, 11, backbones)
        trial.set_user_attr("error", f"RuntimeError: {EVIL}")
        trial.set_user_attr("end_reason", "non-finite loss at report 1")
        study.tell(trial, state=TrialState.FAIL)
    if best_analysis and n_complete:
        study.set_user_attr("best_model_trial", n_complete - 1)
        study.set_user_attr("best_model_analysis", analysis(classes, n_wrong=n_wrong))
    return study


def test_trial_records_have_one_row_per_trial_with_params():
    trials = report.trial_records(make_study())
    assert len(trials) == 6
    assert trials["number"].tolist() == list(range(6))
    assert trials["state"].tolist() == ["complete"] * 4 + ["pruned", "fail"]
    for column in _records.TRIAL_COLUMNS:
        assert column in trials.columns
    for param in ("backbone", "adamw.lr", "frozen_depth", "regularizer"):
        assert f"param_{param}" in trials.columns
    assert trials["value"].iloc[3] == pytest.approx(0.77)
    assert trials["params_total"].iloc[0] == 11_000_000
    assert "RuntimeError" in trials["error"].iloc[5]
    assert trials["wall_seconds"].iloc[5] >= 0  # no attr: falls back to the trial's own datetimes


def test_config_records_use_plain_recipe_names():
    configs = report.config_records(make_study())
    assert configs["number"].tolist() == [0, 1, 2, 3]  # the pruned and failed trials stored none
    assert set(_records.CONFIG_COLUMNS) <= set(configs.columns)
    assert configs["lr"].notna().all() and configs["lr"].dtype == "float64"
    assert set(configs["regularizer"]) <= {"none", "l2sp"}


def test_curve_records_use_history_and_fall_back_to_reports():
    curves = report.curve_records(make_study())
    assert list(curves.columns) == _records.CURVE_COLUMNS
    assert len(curves) == 4 * 3 + 1  # 4 complete trials x 3 reports + 1 pruned report
    pruned = curves[curves["state"] == "pruned"]
    assert pruned["report"].tolist() == [1]
    assert pruned["val_accuracy"].tolist() == [0.3]
    assert pruned["val_loss"].isna().all() and pruned["epoch"].isna().all()
    first = curves[curves["trial"] == 0]
    assert first["val_macro_f1"].notna().all()
    assert first["report"].tolist() == [1, 2, 3] and first["epoch"].tolist() == [0.5, 1.0, 1.5]
    assert str(curves["report"].dtype) == "Int64" and str(curves["epoch"].dtype) == "float64"


def test_time_records_track_best_so_far_in_order_of_ending():
    times = report.time_records(make_study())
    assert list(times.columns) == _records.TIME_COLUMNS
    assert times["number"].tolist() == list(range(6))
    assert times["elapsed_seconds"].is_monotonic_increasing
    assert times["best_so_far"].tolist()[:4] == pytest.approx([0.62, 0.67, 0.72, 0.77])
    assert times["best_so_far"].iloc[-1] == pytest.approx(0.77)  # pruned/failed change nothing
    assert report.time_records(optuna.create_study()).empty


def test_backbone_records_compare_score_and_cost():
    study = make_study(n_complete=6, backbones=("resnet18", "convnext_atto"))
    backbones = report.backbone_records(report.config_records(study))
    assert list(backbones.columns) == _records.BACKBONE_COLUMNS
    assert backbones["trials"].sum() == 6
    assert backbones["best"].is_monotonic_decreasing
    assert (backbones["seconds_per_trial"] == 6.0).all()


def test_best_model_records_check_thumbnails():
    study = make_study()
    study.set_user_attr(
        "best_model_analysis",
        analysis(n_wrong=3, bad_thumbnail="javascript:alert(1)//data:image/png;base64,AAAA"),
    )
    best = report.best_model_records(study)
    assert best["trial"] == 3 and best["classes"] == CLASSES and best["n_val"] > 0
    assert best["confusion"].shape == (3, 3)
    assert best["confusion"].loc["cat", "cat"] == 8
    assert list(best["per_class"].columns) == _records.PER_CLASS_COLUMNS
    thumbnails = [item["thumbnail"] for item in best["misclassified"]]
    assert len(thumbnails) == 4 and thumbnails[-1] is None  # the bad one is dropped
    assert all(t.startswith("data:image/png;base64,") for t in thumbnails[:3])
    assert not _records.safe_thumbnail('data:image/png;base64,AA"><script>')
    assert report.best_model_records(optuna.create_study()) is None


def test_a_sliced_search_is_timed_by_its_slices_not_by_optunas_last_continuation():
    """A sliced trial's Optuna start is its last continuation, and a paused one's end the search's end: the summary
    and the best-so-far line use the slices, or a 10-minute search would read as seconds."""
    study = optuna.create_study(direction="maximize")
    began = time.time() - 600  # the search began 10 minutes ago; the trials below are asked and told now
    for number, (slices, state) in enumerate(
        [([(0, 20), (400, 30)], TrialState.PRUNED), ([(20, 40), (450, 90)], None)]
    ):
        trial = study.ask()
        TrialRecord(slices=[Slice(at=began + at, seconds=seconds) for at, seconds in slices]).write(trial)
        trial.report(0.8 + number / 10, 1)
        study.tell(trial, 0.8 + number / 10) if state is None else study.tell(trial, state=state)
    study.enqueue_trial({})  # a warm-start recipe the time did not reach
    info = _records.summary(study)
    assert info["waiting"] == 1
    assert info["wall_seconds"] == pytest.approx(540, abs=1)  # first slice's start to the last slice's end
    assert info["trial_seconds"] == pytest.approx(180)  # the slices' own seconds: 20 + 30 + 40 + 90
    times = report.time_records(study)
    assert times["number"].tolist() == [0, 1]
    assert times["elapsed_seconds"].tolist() == pytest.approx([430, 540], abs=1)
    assert times["best_so_far"].iloc[-1] == pytest.approx(0.9)
    ends = {trace.name: trace.x for trace in _figures.time_figure(times).data}  # the pruned one before any complete
    assert ends["pruned trial ends"] == pytest.approx([430 / 60], abs=0.05)
    assert ends["complete trial ends"] == pytest.approx([540 / 60], abs=0.05)


def test_summary_counts_best_recipe_and_model():
    info = _records.summary(make_study())
    assert (info["complete"], info["pruned"], info["failed"], info["running"]) == (4, 1, 1, 0)
    assert info["best_trial"] == 3
    assert info["best_value"] == pytest.approx(0.77)
    assert "adamw.lr" in info["best_params"]
    assert "adamw at" in info["best_words"] and "batch 32" in info["best_words"]
    assert info["model_dir"] == "best_model"  # relative: the same page wherever the run dir is
    assert info["wall_seconds"] >= 0 and info["trial_seconds"] >= 0
    assert info["record"].dataset.n_train == 80
    assert info["best_report"] == 3 and info["best_metrics"].loss == 0.5


def test_write_makes_one_self_contained_escaped_page(tmp_path):
    path = report.write(make_study(), tmp_path / "sub" / "report.html")
    assert path == tmp_path / "sub" / "report.html"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]  # no .tmp left
    page = path.read_text(encoding="utf-8")
    assert page.count(get_plotlyjs()) == 1
    assert "cdn" not in page.split(get_plotlyjs())[1].lower()  # nothing fetched from elsewhere
    assert EVIL not in page
    assert EVIL_TEXT in page  # shown, but as text
    for section in ("summary", "history", "curves", "mattered", "strategies", "best-model", "trials"):
        assert f'<section id="{section}">' in page
    for figure in ("history", "time", "curves", "importance", "parallel", "recipe", "backbones", "confusion"):
        assert f'id="figure-{figure}"' in page
    assert page.count('<p class="caption">') == 7  # one caption per section
    assert page.count('<img src="data:image/png;base64,') == 5
    assert "first 40% of blocks frozen" in page or "full fine-tuning" in page or "linear probe" in page
    assert "best_model/ in the run directory" in page and "/somewhere/run" not in page
    table = page[page.index('<table class="sortable">') :]
    assert table.count("<th>backbone</th>") == 1  # param_backbone duplicates the backbone column
    assert "<th>best report</th>" in table and "<th>reports</th>" in table and "<th>epochs</th>" not in table
    assert "report 3 (epoch 1.50)" in page and "best epoch" not in page  # the curves' hover: reports, in epochs
    assert "RuntimeError: " + EVIL_TEXT in page  # the failed trial's error, escaped


def test_unsafe_thumbnails_are_never_embedded(tmp_path):
    study = make_study()
    bad = 'data:image/svg+xml;base64,PHN2Zz4="><script>alert(1)</script>'
    study.set_user_attr("best_model_analysis", analysis(n_wrong=0, bad_thumbnail=bad))
    page = _html.render(study).replace(get_plotlyjs(), "")
    assert "svg+xml" not in page and EVIL not in page
    assert '<span class="missing"' in page


def test_the_page_is_a_function_of_the_storage(tmp_path):
    """Rendering twice, and rebuilding from a copied run directory, give the same bytes."""
    run = tmp_path / "run"
    run.mkdir()
    study = make_study(storage=f"sqlite:///{run / 'study.db'}")
    first = report.write(study, run / "report.html").read_bytes()
    assert _html.render(study).encode() == first
    copy = tmp_path / "elsewhere" / "copied-run"
    shutil.copytree(run, copy)
    (copy / "report.html").unlink()
    assert main(["report", str(copy), "--study-name", study.study_name]) == 0
    assert (copy / "report.html").read_bytes() == first


@pytest.mark.skipif(
    not os.environ.get("AUTOTL_TEST_POSTGRES_URL"), reason="set AUTOTL_TEST_POSTGRES_URL (CI does, via .ci/postgres.sh)"
)
def test_the_page_of_a_postgresql_study_is_the_same_as_from_sqlite(tmp_path):
    """`autotl report RUN_DIR --storage URL` reads a PostgreSQL study; a copy in SQLite gives the same page."""
    url = os.environ["AUTOTL_TEST_POSTGRES_URL"]
    name = f"report-test-{uuid.uuid4().hex[:8]} {EVIL}"
    make_study(storage=url, study_name=name)
    try:
        assert main(["report", str(tmp_path / "pg"), "--storage", url, "--study-name", name]) == 0
        sqlite = f"sqlite:///{tmp_path / 'copy.db'}"
        optuna.copy_study(from_study_name=name, from_storage=url, to_storage=sqlite)
        copied = optuna.load_study(study_name=name, storage=sqlite)
        assert (tmp_path / "pg" / "report.html").read_text(encoding="utf-8") == _html.render(copied)
    finally:
        optuna.delete_study(study_name=name, storage=url)


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
        {"n_complete": 1, "pruned": True, "failed": False, "best_analysis": False},
        {"n_complete": 2, "pruned": False, "failed": False, "n_wrong": 0},
    ],
)
def test_write_small_studies(tmp_path, kwargs):
    study = make_study(**kwargs)
    study.ask()  # a running trial with nothing recorded
    page = report.write(study, tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.count(get_plotlyjs()) == 1
    assert EVIL not in page
    if kwargs["n_complete"] < 2:
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


def test_sortable_table_sorts_by_number_and_escapes():
    table = _html._table(["a <b>", "n"], [["x&y", "10"], ["z", "9"]], sort_keys=[[None, "10.0"], [None, "9.0"]])
    assert "<th>a &lt;b&gt;</th>" in table and "x&amp;y" in table
    assert 'data-v="9.0"' in table and 'class="num"' in table


def test_a_50_trial_page_stays_under_10_mb():
    study = make_study(n_complete=40, n_pruned=9, classes=[f"class {i}" for i in range(10)], n_wrong=30)
    assert len(study.trials) == 50
    page = _html.render(study)
    assert len(page.encode()) < 10_000_000
    assert page.count('<img src="data:image/png;base64,') == 24  # the gallery keeps at most 24


# --- backbone ranking, cost per trial, several objectives -------------------------------------

RANKING = {
    "method": "LogME",
    "images": 400,
    "resolution_scale": 0.75,
    "seconds": 21.3,
    "margin": 0.1,
    "scores": [
        {"backbone": "convnext_atto", "logme": 1.5, "seconds": 6.0, "rank": 1, "dropped": False},
        {"backbone": "resnet18", "logme": 1.25, "seconds": 5.5, "rank": 2, "dropped": False},
        {"backbone": "mobilenetv3_small_050", "logme": 1.0, "seconds": 4.2, "rank": 3, "dropped": False},
        {"backbone": EVIL, "logme": 0.5, "seconds": 5.6, "rank": 4, "dropped": True},
    ],
}


def _trial(value, backbone="resnet18", state=TrialState.COMPLETE, where="attr", **attrs):
    """A finished trial made by hand; ``where`` says where its backbone is stored (attr, config, param)."""
    params, distributions = {}, {}
    if where == "attr":
        attrs["backbone"] = backbone
    elif where == "config":
        attrs["config"] = {"backbone": backbone}
    else:
        params["backbone"] = backbone
        distributions["backbone"] = optuna.distributions.CategoricalDistribution(
            ["resnet18", "convnext_atto", "mobilenetv3_small_050"]
        )
    values = value if isinstance(value, list) else None
    return optuna.trial.create_trial(
        state=state,
        value=None if values or state == TrialState.FAIL else value,
        values=values,
        params=params,
        distributions=distributions,
        user_attrs=attrs,
    )


def make_ranked_study():
    """Six hand-made trials over three backbones, plus a LogME ranking of four (one dropped)."""
    study = optuna.create_study(direction="maximize", study_name="ranked")
    study.set_user_attr("backbone_ranking", RANKING)
    for trial in [
        _trial(0.70, "resnet18"),
        _trial(0.80, "resnet18"),
        _trial(0.95, "resnet18", state=TrialState.PRUNED),  # pruned: its score is not a result
        _trial(0.75, "convnext_atto", where="config"),
        _trial(None, "convnext_atto", state=TrialState.FAIL, error="RuntimeError: out of memory"),
        _trial(0.60, "mobilenetv3_small_050", where="param"),
    ]:
        study.add_trial(trial)
    return study


def test_ranking_records_put_the_actual_result_next_to_the_rank():
    ranking = report.ranking_records(make_ranked_study())
    assert list(ranking.columns) == _records.RANKING_COLUMNS
    assert ranking["backbone"].tolist() == ["convnext_atto", "resnet18", "mobilenetv3_small_050", EVIL]
    assert ranking["rank"].tolist() == [1, 2, 3, 4]
    assert ranking["dropped"].tolist() == [False, False, False, True]
    assert ranking["logme"].tolist() == [1.5, 1.25, 1.0, 0.5]
    assert ranking["trials"].tolist() == [2, 3, 1, 0]
    assert ranking["complete"].tolist() == [1, 2, 1, 0]
    assert ranking["best"].iloc[:3].tolist() == pytest.approx([0.75, 0.80, 0.60])  # not the pruned 0.95
    assert pd.isna(ranking["best"].iloc[3])
    settings = _records.ranking_settings(make_ranked_study())
    assert settings == {
        "method": "LogME",
        "images": 400,
        "resolution_scale": 0.75,
        "seconds": 21.3,
        "margin": 0.1,
        "dropped": 1,
    }
    assert report.ranking_records(make_study()).empty
    assert _records.ranking_settings(make_study()) is None


def test_ranking_section_shows_the_numbers_and_the_verdict():
    page = _html.render(make_ranked_study())
    mattered = page[page.index('<section id="mattered">') : page.index('<section id="best-model">')]
    assert "<h3>Backbone ranking before training (LogME)</h3>" in mattered
    assert "The ranking took 21 s on 400 training images at 0.75 of their resolution" in mattered
    assert "1 backbone was dropped from the search (more than 0.1 below the best score)" in mattered
    table = mattered[mattered.index("<th>rank</th>") :]
    table = table[: table.index("</table>")]
    assert "<th>LogME score</th>" in table and "<th>best accuracy</th>" in table
    rows = table.split("<tr")[1:]
    assert len(rows) == 4
    assert ">resnet18<" in rows[1] and ">0.8<" in rows[1] and ">3<" in rows[1] and ">no<" in rows[1]
    assert rows[1].startswith(' class="best"')  # the best backbone of the search
    assert EVIL_TEXT in rows[3] and ">yes<" in rows[3]
    assert EVIL not in page
    assert "The best backbone in the search, resnet18, was ranked 2 of 4." in mattered
    assert "rank correlation between score and best accuracy is 0.50" in mattered
    assert 'id="figure-ranking"' in mattered


def test_ranking_figure_marks_each_backbone_and_leaves_the_untrained_below():
    from autotl.report import _figures

    fig = _figures.ranking_figure(report.ranking_records(make_ranked_study()))
    trained, untrained = fig.data
    assert list(trained.x) == [1.5, 1.25, 1.0] and list(trained.y) == pytest.approx([0.75, 0.8, 0.6])
    assert list(trained.text) == ["convnext_atto", "resnet18", "mobilenetv3_small_050"]
    assert list(untrained.text) == [EVIL_TEXT]  # escaped: plotly.js reads labels as HTML
    empty = report.ranking_records(make_ranked_study()).assign(best=float("nan"))
    assert _figures.ranking_figure(empty) is None


def test_cost_and_warm_start_become_columns_of_the_trials_table():
    study = optuna.create_study(direction="maximize")
    study.add_trial(
        _trial(0.7, train_seconds=12.5, latency_ms=3.25, model_mb=9.5, warm_start=f"linear_probe on {EVIL}")
    )
    study.add_trial(_trial(0.8))  # an older trial without them
    trials = report.trial_records(study)
    assert trials["train_seconds"].tolist()[0] == 12.5 and pd.isna(trials["train_seconds"].iloc[1])
    assert trials["latency_ms"].iloc[0] == 3.25 and trials["model_mb"].iloc[0] == 9.5
    assert trials["warm_start"].iloc[0] == f"linear_probe on {EVIL}" and pd.isna(trials["warm_start"].iloc[1])
    page = _html.render(study)
    table = page[page.index('<section id="trials">') :]
    for header in ("train time (s)", "PyTorch latency (ms, batch 1)", "size (MB)", "warm start"):
        assert f"<th>{header}</th>" in table
    assert ">12.5<" in table and ">3.25<" in table and ">9.5<" in table
    assert f"linear_probe on {EVIL_TEXT}" in table and EVIL not in page


# (accuracy, latency ms) of complete trials: 2 is beaten by 1, 4 by 0, 3 by 6 (as accurate, faster)
PARETO = {0: (0.80, 10.0), 1: (0.85, 20.0), 2: (0.82, 25.0), 3: (0.90, 40.0), 4: (0.75, 12.0), 6: (0.90, 35.0)}
FRONT = [0, 1, 6]


def make_pareto_study(storage=None, metric="accuracy"):
    """A score-latency study as the search makes it with two objectives: no pruning, no reports."""
    study = optuna.create_study(directions=["maximize", "minimize"], study_name="pareto", storage=storage)
    study.set_metric_names([metric, "latency"])
    backbones = ["resnet18", "convnext_atto", EVIL]
    lr = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    for number in range(8):
        attrs = {"backbone": backbones[number % 3], "train_seconds": 30.0 + number, "model_mb": 5.0 + number}
        if number == 5:  # failed before it had values
            trial = optuna.trial.create_trial(state=TrialState.FAIL, user_attrs=attrs)
        elif number == 7:  # the warm start that is still running
            trial = optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs=attrs)
        else:
            accuracy, latency = PARETO[number]
            attrs.update(latency_ms=latency, **TrialRecord(history=_history([accuracy - 0.1, accuracy])).attrs())
            trial = optuna.trial.create_trial(
                values=[accuracy, latency],
                params={"lr": 10 ** -(1 + number % 3)},
                distributions={"lr": lr},
                user_attrs=attrs,
            )
        study.add_trial(trial)
    return study


def test_pareto_records_find_the_front_and_the_most_accurate_trial():
    study = make_pareto_study()
    pareto = report.pareto_records(study)
    assert list(pareto.columns) == _records.PARETO_COLUMNS
    assert pareto["number"].tolist() == [0, 1, 2, 3, 4, 6]
    assert pareto.loc[pareto["on_front"], "number"].tolist() == FRONT
    assert pareto["latency_ms"].tolist() == [PARETO[n][1] for n in (0, 1, 2, 3, 4, 6)]
    assert pareto.loc[pareto["number"] == 6, "backbone"].item() == "resnet18"
    assert report.pareto_records(make_study()).empty
    info = _records.summary(study)
    assert info["best_trial"] == 6 and info["best_value"] == pytest.approx(0.90)  # 3 is as accurate, slower
    assert [o["name"] for o in info["objectives"]] == ["accuracy", "latency"]
    assert info["objectives"][1] == {"name": "latency", "score": False, "direction": "minimize", "best_value": 35.0}
    assert _records.summary(make_study())["objectives"] is None
    trials = report.trial_records(study)
    assert trials["value"].tolist()[:5] == pytest.approx([0.80, 0.85, 0.82, 0.90, 0.75])  # accuracy
    times = report.time_records(study)
    assert times["best_so_far"].max() == pytest.approx(0.90)
    importances, reason = _records.param_importances(study)
    assert not importances.empty, reason  # the accuracy explained, not an Optuna error


def test_a_two_objective_study_renders_with_its_pareto_front(tmp_path):
    study = make_pareto_study(storage=f"sqlite:///{tmp_path / 'study.db'}")
    page = report.write(study, tmp_path / "report.html").read_text(encoding="utf-8")
    assert _html.render(study) == page  # still a function of the storage
    assert EVIL not in page
    for number, section in enumerate(
        ["summary", "pareto", "history", "curves", "mattered", "best-model", "trials"], start=1
    ):
        assert f'<section id="{section}">\n<h2>{number}. ' in page
    for figure in ("pareto", "history", "time", "curves", "importance", "parallel"):
        assert f'id="figure-{figure}"' in page
    summary = page[: page.index('<section id="pareto">')]
    assert "0.9 validation accuracy (trial 6; latency 35 ms), the most accurate complete trial" in summary
    assert "maximize accuracy, minimize latency; 3 of 6 complete trials on the Pareto front" in summary
    pareto = page[page.index('<section id="pareto">') : page.index('<section id="history">')]
    front = pareto[pareto.index("<h3>Trials on the front</h3>") :]
    rows = front[: front.index("</table>")].split("<tr>")[2:]
    assert [row.split("</td>")[0].rsplit(">", 1)[1] for row in rows] == ["0", "1", "6"]  # fastest first
    trials = page[page.index('<section id="trials">') :]
    assert "<th>Pareto front</th>" in trials and trials.count(">yes<") == 3
    assert "<th>PyTorch latency (ms, batch 1)</th>" in trials


def test_the_pareto_figure_joins_the_front_in_order_of_latency():
    from autotl.report import _figures

    fig = _figures.pareto_figure(report.pareto_records(make_pareto_study()))
    others, line, front = fig.data
    assert sorted(zip(others.x, others.y)) == sorted(PARETO[n][::-1] for n in (2, 3, 4))
    assert list(line.x) == [10.0, 20.0, 35.0] and list(line.y) == [0.80, 0.85, 0.90]
    assert line.line.shape == "hv"
    assert [list(c) for c in front.customdata] == [[0, "resnet18"], [1, "convnext_atto"], [6, "resnet18"]]
    assert "trial %{customdata[0]} (%{customdata[1]})" in front.hovertemplate
    assert _figures.pareto_figure(report.pareto_records(make_study())) is None


def test_a_two_objective_study_with_nothing_complete_still_renders():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.ask()
    page = _html.render(study)
    assert '<section id="pareto">' in page and "0 of 0 complete trials" in page
    assert _records.summary(study)["best_trial"] is None


def test_an_old_study_shows_none_of_the_new_parts():
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.5))
    study.add_trial(_trial(0.6))
    page = _html.render(make_study()) + _html.render(study)
    for absent in (
        '<section id="pareto">',
        "figure-pareto",
        "figure-ranking",
        "Backbone ranking",
        "<th>train time (s)</th>",
        "<th>PyTorch latency (ms, batch 1)</th>",
        "<th>warm start</th>",
        "Pareto front",
        "Objectives",
    ):
        assert absent not in page
    assert "<h2>6. All trials</h2>" in _html.render(study)
    assert '<section id="strategies">' not in _html.render(study)  # no trial says what it trained


@pytest.mark.parametrize(
    "ranking", ["LogME", {}, {"scores": None}, {"scores": ["x", {"logme": 1.0}, {"backbone": "b", "logme": "?"}]}]
)
def test_a_malformed_ranking_does_not_break_the_page(ranking):
    study = make_ranked_study()
    study.set_user_attr("backbone_ranking", ranking)
    page = _html.render(study)
    assert "figure-ranking" not in page and '<section id="trials">' in page


# --- strategies ---------------------------------------------------------------------------------


def _strategy_trial(value, strategy, state=TrialState.COMPLETE, train_seconds=None, trainable=None, **changes):
    """A finished trial that stored its recipe (``TrialConfig``) with ``strategy``, its cost and its loss."""
    record = TrialRecord(
        config=TrialConfig(strategy=strategy, **changes).to_dict(),
        params_total=1_000_000,
        params_trainable=trainable,
        train_seconds=train_seconds,
        metrics=Metrics(accuracy=value, loss=0.25),
    )
    value = None if state == TrialState.FAIL else value
    return optuna.trial.create_trial(state=state, value=value, user_attrs=record.attrs())


def make_strategy_study():
    """Trials of lora, full, bitfit, plus an old recipe with frozen_depth 1.0 and no strategy (a linear probe)."""
    study = optuna.create_study(direction="maximize", study_name="strategies")
    for trial in [
        _strategy_trial(0.80, "lora", train_seconds=10.0, trainable=8_000, lora_rank=4),
        _strategy_trial(0.85, "lora", train_seconds=12.0, trainable=8_000, lora_rank=16),
        _strategy_trial(0.95, "lora", TrialState.PRUNED, train_seconds=3.0, trainable=8_000),
        _strategy_trial(0.90, "full", train_seconds=40.0, trainable=1_000_000),
        optuna.trial.create_trial(  # failed before it stored a recipe: the strategy is its param
            state=TrialState.FAIL,
            params={"strategy": "full"},
            distributions={"strategy": optuna.distributions.CategoricalDistribution(STRATEGIES)},
        ),
        optuna.trial.create_trial(value=0.70, user_attrs={"config": {"backbone": "resnet18", "frozen_depth": 1.0}}),
        _strategy_trial(0.60, "bitfit", TrialState.PRUNED, train_seconds=2.0, trainable=2_000),
    ]:
        study.add_trial(trial)
    return study


def test_strategy_records_count_trials_and_find_the_best_per_strategy():
    strategies = report.strategy_records(make_strategy_study())
    assert list(strategies.columns) == _records.STRATEGY_COLUMNS
    assert strategies["strategy"].tolist() == ["full", "lora", "linear_probe", "bitfit"]  # best first
    assert strategies["trials"].tolist() == [2, 3, 1, 1]
    assert strategies["complete"].tolist() == [1, 2, 1, 0]
    assert strategies["pruned"].tolist() == [0, 1, 0, 1]
    assert strategies["failed"].tolist() == [1, 0, 0, 0]
    assert strategies["best"].iloc[:3].tolist() == pytest.approx([0.90, 0.85, 0.70])  # not the pruned 0.95
    assert strategies["best_trial"].iloc[:3].tolist() == [3, 1, 5]
    assert pd.isna(strategies["best"].iloc[3]) and pd.isna(strategies["best_trial"].iloc[3])
    lora = strategies.iloc[1]
    assert lora["median_train_seconds"] == 10.0 and lora["train_seconds"] == 25.0  # the pruned trial costs too
    assert lora["share_trained"] == pytest.approx(0.008)
    assert pd.isna(strategies["median_train_seconds"].iloc[2])  # the old trial recorded no cost
    assert report.strategy_records(optuna.create_study()).empty


def test_an_old_recipe_without_a_strategy_counts_as_the_strategy_it_was():
    study = make_strategy_study()
    assert _records.trial_strategy(study.trials[5]) == "linear_probe"
    configs = report.config_records(study)
    assert configs.loc[configs["number"] == 5, "strategy"].item() == "linear_probe"
    old = report.config_records(make_study())  # recipes with frozen_depth 0, 0.4 or 1 and no strategy
    expected = {0.0: "full", 0.4: "frozen_prefix", 1.0: "linear_probe"}
    assert old["strategy"].tolist() == [expected[depth] for depth in old["frozen_depth"]]
    assert _records.trial_strategy(_trial(0.5, where="config")) is None  # a recipe that says nothing


def test_settings_a_strategy_does_not_use_are_left_out_of_the_plots():
    study = make_strategy_study()
    settings = _records.parallel_records(report.trial_records(study), report.config_records(study))
    assert "strategy" in settings.columns  # a categorical axis
    assert "lora_rank" in settings.columns
    ranks = dict(zip(settings["number"], settings["lora_rank"]))
    assert (ranks[0], ranks[1]) == (4, 16) and pd.isna(ranks[3]) and pd.isna(ranks[5])
    configs = report.config_records(study)
    assert pd.isna(configs.loc[configs["number"] == 3, "lora_rank"].item())  # a full fine-tune has no rank
    fig = _figures.recipe_figure(configs, 3)
    titles = [annotation.text for annotation in fig.layout.annotations]
    assert "strategy (what trains)" in titles and "LoRA rank" in titles


def test_recipe_plots_show_the_settings_the_trials_chose_between_in_the_order_trial_config_declares():
    configs = report.config_records(make_study())
    assert configs.loc[configs["regularizer"] == "none", "regularizer_strength"].isna().all()  # means nothing
    assert configs["regularizer_strength"].notna().any()
    fig = _figures.recipe_figure(configs, 3)
    assert [annotation.text for annotation in fig.layout.annotations] == [
        "strategy (what trains)",
        "frozen depth (share of blocks)",
        "learning rate",
        "schedule",
        "regularizer",
        "regularizer strength",
    ]  # not the optimizer, batch size, ... every trial shared, nor the backbone (a section of its own)
    one = optuna.create_study(direction="maximize")
    one.add_trial(_strategy_trial(0.5, "lora"))
    assert _figures.recipe_figure(report.config_records(one)) is None
    assert "No two complete trials that stored their recipe differ in a setting yet." in _html.render(one)


def test_the_strategies_section_shows_score_cost_and_the_lora_share():
    study = make_strategy_study()
    page = _html.render(study)
    section = page[page.index('<section id="strategies">') : page.index('<section id="best-model">')]
    assert "<h2>5. Strategies</h2>" in section and "cost is training seconds" in section
    for header in ("best accuracy", "best trial", "median train time (s)", "share of params trained"):
        assert f"<th>{header}</th>" in section
    rows = section[: section.index("</table>")].split("<tr")[2:]
    assert rows[0].startswith(' class="best"') and ">full<" in rows[0] and ">100%<" in rows[0]
    assert ">lora<" in rows[1] and ">0.8%<" in rows[1] and ">25<" in rows[1]
    assert 'id="figure-strategies"' in section
    fig = _figures.strategy_figure(report.strategy_records(study))
    assert list(fig.data[0].text) == ["full", "lora"]  # the others have no complete trial with a cost
    assert [c[0] for c in fig.data[0].customdata] == ["100%", "0.8%"]
    assert "of parameters trained" in fig.data[0].hovertemplate
    trials = page[page.index('<section id="trials">') :]
    assert "<th>val loss</th>" in trials and ">0.25<" in trials
    assert trials.count("<th>strategy</th>") == 1  # the strategy param is not repeated


def test_strategies_without_a_complete_trial_or_with_one_strategy_stay_short():
    study = optuna.create_study(direction="maximize")
    study.add_trial(_strategy_trial(0.5, "lora", TrialState.PRUNED, train_seconds=3.0, trainable=8_000))
    study.add_trial(_strategy_trial(0.5, "full", TrialState.FAIL))
    study.ask()  # running, nothing recorded
    page = _html.render(study)
    section = page[page.index('<section id="strategies">') : page.index('<section id="best-model">')]
    assert "No strategy has a complete trial with its training time yet." in section
    assert ">0.8%<" in section
    single = optuna.create_study(direction="maximize")
    single.add_trial(_strategy_trial(0.7, "bitfit", train_seconds=5.0, trainable=20_000))
    single.add_trial(_strategy_trial(0.8, "bitfit", train_seconds=6.0, trainable=20_000))
    section = _html.render(single)
    section = section[section.index('<section id="strategies">') : section.index('<section id="best-model">')]
    assert "Every trial used one strategy, bitfit." in section and ">2%<" in section
    assert section.count("<tr") == 2 and "figure-strategies" not in section


@pytest.mark.parametrize(
    "share, text", [(0.008, "0.8%"), (0.0123, "1.2%"), (0.5, "50%"), (1.0, "100%"), (None, "unknown")]
)
def test_share_text(share, text):
    assert _figures.share_text(share) == text


# --- studies stored by earlier versions -----------------------------------------------------------


def make_old_study():
    """A two-objective study as an earlier version stored it: objectives named by the study attr
    ``objectives``, reports called epochs (``best_epoch``, ``epochs_run``, history entries whose ``epoch``
    counted reports and ``epochs_done`` epochs)."""
    study = optuna.create_study(directions=["minimize", "maximize"], study_name="old")
    study.set_user_attr("objectives", ["latency", "accuracy"])  # the accuracy second: only the attr says so
    for latency, accuracy in [(12.0, 0.7), (30.0, 0.9), (20.0, 0.6)]:
        history = [
            {"epoch": number, "epochs_done": number / 4, "val_accuracy": accuracy - 0.1 * (3 - number)}
            for number in (1, 2, 3)
        ]
        attrs = {
            "best_epoch": 3,
            "epochs_run": 3,
            "history": history,
            "metrics": {"accuracy": accuracy, "loss": 0.3, "epoch": 3},
            "backbone": "resnet18",
            "latency_ms": latency,
        }
        study.add_trial(optuna.trial.create_trial(values=[latency, accuracy], user_attrs=attrs))
    return study


def test_an_old_study_with_the_old_keys_renders_with_its_numbers():
    study = make_old_study()
    trials = report.trial_records(study)
    assert trials["value"].tolist() == [0.7, 0.9, 0.6]  # the accuracy, second objective by the attr
    assert trials["best_report"].tolist() == [3, 3, 3] and trials["reports"].tolist() == [3, 3, 3]
    curves = report.curve_records(study)
    assert curves["report"].tolist()[:3] == [1, 2, 3] and curves["epoch"].tolist()[:3] == [0.25, 0.5, 0.75]
    pareto = report.pareto_records(study)
    assert pareto["score"].tolist() == [0.7, 0.9, 0.6] and pareto["latency_ms"].tolist() == [12.0, 30.0, 20.0]
    assert pareto.loc[pareto["on_front"], "number"].tolist() == [0, 1]
    page = _html.render(study)
    assert "0.9 validation accuracy (trial 1; latency 30 ms, val-loss 0.3, at report 3)" in page
    assert "maximize accuracy, minimize latency" not in page and "minimize latency, maximize accuracy" in page
    table = page[page.index('<section id="trials">') :]
    assert "<th>best report</th>" in table and "<th>reports</th>" in table
    assert table.count('<td class="num" data-v="3.0">3</td>') == 6  # best report and reports of 3 trials
    assert "report 2 (epoch 0.50)" in page  # the curves' hover


# --- a study scored by another metric than accuracy (--metric) -------------------------------------


def _never_predicted_analysis():
    """The exported model never predicts dog: its column is empty, its recall 0."""
    confusion = [[8, 1, 0], [2, 5, 0], [3, 1, 0]]
    per_class = [
        {"cls": name, "precision": p, "recall": r, "f1": f, "support": sum(row)}
        for name, p, r, f, row in zip(CLASSES, [8 / 13, 5 / 7, 0.0], [8 / 9, 5 / 7, 0.0], [0.7, 0.71, 0.0], confusion)
    ]
    return {**analysis(n_wrong=0), "confusion": confusion, "per_class": per_class, "n_val": 20}


def test_a_macro_f1_study_names_its_metric_first_and_flags_a_class_never_predicted():
    study = make_study(metric="macro_f1")
    study.set_user_attr("best_model_analysis", _never_predicted_analysis())
    info = _records.summary(study)
    assert info["metric"] == "macro_f1" and info["best_value"] == pytest.approx(0.72)
    page = _html.render(study)
    summary = page[page.index('<section id="summary">') : page.index('<section id="history">')]
    rows = summary.split("<tr><th>")[1:]
    assert rows[0].startswith("Scored by</th><td>macro-F1 (--metric macro_f1): the mean F1 score over the classes")
    assert rows[1].startswith("Best score</th><td>0.72 validation macro-F1 (trial 3; accuracy 0.77, val-loss 0.5")
    assert rows[2].startswith(
        f"Per-class recall</th><td>cat 0.89, {EVIL_TEXT} 0.71, "
        '<strong class="never">dog 0.00 (never predicted)</strong></td>'
    )
    assert "validation accuracy" not in page.replace(get_plotlyjs(), "")
    assert "Validation macro-F1 at each report" in page
    best_model = page[page.index('<section id="best-model">') :]
    assert "<th>validation images</th>" in best_model and "<th>support</th>" not in best_model


def test_the_curves_plot_the_study_metric_and_the_confusion_rows_count_their_images():
    study = make_study(metric="macro_f1")
    study.set_user_attr("best_model_analysis", _never_predicted_analysis())
    curves = report.curve_records(study)
    history = curves[curves["state"] == "complete"]
    assert history["score"].tolist() == history["val_macro_f1"].tolist()
    pruned = curves[curves["state"] == "pruned"]  # no history: its reported values are the metric's
    assert pruned["score"].tolist() == [0.3] and pruned["val_macro_f1"].tolist() == [0.3]
    assert pruned["val_accuracy"].isna().all()
    fig = _figures.curves_figure(curves, 3, "macro_f1")
    assert fig.layout.yaxis.title.text == "validation macro-F1"
    assert list(fig.data[-1].y) == pytest.approx([0.45, 0.7, 0.72])  # the best trial, drawn last
    assert report.curve_records(make_study())["score"].tolist()[:3] == pytest.approx([0.5, 0.6, 0.62])
    confusion = _figures.confusion_figure(report.best_model_records(study))
    assert list(confusion.data[0].y) == ["cat (n=9)", f"{EVIL_TEXT} (n=7)", "dog (n=4)"]
    assert list(confusion.data[0].x) == ["cat", EVIL_TEXT, "dog"]


def test_many_classes_show_the_lowest_recalls_and_how_many_are_never_right():
    per_class = pd.DataFrame({"cls": [f"c{i}" for i in range(14)], "recall": [0.0] * 11 + [0.5, 0.2, 0.9]})
    text = _html._recalls(per_class, None)
    assert text.startswith('lowest 10 of 14 classes: <strong class="never">c0 0.00 (never right)</strong>')
    assert text.count("(never right)") == 10 and text.endswith("; 11 classes are never right")
    few = _html._recalls(per_class.iloc[11:], None)
    assert few == "c11 0.50, c12 0.20, c13 0.90"  # a few: in class order, all of them


def test_a_macro_f1_pareto_study_and_ensemble_say_macro_f1():
    study = make_pareto_study(metric="macro_f1")
    chosen = EnsembleRecord([0, 1], [0.5, 0.5], "macro_f1", [0.8, 0.9], 10, 10, 0.9, 0.85, 6)
    StudyRecord(ensemble=chosen).write(study)
    page = _html.render(study)
    assert "the best macro-F1 of the complete trials" in page and "most accurate" not in page
    assert "<h2>2. Pareto front: macro-F1 against latency</h2>" in page
    assert "<th>validation macro-F1</th>" in page
    fig = _figures.pareto_figure(report.pareto_records(study), "macro_f1")
    assert fig.layout.yaxis.title.text == "validation macro-F1"
    assert "macro-F1 0.9 against 0.85 for trial 6 alone" in page  # the ensemble's verdict
    assert "The macro-F1 on the selection half" in page
