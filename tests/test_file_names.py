"""File and class folder names that are not valid UTF-8 (archives made on other systems) work end to end.

Python hands such names over with surrogate escapes (``os.fsdecode(b"caf\\xe9.png")``): paths keep
their bytes (the cache's fingerprint, predict's CSV rows), and a class name is spelled ``caf\\xe9``
wherever it must be text (config.json, the model card, the report).
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from pathlib import Path

import pytest
from conftest import make_photo_folder

from autotl import load_dataset
from autotl.cli import main

LABEL = "caf\\xe9"  # how the class folder b"caf\xe9" is named in the model, the card and the report


def _bytes_named_folder(root: Path) -> Path:
    """3 classes x 8 images of 32 px; half the files and the class folder 'coffee' named with bytes not UTF-8."""
    make_photo_folder(root, per_class=8, size=32)
    for i, path in enumerate(sorted(root.rglob("*.png"))):
        if i % 2 == 0:
            path.rename(path.with_name(os.fsdecode(b"caf\xe9-%d.png" % i)))
    (root / "coffee").rename(root / os.fsdecode(b"caf\xe9"))
    (root / "brick" / os.fsdecode(b"bad\xff.png")).write_bytes(b"not an image")
    return root


@pytest.fixture
def folder(tmp_path) -> Path:
    try:
        return _bytes_named_folder(tmp_path / "photos")
    except (OSError, UnicodeError):
        pytest.skip("this file system does not take names that are not valid UTF-8")


def _readable(folder: Path) -> set[bytes]:
    return {os.fsencode(p) for p in folder.rglob("*.png") if p.name != os.fsdecode(b"bad\xff.png")}


def test_a_folder_with_names_that_are_not_utf8_loads_and_names_them_in_warnings(folder, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(str(folder), cache_dir=tmp_path / "cache")  # the fingerprint hashes the names' bytes
    assert data.classes == ["astronaut", "brick", LABEL]
    assert len(data.labels) == 24 and data.skipped == [str(folder / "brick" / "bad\\xff.png")]
    assert any("bad\\xff.png (not an image" in str(w.message) for w in caught)
    rows = ["path,label"] + [f"{os.fsdecode(p)},x{i % 2}" for i, p in enumerate(sorted(_readable(folder)))]
    with open(folder / "list.csv", "w", errors="surrogateescape") as handle:  # a CSV holding the names' bytes
        handle.write("\n".join(rows))
    assert len(load_dataset(str(folder / "list.csv"), cache_dir=tmp_path / "cache").labels) == 24


@pytest.mark.slow  # trains one short trial
def test_search_report_and_predict_on_names_that_are_not_utf8(folder, tmp_path, capsysbinary):
    out = tmp_path / "run"
    args = ["--space", "quick", "--n-trials", "1", "--max-epochs", "1", "--out", str(out)]
    assert main(["search", "--dataset", str(folder), *args]) == 0
    model = out / "best_model"
    assert json.loads((model / "config.json").read_text())["label_names"] == ["astronaut", "brick", LABEL]
    assert f"astronaut, brick, {LABEL}" in (model / "README.md").read_text()
    assert LABEL in (out / "report.html").read_text(encoding="utf-8")
    capsysbinary.readouterr()

    predictions = tmp_path / "predictions.csv"
    with pytest.warns(UserWarning, match=r"bad\\xff\.png \(not an image"):
        assert main(["predict", "--model", str(model), str(folder), "--out", str(predictions)]) == 0
    written = predictions.read_bytes()
    rows = list(csv.DictReader(io.StringIO(written.decode("utf-8", "surrogateescape"))))
    assert {os.fsencode(row["path"]) for row in rows} == _readable(folder)  # each row's path is the file's bytes
    assert {row["label"] for row in rows} <= {"astronaut", "brick", LABEL}

    with pytest.warns(UserWarning, match=r"bad\\xff\.png"):
        assert main(["predict", "--model", str(model), str(folder)]) == 0
    assert capsysbinary.readouterr().out == written  # standard output holds the same bytes
