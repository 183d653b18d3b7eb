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
from os import PathLike
from pathlib import Path
from typing import Any, Mapping

from cadence.errors import CadenceError
from cadence.regimen.pieces import PathError

SAMPLER = "+trainer.v1.sampler.sampler_kwargs"
OPTIM = "actor_rollout_ref.actor.optim"


def verl_overrides(regimen: Any, *, train_batch_size: int | None = None, updates_per_step: int = 1,
                   path: Any = None) -> list[str]:
    """The verl overrides that build ``regimen``: the dataset and replay-buffer classes, the
    curriculum (``policy``, ``arm_key``, its arguments, ``seed``), ``rl.dynamic`` as the pass-rate
    ``band``, ``rl.predictive``, ``rl.knapsack`` as the ``allocation``, ``rl.replay``, ``rl.hints`` (with
    ``rl.guidance``, the column of guidance texts), ``rl.length_budget``,
    ``rl.correct_threshold``, the knobs, the budget and the LR (``ScheduledAdamW`` in the workers).

    A regimen with ``stages`` reaches verl as its file: ``regimen`` is the file's path (or give
    ``path=``), and the lines name it once for the sampler and once for ``ScheduledAdamW``, which
    both read it (every node must see the file at that path).

    Args:
        train_batch_size: verl's ``data.train_batch_size`` (needed with ``rl.dynamic``).
        updates_per_step: ``ppo_epochs × train_batch_size / ppo_mini_batch_size``.
        path: the file ``regimen`` was read from (a regimen with stages).

    Raises:
        PathError: a piece verl's adapter cannot run, named by its path (plans, averaging, a rule on
            the last stage, a curriculum whose arms are listed instead of read from a column, other
            schedules).
    """
    if isinstance(regimen, (str, PathLike)):
        regimen, path = read_regimen(regimen), regimen
    check_verl(regimen)
    lines = ["data.custom_cls.path=pkg://cadence.integrations.verl", "data.custom_cls.name=CadencePrompts",
             "trainer.v1.sampler.custom_sampler.path=pkg://cadence.integrations.verl",
             "trainer.v1.sampler.custom_sampler.name=CadenceReplayBuffer"]
    steps = int(regimen.budget.amount)
    if regimen.stages:
        if path is None:
            raise CadenceError("a regimen with stages reaches verl as its file: give verl_overrides the file's path")
        where = str(Path(path).resolve())
        if not Path(where).is_file():
            raise CadenceError(f"{where}: no such regimen file")
        lines += _flat(SAMPLER, {"regimen": where})
        if any(kw.get("band") is not None for kw in stage_kwargs(regimen)):
            if train_batch_size is None:
                raise CadenceError("train_batch_size: the pass-rate band needs verl's data.train_batch_size")
            lines += ["data.gen_batch_size=1", f"{SAMPLER}.train_batch_size={train_batch_size}"]
        if "lr" in regimen.schedules or any(s.lr is not None for s in regimen.stages):
            lines += [f"{OPTIM}.optimizer_impl=cadence.integrations.verl", f"{OPTIM}.optimizer=ScheduledAdamW",
                      *_flat(f"+{OPTIM}.override_optimizer_config", {"regimen": where,
                                                                     "updates_per_step": updates_per_step})]
        return lines
    kwargs = sampler_kwargs(regimen)
    for key, value in kwargs.items():
        if key == "band":
            if train_batch_size is None:
                raise CadenceError("train_batch_size: the pass-rate band needs verl's data.train_batch_size")
            lines += ["data.gen_batch_size=1", f"{SAMPLER}.train_batch_size={train_batch_size}"]
        if isinstance(value, Mapping):
            lines += _flat(f"{SAMPLER}.{key}", value) or [f"{SAMPLER}.{key}={{}}"]
        else:
            lines += _flat(SAMPLER, {key: value})
    if "lr" in regimen.schedules:
        lines += [f"{OPTIM}.optimizer_impl=cadence.integrations.verl", f"{OPTIM}.optimizer=ScheduledAdamW",
                  *_flat(f"+{OPTIM}.override_optimizer_config", {"lr_schedule": str(regimen.schedules["lr"]),
                                                                 "budget": steps,
                                                                 "updates_per_step": updates_per_step})]
    return lines


def read_regimen(source: Any) -> Any:
    """A :class:`~cadence.regimen.Regimen` from a file path, a dict, or a Regimen."""
    from cadence.regimen import Regimen

    if isinstance(source, (str, PathLike)):
        return Regimen.from_file(source)
    if isinstance(source, Mapping):
        return Regimen.from_dict(source)
    if isinstance(source, Regimen):
        return source
    raise CadenceError(f"regimen: give a regimen file's path or its dict, got {type(source).__name__}")


def check_verl(regimen: Any) -> None:
    """Raise a :class:`PathError` for the first piece of ``regimen`` verl's adapter cannot run."""
    regimen.refuse("verl")
    budget = regimen.budget
    if budget is None or budget.unit != "steps":
        raise PathError("budget", "verl counts global steps: give the regimen a budget in steps")
    d = regimen.to_dict()
    if d.get("schedules"):
        raise PathError(f"schedules.{next(iter(d['schedules']))}", "verl's ScheduledAdamW schedules the LR only")
    for i, s in enumerate(d.get("stages", [])):
        if s.get("schedules"):
            raise PathError(f"stages[{i}].schedules.{next(iter(s['schedules']))}",
                            "verl's ScheduledAdamW schedules the LR only")
        for rule in ("until", "plateau"):
            if rule in s and i == len(d["stages"]) - 1:
                raise PathError(f"stages[{i}].{rule}", "verl trains trainer.total_training_steps and cannot stop "
                                "early on a rule; the last stage ends with the run (its budget)")
    stage_kwargs(regimen)


def stage_kwargs(regimen: Any) -> list[dict[str, Any]]:
    """Per stage (one entry without stages), the :func:`sampler_kwargs` of the pieces it runs (its own
    ``curriculum``/``rl`` or the top level's), checked; errors name the stage's path."""
    if not regimen.stages:
        return [sampler_kwargs(regimen)]
    out = []
    for i, own in enumerate(regimen.stage_pieces or [{}] * len(regimen.stages)):
        part = regimen.for_part(i)
        at = {k: f"stages[{i}].{k}" if k in own else k for k in ("curriculum", "rl")}
        out.append(sampler_kwargs(part, at=at, knobs=False))
    kinds = {("band" if kw.get("band") is not None else "allocation" if kw.get("allocation") is not None else None)
             for kw in out} - {None}
    if len(kinds) > 1:
        i = next(i for i, kw in enumerate(out) if kw.get("allocation") is not None)
        raise PathError(f"stages[{i}].rl.knapsack" if "rl" in (regimen.stage_pieces or [{}] * (i + 1))[i]
                        else "rl.knapsack", "an allocation spreads a whole fetch's rollouts and a band refills one "
                        "prompt at a time (data.gen_batch_size=1); verl's fetch size is one for the run, so no stage "
                        "may have an allocation while another has a band")
    return out


def sampler_kwargs(regimen: Any, *, at: Mapping[str, str] | None = None, knobs: bool = True) -> dict[str, Any]:
    """``VerlRegimen``'s arguments (verl's ``sampler_kwargs``) that build ``regimen``'s top-level
    curriculum and RL pieces (with ``knobs``, also its knobs and budget); ``at`` names the sections'
    paths in errors (``{"rl": "stages[1].rl"}``)."""
    at = {"curriculum": "curriculum", "rl": "rl", **(at or {})}
    d = regimen.to_dict()
    out: dict[str, Any] = {}
    c = d.get("curriculum") or {}
    if c.get("policy"):
        arms = c.get("arms", {})
        if "column" not in arms or set(arms) - {"column"}:
            raise PathError(f"{at['curriculum']}.arms", "verl reads each prompt's arm from one dataset column: "
                                                       "{column: ...}")
        out.update(policy=c["policy"], arm_key=arms["column"])
        extra = {k: v for k, v in c.items() if k not in ("kind", "policy", "arms", "batch_size", "seed", "replacement")}
        if extra:
            out["policy_kwargs"] = extra
        if "seed" in c:
            out["seed"] = c["seed"]
    rl = d.get("rl") or {}
    if "dynamic" in rl:
        band = dict(rl["dynamic"])
        if band.pop("max_extra_rounds", None) is not None:
            raise PathError(f"{at['rl']}.dynamic.max_extra_rounds", "verl refills evicted groups itself; leave it out")
        out["band"] = band
    for name, key in (("predictive", "predictive"), ("knapsack", "allocation"), ("replay", "replay")):
        if name in rl:
            out[key] = dict(rl[name])
    if "hints" in rl:
        if "guidance" not in rl:
            raise PathError(f"{at['rl']}.guidance", "verl's hints read each row's guidance texts from a dataset "
                                                    "column: name it")
        out["hints"] = {"guidance": rl["guidance"], **rl["hints"]}
    if "length_budget" in rl:
        out["length_budget"] = dict(rl["length_budget"])
    if "correct_threshold" in rl:
        out["correct_threshold"] = rl["correct_threshold"]
    if knobs:
        if d.get("knobs"):
            out["knobs"] = dict(d["knobs"])
        out["budget"] = int(regimen.budget.amount)
    return out


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
