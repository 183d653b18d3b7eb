"""A regimen file as verl command-line overrides (verl is not imported: the lines are plain text).

verl reads cadence's pieces from its Hydra config (``docs/integrations/verl.md``); this module writes
those lines from a :class:`~cadence.regimen.Regimen`, so a verl run is attached from the same file
as every other host:

    >>> from cadence.regimen import Regimen
    >>> r = Regimen.from_dict({"budget": "200 steps", "lr": "wsd(peak=1e-6, warmup=5%, decay=20%)",
    ...                        "curriculum": {"policy": "dump", "arms": {"column": "data_source"}, "batch_size": 1}})
    >>> for line in verl_overrides(r, updates_per_step=4)[-3:]:
    ...     print(line)
    "+actor_rollout_ref.actor.optim.override_optimizer_config.lr_schedule='wsd(peak=1e-06, warmup=5%)'"
    +actor_rollout_ref.actor.optim.override_optimizer_config.budget=200
    +actor_rollout_ref.actor.optim.override_optimizer_config.updates_per_step=4
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from cadence.errors import CadenceError
from cadence.regimen.pieces import PathError

SAMPLER = "+trainer.v1.sampler.sampler_kwargs"
OPTIM = "actor_rollout_ref.actor.optim"


def verl_overrides(regimen: Any, *, train_batch_size: int | None = None, updates_per_step: int = 1) -> list[str]:
    """The verl overrides that build ``regimen``: the dataset and replay-buffer classes, the
    curriculum (``policy``, ``arm_key``, its arguments, ``seed``), ``rl.dynamic`` as the pass-rate
    ``band``, ``rl.predictive``, ``rl.knapsack`` as the ``allocation``, ``rl.replay``, ``rl.hints`` (with
    ``rl.guidance``, the column of guidance texts), ``rl.length_budget``,
    ``rl.correct_threshold``, the knobs, the budget and the LR (``ScheduledAdamW`` in the workers).

    Args:
        train_batch_size: verl's ``data.train_batch_size`` (needed with ``rl.dynamic``).
        updates_per_step: ``ppo_epochs × train_batch_size / ppo_mini_batch_size``.

    Raises:
        PathError: a piece verl's adapter cannot run, named by its path (stages, plans, averaging,
            a curriculum whose arms are listed instead of read from a column, other schedules).
    """
    regimen = regimen.for_part(None)
    regimen.refuse("verl")
    d = regimen.to_dict()
    if regimen.stages:
        raise PathError("stages", "verl's adapter runs one stage; stages are not supported in verl yet")
    if d.get("schedules"):
        raise PathError(f"schedules.{next(iter(d['schedules']))}", "verl's ScheduledAdamW schedules the LR only")
    budget = regimen.budget
    if budget is None or budget.unit != "steps":
        raise PathError("budget", "verl counts global steps: give the regimen a budget in steps")
    steps = int(budget.amount)
    lines = ["data.custom_cls.path=pkg://cadence.integrations.verl", "data.custom_cls.name=CadencePrompts",
             "trainer.v1.sampler.custom_sampler.path=pkg://cadence.integrations.verl",
             "trainer.v1.sampler.custom_sampler.name=CadenceReplayBuffer"]
    c = d.get("curriculum") or {}
    if c.get("policy"):
        arms = c.get("arms", {})
        if "column" not in arms or set(arms) - {"column"}:
            raise PathError("curriculum.arms", "verl reads each prompt's arm from one dataset column: {column: ...}")
        lines += [f"{SAMPLER}.policy={c['policy']}", f"{SAMPLER}.arm_key={arms['column']}"]
        extra = {k: v for k, v in c.items() if k not in ("kind", "policy", "arms", "batch_size", "seed", "replacement")}
        lines += _flat(f"{SAMPLER}.policy_kwargs", extra)
        if "seed" in c:
            lines.append(f"{SAMPLER}.seed={c['seed']}")
    rl = d.get("rl") or {}
    if "dynamic" in rl:
        band = dict(rl["dynamic"])
        if band.pop("max_extra_rounds", None) is not None:
            raise PathError("rl.dynamic.max_extra_rounds", "verl refills evicted groups itself; leave it out")
        if train_batch_size is None:
            raise CadenceError("train_batch_size: the pass-rate band needs verl's data.train_batch_size")
        lines += ["data.gen_batch_size=1", f"{SAMPLER}.train_batch_size={train_batch_size}", *_flat(f"{SAMPLER}.band", band)]
    if "predictive" in rl:
        lines += _flat(f"{SAMPLER}.predictive", rl["predictive"]) or [f"{SAMPLER}.predictive={{}}"]
    if "knapsack" in rl:
        lines += _flat(f"{SAMPLER}.allocation", rl["knapsack"]) or [f"{SAMPLER}.allocation={{}}"]
    if "replay" in rl:
        lines += _flat(f"{SAMPLER}.replay", rl["replay"]) or [f"{SAMPLER}.replay={{}}"]
    if "hints" in rl:
        if "guidance" not in rl:
            raise PathError("rl.guidance", "verl's hints read each row's guidance texts from a dataset column: name it")
        lines += [f"{SAMPLER}.hints.guidance={rl['guidance']}", *_flat(f"{SAMPLER}.hints", rl["hints"])]
    if "length_budget" in rl:
        lines += _flat(f"{SAMPLER}.length_budget", rl["length_budget"])
    if "correct_threshold" in rl:
        lines.append(f"{SAMPLER}.correct_threshold={rl['correct_threshold']}")
    lines += _flat(f"{SAMPLER}.knobs", d.get("knobs", {}))
    lines.append(f"{SAMPLER}.budget={steps}")
    if "lr" in d:
        lines += [f"{OPTIM}.optimizer_impl=cadence.integrations.verl", f"{OPTIM}.optimizer=ScheduledAdamW",
                  *_flat(f"+{OPTIM}.override_optimizer_config", {"lr_schedule": d["lr"], "budget": steps,
                                                                 "updates_per_step": updates_per_step})]
    return lines


def _flat(prefix: str, values: Mapping[str, Any]) -> list[str]:
    """``prefix.key=value`` lines; nested mappings recurse; text with spaces or parentheses in Hydra's quotes."""
    out = []
    for k, v in values.items():
        if isinstance(v, Mapping):
            out += _flat(f"{prefix}.{k}", v)
        elif isinstance(v, str) and any(ch in v for ch in " (),=[]{}'%"):
            out.append(f"\"{prefix}.{k}='{v}'\"")
        elif isinstance(v, bool):
            out.append(f"{prefix}.{k}={str(v).lower()}")
        elif isinstance(v, (list, tuple)):
            out.append(f"{prefix}.{k}={json.dumps(list(v))}")
        else:
            out.append(f"{prefix}.{k}={v}")
    return out
