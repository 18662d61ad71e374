"""Segmentation metrics shared by training (validation scores) and evaluate.py.

All functions take binary masks (any dtype; nonzero = foreground) of the same shape and return
plain floats. Conventions for empty masks: when both prediction and ground truth are empty, Dice,
IoU, precision and recall are 1 (a perfect answer to an empty question); when only one is empty
the score that divides by the empty side is 0.
"""
from __future__ import annotations

import numpy as np


def confusion(pred, gt) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) pixel counts."""
    p = np.asarray(pred).astype(bool)
    g = np.asarray(gt).astype(bool)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground truth shape {g.shape}")
    tp = int(np.count_nonzero(p & g))
    fp = int(np.count_nonzero(p & ~g))
    fn = int(np.count_nonzero(~p & g))
    tn = int(p.size - tp - fp - fn)
    return tp, fp, fn, tn


def scores_from_counts(tp: int, fp: int, fn: int, tn: int = 0) -> dict:
    """Dice, IoU, precision, recall and accuracy from pixel counts (summed over a batch is fine)."""
    def ratio(num, den):
        return float(num) / den if den else 1.0

    return {
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "iou": ratio(tp, tp + fp + fn),
        "precision": ratio(tp, tp + fp) if (tp + fp) else (1.0 if fn == 0 else 0.0),
        "recall": ratio(tp, tp + fn) if (tp + fn) else (1.0 if fp == 0 else 0.0),
        "accuracy": ratio(tp + tn, tp + fp + fn + tn),
    }


def pixel_scores(pred, gt) -> dict:
    """Dice, IoU, precision, recall, accuracy of one binary prediction against its ground truth."""
    return scores_from_counts(*confusion(pred, gt))
