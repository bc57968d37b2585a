"""Classification metrics, scikit-learn's: one definition for the trial loop and the report's analysis.

scikit-learn is imported where it is used: its import is a large share of autotl's, and loading a model to predict
never needs it.
"""

from __future__ import annotations

import warnings

import numpy as np


def prediction_score(truth: np.ndarray, predicted: np.ndarray, metric: str = "accuracy") -> float:
    """Predicted classes scored by ``metric``: accuracy, macro_f1 or balanced_accuracy."""
    if metric == "macro_f1":
        return macro_f1(truth, predicted)
    if metric == "balanced_accuracy":
        return balanced_accuracy(truth, predicted)
    return float((np.asarray(truth) == np.asarray(predicted)).mean())


def balanced_accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Recall averaged over the classes in the truth: a class the model never predicts counts as 0, however small."""
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():  # a class predicted but absent from the truth is not an error here
        warnings.simplefilter("ignore")
        return float(balanced_accuracy_score(truth, predicted))


def macro_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    """F1 averaged over the classes that occur (in the truth or the predictions), each class weighing the same."""
    from sklearn.metrics import f1_score

    return float(f1_score(truth, predicted, average="macro", zero_division=0))


def per_class(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> dict:
    """Confusion matrix (rows: true class) and per-class precision, recall, F1 and support, for every class."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = list(range(num_classes))
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=labels, zero_division=0)
    return dict(
        confusion=confusion_matrix(truth, predicted, labels=labels),
        precision=precision,
        recall=recall,
        f1=f1,
        support=support,
    )
