"""How an RL step chooses the prompt groups it trains on — one framework-free loop that the RL lab,
the TRL adapter and the verl adapter share.

:class:`PromptSelector` draws prompts from a curriculum (any :mod:`cadence.curricula` policy, through
its :class:`~cadence.curricula.CurriculumSampler`); an optional :class:`~cadence.rl.PredictiveFilter`
skips prompts predicted to give zero-variance groups before anything is generated; the host rolls the
prompts out (a callback); every rollout's signals go back to the curriculum and the filter; optional
:class:`~cadence.rl.DynamicSampling` keeps only in-band groups and asks for more prompts until the
batch is full or its bound on extra rounds is hit. :meth:`PromptSelector.select` returns which
groups of which round form the batch; the host assembles its own tensors from them.

Three more parts compose in the same loop: :class:`~cadence.rl.PCL` (``pcl=``) draws ``k`` times the
prompts wanted and keeps those its value model predicts nearest the target pass rate;
:class:`~cadence.rl.ReplayBuffer` (``replay=``, with dynamic sampling) fills dropped groups' places
from recent groups with non-zero advantage instead of generating again; :class:`~cadence.rl.Hints`
(``hints=``) re-rolls plateaued all-wrong groups with guidance through a second callback
(``select(n, rollout, hinted=...)``), the lowest tier that yields a correct answer replacing the group.

The rollout callback takes prompt ids and returns a mapping of per-rollout arrays (rollouts grouped
by prompt, in the order of the ids): any of ``correct``, ``reward``, ``advantage``, ``length``,
``loss``, and optionally ``sizes`` (rollouts per prompt; default: equal groups) and ``replay`` (one
payload per prompt, the host's data to train on if the group is replayed; needed with ``replay=``).
``correct`` is required with a filter, dynamic sampling, PCL or hints; ``advantage`` with replay.

    >>> from cadence.curricula import Arms, Uniform
    >>> selector = PromptSelector(Uniform(Arms(["a"] * 8), seed=0), dynamic=DynamicSampling(), seed=0)
    >>> def rollout(ids):                      # prompt 0..3 always right, 4..7 right half of the time
    ...     return {"correct": np.array([[1, 1] if i < 4 else [1, 0] for i in ids]).reshape(-1)}
    >>> picks = selector.select(4, rollout)
    >>> bool(np.all(picks.ids >= 4)), picks.rollouts >= 8
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from cadence.curricula.base import SIGNALS, Policy, as_signal
from cadence.curricula.sampler import CurriculumSampler, SamplerExhausted
from cadence.errors import CadenceError, StateError
from cadence.rl.dynamic import DynamicSampling
from cadence.rl.hints import Hints
from cadence.rl.pcl import PCL
from cadence.rl.predictive import PredictiveFilter
from cadence.rl.replay import ReplayBuffer

PARTS = ("predictive", "dynamic", "pcl", "replay", "hints")
"""The optional parts of a selector, in the order their state loads."""

Rollout = Callable[[np.ndarray], Mapping[str, Any]]
"""Generate and score for prompt ids; returns per-rollout signal arrays (see the module docs)."""

HintedRollout = Callable[[np.ndarray, np.ndarray], Mapping[str, Any]]
"""Generate and score for prompt ids with guidance of the given tiers (1 = least); as :data:`Rollout`."""


@dataclass(frozen=True)
class Picks:
    """The outcome of :meth:`PromptSelector.select`.

    ``rounds``: the prompt ids generated for in each round; ``chosen``: ``(round, position)`` of each
    group of the batch, in batch order; ``ids``: their prompt ids; ``pass_rates``: their pass rates
    (NaN without ``correct``); ``rollouts``: rollouts generated in all rounds (kept or not);
    ``filled``: groups taken out of band because the bound on extra rounds was hit; ``levels``: the
    guidance tier of each round (0: none); ``replayed``: the payloads of groups taken from the replay
    buffer (trained on after the chosen ones), ``replayed_ids`` their prompts."""

    rounds: list[np.ndarray]
    chosen: list[tuple[int, int]]
    ids: np.ndarray
    pass_rates: np.ndarray
    rollouts: int
    filled: int
    levels: list[int] | None = None
    replayed: list[Any] | None = None
    replayed_ids: np.ndarray | None = None


class PromptSelector:
    """A curriculum, an optional predictive filter and optional dynamic sampling, as one step's prompt choice.

    Args:
        source: a :class:`~cadence.curricula.CurriculumSampler` (its RNG, replacement rule and policy)
            or a policy (then drawn with replacement by a sampler seeded with ``seed``).
        predictive: skip prompts before rollout (GRESO).
        dynamic: keep in-band groups only and refill.
        round_multiple: every refill round asks for a multiple of this many prompts (a host whose
            processes must generate equal shares sets it; surplus groups are dropped).
        max_candidates: the predictive filter may look at up to this many candidates per prompt
            wanted; past that, skipped prompts are generated anyway (counted in ``forced``).
        pcl: choose among ``pcl.pool`` times the prompts wanted by predicted pass rate (PCL).
        replay: fill dropped groups' places from a buffer of non-zero-advantage groups (needs ``dynamic``).
        hints: re-roll plateaued all-wrong groups with guidance (Scaf-GRPO / GHPO).
        seed: seed of the sampler built for a bare policy.
    """

    kind = "cadence.PromptSelector"

    def __init__(self, source: CurriculumSampler | Policy, *, predictive: PredictiveFilter | None = None,
                 dynamic: DynamicSampling | None = None, round_multiple: int = 1, max_candidates: int = 8,
                 pcl: PCL | None = None, replay: ReplayBuffer | None = None, hints: Hints | None = None,
                 seed: int = 0) -> None:
        if isinstance(source, Policy):
            source = CurriculumSampler(source, batch_size=1, num_replicas=1, seed=seed)
        if not isinstance(source, CurriculumSampler) and not all(
                hasattr(source, a) for a in ("next_batch", "policy", "num_replicas", "state_dict", "load_state_dict")):
            # (or a sampler that delegates to curriculum samplers, such as the regimen's StageSampler)
            raise CadenceError(f"PromptSelector needs a curriculum policy or CurriculumSampler, got {type(source).__name__}")
        if source.num_replicas != 1:
            raise CadenceError("build the CurriculumSampler with num_replicas=1: every process draws the same prompts")
        if predictive is not None and predictive.num_items != source.policy.arms.num_items:
            raise CadenceError(f"the predictive filter covers {predictive.num_items} prompts, the curriculum "
                               f"{source.policy.arms.num_items}")
        if replay is not None and dynamic is None:
            raise CadenceError("replay fills the places of groups dynamic sampling drops: pass dynamic=DynamicSampling() "
                               "too")
        if hints is not None and hints.num_items != source.policy.arms.num_items:
            raise CadenceError(f"the hints cover {hints.num_items} prompts, the curriculum {source.policy.arms.num_items}")
        for name, part, cls in (("pcl", pcl, PCL), ("replay", replay, ReplayBuffer), ("hints", hints, Hints)):
            if part is not None and not isinstance(part, cls):
                raise CadenceError(f"{name}= takes a cadence.rl.{cls.__name__}, got {type(part).__name__}")
        if round_multiple < 1 or max_candidates < 1:
            raise CadenceError(f"round_multiple and max_candidates must be >= 1, got {round_multiple}, {max_candidates}")
        self.sampler = source
        self.predictive, self.dynamic = predictive, dynamic
        self.pcl, self.replay, self.hints = pcl, replay, hints
        self.round_multiple, self.max_candidates = int(round_multiple), int(max_candidates)
        self.forced = 0       # prompts generated although the filter skipped them (candidates ran out)
        self.repeated = 0     # prompts put twice in one batch because no other could be drawn

    @property
    def policy(self) -> Any:
        """The curriculum policy the prompts are drawn by (a stage sampler's current stage's)."""
        return self.sampler.policy

    @property
    def needs_correct(self) -> bool:
        """Whether the rollouts must report ``correct`` (a filter, dynamic sampling or the policy needs it)."""
        return (any(p is not None for p in (self.predictive, self.dynamic, self.pcl, self.hints))
                or "correct" in self.policy.requires)

    # ------------------------------------------------------------------ drawing
    def draw(self, n: int, exclude: np.ndarray | None = None) -> np.ndarray:
        """``n`` distinct prompt ids, none in ``exclude``, admitted by the predictive filter (if any);
        with PCL, the ``n`` predicted nearest its target among ``pcl.pool × n`` such candidates.
        When the pool cannot supply that, repeats (counted in ``repeated``) or skipped prompts
        (counted in ``forced``) complete the draw."""
        if self.pcl is None or n < 1:
            return self._draw(n, exclude)
        candidates = self._draw(self.pcl.pool * n, exclude)
        distinct = np.asarray(list(dict.fromkeys(candidates.tolist())), dtype=np.int64)
        chosen = self.pcl.choose(distinct, n)
        if len(chosen) < n:                     # fewer distinct prompts than wanted: the draw's repeats complete it
            chosen = np.concatenate([chosen, candidates[len(distinct):][:n - len(chosen)]])
        return chosen

    def _draw(self, n: int, exclude: np.ndarray | None = None) -> np.ndarray:
        taken: list[int] = []
        banned = set() if exclude is None else {int(i) for i in exclude}
        skipped: list[int] = []
        looked = 0
        while len(taken) < n and looked < self.max_candidates * max(n, 1):
            want = n - len(taken)
            try:
                ids = self.sampler.next_batch(want)
            except SamplerExhausted:            # without replacement: the epoch ended, the next one starts
                ids = self.sampler.next_batch(want)
            looked += len(ids)
            fresh = [int(i) for i in ids if int(i) not in banned]
            fresh = list(dict.fromkeys(fresh))                      # distinct, in draw order
            if self.predictive is not None and fresh:
                admit = self.predictive.admit(np.asarray(fresh, dtype=np.int64))
                skipped += [i for i, a in zip(fresh, admit) if not a]
                fresh = [i for i, a in zip(fresh, admit) if a]
            taken += fresh[:want]
            banned.update(fresh[:want])
        short = n - len(taken)
        if short:
            spare = [i for i in dict.fromkeys(skipped) if i not in banned][:short]
            self.forced += len(spare)
            taken += spare
            short = n - len(taken)
        if short:  # the pool is exhausted: complete with repeats
            self.repeated += short
            taken += [int(i) for i in self.sampler.next_batch(short)]
        return np.asarray(taken, dtype=np.int64)

    # ------------------------------------------------------------------ one step
    def select(self, n: int, rollout: Rollout, hinted: HintedRollout | None = None) -> Picks:
        """Choose ``n`` prompt groups for one step: draw, roll out, observe, (with hints) re-roll
        plateaued all-wrong groups with guidance, and (with dynamic sampling) keep in-band groups,
        replay stored ones in the places of dropped ones, and refill. Every plain rollout's signals
        reach the curriculum (guided ones do not: they do not measure the prompt's difficulty)."""
        if n < 1:
            raise CadenceError(f"a batch needs at least one prompt, got {n}")
        if self.hints is not None and hinted is None:
            raise CadenceError("a selector with hints needs hinted=: a callback generating for prompt ids with "
                               "guidance of the given tiers")
        rounds: list[np.ndarray] = []
        rates: list[np.ndarray] = []
        generated: list[np.ndarray] = []   # per round, whether each prompt got rollouts
        levels: list[int] = []
        kept: list[tuple[int, int]] = []
        spare: list[tuple[int, int]] = []
        replayed: list[Any] = []
        rollouts, plain_rounds, plain_groups = 0, 0, 0
        want = n
        while True:
            taken = [rounds[r][i] for r, i in kept] + [e.item for e in replayed]
            ids = self.draw(want, exclude=np.array(taken, dtype=np.int64))
            sizes, signals = self._rollout(ids, rollout, payloads=self.replay is not None)
            rollouts += int(sizes.sum())
            rate = self._observe(ids, sizes, signals)
            r = len(rounds)
            rounds.append(ids)
            rates.append(rate)
            generated.append(sizes > 0)
            levels.append(0)
            plain_rounds += 1
            plain_groups += len(ids)
            slots = [(r, i) for i in range(len(ids))]      # where each group of this round is taken from
            if self.replay is not None:
                self._remember(ids, sizes, signals)
            if self.hints is not None:
                rollouts += self._hint(ids, sizes, rate, hinted, slots, rounds, rates, generated, levels)
            if self.dynamic is None:
                kept = slots
                break
            rate = np.array([rates[a][b] for a, b in slots])
            made = np.array([generated[a][b] for a, b in slots], dtype=bool)
            inside = self.dynamic.band.contains(rate) & made
            for i in range(len(ids)):
                (kept if inside[i] and len(kept) + len(replayed) < n else spare).append(slots[i])
            if self.replay is not None and len(kept) + len(replayed) < n:
                seen = np.concatenate(rounds + [np.array([e.item for e in replayed], dtype=np.int64)])
                replayed += self.replay.draw(n - len(kept) - len(replayed), exclude=seen)
            if len(kept) + len(replayed) >= n or plain_rounds > self.dynamic.max_extra_rounds:
                break
            missing = n - len(kept) - len(replayed)
            want = -(-missing // self.round_multiple) * self.round_multiple
        filled = 0
        if self.dynamic is not None:
            if len(kept) + len(replayed) < n:
                spare_rates = np.array([rates[r][i] for r, i in spare])
                spare = [spare[j] for j in self.dynamic.fill_order(spare_rates)]
                usable = [(r, i) for r, i in spare if generated[r][i]]
                filled = min(n - len(kept) - len(replayed), len(usable))
                kept += usable[:filled]
            in_band = len(kept) - filled
            self.dynamic.record({"rounds": plain_rounds, "extra_rounds": plain_rounds - 1, "rollouts": rollouts,
                                 "kept": in_band, "dropped": plain_groups - in_band - filled,
                                 "filled": filled, "bound_hit": int(filled > 0)})
        if self.predictive is not None:
            self.predictive.adapt()
        ids = np.array([rounds[r][i] for r, i in kept], dtype=np.int64)
        pass_rates = np.array([rates[r][i] for r, i in kept], dtype=np.float64)
        return Picks(rounds, kept, ids, pass_rates, rollouts, filled, levels, [e.payload for e in replayed],
                     np.array([e.item for e in replayed], dtype=np.int64))

    def _remember(self, ids: np.ndarray, sizes: np.ndarray, signals: dict[str, Any]) -> None:
        """Store this round's groups with non-zero advantage in the replay buffer."""
        if "advantage" not in signals:
            raise CadenceError("replay needs the rollouts' 'advantage' (one per rollout)")
        starts = np.concatenate([[0], np.cumsum(sizes)])
        for i, item in enumerate(ids):
            adv = signals["advantage"][starts[i]:starts[i + 1]]
            if sizes[i] > 0 and np.all(np.isfinite(adv)):
                self.replay.add(int(item), adv, signals["replay"][i])

    def _hint(self, ids: np.ndarray, sizes: np.ndarray, rate: np.ndarray, hinted: HintedRollout,
              slots: list[tuple[int, int]], rounds: list[np.ndarray], rates: list[np.ndarray],
              generated: list[np.ndarray], levels: list[int]) -> int:
        """Re-roll the plateaued all-wrong groups of one round at tiers 1, 2, … until each yields a
        correct answer; the first group that does replaces it in ``slots``. Returns rollouts spent."""
        todo = np.flatnonzero(self.hints.observe(ids, rate) & (sizes > 0))
        spent = 0
        for level in range(1, self.hints.levels + 1):
            if not len(todo):
                break
            sub = ids[todo]
            got, signals = self._rollout(sub, lambda x, lv=level: hinted(x, np.full(len(x), lv, dtype=np.int64)))
            if "correct" not in signals:
                raise CadenceError("the hinted callback must return 'correct' (0/1 per rollout)")
            rate_h = self._rates(sub, got, signals["correct"])
            hit = rate_h > 0
            r = len(rounds)
            rounds.append(sub)
            rates.append(rate_h)
            generated.append(got > 0)
            levels.append(level)
            spent += int(got.sum())
            self.hints.record(level, int(hit.sum()), int(got.sum()), learnable=int((hit & (rate_h < 1)).sum()))
            for j in np.flatnonzero(hit):
                slots[todo[j]] = (r, int(j))
            todo = todo[~hit]
        return spent

    def _rollout(self, ids: np.ndarray, rollout: Rollout, *, payloads: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
        out = rollout(ids)
        if not isinstance(out, Mapping):
            raise CadenceError(f"the rollout callback must return a mapping of per-rollout arrays, got {type(out).__name__}")
        unknown = set(out) - set(SIGNALS) - {"sizes", "replay"}
        if unknown:
            raise CadenceError(f"the rollout callback returned unknown keys {sorted(unknown)}; use {SIGNALS}, 'sizes' "
                               f"and 'replay'")
        if payloads and (not isinstance(out.get("replay"), (list, tuple)) or len(out["replay"]) != len(ids)):
            raise CadenceError("with replay the rollout callback must return 'replay': a list with one payload per "
                               "prompt (what to train on if the group is replayed)")
        signals = {k: as_signal(k, v) for k, v in out.items() if k not in ("sizes", "replay") and v is not None}
        if not signals:
            raise CadenceError("the rollout callback returned no signals")
        rows = len(next(iter(signals.values())))
        if "sizes" in out and out["sizes"] is not None:
            sizes = np.asarray(out["sizes"], dtype=np.int64).reshape(-1)
        elif len(ids) and rows % len(ids) == 0:
            sizes = np.full(len(ids), rows // len(ids), dtype=np.int64)
        else:
            raise CadenceError(f"{rows} rollouts for {len(ids)} prompts: return 'sizes' for unequal groups")
        if sizes.shape != ids.shape or sizes.sum() != rows or np.any(sizes < 0):
            raise CadenceError(f"'sizes' must give each of the {len(ids)} prompts its number of rollouts, summing "
                               f"to {rows}")
        bad = [k for k, v in signals.items() if len(v) != rows]
        if bad:
            raise CadenceError(f"signals {bad} do not have one value per rollout ({rows})")
        if self.needs_correct and "correct" not in signals:
            raise CadenceError("the rollout callback must return 'correct' (0/1 per rollout): the predictive filter, "
                               "dynamic sampling, PCL, hints or the curriculum needs it")
        if payloads:
            signals["replay"] = list(out["replay"])
        return sizes, signals

    def _observe(self, ids: np.ndarray, sizes: np.ndarray, signals: dict[str, np.ndarray]) -> np.ndarray:
        """Feed the curriculum and the filter; returns each prompt's pass rate over its scored rollouts
        (NaN without any, e.g. no ``correct``; unscorable rollouts carry NaN and are left out)."""
        rows = np.repeat(ids, sizes)
        if len(rows):
            self.policy.observe(rows, **{k: v for k, v in signals.items() if k != "replay"})
        if "correct" not in signals:
            return np.full(len(ids), np.nan)
        correct = signals["correct"]
        scored = np.isfinite(correct)
        if scored.any() and self.predictive is not None:
            self.predictive.observe(rows[scored], correct[scored])
        if scored.any() and self.pcl is not None:
            self.pcl.observe(rows[scored], correct[scored])
        return self._rates(ids, sizes, correct)

    @staticmethod
    def _rates(ids: np.ndarray, sizes: np.ndarray, correct: np.ndarray) -> np.ndarray:
        """Each group's pass rate over its scored rollouts (NaN without any)."""
        scored = np.isfinite(correct)
        group = np.repeat(np.arange(len(ids)), sizes)[scored]
        wins = np.bincount(group, weights=correct[scored], minlength=len(ids))
        tries = np.bincount(group, minlength=len(ids))
        return np.divide(wins, tries, out=np.full(len(ids), np.nan), where=tries > 0)

    # ------------------------------------------------------------------ logs and state
    def values(self) -> dict[str, float]:
        """Logged values: dynamic sampling's last batch, the filter's probabilities and skip share."""
        out: dict[str, float] = {}
        if self.dynamic is not None:
            out.update(self.dynamic.values())
        if self.predictive is not None:
            out.update({f"predictive/{k}": v for k, v in self.predictive.values().items()})
        for name in PARTS[2:]:
            if getattr(self, name) is not None:
                out.update({f"{name}/{k}": v for k, v in getattr(self, name).values().items()})
        return out

    def state_dict(self) -> dict[str, Any]:
        """The sampler (with its policy), the filter and dynamic sampling's counters."""
        return {"kind": self.kind, "sampler": self.sampler.state_dict(),
                "predictive": None if self.predictive is None else self.predictive.state_dict(),
                "dynamic": None if self.dynamic is None else self.dynamic.state_dict(),
                **{k: getattr(self, k).state_dict() for k in PARTS[2:] if getattr(self, k) is not None},
                "forced": self.forced, "repeated": self.repeated}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output; all parts load or none does."""
        if not isinstance(state, Mapping) or state.get("kind") != self.kind:
            raise StateError(f"not a {self.kind} state_dict")
        for name in PARTS:
            if (state.get(name) is None) != (getattr(self, name) is None):
                raise StateError(f"the state {'has' if state.get(name) is not None else 'lacks'} a {name} part; "
                                 f"this selector {'lacks' if getattr(self, name) is None else 'has'} one")
        parts = [(self.sampler, state["sampler"])] + [(getattr(self, k), state[k]) for k in PARTS
                                                       if getattr(self, k) is not None]
        backup = [part.state_dict() for part, _ in parts]
        try:
            for part, saved in parts:
                part.load_state_dict(saved)
            self.forced, self.repeated = int(state["forced"]), int(state["repeated"])
        except Exception:
            for (part, _), saved in zip(parts, backup):
                part.load_state_dict(saved)
            raise
