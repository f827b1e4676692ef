"""Evaluation figures people can read: accuracy, macro F1, a confusion matrix, a baseline."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any


def classification_metrics(
    truth: Sequence[int], predicted: Sequence[int], names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro F1, per-class F1 and the confusion matrix (rows: truth, cols: predicted).

    ``majority_baseline`` is the accuracy of always answering the most common true label:
    a model is only useful well above it.
    """
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} true labels but {len(predicted)} predictions")
    size = len(names)
    matrix = [[0] * size for _ in range(size)]
    for t, p in zip(truth, predicted, strict=True):
        matrix[t][p] += 1
    per_class = {}
    for i, name in enumerate(names):
        tp = matrix[i][i]
        fp = sum(matrix[r][i] for r in range(size)) - tp
        fn = sum(matrix[i]) - tp
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        per_class[name] = (
            2 * precision * recall / (precision + recall) if precision + recall else 0.0
        )
    total = len(truth)
    correct = sum(matrix[i][i] for i in range(size))
    common = Counter(truth).most_common(1)[0][1] if total else 0
    return {
        "accuracy": correct / total if total else 0.0,
        "macro_f1": sum(per_class.values()) / size if size else 0.0,
        "f1_per_class": per_class,
        "confusion_matrix": matrix,
        "labels": list(names),
        "majority_baseline": common / total if total else 0.0,
        "examples": total,
    }
