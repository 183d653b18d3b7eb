"""Loss-driven mixtures and weights: DoReMi, Skill-it and per-sample loss reweighting.

    >>> from cadence.curricula import Arms, DoReMi
    >>> arms = Arms(["web", "code"])                 # item 0 is web, item 1 is code
    >>> arms.names
    ['code', 'web']
    >>> policy = DoReMi(arms, reference=[2.0, 2.0], eta=1.0, smoothing=0.0)
    >>> policy.observe([0, 1], loss=[3.0, 2.0])       # web has excess loss 1, code 0
    >>> policy.probabilities().round(3).tolist()
    [0.269, 0.731]
"""

from __future__ import annotations

from typing import Any, Hashable, Literal, Mapping

import numpy as np
import torch

from cadence.clock import Clock
from cadence.curricula.arms import Arms
from cadence.curricula.base import Policy, active_mask, all_finite, arm_means, as_signal, per_arm, saturate, softmax
from cadence.curricula.distributed import gather_values, world
from cadence.errors import CadenceError
from cadence.schedules.base import Schedule, as_schedule
from cadence.schedules.basic import Constant


class DoReMi(Policy):
    """DoReMi excess-loss reweighting ("DoReMi: Optimizing Data Mixtures Speeds Up Language
    Model Pretraining", Xie et al., arXiv 2305.10429; the "doremiv1" update)::

        λ_j = mean over arm j's items in the batch of max(loss − reference, 0)  (absent arms keep λ_j)
        log α' = log α + η·λ,  α' normalised;   α ← (1 − ε)·α' + ε/K;   ᾱ = running mean of α

    Args:
        reference: the reference model's loss, one value per item (array of ``len(arms)``) or per
            arm (mapping or sequence); ``loss`` passed to ``observe`` is the proxy's loss.
        eta, smoothing: η (default 1.0) and ε (default 1e-3), the Pile script's values.
        sampling: ``"alpha"`` (default) draws with the current α (online mixing); ``"baseline"``
            draws with ``baseline`` weights as in the paper's proxy run, where the loss is weighted
            instead (:meth:`loss_weights`). The output mixture is :meth:`average`.

    The initial α is uniform over arms with items (UNCONFIRMED in the paper; the code starts from
    the configured domain weights, pass ``initial=`` for that).
    """

    name = "doremi"
    requires = frozenset({"loss"})
    _state = ("alpha", "alpha_sum", "excess", "steps")

    def __init__(self, arms: Arms, reference: Any, *, eta: float = 1.0, smoothing: float = 1e-3,
                 initial: Mapping[Hashable, float] | Any = None, sampling: Literal["alpha", "baseline"] = "alpha",
                 baseline: Mapping[Hashable, float] | Any = None, seed: int = 0, clock: Clock | None = None) -> None:
        if not np.isfinite(eta) or eta <= 0:
            raise CadenceError(f"eta must be positive, got {eta!r}")
        if not 0 <= smoothing <= 1:
            raise CadenceError(f"smoothing must lie in [0, 1], got {smoothing!r}")
        if sampling not in ("alpha", "baseline"):
            raise CadenceError(f"sampling must be 'alpha' or 'baseline', got {sampling!r}")
        super().__init__(arms, seed=seed, clock=clock)
        self.eta, self.smoothing, self.sampling = float(eta), float(smoothing), sampling
        ref = np.asarray(reference if not isinstance(reference, Mapping) else per_arm(arms, reference, "reference"),
                         dtype=np.float64)
        if ref.shape == (arms.num_items,):
            self.reference = ref
        elif ref.shape == (arms.num_arms,):
            self.reference = ref[arms.item_arm]
        else:
            raise CadenceError(f"reference must have one loss per item ({arms.num_items}) or per arm "
                               f"({arms.num_arms}), got shape {ref.shape}")
        if not np.all(np.isfinite(self.reference)):
            raise CadenceError("reference losses must be finite")
        active = arms.active.astype(np.float64)
        self.alpha = self._weights(initial, "initial") if initial is not None else active / active.sum()
        self.baseline = self._weights(baseline, "baseline") if baseline is not None else active / active.sum()
        self.alpha_sum = np.zeros(arms.num_arms)
        self.excess = np.zeros(arms.num_arms)
        self.steps = 0

    def _weights(self, values: Any, what: str) -> np.ndarray:
        w = np.asarray(per_arm(self.arms, values, what), dtype=np.float64) * self.arms.active
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise CadenceError(f"{what} weights must be non-negative with a positive sum, got {w.tolist()}")
        return w / w.sum()

    def _update(self, ids: np.ndarray, arm: np.ndarray, signals: dict[str, np.ndarray], counts: np.ndarray) -> None:
        active, mask = self.arms.active, active_mask(self.arms)
        # loss − reference and η·λ saturate at the float maximum; α_j = 0 (no smoothing) is log 0 = −inf
        with np.errstate(over="ignore", divide="ignore"):
            gap = signals["loss"] - self.reference[ids]
            if not all_finite(gap):
                gap = saturate(gap)
            excess = arm_means(arm, np.maximum(gap, 0.0), counts)
            self.excess = np.where(counts > 0, excess, self.excess)
            step = self.eta * self.excess
            if not all_finite(step):
                step = saturate(step)
            log_alpha = np.log(self.alpha if mask is None else np.where(active, self.alpha, 1.0)) + step
        alpha = softmax(log_alpha, 1.0, mask)
        self.alpha = (1 - self.smoothing) * alpha + self.smoothing * active / active.sum()
        self.alpha_sum += self.alpha
        self.steps += 1

    def average(self) -> np.ndarray:
        """ᾱ, the time-averaged α: DoReMi's output mixture (α itself before the first update)."""
        return self.alpha_sum / self.steps if self.steps else self.alpha.copy()

    def loss_weights(self, item_ids: Any) -> np.ndarray:
        """Per-item loss weights ``α_arm / s_arm`` (``s``: the sampling distribution); use them as
        ``(w * loss).sum() / w.sum()``."""
        arm = self.arms.arm_of(item_ids)
        return self.alpha[arm] / self.probabilities()[arm]

    def _arm_weights(self) -> np.ndarray:
        return self.alpha if self.sampling == "alpha" else self.baseline

    def scores(self) -> dict[str, np.ndarray]:
        return {"alpha": self.alpha, "average_alpha": self.average(), "excess_loss": self.excess}


class SkillIt(Policy):
    """Skill-it online mixture ("Skill-it! A Data-Driven Skills Framework for Understanding and
    Training Language Models", Chen et al., arXiv 2307.14430)::

        p ∝ prior ⊙ exp(η · A · Σ_{last w rounds} L_τ),   initially p ∝ prior ⊙ exp(η · A · 1)

    ``A`` is the skills graph (``k`` training skills = arms × ``m`` evaluation skills; ``A_ij > 0``
    if training on i helps j; entries must be finite and non-negative). Pass it as a dense array,
    as a ``scipy.sparse`` matrix (kept sparse: with ~10 edges per skill an update over 1,000
    skills costs a sparse product instead of a dense one), or as edges
    ``{(source arm, target arm): w}`` on top of a unit diagonal (stored sparse).

    Each :meth:`observe` (per-item validation losses; evaluation skill = the item's arm, so
    ``m = k``) or :meth:`observe_eval` (a vector of ``m`` losses) call is one round. An evaluation
    skill absent from a round keeps its last loss (0 before any). ``normalize_loss`` divides by
    the first round's losses.
    """

    name = "skillit"
    requires = frozenset({"loss"})
    _state = ("history", "rounds", "last_loss", "first_loss")

    def __init__(self, arms: Arms, graph: Any, *, eta: float = 0.5, window: int = 3, normalize_loss: bool = False,
                 prior: Mapping[Hashable, float] | Any = None, seed: int = 0, clock: Clock | None = None) -> None:
        if not np.isfinite(eta) or eta <= 0:
            raise CadenceError(f"eta must be positive, got {eta!r}")
        if not isinstance(window, int) or window < 1:
            raise CadenceError(f"window must be a positive integer, got {window!r}")
        super().__init__(arms, seed=seed, clock=clock)
        self.graph = self._graph(graph)
        self.eta, self.window, self.normalize_loss = float(eta), window, normalize_loss
        m = self.graph.shape[1]
        self.prior = (np.ones(arms.num_arms) if prior is None
                      else np.asarray(per_arm(arms, prior, "prior"), dtype=np.float64))
        if not np.all(np.isfinite(self.prior)) or np.any(self.prior < 0):
            raise CadenceError("prior must be non-negative and finite")
        self._mask = arms.active & (self.prior > 0)
        self.history = np.zeros((window, m))
        self.rounds = 0
        self.last_loss = np.zeros(m)
        self.first_loss = np.ones(m)
        self._weights_cache: np.ndarray | None = None

    def _graph(self, graph: Any) -> Any:
        """The skills graph, checked (one row per arm, finite and non-negative entries): a dense
        array as given, or a CSR sparse array for scipy.sparse input and ``{(src, dst): w}`` edges."""
        import scipy.sparse

        k = self.arms.num_arms
        if isinstance(graph, Mapping):
            edges = {(i, i): 1.0 for i in range(k)}          # the diagonal is 1 unless an edge says otherwise
            for edge, weight in graph.items():
                if not (isinstance(edge, tuple) and len(edge) == 2):
                    raise CadenceError(f"skills graph edges are keyed (source arm, target arm), got {edge!r}")
                src, dst = self.arms.index(edge[0]), self.arms.index(edge[1])    # raises naming an unknown arm
                try:
                    edges[src, dst] = float(weight)
                except (TypeError, ValueError):
                    raise CadenceError(f"skills graph edge {edge!r} has weight {weight!r}, not a number") from None
            (rows, cols), weights = zip(*edges), list(edges.values())
            graph = scipy.sparse.coo_array((weights, (rows, cols)), shape=(k, k))
        sparse = scipy.sparse.issparse(graph)
        try:
            a = (scipy.sparse.csr_array(graph, dtype=np.float64, copy=True) if sparse   # our own copy
                 else np.array(graph, dtype=np.float64))
        except (TypeError, ValueError) as e:
            raise CadenceError(f"skills graph must be a 2-D array, a scipy.sparse matrix or a mapping "
                               f"{{(source arm, target arm): weight}}: {e}") from None
        if a.ndim != 2 or a.shape[0] != k or a.shape[1] < 1:
            raise CadenceError(f"skills graph must have one row per arm ({k}) and at least one column, "
                               f"got shape {a.shape}")
        if sparse:
            a.sum_duplicates()
            entries = a.tocoo()
            values, where = entries.data, (entries.row, entries.col)
        else:
            values, where = a.reshape(-1), None
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            i, j = (int(where[0][first]), int(where[1][first])) if sparse else divmod(first, a.shape[1])
            target = f" → {self.arms.names[j]!r}" if a.shape[1] == k else f", evaluation skill {j}"
            raise CadenceError(f"skills graph entry [{i}, {j}] (arm {self.arms.names[i]!r}{target}) is "
                               f"{float(values[first])}; entries must be finite and non-negative")
        return a

    def _update(self, ids: np.ndarray, arm: np.ndarray, signals: dict[str, np.ndarray], counts: np.ndarray) -> None:
        if self.graph.shape[1] != self.arms.num_arms:
            raise CadenceError(f"observe() maps items to evaluation skills by arm, but the graph has "
                               f"{self.graph.shape[1]} evaluation skills for {self.arms.num_arms} arms; "
                               f"use observe_eval(losses)")
        mean = arm_means(arm, signals["loss"], counts)
        self._round(np.where(counts > 0, mean, self.last_loss))

    def observe_eval(self, losses: Any) -> None:
        """One round with a validation loss per evaluation skill (graph column)."""
        loss = as_signal("loss", losses)  # CadenceError for text; None reads as NaN (a missing value)
        if loss.shape != (self.graph.shape[1],):
            raise CadenceError(f"expected {self.graph.shape[1]} evaluation losses, got {loss.shape[0]}")
        if not np.all(np.isfinite(loss)):
            self.dropped["loss"] += int((~np.isfinite(loss)).sum())
            loss = np.where(np.isfinite(loss), loss, self.last_loss)
        self._round(loss)

    def _after_load(self) -> None:
        self._weights_cache = None

    def _round(self, loss: np.ndarray) -> None:
        self._weights_cache = None
        if self.rounds == 0:
            self.first_loss = np.where(loss > 0, loss, 1.0)
        self.history[self.rounds % self.window] = loss
        self.last_loss = loss.copy()
        self.rounds += 1

    def _arm_weights(self) -> np.ndarray:
        if self._weights_cache is None:
            self._weights_cache = self._mixture()
        return self._weights_cache

    def _mixture(self) -> np.ndarray:
        if self.rounds == 0:
            total = np.ones(self.graph.shape[1])
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                total = self.history[:min(self.rounds, self.window)].sum(axis=0)
                if self.normalize_loss:
                    total = total / self.first_loss
        with np.errstate(over="ignore", invalid="ignore"):
            z = self.graph @ total
            z *= self.eta
        if not all_finite(z):                        # losses near the float maximum overflowed
            z = self._saturated_signal()
        return softmax(z, 1.0, self._mask, normalize=False) * self.prior

    def _saturated_signal(self) -> np.ndarray:
        """``η · A · Σ L`` with every sum and product saturating at ±the float maximum (positive and
        negative parts summed apart, so no inf − inf): finite for any finite losses, and equal to the
        plain computation wherever that does not overflow."""
        def split_sum(parts: Any) -> np.ndarray:     # Σ over the first axis (or A @ v), saturating
            pos, neg = parts(np.maximum), parts(np.minimum)
            return saturate(pos) + saturate(neg)     # finite terms of opposite signs: no overflow

        history = self.history[:min(self.rounds, self.window)]
        with np.errstate(over="ignore"):
            total = split_sum(lambda f: f(history, 0.0).sum(axis=0))
            if self.normalize_loss:
                total = saturate(total / self.first_loss)
            z = split_sum(lambda f: self.graph @ f(total, 0.0))
            return saturate(z * self.eta)

    def scores(self) -> dict[str, np.ndarray]:
        return {"graph_signal": self.graph @ self.history.sum(axis=0)}


def loss_weights(losses: np.ndarray, strategy: str = "linupper", temperature: float = 1.0,
                 delta: float = 1.0) -> np.ndarray:
    """Per-sample weights from batch losses ("Dynamic Loss-Based Sample Reweighting for Improved
    Large Language Model Pretraining", Sow et al., arXiv 2502.06733); they sum to 1.

    ``ℓ̃ = 2δ(ℓ − ℓ_min)/max(ℓ_max − ℓ_min, 1e-6) − δ``; score ``linupper: min(ℓ̃ + δ, δ)``,
    ``quadratic: 1 − ℓ̃²/δ²``, ``extremes: |ℓ̃|``, ``uniform: 0``; ``w = softmax(score / r)``.

        >>> loss_weights(np.array([1.0, 3.0]), "linupper", temperature=1.0).round(3).tolist()
        [0.269, 0.731]
    """
    if strategy not in STRATEGIES:
        raise CadenceError(f"unknown reweighting strategy {strategy!r}; choose from {sorted(STRATEGIES)}")
    if not np.isfinite(temperature) or temperature <= 0:
        raise CadenceError(f"temperature must be positive, got {temperature!r}")
    loss = np.asarray(losses, dtype=np.float64)
    if loss.size == 0:
        return loss
    low = loss.min()
    with np.errstate(over="ignore"):
        span = max(loss.max() - low, 1e-6)
        wide = not np.isfinite(2 * delta * span)
    if wide:                                         # losses near the float maximum: ℓ̃ is scale-free
        scale = float(np.abs(loss).max())
        loss, low = loss / scale, low / scale
        span = max(loss.max() - low, 1e-6 / scale)
    norm = 2 * delta * (loss - low) / span - delta
    return softmax(STRATEGIES[strategy](norm, delta), temperature)


STRATEGIES = {
    "linupper": lambda x, d: np.minimum(x + d, d),
    "quadratic": lambda x, d: 1 - x ** 2 / d ** 2,
    "extremes": lambda x, d: np.abs(x),
    "uniform": lambda x, d: np.zeros_like(x),
}


class LossReweighting(Policy):
    """Per-sample loss-based reweighting (Sow et al., ICLR 2025, arXiv 2502.06733). Sampling is uniform over
    items; the policy turns a batch's per-sample losses into weights for the loss.

    ``temperature`` (``r``) may be a cadence schedule read at ``clock`` (large early, smaller later:
    the paper's values are UNCONFIRMED, so no default schedule is imposed). Under
    torch.distributed, :meth:`weighted_loss` gathers the losses of all ranks first.
    """

    name = "loss_reweighting"
    requires = frozenset({"loss"})
    _state = ("mean_weight", "mean_loss")

    def __init__(self, arms: Arms, *, strategy: str = "linupper", temperature: float | str | Schedule = 1.0,
                 delta: float = 1.0, seed: int = 0, clock: Clock | None = None) -> None:
        if strategy not in STRATEGIES:
            raise CadenceError(f"unknown reweighting strategy {strategy!r}; choose from {sorted(STRATEGIES)}")
        if not np.isfinite(delta) or delta <= 0:
            raise CadenceError(f"delta must be positive, got {delta!r}")
        super().__init__(arms, seed=seed, clock=clock)
        self.strategy, self.delta = strategy, float(delta)
        self.temperature = as_schedule(temperature)
        if not isinstance(self.temperature, Constant):
            if clock is None:
                raise CadenceError("a scheduled temperature needs clock=Clock(...)")
            clock.check([self.temperature])
            clock.watch([self.temperature])
        self.mean_weight = np.zeros(arms.num_arms)
        self.mean_loss = np.zeros(arms.num_arms)

    def current_temperature(self) -> float:
        """``r`` now."""
        if isinstance(self.temperature, Constant):
            return self.temperature.level
        return float(self.temperature(self.clock))

    def weights(self, losses: Any) -> np.ndarray:
        """Weights (summing to 1) for a whole global batch of per-sample losses."""
        loss = np.asarray(losses.detach().cpu() if hasattr(losses, "detach") else losses, dtype=np.float64)
        if not np.all(np.isfinite(loss)):
            raise CadenceError("losses passed to weights() must be finite")
        return loss_weights(loss, self.strategy, self.current_temperature(), self.delta)

    def weighted_loss(self, per_sample_loss: Any) -> Any:
        """``world_size · Σ_local w_i·ℓ_i`` for a torch tensor of this rank's per-sample losses,
        with weights computed over the global batch (gathered across ranks)."""
        size, rank = world()
        local = per_sample_loss.detach().double().cpu().numpy().reshape(-1)
        everything, counts = gather_values(local)
        start = int(np.sum(counts[:rank]))
        w = self.weights(everything)[start:start + len(local)]
        return size * (torch.as_tensor(w, dtype=per_sample_loss.dtype, device=per_sample_loss.device)
                       * per_sample_loss.reshape(-1)).sum()

    def _update(self, ids: np.ndarray, arm: np.ndarray, signals: dict[str, np.ndarray], counts: np.ndarray) -> None:
        w = loss_weights(signals["loss"], self.strategy, self.current_temperature(), self.delta) * len(ids)
        mean_w = arm_means(arm, w, counts)
        mean_l = arm_means(arm, signals["loss"], counts)
        seen = counts > 0
        self.mean_weight = np.where(seen, mean_w, self.mean_weight)
        self.mean_loss = np.where(seen, mean_l, self.mean_loss)

    def _arm_weights(self) -> np.ndarray:
        return self.arms.sizes.astype(np.float64)

    def scores(self) -> dict[str, np.ndarray]:
        return {"mean_weight": self.mean_weight, "mean_loss": self.mean_loss}
