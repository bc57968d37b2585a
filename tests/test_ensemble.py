"""The greedy ensemble: selection against a hand computation, written only when it beats the best single model on
the held-back half, and an ensemble folder used as a model (load_model, predict, evaluate, ONNX)."""

from __future__ import annotations

import numpy as np
import pytest

import autotl
from autotl.cli import main
from autotl.records import StudyRecord, TrialRecord
from autotl.report import render
from autotl.search._ensemble import build_ensemble, greedy_selection, halves
from autotl.search._trial_files import best_complete, probabilities_file


def two_class(p1: list[float]) -> np.ndarray:
    return np.array([[1.0 - p, p] for p in p1])


def test_greedy_selection_picks_what_a_hand_computation_picks():
    """Labels 0, 0, 1, 1. Alone, each candidate is right on 3 of 4; B has the lowest log loss (0.409 against A's
    0.472 and C's 0.481), so round 1 takes B. Round 2: B + A and B + C are both right on all 4, B + C with the lower
    loss (0.355 against 0.401). Round 3: B + C + C gets image 0 wrong; B + C + B (loss 0.359) beats B + C + A
    (0.377) but not round 2's 0.355, so the best round is round 2: B and C, half each."""
    labels = np.array([0, 0, 1, 1])
    a, b, c = two_class([0.4, 0.3, 0.9, 0.4]), two_class([0.1, 0.6, 0.6, 0.9]), two_class([0.8, 0.1, 0.9, 0.9])
    counts, curve = greedy_selection([a, b, c], labels, rounds=3)
    assert counts.tolist() == [0, 1, 1]
    assert [round(accuracy, 2) for accuracy, _ in curve] == [0.75, 1.0, 1.0]
    assert [round(-loss, 3) for _, loss in curve] == [0.409, 0.355, 0.359]


def test_the_halves_are_stratified_and_disjoint():
    labels = np.array([0] * 7 + [1] * 4 + [2] * 1)
    first, second = halves(labels)
    assert set(first).isdisjoint(second) and len(first) + len(second) == len(labels)
    assert [int((labels[first] == k).sum()) for k in range(3)] == [4, 2, 1]


@pytest.fixture(scope="module")
def searched(tmp_path_factory, photo_folder):
    """A real three-trial search with --ensemble: the kept trials have weights and validation probabilities."""
    out = tmp_path_factory.mktemp("ensemble") / "run"
    result = autotl.search(
        str(photo_folder), space="quick", n_trials=3, max_epochs=1, out=out, progress=False, ensemble=True
    )
    return result


def kept_trials(result):
    return best_complete(result.study, result.study.get_trials(deepcopy=False), 3)


def test_a_search_keeps_what_an_ensemble_needs(searched):
    data = autotl.load_dataset(StudyRecord.of(searched.study).dataset.path)
    assert len(kept_trials(searched)) >= 2
    for trial in kept_trials(searched):
        seen = np.load(probabilities_file(searched.run_dir, trial))
        assert seen.shape == (data.count("val"), len(data.classes))
        assert np.allclose(seen.sum(1), 1.0, atol=1e-5)
    assert StudyRecord.of(searched.study).ensemble is not None


def hand_made(searched, data, wrong_on):
    """Replace each kept trial's validation probabilities: sure and right everywhere except on the rows that
    ``wrong_on(images, trials)`` gives it, where it is wrong but unsure (0.35 on the true class, 0.45 on the next)."""
    labels = data.labels[data.indices("val")].astype(int)
    rows, classes = np.arange(len(labels)), len(data.classes)
    trials = kept_trials(searched)
    for trial, wrong in zip(trials, wrong_on(len(labels), len(trials))):
        seen = np.full((len(labels), classes), 0.1 / (classes - 1))
        seen[rows, labels] = 0.9
        seen[wrong] = 0.2 / (classes - 2)
        seen[wrong, labels[wrong]] = 0.35
        seen[wrong, (labels[wrong] + 1) % classes] = 0.45
        np.save(probabilities_file(searched.run_dir, trial), seen.astype(np.float32))


def test_an_ensemble_that_does_not_beat_the_best_model_is_not_written(searched):
    data = autotl.load_dataset(StudyRecord.of(searched.study).dataset.path)
    hand_made(searched, data, lambda n, k: [np.arange(0, n, 3)] * k)  # all wrong on the same images: nothing to gain
    record = build_ensemble(searched.study, searched.run_dir, data, keep=3, say=lambda text: None)
    assert record is not None and not record.written
    assert record.ensemble_held_back == record.single_held_back
    assert not (searched.run_dir / "ensemble_model").exists()


def test_an_ensemble_folder_is_used_as_a_model(searched, photo_folder, capsys):
    """Models unsure and wrong on different images, sure and right elsewhere: together they are right everywhere, on
    the held-back half too, so the ensemble is written; it then loads, predicts and evaluates as a model, in ONNX
    as well."""
    from autotl.search._best import add_onnx

    data = autotl.load_dataset(StudyRecord.of(searched.study).dataset.path)
    hand_made(searched, data, lambda n, k: [np.arange(j, n, k) for j in range(k)])
    record = build_ensemble(searched.study, searched.run_dir, data, keep=3, say=lambda text: None)
    assert record.written and len(record.members) >= 2 and record.ensemble_held_back > record.single_held_back
    folder = searched.run_dir / "ensemble_model"
    add_onnx(folder, data)
    assert StudyRecord.of(searched.study).ensemble.members == record.members
    page = render(searched.study)
    assert "Ensemble of the best trials" in page and "written to ensemble_model/" in page

    torch_model, onnx_model = autotl.load_model(folder), autotl.load_model(folder, runtime="onnx")
    images = sorted(str(p) for p in photo_folder.rglob("*.png"))[:6]
    expected = members_average(folder, images)
    assert np.abs(torch_model.predict_proba(images) - expected).max() < 1e-5
    assert np.abs(onnx_model.predict_proba(images) - expected).max() < 1e-4
    assert main(["predict", "--model", str(folder), "--runtime", "onnx", *images]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == len(images) + 1
    assert main(["evaluate", "--model", str(folder), "--dataset", str(photo_folder)]) == 0
    assert "all accuracy" in capsys.readouterr().out


def members_average(folder, images) -> np.ndarray:
    """The weighted average of the members' probabilities, each member loaded as the single model it is."""
    import json

    members = json.loads((folder / "config.json").read_text())["autotl"]["ensemble"]
    return sum(m["weight"] * autotl.load_model(folder / m["folder"]).predict_proba(images) for m in members)


def test_a_member_of_another_input_size_is_resized_in_the_graph(searched, photo_folder, tmp_path):
    """An ensemble whose input is 32 px while its member was trained at 64: PyTorch and ONNX Runtime agree within
    1e-4, and the resized member mostly predicts what it predicts at its own size."""
    import dataclasses

    from autotl import export
    from autotl.search._best import add_onnx
    from autotl.search._retrain import kept_result
    from autotl.search._trial_files import model_file

    trial = kept_trials(searched)[0]
    member = kept_result(model_file(searched.run_dir, trial), TrialRecord.of(trial))
    given = dataclasses.replace(member.preprocessing, size=member.preprocessing.size // 2)
    folder = export.save_ensemble(
        [member], [1.0], tmp_path / "ensemble", dict(members=[dict(trial=trial.number)]), given
    )
    data = autotl.load_dataset(StudyRecord.of(searched.study).dataset.path)
    add_onnx(folder, data)
    images = sorted(str(p) for p in photo_folder.rglob("*.png"))[:12]
    small = autotl.load_model(folder).predict_proba(images)
    assert autotl.load_model(folder).preprocessing.size == given.size
    assert np.abs(autotl.load_model(folder, runtime="onnx").predict_proba(images) - small).max() < 1e-4
    own = autotl.load_model(folder / "member_0").predict_proba(images)
    assert (small.argmax(1) == own.argmax(1)).mean() >= 0.75
