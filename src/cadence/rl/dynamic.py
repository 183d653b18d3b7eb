"""Dynamic sampling: train only on prompt groups whose pass rate lies in a band, generating again for
the prompts whose groups fell out ("DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
arXiv 2503.14476; with the default band (0, 1), open, a group is kept when it is neither all correct
nor all wrong, i.e. when its advantages are not all zero).

:class:`DynamicSampling` holds the rule and its counters; :class:`cadence.rl.PromptSelector` runs the
rounds. A round generates for the missing prompts only; after ``max_extra_rounds`` extra rounds the
batch is completed with the best groups generated so far — the ones with non-zero variance first,
then the ones nearest the band — and the number so filled is counted (``filled``).

    >>> ds = DynamicSampling()
    >>> ds.band.contains([0.0, 0.5, 1.0]).tolist(), ds.fill_order(np.array([1.0, 0.75, 0.0])).tolist()
    ([False, True, False], [1, 0, 2])
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from cadence.curricula.policies.passrate import PassBand
from cadence.errors import CadenceError, StateError

COUNTERS = ("steps", "rounds", "extra_rounds", "rollouts", "kept", "dropped", "filled", "bound_hit")
"""What :class:`DynamicSampling` counts over a run (groups for kept/dropped/filled; ``bound_hit``:
batches completed out of band because ``max_extra_rounds`` was reached)."""


class DynamicSampling:
    """Keep groups whose pass rate lies in ``PassBand(low, high, closed)``; refill at most
    ``max_extra_rounds`` times per batch (``0``: never generate again, fill at once)."""

    kind = "cadence.DynamicSampling"

    def __init__(self, low: float = 0.0, high: float = 1.0, *,
                 closed: Literal["neither", "both", "low", "high"] = "neither", max_extra_rounds: int = 3) -> None:
        if not isinstance(max_extra_rounds, (int, np.integer)) or max_extra_rounds < 0:
            raise CadenceError(f"max_extra_rounds must be a non-negative integer, got {max_extra_rounds!r}")
        self.band = PassBand(float(low), float(high), closed)
        self.max_extra_rounds = int(max_extra_rounds)
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.last = dict.fromkeys(COUNTERS, 0)   # the most recent batch's counts (for logs)

    def fill_order(self, pass_rate: np.ndarray) -> np.ndarray:
        """Indices of out-of-band groups from best to worst: non-zero variance first, then by distance
        to the band (ties keep generation order)."""
        rate = np.asarray(pass_rate, dtype=np.float64)
        zero_variance = (rate == 0.0) | (rate == 1.0)
        return np.lexsort((np.arange(len(rate)), self.band.distance(rate), zero_variance))

    def record(self, batch: dict[str, int]) -> None:
        """Add one batch's counts (keys of :data:`COUNTERS`, ``steps`` excluded) to the run's."""
        self.last = {"steps": 1, **{k: int(batch.get(k, 0)) for k in COUNTERS if k != "steps"}}
        for k, v in self.last.items():
            self.counts[k] += v

    def values(self) -> dict[str, float]:
        """Logged values of the last batch: kept fraction of the groups generated, extra rounds,
        rollouts, groups filled out of band."""
        last = self.last
        generated = last["kept"] + last["dropped"] + last["filled"]
        return {"kept_fraction": last["kept"] / generated if generated else 1.0,
                "extra_rounds": float(last["extra_rounds"]), "rollouts": float(last["rollouts"]),
                "filled": float(last["filled"])}

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "counts": dict(self.counts), "last": dict(self.last)}

    def load_state_dict(self, state: Any) -> None:
        if not isinstance(state, dict) or state.get("kind") != self.kind:
            raise StateError(f"not a {self.kind} state_dict")
        try:
            counts = {k: int(state["counts"][k]) for k in COUNTERS}
            last = {k: int(state["last"][k]) for k in COUNTERS}
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"malformed {self.kind} state_dict: {e!r}") from None
        self.counts, self.last = counts, last

    def __repr__(self) -> str:
        b = self.band
        return f"DynamicSampling(low={b.low}, high={b.high}, closed={b.closed!r}, max_extra_rounds={self.max_extra_rounds})"
