"""HPT's per-prompt gate: RL on the prompts the model sometimes solves, SFT on the demonstration of
the ones it cannot ("Towards a Unified View of Large Language Model Post-Training", Hybrid
Post-Training, arXiv 2509.04419).

Each prompt gets a group of G rollouts; ``s`` of them are correct. With thresholds γ (``sft_gate``)
and γ_off (``off_policy_gate``, ≥ γ), the released code's "switch" rule is

* ``s ≤ γ`` → ``"sft"``: drop the rollouts, train the prompt's demonstration with the SFT loss;
* ``γ < s ≤ γ_off`` → ``"off_policy"``: drop the rollouts, train the demonstration as an
  off-policy RL sample;
* ``s > γ_off`` → ``"rl"``: keep the rollouts, GRPO only.

The loss is ``PG loss + sft_coef · SFT loss`` (token NLL on the demonstration's tokens). Defaults
are the code's for Qwen2.5-Math-7B: γ = γ_off = 0 (SFT only when all G are wrong), ``sft_coef`` = 1
(its Llama-3.1-8B script uses γ = γ_off = 2; Qwen2.5-Math-1.5B ``sft_coef`` = 0.3). γ counts correct
rollouts of the group, as in the code; whether the paper states it as a count or as a pass-rate
fraction is UNCONFIRMED, so :meth:`HybridGate.route` scales it to other group sizes by the pass rate
``s/G`` against ``γ/group``.

    >>> gate = HybridGate(sft_gate=2, off_policy_gate=4, group=8)
    >>> counts = [0, 2, 3, 4, 5, 8]                       # correct answers in six groups of 8
    >>> correct = np.concatenate([np.arange(8) < s for s in counts])
    >>> gate.names(gate.route(correct, np.full(6, 8)))
    ['sft', 'sft', 'off_policy', 'off_policy', 'rl', 'rl']
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from cadence.errors import CadenceError, SpecError, StateError
from cadence.rl.predictive import group_pass_rates
from cadence.state import plain

SFT, OFF_POLICY, RL = 0, 1, 2
ROUTES = ("sft", "off_policy", "rl")
"""Route names by code: what a prompt's group trains on."""


def _count(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise SpecError(f"HybridGate {name} must be a non-negative integer (correct answers out of the group), "
                        f"got {v!r}")
    return int(v)


class HybridGate:
    """HPT's switch between RL and SFT per prompt, from its group's pass rate.

    Args:
        sft_gate: γ, SFT on the demonstration when at most this many of ``group`` answers are correct.
        off_policy_gate: γ_off ≥ γ, the demonstration as an off-policy RL sample up to this many
            correct; default γ (no off-policy band).
        sft_coef: weight of the SFT loss next to the policy-gradient loss.
        group: the group size the gates count in (8 in the paper's runs).
    """

    kind = "hpt"

    def __init__(self, sft_gate: int = 0, off_policy_gate: int | None = None, *, sft_coef: float = 1.0,
                 group: int = 8) -> None:
        self.sft_gate = _count(sft_gate, "sft_gate")
        self.off_policy_gate = self.sft_gate if off_policy_gate is None else _count(off_policy_gate, "off_policy_gate")
        if isinstance(group, bool) or not isinstance(group, (int, np.integer)) or group < 1:
            raise SpecError(f"HybridGate group must be a positive integer, got {group!r}")
        self.group = int(group)
        if not self.sft_gate <= self.off_policy_gate <= self.group:
            raise SpecError(f"HybridGate needs sft_gate <= off_policy_gate <= group, got {self.sft_gate}, "
                            f"{self.off_policy_gate}, {self.group}")
        if isinstance(sft_coef, bool) or not isinstance(sft_coef, (int, float)) or not np.isfinite(sft_coef) \
                or sft_coef < 0:
            raise SpecError(f"HybridGate sft_coef must be a finite number >= 0, got {sft_coef!r}")
        self.sft_coef = float(sft_coef)
        self.counts = np.zeros(len(ROUTES), dtype=np.int64)

    def route(self, correct: Any, sizes: Any) -> np.ndarray:
        """One route code per group (:data:`SFT`, :data:`OFF_POLICY`, :data:`RL`); ``correct`` has one
        value per rollout (groups consecutive, ``sizes[i]`` rows each). Counts the decisions."""
        sizes = np.asarray(sizes)
        if sizes.ndim != 1 or not np.issubdtype(sizes.dtype, np.integer) or np.any(sizes < 1):
            raise CadenceError(f"HybridGate.route needs positive integer group sizes, got {sizes!r}")
        _, rates = group_pass_rates(np.repeat(np.arange(len(sizes)), sizes), correct)
        # s <= γ with s = rate·G, read as a pass rate against γ/group (exact for groups of `group`)
        tol = 1e-9
        routes = np.where(rates <= self.sft_gate / self.group + tol, SFT,
                          np.where(rates <= self.off_policy_gate / self.group + tol, OFF_POLICY, RL)).astype(np.int8)
        self.counts += np.bincount(routes, minlength=len(ROUTES))
        return routes

    @staticmethod
    def names(routes: np.ndarray) -> list[str]:
        """Route names of route codes."""
        return [ROUTES[int(r)] for r in routes]

    def stats(self) -> dict[str, int]:
        """Groups routed to each route so far."""
        return {name: int(n) for name, n in zip(ROUTES, self.counts)}

    # ------------------------------------------------------------------ spec and state
    def to_dict(self) -> dict[str, Any]:
        """The constructor's arguments as plain data (:meth:`from_dict` rebuilds the gate)."""
        return {"kind": self.kind, "sft_gate": self.sft_gate, "off_policy_gate": self.off_policy_gate,
                "sft_coef": self.sft_coef, "group": self.group}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HybridGate:
        """Build from :meth:`to_dict` output (``kind`` optional); unknown fields are an error."""
        fields = {"sft_gate", "off_policy_gate", "sft_coef", "group"}
        if not isinstance(d, Mapping) or d.get("kind", cls.kind) != cls.kind or set(d) - fields - {"kind"}:
            raise SpecError(f"an HPT gate spec has fields kind='hpt', {', '.join(sorted(fields))}; got {d!r}")
        return cls(**{k: v for k, v in d.items() if k != "kind"})

    def state_dict(self) -> dict[str, Any]:
        """The decision counts (plain data) and the spec they were counted under."""
        return {"kind": "cadence.HybridGate", "spec": self.to_dict(), "counts": plain(self.counts)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; foreign state raises :class:`StateError`, changing nothing."""
        if not isinstance(state, Mapping) or state.get("kind") != "cadence.HybridGate":
            raise StateError("not a HybridGate state_dict (kind='cadence.HybridGate')")
        if state.get("spec") != self.to_dict():
            raise StateError(f"this gate state was saved for {state.get('spec')!r}, this gate is {self.to_dict()!r}")
        counts = np.asarray(state.get("counts"))
        if counts.shape != (len(ROUTES),) or not np.issubdtype(counts.dtype, np.integer) or np.any(counts < 0):
            raise StateError(f"malformed HybridGate counts {state.get('counts')!r}")
        self.counts = counts.astype(np.int64)


__all__ = ["HybridGate", "ROUTES", "SFT", "OFF_POLICY", "RL"]
