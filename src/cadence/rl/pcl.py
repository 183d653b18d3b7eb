"""Prompt Curriculum Learning — PCL ("Prompt Curriculum Learning for Efficient LLM Post-Training",
Gao et al., arXiv 2510.01135).

A value model ``V(x)`` predicts the current policy's pass rate on prompt ``x`` from the prompt alone
(no rollouts). Each step PCL draws a pool of ``k·m`` candidates, scores them, and rolls out the ``m``
whose prediction is closest to the target ``τ``:

    chosen = the m candidates with the smallest |V(x) − τ|,   k = 4, τ = 0.5   (defaults)

then regresses ``V`` on the trained prompts' empirical group means,
``L_V = Σ_i (V(x_i) − (1/n) Σ_j r(x_i, y_ij))²`` — no extra rollouts estimate difficulty.

The value model is a user-supplied feature function plus a cadence-owned regressor,
:class:`ValueModel`: exponentially-weighted ridge regression (recursive least squares, the exact
minimiser of the discounted squared error), prediction clamped to [0, 1]. The paper's value model
is a neural network trained by gradient steps; its architecture, optimiser, learning rate and the way
the pool is drawn are UNCONFIRMED (no official code found): the regressor, its forgetting factor
``decay = 0.95`` and ridge ``l2 = 1`` are cadence's choices, kept in :class:`ValueModel` so they are
easy to replace (any object with ``predict(ids)``, ``update(ids, targets)``, ``state_dict``,
``load_state_dict`` works).

:class:`PCL` composes with any curriculum through :class:`cadence.rl.PromptSelector` (``pcl=``):
the curriculum draws the pool, PCL keeps the ``m`` nearest the target, and every generated group's
mean correctness trains the value model.

    >>> model = ValueModel(np.eye(4))                  # one feature per prompt: a lookup table
    >>> model.update([0, 1, 2, 3], [1.0, 0.55, 0.0, 0.3])
    >>> PCL(model, pool=2).choose(np.arange(4), 2).tolist()   # the two nearest 0.5
    [1, 3]
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from cadence.curricula.base import as_signal
from cadence.errors import CadenceError, StateError
from cadence.rl.predictive import group_pass_rates

Features = Callable[[np.ndarray], Any]
"""Prompt ids → a (len(ids), d) array of features (computed from the prompt only)."""


class ValueModel:
    """``V(x) = clip(prior + φ(x)·w, 0, 1)``, ``w`` the exponentially-weighted ridge fit of
    ``target − prior`` on features ``φ`` (recursive least squares; ``decay`` forgets old rounds so the
    fit follows the changing policy).

    Args:
        features: a (num_items, d) array (row ``i`` = prompt ``i``'s features) or a function of ids.
        decay: weight kept by earlier rounds at each update (1 = never forget).
        l2: ridge strength (also the prior's weight before any data).
        prior: the prediction before any data (the features' zero).

        >>> v = ValueModel(np.array([[1.0, 0.0], [0.0, 1.0]]), decay=1.0, l2=1.0)
        >>> v.update([0, 0, 1], [1.0, 1.0, 0.0])       # 2 observations of prompt 0, 1 of prompt 1
        >>> v.predict([0, 1]).round(3).tolist()        # 0.5 + 2·0.5/3, 0.5 − 0.5/2
        [0.833, 0.25]
    """

    kind = "cadence.ValueModel"

    def __init__(self, features: Any, *, decay: float = 0.95, l2: float = 1.0, prior: float = 0.5) -> None:
        if not 0 < decay <= 1 or not l2 > 0 or not 0 <= prior <= 1:
            raise CadenceError(f"ValueModel needs 0 < decay <= 1, l2 > 0 and 0 <= prior <= 1; got decay={decay}, "
                               f"l2={l2}, prior={prior}")
        self._table = None if callable(features) else self._check(np.asarray(features, dtype=np.float64))
        self._fn = features if callable(features) else None
        self.decay, self.l2, self.prior = float(decay), float(l2), float(prior)
        self.dim: int | None = None if self._table is None else self._table.shape[1]
        self.gram: np.ndarray | None = None    # Σ decayed φφᵀ (without the ridge)
        self.moment: np.ndarray | None = None  # Σ decayed φ·(target − prior)
        if self.dim is not None:
            self._reset(self.dim)

    @staticmethod
    def _check(x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or not np.all(np.isfinite(x)):
            raise CadenceError(f"value-model features must be a finite 2-D array (prompts × features), got shape "
                               f"{x.shape}{'' if np.all(np.isfinite(x)) else ' with NaN/inf'}")
        return x

    def _reset(self, dim: int) -> None:
        self.dim, self.gram, self.moment = dim, np.zeros((dim, dim)), np.zeros(dim)

    def features(self, item_ids: Any) -> np.ndarray:
        """``φ`` of each prompt id."""
        ids = np.asarray(item_ids).reshape(-1)
        if ids.dtype.kind not in "iu":
            raise CadenceError(f"prompt ids must be integers, got dtype {ids.dtype}")
        if self._table is not None:
            if len(ids) and (ids.min() < 0 or ids.max() >= len(self._table)):
                raise CadenceError(f"prompt ids must lie in [0, {len(self._table)}), got {ids[:5].tolist()}…")
            return self._table[ids]
        x = self._check(np.asarray(self._fn(ids.astype(np.int64)), dtype=np.float64).reshape(len(ids), -1))
        if self.dim is None:
            self._reset(x.shape[1])
        elif x.shape[1] != self.dim:
            raise CadenceError(f"the feature function returned {x.shape[1]} features, earlier {self.dim}")
        return x

    def _weights(self) -> np.ndarray:
        return np.linalg.solve(self.gram + self.l2 * np.eye(self.dim), self.moment)

    def predict(self, item_ids: Any) -> np.ndarray:
        """Predicted pass rate of each prompt, in [0, 1]."""
        x = self.features(item_ids)
        if self.dim is None or not len(x):
            return np.full(len(x), self.prior)
        return np.clip(self.prior + x @ self._weights(), 0.0, 1.0)

    def update(self, item_ids: Any, targets: Any) -> None:
        """One round: decay the fit, then add one observation per prompt (``targets``: its group's
        mean reward or correctness, in [0, 1]). Bad targets change nothing."""
        y = np.asarray(targets, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(y)) or np.any((y < 0) | (y > 1)):
            raise CadenceError("value-model targets must be finite group means in [0, 1]")
        x = self.features(item_ids)
        if len(x) != len(y):
            raise CadenceError(f"{len(x)} prompts for {len(y)} targets")
        self.gram = self.decay * self.gram + x.T @ x
        self.moment = self.decay * self.moment + x.T @ (y - self.prior)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "dim": self.dim,
                "gram": None if self.gram is None else self.gram.tolist(),
                "moment": None if self.moment is None else self.moment.tolist()}

    def load_state_dict(self, state: Any) -> None:
        if not isinstance(state, dict) or state.get("kind") != self.kind:
            raise StateError(f"not a {self.kind} state_dict")
        dim = state.get("dim")
        if self._table is not None and dim != self.dim:
            raise StateError(f"state is for {dim} features, this value model has {self.dim}")
        if dim is None:
            self.dim = self.gram = self.moment = None
            return
        try:
            gram = np.asarray(state["gram"], dtype=np.float64)
            moment = np.asarray(state["moment"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"malformed {self.kind} state_dict: {e!r}") from None
        if gram.shape != (dim, dim) or moment.shape != (dim,):
            raise StateError(f"{self.kind} state arrays do not match {dim} features")
        self.dim, self.gram, self.moment = int(dim), gram, moment


class PCL:
    """PCL's rule: of a pool of ``pool × m`` candidates keep the ``m`` predicted nearest ``target``;
    learn from every generated group's mean correctness (module docs).

    Args:
        value_model: a :class:`ValueModel` or any object with its four methods.
        pool: ``k``, candidates drawn per prompt wanted (paper: 4).
        target: ``τ`` (paper: 0.5).
    """

    kind = "cadence.PCL"

    def __init__(self, value_model: Any, *, pool: int = 4, target: float = 0.5) -> None:
        if not isinstance(pool, (int, np.integer)) or pool < 1 or not 0 <= target <= 1:
            raise CadenceError(f"PCL needs an integer pool >= 1 and a target in [0, 1], got pool={pool!r}, "
                               f"target={target!r}")
        for method in ("predict", "update", "state_dict", "load_state_dict"):
            if not callable(getattr(value_model, method, None)):
                raise CadenceError(f"the value model lacks {method}(); use cadence.rl.ValueModel or implement it")
        self.value_model, self.pool, self.target = value_model, int(pool), float(target)
        self.rounds = 0          # value-model updates
        self.error = float("nan")   # mean |V − group mean| of the last update, before it (logged)

    def choose(self, candidates: Any, n: int) -> np.ndarray:
        """The ``n`` candidates (in their order) whose prediction is closest to the target; ties keep
        the draw order."""
        candidates = np.asarray(candidates, dtype=np.int64).reshape(-1)
        distance = np.abs(self.value_model.predict(candidates) - self.target)
        order = np.lexsort((np.arange(len(candidates)), distance))[:n]
        return candidates[np.sort(order)]

    def observe(self, item_ids: Any, correct: Any) -> None:
        """Regress the value model on each prompt's group mean (one id and one 0/1 per rollout)."""
        prompts, rate = group_pass_rates(np.asarray(item_ids), as_signal("correct", correct))
        if not len(prompts):
            return
        before = self.value_model.predict(prompts)
        self.value_model.update(prompts, rate)
        self.rounds += 1
        self.error = float(np.mean(np.abs(before - rate)))

    def values(self) -> dict[str, float]:
        """Logged: the value model's mean absolute error on the last groups (before learning them)."""
        return {"value_error": self.error}

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "pool": self.pool, "target": self.target, "rounds": self.rounds,
                "error": self.error, "value_model": self.value_model.state_dict()}

    def load_state_dict(self, state: Any) -> None:
        if not isinstance(state, dict) or state.get("kind") != self.kind:
            raise StateError(f"not a {self.kind} state_dict")
        if state.get("pool") != self.pool or state.get("target") != self.target:
            raise StateError(f"state is for PCL(pool={state.get('pool')}, target={state.get('target')}), this is "
                             f"PCL(pool={self.pool}, target={self.target})")
        backup = self.value_model.state_dict()
        try:
            self.value_model.load_state_dict(state["value_model"])
            self.rounds, self.error = int(state["rounds"]), float(state["error"])
        except (KeyError, TypeError, ValueError) as e:
            self.value_model.load_state_dict(backup)
            raise StateError(f"malformed {self.kind} state_dict: {e!r}") from None
