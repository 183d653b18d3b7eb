"""LIMR, Learning Impact Measurement — "LIMR: Less is More for RL Scaling" (arXiv 2502.11886).

From a pilot run on the full pool, each sample's reward per epoch ``r_i^k`` (its mean reward over
that epoch's rollouts) is compared with the run's average curve ``r̄^k = mean_i r_i^k``:

    s_i = 1 − Σ_k (r_i^k − r̄^k)² / Σ_k (1 − r̄^k)²

(1: the sample tracks the average learning curve; it can be negative). Samples with ``s_i ≥ θ``
are kept (paper: θ = 0.6; the released script's default is 0.2). As in the authors' code, an
epoch in which a sample was not seen takes the sample's value from the next epoch, and samples
still missing a value (unseen in the last epochs) are left out, of the curve and of the selection.
The paper states the score on rewards and the code on accuracies; with 0/1 rewards they agree.

A run log is JSON lines, one record per rollout or per sample and step:
``{"step": 3, "id": 17, "reward": 1.0}``; epochs are ``step // steps_per_epoch``
(:func:`read_run_log`, :func:`trajectories`). ``cadence rl limr LOG -o ids.json`` writes the kept ids.

    >>> rewards = np.array([[0.0, 0.5, 1.0], [0.0, 0.5, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    >>> learning_impact(rewards).round(3).tolist()
    [0.857, 0.857, 0.0, 0.0]
    >>> select([10, 11, 12, 13], learning_impact(rewards), 0.6)
    [10, 11]
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np

from cadence.errors import CadenceError

PAPER_THRESHOLD = 0.6


def backfill(rewards: Any) -> np.ndarray:
    """Samples × epochs with each missing (NaN) value taken from the next epoch that has one."""
    r = np.array(rewards, dtype=np.float64, ndmin=2)
    for k in range(r.shape[1] - 2, -1, -1):
        gap = np.isnan(r[:, k])
        r[gap, k] = r[gap, k + 1]
    return r


def learning_impact(rewards: Any) -> np.ndarray:
    """LIMR's score per sample from a samples × epochs reward matrix (NaN: not seen that epoch).
    Missing values are back-filled; a sample still missing one scores NaN and is left out of the
    average curve."""
    r = np.array(rewards, dtype=np.float64, ndmin=2)
    if r.ndim != 2 or r.size == 0:
        raise CadenceError(f"LIMR needs a samples × epochs reward matrix, got shape {r.shape}")
    if np.any(np.isinf(r)):
        raise CadenceError("LIMR rewards must be finite (NaN marks an epoch without the sample)")
    r = backfill(r)
    complete = ~np.isnan(r).any(axis=1)
    if not complete.any():
        raise CadenceError("no sample has a reward in the last epoch: LIMR has no learning curve to compare with")
    mean = r[complete].mean(axis=0)
    scale = float(np.sum((1.0 - mean) ** 2))
    if scale <= 0:
        raise CadenceError("the average reward is 1 in every epoch: LIMR's score is undefined (nothing to learn)")
    scores = np.full(len(r), np.nan)
    scores[complete] = 1.0 - np.sum((r[complete] - mean) ** 2, axis=1) / scale
    return scores


def select(ids: Sequence[Hashable], scores: Any, threshold: float = PAPER_THRESHOLD) -> list:
    """The ids whose score is at least ``threshold`` (NaN scores never), in the given order."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) != len(ids):
        raise CadenceError(f"{len(ids)} ids for {len(s)} scores")
    if not math.isfinite(threshold):
        raise CadenceError(f"the LIMR threshold must be a finite number, got {threshold!r}")
    return [i for i, x in zip(ids, s) if x >= threshold]


def trajectories(records: Iterable[Mapping[str, Any]], steps_per_epoch: int = 1) -> tuple[list, np.ndarray]:
    """``(ids, samples × epochs mean rewards)`` from run-log records (``step``, ``id``, ``reward``);
    ids in order of first appearance, NaN where a sample was not seen in an epoch."""
    if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
        raise CadenceError(f"steps_per_epoch must be a positive integer, got {steps_per_epoch!r}")
    index: dict = {}
    rows, epochs, rewards = [], [], []
    for n, rec in enumerate(records):
        if not isinstance(rec, Mapping) or not {"step", "id", "reward"} <= set(rec):
            raise CadenceError(f"run-log record {n} needs 'step', 'id' and 'reward', got {rec!r}")
        step, key, reward = rec["step"], rec["id"], rec["reward"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise CadenceError(f"run-log record {n}: 'step' must be a non-negative integer, got {step!r}")
        if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
            raise CadenceError(f"run-log record {n}: 'reward' must be a finite number, got {reward!r}")
        if not isinstance(key, (int, str)) or isinstance(key, bool):
            raise CadenceError(f"run-log record {n}: 'id' must be an integer or a string, got {key!r}")
        rows.append(index.setdefault(key, len(index)))
        epochs.append(step // steps_per_epoch)
        rewards.append(float(reward))
    if not rows:
        raise CadenceError("the run log has no records")
    shape = (len(index), max(epochs) + 1)
    total, count = np.zeros(shape), np.zeros(shape)
    np.add.at(total, (rows, epochs), rewards)
    np.add.at(count, (rows, epochs), 1.0)
    return list(index), np.divide(total, count, out=np.full(shape, np.nan), where=count > 0)


def read_run_log(path: str | Path) -> list[dict]:
    """The records of a JSON-lines run log (blank lines skipped); a bad line is a clear error."""
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise CadenceError(f"{path}: line {n} is not JSON ({e.msg})") from None
    return records


def limr(records: Iterable[Mapping[str, Any]], *, steps_per_epoch: int = 1,
         threshold: float = PAPER_THRESHOLD) -> tuple[list, dict]:
    """``(kept ids, {id: score})`` of a pilot run's records (scores of dropped samples left out)."""
    ids, rewards = trajectories(records, steps_per_epoch)
    scores = learning_impact(rewards)
    return select(ids, scores, threshold), {i: float(s) for i, s in zip(ids, scores) if np.isfinite(s)}
