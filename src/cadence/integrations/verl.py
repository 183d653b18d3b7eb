"""cadence in verl 0.9's v1 trainer, through the plug-in points verl loads from its config.

verl 0.9 builds its prompt stream with ``create_rl_sampler`` (random or sequential, not pluggable)
and lets a user replace two classes by name, both loaded with verl's ``load_extern_object``:

* the **replay buffer** (``trainer.v1.sampler.custom_sampler.{path,name}`` with ``sampler_kwargs``):
  :class:`CadenceReplayBuffer` subclasses verl's sync ``ReplayBuffer`` and runs on the driver (the
  single controller). Each prompt group that finishes rollout is read once from TransferQueue:
  per response the score (``rm_scores`` summed), correctness (score ≥ ``correct_threshold``), the
  GRPO advantage (verl's ``compute_grpo_outcome_advantage`` over the group) and the response length
  (``response_mask`` summed) go to the curriculum policy and the predictive filter, and the rollouts
  and response tokens to the clock. With a pass-rate ``band`` the buffer evicts out-of-band groups
  through the hook verl's own DAPO filter uses, so verl's refill path generates replacements.
* the **train dataset** (``data.custom_cls.{path,name}``): :class:`CadencePrompts` subclasses
  verl's ``RLHFDataset``; the index verl's sampler asks for only counts draws, the prompt is the
  curriculum's choice, admitted by the predictive filter (GRESO) before anything is generated. Its
  ``state_dict`` is the whole regimen, so verl's ``StatefulDataLoader`` state in ``data.pt`` carries
  it through ``_save_checkpoint`` / ``_load_checkpoint``.

The LR runs in verl's workers: :class:`ScheduledAdamW`, loaded by verl's optimizer factory
(``optim.optimizer_impl``/``optim.optimizer``), sets each update's LR from a cadence schedule of the
global step. Other knobs are evaluated on the driver at verl's global step, logged with verl's
metrics and handed to reward functions in each prompt's ``extra_info``; three of them reach verl:

* ``kl_coef``: the in-reward KL coefficient (``algorithm.use_kl_in_reward``);
* ``kl_loss_coef``: the actor's in-loss KL coefficient (``actor.use_kl_loss``), sent to the workers
  as verl's own ``ppo_loss`` with that coefficient through the worker group's ``set_loss_fn``;
* ``response_length``: each prompt's generation cap (``max_tokens``), applied by the agent loop
  :class:`CadenceAgentLoop` (``rollout.agent.default_agent_loop=cadence_single_turn``).

A ``length_budget`` (:class:`cadence.rl.LengthBudget`) is a knob under its name, stated in the
prompt when ``in_prompt``. ``hints`` (:class:`cadence.rl.Hints`, Scaf-GRPO / GHPO, with a ``band``):
a prompt whose plain groups stayed all wrong ``patience`` rounds is evicted like an out-of-band group,
and the next prompts ``CadencePrompts`` serves are that prompt with guidance of tier 1, then 2, …
(each row's tier texts from a dataset column, appended to the last message) until a tier yields a
correct answer; verl's refill generates them. ``replay`` (:class:`cadence.rl.ReplayBuffer`,
VL-Rethinker's selective sample replay, with a ``band``): each finished group with non-zero advantage
is copied from TransferQueue (every trajectory's fields and tags); when groups are evicted, stored
groups (drawn ∝ ``|A|``) are put back into TransferQueue under their own uid as finished groups in
their places, before verl decides how many prompts to refill.

An ``allocation`` spreads each fetch's rollouts over its prompts with
:class:`cadence.rl.KnapsackAllocation` (Knapsack RL), or with ``method: gvm``
:class:`cadence.rl.GVMAllocation` (GVM-RAFT), through the per-prompt ``__rollout_n__`` that verl's
agent loop reads. verl's rollouts carry no per-sample gradient norm (the actor would need a backward
pass per response), so GVM-RAFT runs here with equal gradient norms: ``n ∝ 1/sqrt(p + α·p^(1−β))``.

A regimen file reaches verl as one value, its path (``sampler_kwargs.regimen`` for the driver,
``override_optimizer_config.regimen`` for :class:`ScheduledAdamW` in the workers; see
``cadence.integrations.verl_config.verl_overrides``). With ``stages`` (each ending on its budget or,
but the last, on a rule over verl's validation metrics and the adapter's own values) the driver runs
a :class:`StagedVerlRegimen`: each stage's curriculum and RL pieces from the stage's first step, knobs
on the stages' joins; the workers' LR is each stage's ``lr`` on its own progress, its joins at the
ends a rule set sent with verl's loss function (:class:`StagedLoss`).

This module holds the classes verl loads by name; the driver-side regimen they drive
(:class:`VerlRegimen`, :class:`StagedVerlRegimen`, :class:`StagedLoss`, :func:`regimen_from`,
:func:`regimen_lr`) is :mod:`cadence.integrations.verl_regimen`'s, importable from here too.

Config lines and what is not covered: ``docs/integrations/verl.md``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from verl.experimental.agent_loop.agent_loop import register as register_agent_loop
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop
from verl.trainer.ppo.v1 import replay_buffer as verl_replay_buffer
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.utils.tensordict_utils import list_of_dict_to_tensordict

from cadence.clock import Clock
from cadence.errors import CadenceError, StateError
from cadence.integrations.versions import describe
from cadence.integrations.verl_regimen import (_STAGE_ENDS, AGENT_LOOP, HINT_KEY, ITEM_KEY, MAX_TOKENS_KEY,
                                               ROLLOUTS_KEY, StagedLoss, StagedVerlRegimen, VerlRegimen,
                                               _checkpointable, grpo_advantage, regimen_from, regimen_lr,
                                               tap_validation)
from cadence.schedules.base import as_schedule

__all__ = ["CadencePrompts", "CadenceReplayBuffer", "CadenceAgentLoop", "ScheduledAdamW", "rollout_signals",
           # the driver-side regimen (cadence.integrations.verl_regimen), importable from here too
           "VerlRegimen", "StagedVerlRegimen", "StagedLoss", "regimen_from", "regimen_lr", "tap_validation",
           "ITEM_KEY", "ROLLOUTS_KEY", "HINT_KEY", "MAX_TOKENS_KEY", "AGENT_LOOP"]

_active: list[VerlRegimen] = []   # the regimen the last CadenceReplayBuffer built, for CadencePrompts


def activate(regimen: VerlRegimen) -> None:
    """Make ``regimen`` the one :class:`CadencePrompts` attaches to in this process."""
    _active[:] = [regimen]


def active_regimen() -> VerlRegimen:
    """The regimen the replay buffer built in this process (verl builds the buffer before the datasets)."""
    if not _active:
        raise CadenceError("CadencePrompts needs cadence's replay buffer: set trainer.v1.sampler.custom_sampler."
                           "path=pkg://cadence.integrations.verl and ...custom_sampler.name=CadenceReplayBuffer")
    return _active[0]


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


# ---------------------------------------------------------------------- verl classes
class CadencePrompts(RLHFDataset):
    """verl's ``RLHFDataset`` whose train instance serves the curriculum's prompts.

    verl builds the train and the validation dataset from the same class; the instance whose files
    are ``data.train_files`` attaches to the regimen, the validation one behaves as ``RLHFDataset``.
    Needs ``data.dataloader_num_workers=0``: prompts are drawn on the driver, where feedback arrives.
    """

    def __init__(self, data_files: Any, tokenizer: Any, config: Any, processor: Any = None,
                 max_samples: int = -1) -> None:
        super().__init__(data_files=data_files, tokenizer=tokenizer, config=config, processor=processor,
                         max_samples=max_samples)
        self.regimen: VerlRegimen | None = None
        train = _plain(config.get("train_files")) if hasattr(config, "get") else None
        as_list = lambda f: [str(x) for x in (f if isinstance(f, (list, tuple)) else [f])]  # noqa: E731
        if train is not None and as_list(_plain(self.original_data_files)) == as_list(train):
            regimen = active_regimen()
            if regimen.attached:
                raise CadenceError("the cadence regimen already serves a train dataset; build one replay buffer "
                                   "per train dataset")
            regimen.attach_rows(self.dataframe)
            self.regimen = regimen

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """One dataloader fetch (PyTorch's batched fetch): the rows, spread by the allocation if any."""
        rows = [self[i] for i in indices]
        return rows if self.regimen is None else self.regimen.allocate(rows)

    def __getitem__(self, item: int) -> dict:
        if self.regimen is None:
            return super().__getitem__(item)
        if torch.utils.data.get_worker_info() is not None:
            raise CadenceError("CadencePrompts draws prompts on the driver: set data.dataloader_num_workers=0")
        chosen, level = self.regimen.next_prompt()
        row = super().__getitem__(chosen)
        row[ITEM_KEY] = torch.tensor(chosen, dtype=torch.int64)
        return self.regimen.prompt_fields(self.regimen.guided(row, chosen, level))

    def state_dict(self) -> dict[str, Any]:
        """The regimen's state (torchdata's ``StatefulDataLoader`` saves it in verl's ``data.pt``)."""
        return {} if self.regimen is None else self.regimen.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.regimen is not None:
            self.regimen.load_state_dict(state)
        elif state:
            raise StateError("a cadence regimen state was given to a dataset with no regimen")


BUFFER_KEYS = ("train_batch_size", "max_inflight_gen_batches")

REPLAY_RELIES_ON = ("partitions", "pending_keys", "running_keys", "finished_keys", "failure_keys",
                    "prompt_global_steps", "_dapo_classification_cache")
"""The state of verl's ``ReplayBuffer`` that replay reads and extends within one poll (verl 0.9's sync sampler)."""


class CadenceReplayBuffer(verl_replay_buffer.ReplayBuffer):
    """verl's sync replay buffer with cadence's feedback and pass-rate band (see the module docs).

    ``sampler_kwargs`` holds :class:`VerlRegimen`'s arguments, plus, with a ``band``,
    ``train_batch_size`` (= ``data.train_batch_size``) and optionally ``max_inflight_gen_batches``.
    """

    def __init__(self, trainer_mode: str, trainer_config: Any, max_off_policy_threshold: Any,
                 max_off_policy_strategy: str, sampler_kwargs: Any, refill_fn: Any = None, **kwargs: Any) -> None:
        if trainer_mode != "sync":
            raise CadenceError(f"CadenceReplayBuffer supports trainer.v1.trainer_mode=sync, got {trainer_mode!r}")
        options = dict(_plain(sampler_kwargs) or {})
        buffer = {k: options.pop(k) for k in BUFFER_KEYS if k in options}
        if "regimen" in options:
            source = options.pop("regimen")
            if set(options) - {"max_candidates"}:
                raise CadenceError(f"sampler_kwargs.regimen: the regimen file holds the curriculum, the RL pieces, "
                                   f"the knobs and the budget; leave out sampler_kwargs {sorted(options)}")
            regimen = regimen_from(source, **options)
        else:
            regimen = VerlRegimen(**options)
        config = getattr(getattr(refill_fn, "__self__", None), "config", None)   # verl's trainer's, via its bound method
        if isinstance(config, DictConfig):
            regimen.check_config(config)
        if regimen.uses("band"):
            if "train_batch_size" not in buffer:
                raise CadenceError("a band needs sampler_kwargs.train_batch_size (= data.train_batch_size) "
                                   "and data.gen_batch_size=1")
            kwargs.update(filter_groups_metric="cadence_pass_rate", train_batch_size=int(buffer["train_batch_size"]),
                          gen_batch_size=1, max_inflight_gen_batches=int(buffer.get("max_inflight_gen_batches", 1)))
        super().__init__(trainer_mode=trainer_mode, trainer_config=trainer_config,
                         max_off_policy_threshold=max_off_policy_threshold,
                         max_off_policy_strategy=max_off_policy_strategy, sampler_kwargs=sampler_kwargs,
                         refill_fn=refill_fn, **kwargs)
        missing = [name for name in REPLAY_RELIES_ON if not isinstance(getattr(self, name, None), dict)]
        if regimen.uses("replay") and missing:
            raise CadenceError(f"verl's ReplayBuffer has no {missing}, which cadence's replay puts stored groups into; "
                               f"it supports {describe('verl')}")
        self.regimen = regimen
        if getattr(regimen, "ruled", False):
            tap_validation(getattr(refill_fn, "__self__", None), regimen)
        activate(regimen)

    def sample(self, global_steps: int, partition_id: str, batch_size: int) -> tuple[Any, dict]:
        if partition_id == "val":
            return super().sample(global_steps=global_steps, partition_id=partition_id, batch_size=batch_size)
        self.regimen.begin_step(global_steps, trainer=getattr(self.refill_fn, "__self__", None))
        batch, metrics = super().sample(global_steps=global_steps, partition_id=partition_id, batch_size=batch_size)
        metrics.update(self.regimen.end_step())
        return batch, metrics

    def _dapo_filtered_keys(self, partition_id: str) -> tuple[set[str], Counter]:
        """Observe every newly finished group once; return the out-of-band ones and those due a hinted
        re-roll (to evict and refill) with a ``{pass rate: groups}`` count, as verl's DAPO filter does."""
        if partition_id == "val":
            return set(), Counter()
        verdicts = self._dapo_classification_cache[partition_id]   # uid -> pass rate if evicted, else None
        finished = self.finished_keys[partition_id]
        for uid in verdicts.keys() - finished:
            del verdicts[uid]
        new = finished - verdicts.keys()
        if new:
            uids, rates, redo = self._observe_groups(partition_id, new)
            keep = self.regimen.keep(rates, redo)
            for uid, rate, kept in zip(uids, rates, keep):
                verdicts[uid] = None if kept else float(rate)
            for uid in new - set(uids):   # a finished group with no trajectory: nothing to learn from
                verdicts[uid] = None
            evicted = int((~keep & ~redo).sum())   # a group due a hinted re-roll keeps its place for it
            if self.regimen.replay is not None and evicted:
                self._replay(partition_id, evicted, verdicts)
        dropped = {uid: rate for uid, rate in verdicts.items() if rate is not None}
        return set(dropped), Counter(dropped.values())

    def _observe_groups(self, partition_id: str, uids: set[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Feed the regimen each group's trajectories (a session's last turn); returns the groups, their
        pass rates and which to evict for a guided re-roll."""
        last: dict[tuple[str, str], tuple[int, str]] = {}   # (uid, session) -> its last turn's key
        for key in self.partitions[partition_id]:
            uid, session, turn = key.rsplit("_", 2)
            if uid in uids and last.get((uid, session), (-1, ""))[0] < int(turn):
                last[(uid, session)] = (int(turn), key)
        keys = [key for _, key in last.values()]
        if not keys:
            return [], np.zeros(0), np.zeros(0, dtype=bool)
        hinted = self.regimen.uses("hints_kwargs")    # (every stage's prompts carry their tier then)
        data = verl_replay_buffer.tq.kv_batch_get(keys=keys, partition_id=partition_id,
                                                  select_fields=["rm_scores", "response_mask", ITEM_KEY]
                                                  + ([HINT_KEY] if hinted else []))
        groups = np.array([key.split("_")[0] for key in keys], dtype=object)
        levels = np.asarray(torch.as_tensor(data[HINT_KEY]).reshape(-1), dtype=np.int64) if hinted else None
        ids, scores, lengths = rollout_signals(data)
        rates = self.regimen.observe(ids, scores, lengths, groups=groups, levels=levels)
        if self.regimen.replay is not None:
            self._remember(partition_id, ids, scores, groups, levels)
        return list(dict.fromkeys(groups.tolist())), rates, self.regimen.redo

    def _remember(self, partition_id: str, ids: np.ndarray, scores: np.ndarray, groups: np.ndarray,
                  levels: np.ndarray | None) -> None:
        """Copy the finished plain groups with non-zero advantage (all their trajectories' fields and
        tags) from TransferQueue into the replay buffer."""
        advantage = grpo_advantage(scores, groups, self.regimen.norm_adv_by_std)
        plain = np.ones(len(ids), dtype=bool) if levels is None else levels == 0
        wanted = {}
        for uid in dict.fromkeys(groups.tolist()):
            rows = (groups == uid) & plain
            if rows.any() and np.max(np.abs(advantage[rows])) > 1e-9:
                wanted[uid] = (int(ids[rows][0]), advantage[rows])
        if not wanted:
            return
        partition = self.partitions[partition_id]
        keys = [key for key in partition if key.split("_")[0] in wanted]
        data = verl_replay_buffer.tq.kv_batch_get(keys=keys, partition_id=partition_id).tolist()
        for uid, (item, adv) in wanted.items():
            mine = [i for i, key in enumerate(keys) if key.split("_")[0] == uid]
            self.regimen.remember(uid, item, adv, [keys[i] for i in mine], [partition[keys[i]] for i in mine],
                                  [_checkpointable(data[i], "a trajectory") for i in mine])

    def _replay(self, partition_id: str, k: int, verdicts: dict) -> None:
        """Put up to ``k`` stored groups back into TransferQueue as finished groups (and into this
        poll's snapshot, so verl counts them before deciding how many prompts to refill)."""
        busy = ({key.split("_")[0] for key in self.partitions[partition_id]} | self.pending_keys[partition_id]
                | self.running_keys[partition_id] | self.finished_keys[partition_id] | self.failure_keys[partition_id])
        step = int(self.regimen.clock.steps) + 1       # verl's global step
        tq = verl_replay_buffer.tq
        for group in self.regimen.replays(k, busy):
            uid = group["uid"]
            tq.kv_batch_put(keys=group["keys"], partition_id=partition_id, tags=group["tags"],
                            fields=list_of_dict_to_tensordict(group["rows"]))
            prompt = {"is_prompt": True, "status": "finished", "global_steps": step}
            tq.kv_batch_put(keys=[uid], partition_id=partition_id, tags=[prompt])
            self.finished_keys[partition_id].add(uid)
            self.prompt_global_steps[partition_id][uid] = step
            for key, tag in zip(group["keys"], group["tags"]):
                self.partitions[partition_id][key] = dict(tag)
            verdicts[uid] = None                           # trained as it is, not observed again


def rollout_signals(data: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(item ids, scores, response lengths)``, one row per trajectory, from the TensorDict
    TransferQueue returns (``rm_scores`` and ``response_mask`` per token, jagged or padded)."""
    if ITEM_KEY not in data.keys():
        raise CadenceError(f"the rollouts carry no {ITEM_KEY!r}: the train dataset must be CadencePrompts")
    ids = np.asarray(torch.as_tensor(data[ITEM_KEY]).reshape(-1), dtype=np.int64)
    scores = np.array([float(row.sum()) for row in data["rm_scores"].unbind(0)])
    lengths = np.array([float(row.sum()) for row in data["response_mask"].unbind(0)])
    return ids, scores, lengths


# ---------------------------------------------------------------------- generation cap in the rollout
@register_agent_loop(AGENT_LOOP)
class CadenceAgentLoop(SingleTurnAgentLoop):
    """verl's single-turn agent loop with a per-prompt generation cap: the ``response_length`` knob's
    value, carried by the prompt under :data:`MAX_TOKENS_KEY`, becomes the request's ``max_tokens``
    (vLLM and SGLang both read it), at most ``rollout.response_length``. verl registers it in every
    agent-loop worker that loads ``CadencePrompts`` (the worker imports the dataset class)."""

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> Any:
        cap = kwargs.pop(MAX_TOKENS_KEY, None)
        if cap is not None:
            cap = max(1, min(int(cap), int(self.response_length)))
            sampling_params = {**sampling_params, "max_tokens": cap}
        return await super().run(sampling_params, **kwargs)


# ---------------------------------------------------------------------- LR in the workers
class ScheduledAdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` whose LR is a cadence schedule of verl's global step.

    verl's optimizer factory passes ``optim.override_optimizer_config`` as keyword arguments:
    ``lr_schedule`` (a spec), ``budget`` (global steps, e.g. ``trainer.total_training_steps``) and
    ``updates_per_step`` (optimizer updates per global step: ``ppo_epochs × train_batch_size /
    ppo_mini_batch_size``); or, instead of the first two, ``regimen`` (a regimen file's path, or its
    dict): its ``lr``, with stages each stage's own on the stage's own progress (:func:`regimen_lr`);
    where a rule ended a stage, the join moves to the end the driver sent (:class:`StagedLoss`).
    Update ``u`` (from 0) trains at global step ``u // updates_per_step + 1`` with the schedule's
    value after ``u // updates_per_step`` steps. The count lives in the param groups, so it is saved
    and restored with verl's optimizer checkpoint. verl's own LR scheduler still steps afterwards;
    keep it ``constant`` with no warmup (each update sets the LR again).

        >>> p = torch.nn.Parameter(torch.zeros(1))
        >>> opt = ScheduledAdamW([p], lr=1.0, lr_schedule="ramp(start=1, end=0)", budget=4, updates_per_step=2)
        >>> lrs = []
        >>> for _ in range(4):
        ...     p.grad = torch.ones(1); opt.step(); lrs.append(opt.param_groups[0]["lr"])
        >>> lrs
        [1.0, 1.0, 0.75, 0.75]
    """

    def __init__(self, params: Any, *, lr_schedule: Any = None, budget: Any = None, regimen: Any = None,
                 updates_per_step: int = 1, **kwargs: Any):
        if not isinstance(updates_per_step, int) or updates_per_step < 1:
            raise CadenceError(f"updates_per_step must be a positive integer, got {updates_per_step!r}")
        self._staged: Any = None        # (regimen, its StageRun) when a rule may end a stage
        if regimen is not None:
            if lr_schedule is not None or budget is not None:
                raise CadenceError("ScheduledAdamW takes regimen=, or lr_schedule= and budget=; not both")
            from cadence.integrations.verl_config import read_regimen

            regimen = read_regimen(regimen)
            lr_schedule, budget = regimen_lr(regimen)
            if any(s.rules for s in regimen.stages):
                self._staged = (regimen, regimen.stage_run(regimen.clock()))
        elif lr_schedule is None:
            raise CadenceError("ScheduledAdamW needs lr_schedule= and budget=, or regimen= (a regimen file's path)")
        self.lr_schedule, self.budget, self.updates_per_step = as_schedule(lr_schedule), budget, updates_per_step
        Clock(budget=budget).check([self.lr_schedule])
        super().__init__(params, **kwargs)
        for group in self.param_groups:
            group.setdefault("cadence_updates", 0)

    def scheduled_lr(self, updates: int) -> float:
        """The LR of update ``updates`` (counted from 0)."""
        clock = Clock(budget=self.budget)
        done = updates // self.updates_per_step
        if done:
            clock.advance(done)
        return float(self.lr_schedule(clock))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        if self._staged is not None and self._staged[1].ended != _STAGE_ENDS:
            regimen, stages = self._staged
            stages.ended = dict(_STAGE_ENDS)
            self.lr_schedule = regimen.lr_schedules(stages)["lr"]
        for group in self.param_groups:
            group["lr"] = self.scheduled_lr(int(group["cadence_updates"]))
            group["cadence_updates"] = int(group["cadence_updates"]) + 1
        return super().step(closure)
