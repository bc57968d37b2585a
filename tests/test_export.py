"""The exported folder where users take it: timm's own loader and data pipeline, ONNX Runtime,
``autotl predict`` on folders and lists, and folders written by the first autotl schema."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from conftest import make_photo_folder
from PIL import Image
from safetensors.torch import save_file

import autotl
from autotl.cli import main

pytestmark = pytest.mark.slow  # every test here trains, searches or runs a subprocess

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> list[Path]:
    """New photos the search never saw, larger than the model's input (some not square), as PNGs."""
    folder = make_photo_folder(tmp_path_factory.mktemp("held_out") / "photos", per_class=8, size=150, seed=11)
    files = sorted(folder.rglob("*.png"))
    for i, path in enumerate(files[::3]):
        Image.open(path).resize((150 + 41 * (i % 3), 150 + 17 * (i % 2))).save(path)
    return files


def _timm_probabilities(model_dir: Path, files: list[Path]) -> np.ndarray:
    """Probabilities the way a timm user gets them: local-dir model, timm's own transform."""
    model = timm.create_model(f"local-dir:{model_dir}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    x = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
    with torch.inference_mode():
        return model(x).softmax(1).numpy()


def test_the_folder_is_a_timm_model_that_predicts_like_autotl(finished_run, held_out, photo_folder):
    model_dir = finished_run.model_dir
    ours = autotl.load_model(model_dir).predict_proba(held_out)
    theirs = _timm_probabilities(model_dir, held_out)
    assert (ours.argmax(1) == theirs.argmax(1)).mean() >= 0.99
    assert np.abs(ours - theirs).max() < 1e-4  # the same pixels: autotl's resize is torchvision's
    config = json.loads((model_dir / "config.json").read_text())
    assert config["label_names"] == ["astronaut", "brick", "coffee"]
    assert config["pretrained_cfg"]["crop_pct"] == 1.0 and config["autotl"]["trial"] == finished_run.best_trial.number
    small = sorted(photo_folder.rglob("*.png"))[:12]  # 48 px, below the model's input: both enlarge them with PIL
    assert (
        np.abs(autotl.load_model(model_dir).predict_proba(small) - _timm_probabilities(model_dir, small)).max() < 1e-4
    )
    card = (model_dir / "README.md").read_text()
    assert "library_name: timm" in card and "astronaut, brick, coffee" in card and "onnxruntime" in card


def test_onnx_runtime_on_model_onnx_gives_autotls_predictions(finished_run, held_out):
    import onnxruntime

    loaded = autotl.load_model(finished_run.model_dir)
    x = loaded.preprocessing.normalize(loaded.pixels(held_out)).numpy()
    session = onnxruntime.InferenceSession(str(finished_run.model_dir / "model.onnx"))
    logits = session.run(None, {"pixels": x})[0]  # any batch size: the batch axis is dynamic
    got = torch.from_numpy(logits).softmax(1).numpy()
    expected = loaded.predict_proba(held_out)
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4
    check = json.loads((finished_run.model_dir / "config.json").read_text())["autotl"]["onnx"]
    assert check["checked_images"] > 0 and check["max_probability_difference"] < 1e-4


def _rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_predict_folders_lists_and_onnx_in_batches(finished_run, held_out, tmp_path, capsys):
    folder = held_out[0].parent.parent
    (folder / "brick" / "notes.txt").write_text("not an image")
    listing = tmp_path / "list.csv"
    listing.write_text("path\n" + "\n".join(str(p) for p in held_out[:4]) + "\nmissing.png\n")
    out = tmp_path / "p.csv"
    args = ["predict", "--model", str(finished_run.model_dir), str(folder), "--batch-size", "5"]
    with pytest.warns(UserWarning, match=r"notes\.txt \(not an image format PIL can read\)"):
        assert main([*args, "--out", str(out), "--top-k", "2"]) == 0
    rows = _rows(out.read_text())
    assert [r["path"] for r in rows] == [str(p) for p in held_out]  # recursive, sorted, the text file skipped
    assert set(rows[0]) == {"path", "label", "probability", "label_2", "probability_2"}
    expected = autotl.load_model(finished_run.model_dir).predict_proba(held_out)
    classes = ["astronaut", "brick", "coffee"]
    assert [r["label"] for r in rows] == [classes[i] for i in expected.argmax(1)]
    assert np.allclose([float(r["probability"]) for r in rows], expected.max(1), atol=1e-5)

    with pytest.warns(UserWarning, match="notes.txt"):
        assert main([*args, "--runtime", "onnx"]) == 0
    onnx_rows = _rows(capsys.readouterr().out)
    assert [r["label"] for r in onnx_rows] == [r["label"] for r in rows]
    assert np.abs(np.array([float(r["probability"]) for r in onnx_rows]) - expected.max(1)).max() < 1e-4

    with pytest.warns(UserWarning, match="missing.png"):
        assert main(["predict", "--model", str(finished_run.model_dir), str(listing)]) == 0
    assert len(_rows(capsys.readouterr().out)) == 4


def test_predict_says_what_is_wrong_in_one_line(finished_run, tmp_path, capsys):
    for args in (
        ["--model", str(tmp_path / "nowhere"), str(tmp_path)],
        ["--model", str(finished_run.model_dir), str(tmp_path / "no.png")],
        ["--model", str(finished_run.model_dir), str(tmp_path), "--out", str(tmp_path)],
    ):
        assert main(["predict", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("autotl: error:"), err


def test_a_folder_of_the_first_schema_still_loads_and_predicts(tmp_path, held_out):
    model_dir = tmp_path / "old_model"
    shutil.copytree(DATA / "first_schema_model", model_dir)
    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", num_classes=3).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(model_dir / "model.safetensors"))
    loaded = autotl.load_model(model_dir)
    assert loaded.classes == ["astronaut", "brick", "coffee"] and loaded.preprocessing.size == 64
    assert loaded.config["trial"] == 0 and loaded.config["metrics"]["accuracy"] == 0.9167
    pixels = loaded.pixels(held_out[:6])
    with torch.inference_mode():
        expected = model(loaded.preprocessing.normalize(pixels)).softmax(1).numpy()
    assert np.abs(loaded.predict_proba(held_out[:6]) - expected).max() < 1e-5
    with pytest.raises(autotl.ModelDirError, match="has no model.onnx"):
        autotl.load_model(model_dir, runtime="onnx")


def test_loading_a_model_and_predicting_never_imports_scikit_learn(finished_run, held_out):
    """scikit-learn is imported only by what splits or scores: predicting does neither, and skips its import time."""
    probe = (
        "import sys, autotl; "
        f"autotl.load_model({str(finished_run.model_dir)!r}).predict({[str(p) for p in held_out[:2]]!r}); "
        "print('sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"
