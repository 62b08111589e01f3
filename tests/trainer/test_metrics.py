"""Metric functions against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np

from scoring.trainer.metrics import auc, logloss


def test_auc_hand_computed() -> None:
    # Pairs (pos, neg): (0.8>0.3), (0.8>0.2), (0.4>0.3), (0.4>0.2) all right -> 1.0
    assert auc(np.array([1, 0, 1, 0]), np.array([0.8, 0.3, 0.4, 0.2])) == 1.0
    # One of four pairs wrong -> 0.75
    assert auc(np.array([1, 0, 1, 0]), np.array([0.8, 0.5, 0.4, 0.2])) == 0.75
    # Ties count half: pos 0.5 vs neg 0.5 -> 0.5
    assert auc(np.array([1, 0]), np.array([0.5, 0.5])) == 0.5


def test_auc_one_class_is_nan() -> None:
    assert math.isnan(auc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_logloss_hand_computed() -> None:
    expected = -(math.log(0.8) + math.log(0.6)) / 2
    assert math.isclose(logloss(np.array([1, 0]), np.array([0.8, 0.4])), expected)
