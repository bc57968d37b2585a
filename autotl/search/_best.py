"""The best model so far: export it, and store how it does on each validation image.

The analysis (confusion matrix, per-class precision / recall / F1, the misclassified
images as small thumbnails) goes into the study's storage, so the report can show the
best model up close from the storage alone.
"""

from __future__ import annotations

import base64
import fcntl
import io
from pathlib import Path

import numpy as np
from PIL import Image

from .. import export
from ..data import resize
from ..records import Analysis, ClassScore, Misclassified, StudyRecord
from ..train import per_class, val_probabilities
from ..trials import Standing, best, study_metric

MAX_GALLERY = 24
THUMBNAIL_PX = 64
ONNX_CHECK_IMAGES = 8


def keep_best(study, result, data, model_dir, trial_number: int, value: float, latency: float | None = None) -> bool:
    """Export ``result`` if it beats the exported model (``autotl.trials.best``), and store its analysis.

    Workers on one machine share ``model_dir``: a lock makes compare-and-replace one step,
    and the replacement itself is atomic, so a crash never leaves a half-written model.
    """
    model_dir = Path(model_dir)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(model_dir.parent / ".best_model.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        info = export.record(model_dir)
        new = Standing((value, latency), trial_number, result.metrics.get("loss"), result.record.val_images)
        if "value" in info:
            old = Standing(
                (info["value"], info.get("latency_ms")),
                info.get("trial", -1),
                (info.get("metrics") or {}).get("loss"),
                info.get("val_images"),
            )
            if best([new, old], study.directions) is not new:
                return False
        extra = dict(
            trial=trial_number,
            value=value,
            metric=study_metric(study),
            dataset=data.spec,
            val_images=result.record.val_images,
        )
        if latency is not None:
            extra["latency_ms"] = latency
        export.save(result, model_dir, extra=extra)
    StudyRecord(best_model_trial=trial_number, best_model_analysis=analyse(result, data)).write(study)
    return True


def add_onnx(model_dir, data, say=lambda text: None) -> None:
    """Write ``model_dir/model.onnx`` and check it against PyTorch on the first few validation images."""
    if not (Path(model_dir) / export.CONFIG).is_file():
        return
    pre = export.read_config(model_dir).preprocessing
    index = (data.indices("val") if data.count("val") else data.indices("train"))[:ONNX_CHECK_IMAGES]
    images, _ = next(data.batches(index, pre.size, pre.interpolation, batch_size=len(index)))
    check = export.add_onnx(model_dir, images)
    if check:
        say(
            f"model.onnx checked in ONNX Runtime on {check['checked_images']} validation images: probabilities "
            f"within {check['max_probability_difference']:.2g} of PyTorch's"
        )


def analyse(result, data) -> Analysis:
    """Per-class metrics, confusion matrix and misclassified thumbnails on the validation split (from the
    probabilities the run's final scoring kept, else from a pass of the model)."""
    val_index, probabilities = data.indices("val"), seen_probabilities(result, data)
    predicted, truth = probabilities.argmax(1), data.labels[val_index].astype(np.int64)
    metrics = per_class(truth, predicted, len(data.classes))
    wrong = np.flatnonzero(predicted != truth)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]])][:MAX_GALLERY]
    gallery = [
        Misclassified(
            true=data.classes[truth[i]],
            predicted=data.classes[predicted[i]],
            probability=round(float(probabilities[i, predicted[i]]), 4),
            thumbnail=_thumbnail(data.pixels(val_index[i])),
        )
        for i in wrong
    ]
    return Analysis(
        classes=list(data.classes),
        confusion=metrics["confusion"].tolist(),
        per_class=[
            ClassScore(c, round(float(p), 4), round(float(r), 4), round(float(f), 4), int(s))
            for c, p, r, f, s in zip(
                data.classes, metrics["precision"], metrics["recall"], metrics["f1"], metrics["support"]
            )
        ],
        misclassified=gallery,
        n_val=int(len(truth)),
    )


def seen_probabilities(result, data) -> np.ndarray:
    """The result's probabilities on every validation image: those its final scoring kept, else a pass of its model."""
    kept = result.val_probabilities
    if kept is not None and len(kept) == data.count("val"):
        return kept.astype(np.float32)
    return val_probabilities(result.model, result.preprocessing, data)


def _thumbnail(pixels: np.ndarray) -> str:
    """A small PNG as a data: URI, to embed in the report."""
    buffer = io.BytesIO()
    Image.fromarray(resize(pixels, THUMBNAIL_PX, "bilinear")).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
