"""The driver-side regimen of a verl run, as the hooks of :mod:`cadence.integrations.verl` drive it.

:class:`VerlRegimen` holds one run's curriculum, RL pieces (pass-rate band, predictive filter,
allocation, replay, hints, length budget), clock and knobs: what is drawn (:meth:`VerlRegimen.next_prompt`),
observed (:meth:`VerlRegimen.observe`, one row per response), kept, and logged per global step.
:class:`StagedVerlRegimen` runs a regimen file with stages (each stage's curriculum and pieces switched
in at its first step, a rule's stage end read from verl's validation through :func:`tap_validation`),
and :class:`StagedLoss` carries the stage ends to the workers, where
:class:`cadence.integrations.verl.ScheduledAdamW` reads them (LR schedule: :func:`regimen_lr`).
:func:`regimen_from` builds the right one from a regimen file.

verl loads none of this by name: the classes in ``verl``'s config are in :mod:`cadence.integrations.verl`
(which builds the regimen); this module does not import that one. Config lines: ``docs/integrations/verl.md``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from verl.trainer.distillation import is_distillation_enabled
from verl.trainer.ppo import core_algos
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.utils.losses import ppo_loss

from cadence.clock import Clock
from cadence.curricula import Arms, CurriculumSampler, make_policy
from cadence.errors import CadenceError, StateError
from cadence.integrations.jsonstate import decode, encode
from cadence.integrations.versions import check_version
from cadence.regimen.link import RegimenLink
from cadence.regimen.pieces import PathError
from cadence.regimen.staged import StageClock
from cadence.regimen.stages import StageRun
from cadence.rl import (DynamicSampling, GVMAllocation, Hints, KnapsackAllocation, LengthBudget, PredictiveFilter,
                        PromptSelector, ReplayBuffer)
from cadence.rl.hints import with_guidance
from cadence.schedules.base import as_schedule

ITEM_KEY = "cadence_item"
"""The batch key (one int64 per prompt) that carries a prompt's cadence item id through rollout."""
ROLLOUTS_KEY = "__rollout_n__"
"""The batch key verl 0.9's agent loop reads for a prompt's number of rollouts (``rollout.n`` without it)."""

ALLOCATIONS = {"knapsack": KnapsackAllocation, "gvm": GVMAllocation}
"""``allocation.method`` values: Knapsack RL (default) and GVM-RAFT (equal gradient norms in verl)."""

HINT_KEY = "cadence_hint"
"""The batch key (one int64 per prompt) that carries a prompt's guidance tier through rollout (0: none)."""
MAX_TOKENS_KEY = "cadence_max_tokens"
"""The batch key that carries a prompt's generation cap (the ``response_length`` knob) to the agent loop."""
AGENT_LOOP = "cadence_single_turn"
"""The name :class:`CadenceAgentLoop` is registered under in verl's agent-loop registry."""
KL_IN_REWARD, KL_IN_LOSS, RESPONSE_LENGTH = "kl_coef", "kl_loss_coef", "response_length"

KIND = "cadence.VerlRegimen"


class VerlRegimen:
    """The driver-side regimen of one verl run: curriculum, filters, clock and knobs, one state.

    Args:
        policy: a ``cadence.curricula`` registry name (``"dump"``, ``"sec"``, ``"pass_rate"``, ...).
        arm_key: the dataset column whose value is each prompt's arm (dots reach into dicts:
            ``"extra_info.level"``).
        policy_kwargs: keyword arguments of the policy.
        band: ``{"low", "high", "closed"}`` of the pass-rate band (``cadence.rl.DynamicSampling``);
            out-of-band groups are evicted and refilled. ``None``: keep every group.
        predictive: keyword arguments of ``cadence.rl.PredictiveFilter`` (``{}`` for its defaults);
            ``None``: no pre-rollout filter.
        correct_threshold: a response is correct when its score is at least this.
        norm_adv_by_std: GRPO advantage divided by the group's std (verl's default).
        knobs: ``{name: spec}`` evaluated at the global step and put in every prompt's ``extra_info``;
            ``kl_coef``, ``kl_loss_coef`` and ``response_length`` also reach verl (module docs).
        length_budget: keyword arguments of :class:`cadence.rl.LengthBudget` (``schedule``, ``name``,
            ``in_prompt``, ...): a knob under its name, stated in the prompt with ``in_prompt``.
        allocation: keyword arguments of :class:`cadence.rl.KnapsackAllocation` (``group`` defaults
            to verl's ``rollout.n``; ``{}`` for its defaults), or with ``method: gvm`` of
            :class:`cadence.rl.GVMAllocation`: each dataloader fetch's ``group × prompts`` rollouts are
            spread over its prompts (some get 0). Not with a ``band``.
        hints: ``{"guidance": column, "patience": K, "levels": L}``: re-roll prompts whose plain groups
            stayed all wrong ``K`` rounds with guidance of tiers ``1..L`` (:class:`cadence.rl.Hints`);
            ``guidance`` names the dataset column (dots reach into dicts) holding each row's list of
            tier texts, tier ``l`` appending item ``l − 1`` to the prompt's last message. Needs a ``band``.
        replay: keyword arguments of :class:`cadence.rl.ReplayBuffer` (``capacity``, ``alpha``; ``{}``
            for its defaults): evicted groups' places are filled with stored groups of non-zero
            advantage, put back into TransferQueue (module docs). Needs a ``band``.
        budget: the clock's budget (e.g. verl's ``trainer.total_training_steps``).
        seed: seed of the curriculum sampler and the filter.
        max_candidates: prompts the filter may look at per prompt drawn (``PromptSelector``).

        >>> r = VerlRegimen(policy="sec", arm_key="level", budget=10, knobs={"max_len": "ramp(start=64, end=256)"})
        >>> r.attach(["easy", "hard", "hard"]); r.begin_step(3); round(r.link.knob("max_len"), 1)
        102.4
    """

    def __init__(self, *, policy: str = "uniform", arm_key: str = "data_source", policy_kwargs: Mapping | None = None,
                 band: Mapping | None = None, predictive: Mapping | None = None, correct_threshold: float = 0.5,
                 norm_adv_by_std: bool = True, knobs: Mapping[str, Any] | None = None,
                 length_budget: Mapping | None = None, allocation: Mapping | None = None, budget: Any = None,
                 seed: int = 0, max_candidates: int = 8, hints: Mapping | None = None,
                 replay: Mapping | None = None) -> None:
        check_version("verl")
        self.policy_name, self.arm_key = str(policy), str(arm_key)
        self.policy_kwargs = dict(policy_kwargs or {})
        self.band = None if band is None else DynamicSampling(**dict(band), max_extra_rounds=0)
        self.predictive_kwargs = None if predictive is None else dict(predictive)
        self.correct_threshold, self.norm_adv_by_std = float(correct_threshold), bool(norm_adv_by_std)
        self.seed, self.max_candidates = int(seed), int(max_candidates)
        self.clock = Clock(budget=budget)
        self.knob_specs = {name: as_schedule(s) for name, s in (knobs or {}).items()}
        self.length_budget = None if length_budget is None else LengthBudget(**dict(length_budget))
        if self.length_budget is not None:
            if self.length_budget.name in self.knob_specs:
                raise CadenceError(f"the knob {self.length_budget.name!r} is given twice (knobs and length_budget)")
            self.knob_specs[self.length_budget.name] = self.length_budget.schedule
        if allocation is not None and self.band is not None:
            raise CadenceError("an allocation spreads a whole fetch's rollouts, a band refills one prompt at a time "
                               "(data.gen_batch_size=1): use one of them")
        self.allocation_kwargs = None if allocation is None else dict(allocation)
        self.hints_kwargs = None if hints is None else dict(hints)
        if self.hints_kwargs is not None:
            if self.band is None:
                raise CadenceError("hints re-roll a plateaued group through verl's refill, which runs with a band: "
                                   "give sampler_kwargs.band too")
            if not isinstance(self.hints_kwargs.get("guidance"), str):
                raise CadenceError("hints need hints.guidance: the dataset column holding each row's list of "
                                   "guidance texts (tier 1, 2, ...)")
        if replay is not None and self.band is None:
            raise CadenceError("replay fills the places of groups the band evicts: give sampler_kwargs.band too")
        self.replay = None if replay is None else ReplayBuffer(**{"seed": self.seed, **dict(replay)})
        self.replay_groups: dict[int, dict] = {}  # serial (the buffer's payload) -> the group's uid, keys, tags, rows
        self.replay_next = 0
        self.served: set[int] = set()            # prompts served in this step (not replayed next to themselves)
        self.hints: Hints | None = None
        self.guidance: list[Any] | None = None   # per prompt: its tier texts
        self.pending: list[tuple[int, int]] = []  # (prompt, tier) to serve before the curriculum's next draw
        self.redo = np.zeros(0, dtype=bool)       # per group of the last observe: evicted for a guided re-roll
        self.allocation: KnapsackAllocation | GVMAllocation | None = None
        self.link = RegimenLink(clock=self.clock, knobs=self.knob_specs)
        self._actor_config: Any = None     # verl's actor config, for the in-loss KL coefficient
        self._sent_kl_loss: float | None = None
        self._rollout_n: int | None = None  # verl's rollout.n, the allocation's default group
        self.selector: PromptSelector | None = None
        self.counts = dict.fromkeys(("rollouts", "tokens", "groups", "kept", "dropped", "unallocated"), 0)
        self._step = dict(self.counts)

    # ------------------------------------------------------------------ building
    def attach(self, labels: Sequence[Any], guidance: Sequence[Any] | None = None) -> None:
        """Build the curriculum over the train dataset's prompts, one arm label per prompt (and with
        hints, each prompt's list of guidance texts)."""
        arms = Arms(list(labels))
        predictive = self._build_pieces(arms, guidance)
        policy = make_policy(self.policy_name, arms, seed=self.seed, **self.policy_kwargs)
        sampler = CurriculumSampler(policy, batch_size=1, num_replicas=1, seed=self.seed)
        self.selector = PromptSelector(sampler, predictive=predictive, dynamic=self.band,
                                       max_candidates=self.max_candidates)
        self.link = RegimenLink(clock=self.clock, knobs=self.knob_specs, policy=policy, sampler=self.selector)

    def attach_rows(self, rows: Any) -> None:
        """:meth:`attach` to a dataset's rows (verl's ``RLHFDataset.dataframe``): arms from ``arm_key``,
        guidance texts from ``hints.guidance``."""
        guidance = None
        if self.hints_kwargs is not None:
            guidance = _read_column(rows, self.hints_kwargs["guidance"], "hints.guidance")
        self.attach(_read_column(rows, self.arm_key), guidance)

    def _build_pieces(self, arms: Arms, guidance: Sequence[Any] | None) -> PredictiveFilter | None:
        """The pieces built over the prompts: hints (with each prompt's guidance texts), the allocation;
        returns the predictive filter."""
        if self.hints_kwargs is not None:
            if guidance is None or len(guidance) != arms.num_items:
                raise CadenceError("hints need each prompt's guidance texts (the hints.guidance column)")
            bad = [i for i, g in enumerate(guidance) if isinstance(g, str) or not len(g)]
            if bad:
                raise CadenceError(f"hints.guidance: row {bad[0]} holds {guidance[bad[0]]!r}, not a list of "
                                   f"guidance texts")
            options = {k: v for k, v in self.hints_kwargs.items() if k != "guidance"}
            self.hints, self.guidance = Hints(arms.num_items, **options), [list(g) for g in guidance]
        predictive = None
        if self.predictive_kwargs is not None:
            predictive = PredictiveFilter(arms.num_items, seed=self.seed, **self.predictive_kwargs)
        if self.allocation_kwargs is not None:
            options = dict(self.allocation_kwargs)
            group = options.pop("group", self._rollout_n)
            if group is None:
                raise CadenceError("the allocation needs its group (rollouts per prompt on average): give "
                                   "allocation.group, or build the regimen through CadenceReplayBuffer (verl's rollout.n)")
            method = options.pop("method", "knapsack")
            if method not in ALLOCATIONS:
                raise CadenceError(f"unknown allocation method {method!r}; choose from {sorted(ALLOCATIONS)}")
            self.allocation = ALLOCATIONS[method](arms.item_arm, int(group), **options)
        return predictive

    def uses(self, piece: str) -> bool:
        """Whether the regimen has ``piece`` (``band``, ``replay``, ``allocation_kwargs``, ...) in any stage."""
        return getattr(self, piece) is not None

    @property
    def attached(self) -> bool:
        return self.selector is not None

    def _selector(self) -> PromptSelector:
        if self.selector is None:
            raise CadenceError("the cadence regimen has no prompts: set data.custom_cls.path="
                               "pkg://cadence.integrations.verl and data.custom_cls.name=CadencePrompts")
        return self.selector

    def check_config(self, config: Any) -> None:
        """Check that verl's whole config lets the knobs that reach verl work; keep what they need."""
        rollout, actor = config.actor_rollout_ref.rollout, config.actor_rollout_ref.actor
        self._rollout_n = int(rollout.n)
        if self.uses("allocation_kwargs") and config.data.get("gen_batch_size") not in (
                None, config.data.train_batch_size):
            raise CadenceError("an allocation spreads each fetch's rollouts over a step's prompts: leave "
                               "data.gen_batch_size unset (= data.train_batch_size)")
        if RESPONSE_LENGTH in self.knob_specs and rollout.agent.default_agent_loop != AGENT_LOOP:
            raise CadenceError(f"the {RESPONSE_LENGTH} knob caps generation in cadence's agent loop: set "
                               f"actor_rollout_ref.rollout.agent.default_agent_loop={AGENT_LOOP}")
        if KL_IN_REWARD in self.knob_specs and not config.algorithm.use_kl_in_reward:
            raise CadenceError(f"the {KL_IN_REWARD} knob sets the in-reward KL coefficient: "
                               "set algorithm.use_kl_in_reward=True and algorithm.kl_ctrl.type=fixed")
        if KL_IN_LOSS in self.knob_specs:
            if not actor.use_kl_loss:
                raise CadenceError(f"the {KL_IN_LOSS} knob sets the actor's in-loss KL coefficient: "
                                   "set actor_rollout_ref.actor.use_kl_loss=True")
            if is_distillation_enabled(config.get("distillation")):
                raise CadenceError(f"the {KL_IN_LOSS} knob replaces verl's ppo_loss, which distillation replaces too")
            self._actor_config = omega_conf_to_dataclass(actor)

    # ------------------------------------------------------------------ prompts
    def next_item(self) -> int:
        """The next prompt to generate for: the curriculum's draw, admitted by the predictive filter."""
        return int(self._selector().draw(1)[0])

    def next_prompt(self) -> tuple[int, int]:
        """``(prompt, guidance tier)``: a plateaued prompt waiting for guidance first (with hints),
        else the curriculum's draw with tier 0."""
        item, level = self.pending.pop(0) if self.pending else (self.next_item(), 0)
        self.served.add(item)
        return item, level

    def remember(self, uid: str, item: int, advantages: np.ndarray, keys: list[str], tags: list[dict],
                 rows: list[dict]) -> bool:
        """Offer one finished group (its trajectories' TransferQueue keys, tags and fields) to the
        replay buffer; kept when its advantages are not all zero."""
        serial = self.replay_next
        if not self.replay.add(item, advantages, payload=serial):
            return False
        self.replay_next += 1
        self.replay_groups[serial] = {"uid": uid, "item": int(item), "keys": list(keys),
                                      "tags": [dict(t) for t in tags], "rows": rows}
        live = {e.payload for e in self.replay.entries}
        self.replay_groups = {s: g for s, g in self.replay_groups.items() if s in live}
        return True

    def replays(self, k: int, busy: set[str]) -> list[dict]:
        """Up to ``k`` stored groups to train on in evicted groups' places: none of a prompt served in
        this step, none whose uid is in TransferQueue now (``busy``)."""
        exclude = self.served | {g["item"] for g in self.replay_groups.values() if g["uid"] in busy}
        return [self.replay_groups[e.payload] for e in self.replay.draw(k, exclude=sorted(exclude))]

    def guided(self, row: dict, item: int, level: int) -> dict:
        """``row`` with its guidance tier under :data:`HINT_KEY` and, from tier 1, the tier's text
        appended to the prompt (``raw_prompt``'s last message); with hints in some stage, every stage's
        rows carry their tier, so groups that finish after a transition are read alike."""
        if self.hints is None and not self.uses("hints_kwargs"):
            return row
        row[HINT_KEY] = torch.tensor(int(level), dtype=torch.int64)   # (tier 0 in a stage without hints)
        if level:
            tiers = self.guidance[item]
            row["raw_prompt"] = with_guidance(row["raw_prompt"], str(tiers[min(level, len(tiers)) - 1]))
        return row

    def prompt_fields(self, row: dict) -> dict:
        """``row`` with the knobs at the clock: every value in ``extra_info`` (for reward functions),
        the generation cap under :data:`MAX_TOKENS_KEY`, the length budget stated in the prompt."""
        values = self.knob_values()
        if not values:
            return row
        extra = dict(row.get("extra_info") or {})
        clash = sorted(set(values) & set(extra))
        if clash:
            raise CadenceError(f"the dataset's extra_info already has {clash}: rename the knob(s), cadence puts "
                               "each knob's value there")
        row["extra_info"] = {**extra, **values}
        if RESPONSE_LENGTH in values:
            cap = values[RESPONSE_LENGTH]
            if not cap >= 1:
                raise CadenceError(f"the {RESPONSE_LENGTH} knob is {cap} tokens at step {self.clock.steps:g}; "
                                   "it must be >= 1")
            row[MAX_TOKENS_KEY] = torch.tensor(int(round(cap)), dtype=torch.int64)
        budget = self.length_budget
        if budget is not None:
            budget(self.length_clock())           # a budget below 1 token is an error naming the step
            if budget.in_prompt:
                row["raw_prompt"] = budget.prompt(row["raw_prompt"], values[budget.name])
        return row

    def knob_values(self) -> dict[str, float]:
        """Every knob's value at the clock (the length budget's among them)."""
        return {name: self.link.knob(name) for name in self.knob_specs}

    def length_clock(self) -> Clock:
        """The clock the length budget runs on."""
        return self.clock

    def allocate(self, rows: list[dict]) -> list[dict]:
        """One fetch's rows, each with its rollouts under :data:`ROLLOUTS_KEY` when an allocation
        spreads them (a prompt given 0 finishes at once with no rollout)."""
        if self.allocation is None:
            return rows
        sizes = self.allocation.sizes([int(row[ITEM_KEY]) for row in rows])
        for row, size in zip(rows, sizes):
            row[ROLLOUTS_KEY] = torch.tensor(int(size), dtype=torch.int64)
        self._count(unallocated=int((sizes == 0).sum()))
        return rows

    # ------------------------------------------------------------------ feedback
    def observe(self, item_ids: np.ndarray, scores: np.ndarray, lengths: np.ndarray,
                groups: np.ndarray, levels: np.ndarray | None = None) -> np.ndarray:
        """Feed one row per response (``groups``: each response's group label; ``levels``: its
        guidance tier, 0 or ``None`` for none) to the curriculum, the filter and the clock; returns
        each distinct group's pass rate, in first-appearance order. Guided responses reach the clock
        and the hints, not the curriculum (they do not measure the prompt's difficulty); with hints,
        :attr:`redo` marks the groups to evict for a guided re-roll."""
        selector = self._selector()
        correct = (scores >= self.correct_threshold).astype(np.float64)
        advantage = grpo_advantage(scores, groups, self.norm_adv_by_std)
        levels = np.zeros(len(item_ids), dtype=np.int64) if levels is None else np.asarray(levels, dtype=np.int64)
        plain = levels == 0
        if plain.any():
            signals = {"reward": scores, "correct": correct, "advantage": advantage, "length": lengths}
            self.link.observe(item_ids[plain], **{k: v[plain] for k, v in signals.items()})
            if selector.predictive is not None:
                selector.predictive.observe(item_ids[plain], correct[plain])
            if self.allocation is not None:
                self.allocation.observe(item_ids[plain], correct[plain])
        self.clock.report(samples=float(len(item_ids)), tokens=float(lengths.sum()))
        _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        rates = (np.bincount(inverse, weights=correct) / np.bincount(inverse))[order]
        self._count(rollouts=len(item_ids), tokens=int(lengths.sum()), groups=len(rates))
        self.redo = np.zeros(len(rates), dtype=bool)
        if self.hints is not None:
            sizes = np.bincount(inverse)[order]
            self.redo = self._hint(item_ids[first[order]], levels[first[order]], rates, sizes)
        return rates

    def _hint(self, items: np.ndarray, levels: np.ndarray, rates: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """Queue guided re-rolls: plateaued all-wrong plain groups at tier 1, guided groups that found
        no correct answer at the next tier; returns the groups to evict (both kinds)."""
        redo = np.zeros(len(items), dtype=bool)
        plain = np.flatnonzero(levels == 0)
        if len(plain):
            stuck = plain[self.hints.observe(items[plain], rates[plain])]
            redo[stuck] = True
            self.pending += [(int(i), 1) for i in items[stuck]]
        for level in np.unique(levels[levels > 0]):
            at = np.flatnonzero(levels == level)
            hit = rates[at] > 0
            self.hints.record(int(level), int(hit.sum()), int(sizes[at].sum()))
            redo[at[~hit]] = True
            if level < self.hints.levels:
                self.pending += [(int(i), int(level) + 1) for i in items[at[~hit]]]
        return redo

    def keep(self, pass_rates: np.ndarray, redo: np.ndarray | None = None) -> np.ndarray:
        """Which groups to train on: inside the band (all of them without one), less those ``redo``
        marks for a guided re-roll."""
        keep = np.ones(len(pass_rates), dtype=bool) if self.band is None else self.band.band.contains(pass_rates)
        if redo is not None:
            keep &= ~np.asarray(redo, dtype=bool)
        self._count(kept=int(keep.sum()), dropped=int(len(keep) - keep.sum()))
        return keep

    def _count(self, **amounts: int) -> None:
        for key, value in amounts.items():
            self.counts[key] += value
            self._step[key] += value

    # ------------------------------------------------------------------ steps
    def begin_step(self, global_step: int, trainer: Any = None) -> None:
        """Put the clock at verl's ``global_step`` (``global_step - 1`` steps done; reported rollouts
        and tokens are committed) and apply the knobs that reach the trainer's KL coefficients."""
        done = int(global_step) - 1
        self.served = set()
        if done < self.clock.steps:
            raise CadenceError(f"verl's global step {global_step} is behind the cadence clock "
                               f"({int(self.clock.steps)} steps done): the regimen state does not match this run")
        if done > self.clock.steps:
            self.clock.advance(done - self.clock.steps)
        if KL_IN_REWARD in self.knob_specs:
            controller = getattr(trainer, "kl_ctrl_in_reward", None)
            if controller is None:
                raise CadenceError(f"the {KL_IN_REWARD} knob sets the in-reward KL coefficient: "
                                   "set algorithm.use_kl_in_reward=True and algorithm.kl_ctrl.type=fixed")
            controller.value = self.link.knob(KL_IN_REWARD)
        if KL_IN_LOSS in self.knob_specs:
            self._send_kl_loss_coef(trainer)

    def _send_kl_loss_coef(self, trainer: Any) -> None:
        """Hand the actor workers verl's ``ppo_loss`` bound to the knob's coefficient (when it changed)."""
        if self._actor_config is None:
            raise CadenceError(f"the {KL_IN_LOSS} knob needs verl's config: build the regimen through "
                               "CadenceReplayBuffer (trainer.v1.sampler.custom_sampler)")
        value = float(self.link.knob(KL_IN_LOSS))
        if value != self._sent_kl_loss:
            config = dataclasses.replace(self._actor_config, kl_loss_coef=value)
            trainer.actor_rollout_wg.set_loss_fn(functools.partial(ppo_loss, config=config))
            self._sent_kl_loss = value

    def end_step(self) -> dict[str, float]:
        """Close the step's selection (the filter adapts, the band's counters record) and the step on
        the clock, so the next step's prompts see its knobs; returns the values verl logs with the
        step's metrics (knobs as this step used them)."""
        selector = self._selector()
        step = self._step
        if self.band is not None:
            self.band.record({"rounds": 1, "rollouts": step["rollouts"], "kept": step["kept"],
                              "dropped": step["dropped"]})
        if selector.predictive is not None:
            selector.predictive.adapt()
        self._step = dict.fromkeys(self.counts, 0)
        out = self.link.values()
        out.update({f"cadence/selection/{k}": float(v) for k, v in selector.values().items()})
        if self.hints is not None:
            out.update({f"cadence/hints/{k}": float(v) for k, v in self.hints.values().items()})
        if self.replay is not None:
            out.update({f"cadence/replay/{k}": float(v) for k, v in self.replay.values().items()})
        out.update({f"cadence/total/{k}": float(v) for k, v in self.counts.items()})
        out["cadence/step/rollouts"] = float(step["rollouts"])
        self.clock.advance(1)
        return out

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The link (clock, curriculum sampler with its policy, filter, band), the allocation, the hints
        (with the re-rolls waiting) and the counters, as plain data (arrays JSON-encoded) that
        ``torch.load(..., weights_only=True)`` reads."""
        return {"kind": KIND, "link": encode(self.link.state_dict()), "counts": dict(self.counts),
                "step": dict(self._step), **self._pieces_state()}

    def _pieces_state(self) -> dict[str, Any]:
        return {"allocation": None if self.allocation is None else self.allocation.state_dict(),
                "hints": None if self.hints is None else {"hints": self.hints.state_dict(),
                                                          "pending": [list(p) for p in self.pending]},
                "replay": None if self.replay is None else {"buffer": self.replay.state_dict(),
                                                            "groups": _checkpointable(self.replay_groups, "replay"),
                                                            "next": self.replay_next}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output; a state of another shape changes nothing."""
        counts, step = self._read_counts(state)
        restored = self._restored_pieces(state)
        self.link.load_state_dict(decode(copy.deepcopy(state["link"])))
        self.counts, self._step = counts, step
        for name, value in restored.items():
            setattr(self, name, value)

    def _read_counts(self, state: Any) -> tuple[dict[str, int], dict[str, int]]:
        if not isinstance(state, Mapping) or state.get("kind") != KIND:
            raise StateError(f"not a {KIND} state_dict")
        try:      # counters added later (unallocated) start at 0 in older states
            counts = {k: int(state["counts"].get(k, 0)) for k in self.counts}
            step = {k: int(state["step"].get(k, 0)) for k in self.counts}
        except (AttributeError, TypeError, ValueError, KeyError) as e:
            raise StateError(f"malformed {KIND} state_dict: {e!r}") from None
        return counts, step

    def _restored_pieces(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """The allocation, hints and replay of ``state``, loaded into copies (nothing is changed), by attribute."""
        allocation = state.get("allocation")
        if (allocation is None) != (self.allocation is None):
            raise StateError(f"the {KIND} state {'has' if allocation is not None else 'lacks'} a rollout "
                             f"allocation and this regimen {'has' if self.allocation is not None else 'has none'}")
        replay = state.get("replay")
        if (replay is None) != (self.replay is None):
            raise StateError(f"the {KIND} state {'has' if replay is not None else 'lacks'} a replay buffer and this "
                             f"regimen {'has' if self.replay is not None else 'has none'}")
        out: dict[str, Any] = {}
        if self.replay is not None:
            restored_replay = copy.deepcopy(self.replay)
            try:
                restored_replay.load_state_dict(replay["buffer"])
                groups = {int(s): dict(g) for s, g in replay["groups"].items()}
                serial = int(replay["next"])
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise StateError(f"malformed {KIND} replay state: {e!r}") from None
            if {e.payload for e in restored_replay.entries} - set(groups):
                raise StateError(f"the {KIND} replay state lacks stored groups its buffer names")
            out.update(replay=restored_replay, replay_groups=groups, replay_next=serial)
        hints = state.get("hints")
        if (hints is None) != (self.hints is None):
            raise StateError(f"the {KIND} state {'has' if hints is not None else 'lacks'} hints and this regimen "
                             f"{'has' if self.hints is not None else 'has none'}")
        if self.allocation is not None:
            restored = copy.deepcopy(self.allocation)
            restored.load_state_dict(allocation)
            out["allocation"] = restored
        if self.hints is not None:
            restored_hints = copy.deepcopy(self.hints)
            try:
                restored_hints.load_state_dict(hints["hints"])
                pending = [(int(i), int(level)) for i, level in hints["pending"]]
            except (KeyError, TypeError, ValueError) as e:
                raise StateError(f"malformed {KIND} hints state: {e!r}") from None
            if any(not (0 <= i < self.hints.num_items and 1 <= level <= self.hints.levels) for i, level in pending):
                raise StateError(f"the {KIND} state's waiting re-rolls name prompts or tiers this regimen lacks")
            out.update(hints=restored_hints, pending=pending)
        return out


RL_OPTIONS = ("band", "predictive", "allocation", "replay", "hints", "length_budget", "correct_threshold", "seed")
"""``VerlRegimen``'s arguments that a stage's own ``rl`` section sets (``seed``: its curriculum's)."""
PIECES = ("band", "predictive_kwargs", "allocation_kwargs", "hints_kwargs", "length_budget", "correct_threshold",
          "seed", "replay", "replay_groups", "replay_next", "hints", "guidance", "pending", "allocation", "predictive")
"""The attributes of :class:`VerlRegimen` that belong to one stage's RL pieces (switched at its first step)."""


class StagedVerlRegimen(VerlRegimen):
    """A regimen file with stages in verl: a stage ends on its budget (a fraction of verl's global
    steps) or, but for the last, on its rule (``until``/``plateau``) over the metrics verl's validation
    returns (read by :func:`tap_validation`) or the adapter's own step values (``cadence/...``), fed as a
    plain loop's ``link.log`` feeds them, after the step on the clock; each draws its prompts from its
    own curriculum (one :class:`~cadence.regimen.staged.StageSampler`, as a plain loop's) and runs its
    own RL pieces (band, predictive filter, allocation, replay, hints, length budget, on the stage's own
    progress), switched in when the clock reaches the stage's first step; stages without an ``rl``
    section share the top-level pieces, which keep their state. Knobs follow the stages' joins; the LR
    is :class:`ScheduledAdamW`'s, which reads the same file in the workers, and a rule's end reaches
    them with verl's loss function (:class:`StagedLoss`). Built by :func:`regimen_from`
    (``sampler_kwargs.regimen``: the file's path, or its dict).

        >>> from datasets import Dataset
        >>> r = regimen_from({"budget": "4 steps", "knobs": {"temperature": "constant(1.0)"},
        ...                   "curriculum": {"policy": "uniform", "arms": {"column": "level"}, "batch_size": 1},
        ...                   "stages": [{"name": "easy", "budget": "50%", "rl": {"predictive": {}}},
        ...                              {"name": "hard", "knobs": {"temperature": "constant(0.7)"}}]})
        >>> r.attach_rows(Dataset.from_dict({"level": ["a", "b", "b"]})); values = []
        >>> for step in (1, 2, 3):
        ...     r.begin_step(step); values.append((r.link.knob("temperature"), r.selector.predictive is not None))
        ...     _ = r.end_step()
        >>> values
        [(1.0, True), (1.0, True), (0.7, False)]
    """

    def __init__(self, regimen: Any, *, max_candidates: int = 8) -> None:
        from cadence.integrations.verl_config import check_verl, stage_kwargs

        check_verl(regimen)
        kwargs = stage_kwargs(regimen)
        owns = regimen.stage_pieces or ({},) * len(regimen.stages)
        keys = [i if "rl" in own else -1 for i, own in enumerate(owns)]   # the rl section each stage runs
        distinct = list(dict.fromkeys(keys))
        self.part_of = [distinct.index(k) for k in keys]
        self.own_rl = [k >= 0 for k in keys]
        self.parts: list[VerlRegimen] = []
        for k in distinct:
            i = keys.index(k)
            try:
                part = VerlRegimen(max_candidates=max_candidates, budget=int(regimen.budget.amount),
                                   **{name: v for name, v in kwargs[i].items() if name in RL_OPTIONS})
            except CadenceError as e:
                raise PathError(f"stages[{i}].rl" if k >= 0 else "rl", str(e)) from None
            part.predictive = None
            self.parts.append(part)
        super().__init__(budget=int(regimen.budget.amount), max_candidates=max_candidates)
        self.regimen = regimen
        plain = [dataclasses.replace(s, lr=None, fields={}) for s in regimen.stages]   # the LR is the workers'
        self.stages = StageRun(plain, self.clock, defaults=regimen.knobs)
        self.knob_specs = regimen.knob_schedules(self.stages)
        for k, part in zip(distinct, self.parts):
            if part.length_budget is not None and part.length_budget.name in self.knob_specs:
                raise PathError(f"stages[{k}].rl.length_budget" if k >= 0 else "rl.length_budget",
                                f"the knob {part.length_budget.name!r} is given twice (knobs and length_budget)")
        self.predictive = None
        self._part: int | None = None
        self._use(self.part_of[0], store=False)
        self.ruled = any(s.rules for s in regimen.stages)
        self.ruled_lr = self.ruled and ("lr" in regimen.schedules or any(s.lr is not None for s in regimen.stages))
        self._test_freq, self._begun, self._sent_loss = 0, False, None
        self._waiting: list[Mapping[str, Any]] = []   # validations run before this process drew a prompt
        self.link = RegimenLink(clock=self.clock, knobs=self.knob_specs, stages=self.stages)

    # ------------------------------------------------------------------ the stage's pieces
    def _use(self, j: int, store: bool = True) -> None:
        """Put part ``j``'s pieces in place (the current part's first stored back into it)."""
        if store and self._part is not None:
            for name in PIECES:
                setattr(self.parts[self._part], name, getattr(self, name))
        for name in PIECES:
            setattr(self, name, getattr(self.parts[j], name))
        self._part = j
        if self.selector is not None:
            self.selector.predictive, self.selector.dynamic = self.predictive, self.band

    def _sync(self) -> None:
        """After the clock moved: end the stages whose budget is used up, switch to the current one's pieces."""
        try:
            self.stages.update()
        except CadenceError as e:           # (a stage's budget ran out before its rule's metric was logged)
            stage = self.stages.current
            if not stage.rules:
                raise
            key = "plateau" if stage.rules[0].kind == "plateau" else "until"
            raise PathError(f"stages[{self.stages.index}].{key}.metric", f"{e}; in verl a rule reads the metrics "
                            f"verl's validation returns (trainer.test_freq) or the adapter's cadence/ values") from None
        self._use(self.part_of[self.stages.index])

    def evaluated(self, metrics: Mapping[str, Any]) -> None:
        """One validation's metrics (verl's ``_validate`` result) for the current stage's rule; the
        stage's pieces switch at once when it ends. The validation verl runs before training waits for
        the first prompt (a resumed run's state, in verl's ``data.pt``, loads then) and, when resuming,
        counts only at a step the saved run also validated (``trainer.test_freq``): verl writes a step's
        checkpoint before validating it."""
        if not self._begun:
            self._waiting.append(dict(metrics))
            return
        self.stages.log(metrics)
        self._use(self.part_of[self.stages.index])

    def _start(self) -> None:
        """This process's first prompt (its state loaded, if resumed): feed the validations that waited."""
        if self._begun:
            return
        self._begun = True
        steps = int(self.clock.steps)
        waiting, self._waiting = self._waiting, []
        if steps == 0 or (self._test_freq > 0 and steps % self._test_freq == 0):
            for metrics in waiting:
                self.evaluated(metrics)

    def next_prompt(self) -> tuple[int, int]:
        self._start()
        return super().next_prompt()

    def uses(self, piece: str) -> bool:
        return any(getattr(p, piece) is not None for p in self.parts)   # (pieces, not their state: no store)

    def attach_rows(self, rows: Any) -> None:
        """Build every stage's curriculum (``Regimen.build_data``, as a plain loop's) and RL pieces over
        the dataset's rows."""
        sampler = self.regimen.build_data(_Columns(rows), self.clock, self.stages, host="verl", num_replicas=1)
        if sampler is None:   # no curriculum anywhere: uniform over the arm column, as without stages
            arms = Arms(_read_column(rows, self.arm_key))
            sampler = CurriculumSampler(make_policy(self.policy_name, arms, seed=self.seed), batch_size=1,
                                        num_replicas=1, seed=self.seed)
        stage_sampler = getattr(sampler, "parts", None)
        for j, part in enumerate(self.parts):
            i = self.part_of.index(j)
            arms = (stage_sampler[sampler.part_of[i]] if stage_sampler else sampler).policy.arms
            guidance = None
            if part.hints_kwargs is not None:
                at = f"stages[{i}].rl.guidance" if self.own_rl[i] else "rl.guidance"
                guidance = _read_column(rows, part.hints_kwargs["guidance"], at)
            part._rollout_n = self._rollout_n
            part.predictive = part._build_pieces(arms, guidance)
        self.sampler = sampler
        self.selector = PromptSelector(sampler, max_candidates=self.max_candidates)
        self._use(self._part, store=False)
        self.link = RegimenLink(clock=self.clock, knobs=self.knob_specs, policy=sampler.policy, sampler=sampler,
                                stages=self.stages)
        self._sync()

    def attach(self, labels: Sequence[Any], guidance: Sequence[Any] | None = None) -> None:
        raise CadenceError("a staged regimen reads its columns itself: attach_rows(dataset rows)")

    def check_config(self, config: Any) -> None:
        super().check_config(config)
        self._test_freq = int(config.trainer.get("test_freq", -1) or -1)
        for i, stage in enumerate(self.stages.stages):
            for rule in stage.rules:
                if self._test_freq <= 0 and not rule.metric.startswith("cadence/"):
                    key = "plateau" if rule.kind == "plateau" else "until"
                    raise PathError(f"stages[{i}].{key}.metric", f"{rule.metric!r} is read from verl's validation, "
                                    f"which does not run during training with trainer.test_freq={self._test_freq}; "
                                    f"set trainer.test_freq, or read one of the adapter's cadence/ values")
        if self.ruled_lr:
            if is_distillation_enabled(config.get("distillation")):
                raise CadenceError("a rule's stage end reaches ScheduledAdamW with verl's ppo_loss, which "
                                   "distillation replaces")
            self._actor_config = omega_conf_to_dataclass(config.actor_rollout_ref.actor)

    def knob_values(self) -> dict[str, float]:
        values = super().knob_values()
        if self.length_budget is not None:
            values[self.length_budget.name] = float(self.length_budget.schedule(self.length_clock()))
        return values

    def length_clock(self) -> Clock:
        """The current stage's own progress for its own length budget; the run's clock for the top level's."""
        return StageClock(self.stages, self.stages.index) if self.own_rl[self.stages.index] else self.clock

    # ------------------------------------------------------------------ steps
    def begin_step(self, global_step: int, trainer: Any = None) -> None:
        super().begin_step(global_step, trainer)
        self._start()
        self._sync()
        if self.ruled_lr:
            self._send_loss(trainer)

    def _send_kl_loss_coef(self, trainer: Any) -> None:
        if not self.ruled_lr:                  # (else _send_loss sends the coefficient with the stage ends)
            super()._send_kl_loss_coef(trainer)

    def _send_loss(self, trainer: Any) -> None:
        """Hand the actor workers verl's ``ppo_loss`` (with the in-loss KL knob's coefficient) carrying
        where rules ended stages (when that changed, and at a process's first step)."""
        if self._actor_config is None:
            raise CadenceError("a stage that ends on a rule moves the LR's stage ends, which reach the workers "
                               "with verl's loss function: build the regimen through CadenceReplayBuffer "
                               "(trainer.v1.sampler.custom_sampler)")
        kl = float(self.link.knob(KL_IN_LOSS)) if KL_IN_LOSS in self.knob_specs else None
        ended = dict(self.stages.ended)
        if (kl, ended) != self._sent_loss:
            config = self._actor_config if kl is None else dataclasses.replace(self._actor_config, kl_loss_coef=kl)
            trainer.actor_rollout_wg.set_loss_fn(StagedLoss(functools.partial(ppo_loss, config=config), ended))
            self._sent_loss = (kl, ended)

    def end_step(self) -> dict[str, float]:
        extra = {}
        if self.length_budget is not None:
            extra[f"cadence/{self.length_budget.name}"] = float(self.length_budget.schedule(self.length_clock()))
        out = super().end_step()
        self._sync()
        out = {**out, **extra}
        self.stages.log(out)                   # the adapter's own values, as link.log after the step
        self._use(self.part_of[self.stages.index])
        return out

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """As :class:`VerlRegimen`'s (the link holds the stages and every stage's curriculum), with every
        stage's RL pieces and the selector's counters."""
        self._use(self._part)
        selector = self._selector()
        parts = [{"predictive": None if p.predictive is None else encode(p.predictive.state_dict()),
                  "band": None if p.band is None else encode(p.band.state_dict()), **p._pieces_state()}
                 for p in self.parts]
        return {"kind": KIND, "link": encode(self.link.state_dict()), "counts": dict(self.counts),
                "step": dict(self._step), "selector": {"forced": selector.forced, "repeated": selector.repeated},
                "parts": parts}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output; a state of another shape changes nothing."""
        counts, step = self._read_counts(state)
        saved, counters = state.get("parts"), state.get("selector")
        if not isinstance(saved, list) or len(saved) != len(self.parts) or not isinstance(counters, Mapping):
            raise StateError(f"the {KIND} state is not one of a regimen with these {len(self.parts)} sets of stage "
                             f"pieces")
        self._use(self._part)
        restored = []
        for part, s in zip(self.parts, saved):
            pieces = part._restored_pieces(s)
            for name in ("predictive", "band"):
                mine, theirs = getattr(part, name), s.get(name)
                if (mine is None) != (theirs is None):
                    raise StateError(f"the {KIND} state {'has' if theirs is not None else 'lacks'} a {name} piece "
                                     f"where this regimen {'has' if mine is not None else 'has none'}")
                if mine is not None:
                    pieces[name] = copy.deepcopy(mine)
                    pieces[name].load_state_dict(decode(copy.deepcopy(theirs)))
            restored.append(pieces)
        try:
            forced, repeated = int(counters["forced"]), int(counters["repeated"])
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"malformed {KIND} selector state: {e!r}") from None
        self.link.load_state_dict(decode(copy.deepcopy(state["link"])))
        for part, pieces in zip(self.parts, restored):
            for name, value in pieces.items():
                setattr(part, name, value)
        self.counts, self._step = counts, step
        self.selector.forced, self.selector.repeated = forced, repeated
        self._use(self.part_of[self.stages.index], store=False)
        self._start()


_STAGE_ENDS: dict[int, float] = {}
"""In a worker process: where the driver's rules ended stages (stage index → global step), as the
last :class:`StagedLoss` called there carried them."""


class StagedLoss:
    """verl's loss function carrying where rules ended stages (``{stage index: global step}``). The
    actor workers call it before each optimizer update, which puts the ends where :class:`ScheduledAdamW`
    reads them; the loss itself is ``loss_fn``'s.

        >>> loss = StagedLoss(lambda x: 2 * x, {0: 3.0})
        >>> loss(1.5), _STAGE_ENDS
        (3.0, {0: 3.0})
    """

    def __init__(self, loss_fn: Callable[..., Any], ended: Mapping[int, float]) -> None:
        self.loss_fn, self.ended = loss_fn, {int(i): float(p) for i, p in ended.items()}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _STAGE_ENDS != self.ended:
            _STAGE_ENDS.clear()
            _STAGE_ENDS.update(self.ended)
        return self.loss_fn(*args, **kwargs)


def tap_validation(trainer: Any, regimen: StagedVerlRegimen) -> None:
    """Feed every validation ``trainer`` runs (verl's ``_validate``: the one before training and each
    ``trainer.test_freq`` steps) to ``regimen``'s stage rules."""
    validate = getattr(trainer, "_validate", None)
    if validate is None:
        raise CadenceError("a stage that ends on a rule reads verl's validation metrics: the trainer has no "
                           "_validate (verl's v1 PPOTrainer has)")

    def tapped(*args: Any, **kwargs: Any) -> Any:
        metrics = validate(*args, **kwargs)
        regimen.evaluated(metrics or {})
        return metrics

    trainer._validate = tapped


class _Columns:
    """A dataset's columns by name (dots reach into dicts), for ``Regimen.build_data``."""

    def __init__(self, rows: Any) -> None:
        self.rows = rows

    def __getitem__(self, key: str) -> list[Any]:
        try:
            return _read_column(self.rows, key, "curriculum.arms.column")
        except CadenceError as e:
            raise KeyError(str(e)) from None


def regimen_from(source: Any, **options: Any) -> VerlRegimen:
    """The driver-side regimen of a regimen file (its path, or its dict): a :class:`StagedVerlRegimen`
    with stages, else a :class:`VerlRegimen` built as the file's override lines build it."""
    from cadence.integrations.verl_config import check_verl, read_regimen, sampler_kwargs

    regimen = read_regimen(source)
    if regimen.stages:
        return StagedVerlRegimen(regimen, **options)
    check_verl(regimen)
    return VerlRegimen(**sampler_kwargs(regimen), **options)


def grpo_advantage(scores: np.ndarray, groups: np.ndarray, norm_by_std: bool = True) -> np.ndarray:
    """One advantage per response, from verl's own ``compute_grpo_outcome_advantage`` over the groups.

        >>> grpo_advantage(np.array([1.0, 0.0, 1.0, 1.0]), np.array(["a", "a", "b", "b"])).round(3).tolist()
        [0.707, -0.707, 0.0, 0.0]
    """
    rewards = torch.as_tensor(np.asarray(scores, dtype=np.float32)).reshape(-1, 1)
    advantages, _ = core_algos.compute_grpo_outcome_advantage(
        token_level_rewards=rewards, response_mask=torch.ones_like(rewards),
        index=np.asarray(groups, dtype=object), norm_adv_by_std_in_grpo=norm_by_std)
    return advantages[:, 0].double().numpy()


def _checkpointable(value: Any, path: str) -> Any:
    """A copy of ``value`` that ``torch.load(weights_only=True)`` reads: tensors (copied to the CPU),
    numbers, strings, ``None``, lists, tuples and dicts of them (numpy arrays become lists); anything
    else is a StateError naming the field."""
    if torch.is_tensor(value):
        return value.detach().to("cpu", copy=True)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype != object:
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return type(value)(_checkpointable(v, f"{path}[{i}]") for i, v in enumerate(value))
    if isinstance(value, Mapping):
        return {k: _checkpointable(v, f"{path}.{k}") for k, v in value.items()}
    raise StateError(f"cannot checkpoint the replay buffer: {path} holds a {type(value).__name__} "
                     f"(tensors, numbers, strings, lists and dicts only)")


def _read_column(rows: Any, key: str, option: str = "arm_key") -> list[Any]:
    head, *rest = key.split(".")
    if head not in rows.column_names:
        raise CadenceError(f"{option} {key!r}: the dataset has no column {head!r} (columns: {rows.column_names})")
    values = list(rows[head])
    for part in rest:
        try:
            values = [v[part] for v in values]
        except (KeyError, TypeError):
            raise CadenceError(f"{option} {key!r}: a row's {head!r} has no entry {part!r}") from None
    return values


def regimen_lr(source: Any) -> tuple[Any, int]:
    """``(LR schedule of the global step, budget in steps)`` of a regimen file (its path, or its dict):
    with stages, each stage's ``lr`` on the stage's own progress, joined at the stages' planned ends, as
    a plain loop's link schedules it (at the planned ends: :class:`ScheduledAdamW` moves an end a
    rule set when the driver sends it).

        >>> schedule, budget = regimen_lr({"budget": "10 steps", "lr": "constant(0.1)",
        ...                                "stages": [{"name": "sft", "budget": "40%"},
        ...                                           {"name": "rl", "lr": "ramp(start=0.01, end=0)"}]})
        >>> str(schedule), budget
        ('join(constant(level=0.1), ramp(start=0.01, end=0), at=[0.4])', 10)
    """
    from cadence.integrations.verl_config import check_verl, read_regimen

    regimen = read_regimen(source)
    check_verl(regimen)
    if "lr" not in regimen.schedules and not any(s.lr is not None for s in regimen.stages):
        raise PathError("lr", "ScheduledAdamW schedules the regimen's LR, and the regimen has none")
    return regimen.lr_schedules(regimen.stage_run(regimen.clock()))["lr"], int(regimen.budget.amount)
