"""Score a model on batches of validation images: accuracy, macro-F1, balanced accuracy and mean cross-entropy."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ._device import BAR_DELAY_S, autocast, bars
from ._metrics import balanced_accuracy, macro_f1


def evaluate(
    model, batches, *, device, num_classes: int, progress_total: int | None = None, probabilities: bool = False
) -> dict:
    """Accuracy, macro-F1, balanced accuracy and mean cross-entropy of ``model`` over ``batches`` of (inputs, labels).

    With ``progress_total`` (the number of images), a long evaluation shows a progress bar. With
    ``probabilities``, also the softmax of every image, in order (so that the model's analysis needs no second pass).
    """
    model.eval()
    loss_sum, preds, truth, probs = 0.0, [], [], []
    bar = tqdm(
        total=progress_total,
        unit="img",
        desc="    validating",
        disable=not bars(progress_total),
        delay=BAR_DELAY_S,
        leave=False,
    )
    with bar, torch.inference_mode(), autocast(device):
        for x, y in batches:
            bar.update(len(y))
            logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y.to(device), reduction="sum").item()
            preds.append(logits.argmax(1).cpu())
            truth.append(y.cpu())
            if probabilities:
                probs.append(logits.softmax(1).cpu())
    pred, labels = torch.cat(preds), torch.cat(truth)
    truth, predicted = labels.numpy(), pred.numpy()
    scores = dict(
        accuracy=float((truth == predicted).mean()),
        macro_f1=macro_f1(truth, predicted),
        balanced_accuracy=balanced_accuracy(truth, predicted),
        loss=loss_sum / len(labels),
    )
    return scores | ({"probabilities": torch.cat(probs).numpy()} if probabilities else {})


def val_probabilities(model: torch.nn.Module, pre, data) -> np.ndarray:
    """``model``'s class probabilities on the validation split, in ``data.indices("val")`` order (float32)."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.inference_mode():
        for images, _ in data.batches(data.indices("val"), pre.size, pre.interpolation):
            out.append(model(pre.normalize(images.to(device))).float().softmax(1).cpu())
    return torch.cat(out).numpy().astype(np.float32)
