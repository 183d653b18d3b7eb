"""``cadence bench rl --experiment hpt``: HPT's per-prompt gate vs pure GRPO vs SFT-then-GRPO.

Hybrid Post-Training ("Towards a Unified View of Large Language Model Post-Training", arXiv
2509.04419) trains each prompt with the RL loss or, when its group scored at most γ correct, with SFT
on its demonstration (:class:`cadence.rl.HybridGate`). In the lab the demonstrations are the suite's
answers. Per seed, from one warm start, on the same uniform prompt draws and rollout count:

* ``grpo`` — plain GRPO;
* ``hpt`` — GRPO with the gate (its SFT tokens counted);
* ``sft_then_grpo`` — SFT on uniformly drawn demonstrations for as many tokens as HPT trained with
  SFT on that seed, then plain GRPO: equal rollouts and equal SFT tokens.

Reported: final pass@1 (mean over arms) per method, and its ratio to GRPO's on the same seed as a
geometric mean with a 95% t-interval (:func:`cadence.labs.rl.bench.interval`).

    >>> from cadence.labs.rl.experiment import SIZES
    >>> rows = bench_hpt(SIZES["tiny"], seeds=1).rows
    >>> [r.method for r in rows], rows[0].sft_tokens
    (['grpo', 'hpt', 'sft_then_grpo'], 0.0)
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from cadence.errors import CadenceError
from cadence.labs.rl.bench import interval
from cadence.labs.rl.experiment import LabConfig, make_source
from cadence.labs.rl.grpo import GRPOTrainer, History
from cadence.labs.rl.policy import answer_batch
from cadence.labs.rl.tasks import TaskSuite
from cadence.labs.rl.warmstart import warm_start
from cadence.labs.tinygpt import TinyGPT
from cadence.rl import HybridGate

METHODS = ("grpo", "hpt", "sft_then_grpo")


def sft(model: TinyGPT, suite: TaskSuite, tokens: int, *, batch: int, lr: float, max_new_tokens: int,
        seed: int) -> int:
    """AdamW steps at a constant ``lr`` on demonstrations of uniformly drawn train prompts until
    ``tokens`` response tokens are trained (the last batch cut to fit); returns the tokens trained."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 23]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    done = 0
    model.train()
    while done < tokens:
        items = rng.integers(0, len(suite.prompts), size=batch)
        ids, mask = answer_batch(suite.prompts[items], suite.answers[items], suite.tokenizer,
                                 np.zeros(batch, dtype=np.int64), max_new_tokens, width=suite.prompt_len)
        rows = int(np.searchsorted(mask.sum(1).cumsum(0).numpy(), tokens - done)) + 1   # rows that reach the total
        ids, mask = ids[:rows], mask[:rows]
        logits = model(ids[:, :-1])
        nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        loss = (nll * mask[:, 1:]).sum() / mask[:, 1:].sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done += int(mask.sum())
    return done


@dataclass(frozen=True)
class HPTRow:
    """One method over seeds: final pass@1 (mean over seeds), its ratio to GRPO's (geometric mean,
    low, high), rollouts and SFT tokens per run (means), and HPT's routes (groups; ``hpt`` only)."""

    method: str
    final_pass1: float
    final_greedy: float
    ratio: tuple[float, float, float]
    rollouts: float
    sft_tokens: float
    routes: dict[str, int] | None


@dataclass
class HPTResult:
    rows: list[HPTRow]
    per_seed: dict[str, list[float]]
    gate: dict[str, Any]
    seconds: float


def _grpo(weights: TinyGPT, lab: LabConfig, seed: int, gate: HybridGate | None,
          on_step: Callable[[], None] | None) -> History:
    trainer = GRPOTrainer(copy.deepcopy(weights), lab.suite, make_source("uniform", lab.suite, lab.grpo, seed),
                          lab.grpo, max_new_tokens=lab.warm.max_new_tokens(lab.suite), seed=seed, gate=gate)
    return trainer.run(on_step=on_step)


def bench_hpt(lab: LabConfig, seeds: int, *, gate: dict[str, Any] | None = None, sft_lr: float = 3e-4,
              on_step: Callable[[], None] | None = None) -> HPTResult:
    """Run the three methods on seeds ``0..seeds-1``; ``gate`` is a :class:`HybridGate` spec
    (default: the paper's Qwen2.5-Math-7B gate, γ = 0, counted in the lab's group size); ``sft_lr``
    the constant LR of the SFT stage (default: the lab's GRPO peak LR, which HPT's SFT term also gets)."""
    if seeds < 1:
        raise CadenceError(f"seeds must be at least 1, got {seeds}")
    spec = {"sft_gate": 0, "group": lab.grpo.group} | dict(gate or {})
    HybridGate.from_dict(spec)   # a bad spec fails before any work
    torch.set_num_threads(1)
    start = time.perf_counter()
    final = {m: [] for m in METHODS}
    greedy = {m: [] for m in METHODS}
    rollouts = {m: [] for m in METHODS}
    sft_tokens = {m: [] for m in METHODS}
    routes = {name: 0 for name in ("sft", "off_policy", "rl")}
    for seed in range(seeds):
        seeded = lab.with_seed(seed)
        weights = warm_start(seeded.suite, seeded.warm, seed=seed)
        hpt_gate = HybridGate.from_dict(spec)
        histories = {"grpo": _grpo(weights, seeded, seed, None, on_step),
                     "hpt": _grpo(weights, seeded, seed, hpt_gate, on_step)}
        budget = int(sum(histories["hpt"].step_sft_tokens))
        tuned = copy.deepcopy(weights)
        trained = sft(tuned, seeded.suite, budget, batch=seeded.grpo.prompts_per_step, lr=sft_lr,
                      max_new_tokens=seeded.warm.max_new_tokens(seeded.suite), seed=seed)
        histories["sft_then_grpo"] = _grpo(tuned, seeded, seed, None, on_step)
        for name, value in hpt_gate.stats().items():
            routes[name] += value
        for m, h in histories.items():
            final[m].append(float(np.mean(h.eval_accuracy[-1])))
            greedy[m].append(float(np.mean(h.eval_greedy[-1])))
            rollouts[m].append(float(h.rollouts))
            sft_tokens[m].append(float(sum(h.step_sft_tokens) if m == "hpt" else trained if m == "sft_then_grpo"
                                       else 0))
    base = np.array(final["grpo"])
    rows = [HPTRow(m, float(np.mean(final[m])), float(np.mean(greedy[m])),
                   interval(np.maximum(np.array(final[m]), 1e-9) / np.maximum(base, 1e-9)),
                   float(np.mean(rollouts[m])), float(np.mean(sft_tokens[m])), routes if m == "hpt" else None)
            for m in METHODS]
    return HPTResult(rows, final, spec, time.perf_counter() - start)


def run_hpt_command(lab: LabConfig, seeds: int, console: Any) -> int:
    """``cadence bench rl --experiment hpt``: run :func:`bench_hpt` with progress and print its table."""
    from rich.table import Table

    from cadence.progress import Progress

    with Progress(console=console) as progress:
        tick = progress.counter("bench rl · hpt · steps", seeds * len(METHODS) * lab.grpo.steps)
        res = bench_hpt(lab, seeds, on_step=tick)
    table = Table(title=f"HPT gate vs GRPO vs SFT-then-GRPO · {seeds} seeds · equal rollouts and SFT tokens")
    for col in ("method", "final pass@1", "ratio to GRPO [95% CI]", "final greedy", "rollouts", "SFT tokens"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in res.rows:
        table.add_row(r.method, f"{r.final_pass1:.3f}", f"{r.ratio[0]:.3f} [{r.ratio[1]:.3f}, {r.ratio[2]:.3f}]",
                      f"{r.final_greedy:.3f}", f"{r.rollouts:.0f}", f"{r.sft_tokens:.0f}")
    console.print(table)
    routes = next(r.routes for r in res.rows if r.routes is not None)
    console.print(f"gate {res.gate}; HPT routed groups: {routes}; per-seed final pass@1: "
                  + "; ".join(f"{m} {', '.join(f'{v:.3f}' for v in vals)}" for m, vals in res.per_seed.items())
                  + f"; wall {res.seconds:.0f} s", highlight=False)
    return 0
