"""Population-based training of the LR schedule on the pre-training lab, on local Ray Tune
(``cadence bench pbt``).

Per seed, four ways to choose the schedule of an ``N``-step run:

* **cosine** — warmup, then cosine from ``peak`` to 0 (one run, ``N`` steps);
* **forecast WSD** — the annealing law fitted on a constant and a cosine run, then the WSD it
  predicts best (:func:`~cadence.forecast.optimize.optimize_wsd`): ``3N`` steps in all;
* **PBT** — a population of 4 WSD runs searching peak and decay fraction under synchronous
  :class:`~ray.tune.schedulers.PopulationBasedTraining` (every ``N/8`` steps the worst trial copies
  the best and perturbs), ``4N`` steps; its best trial's final loss;
* **PBT replayed** — the best trial's effective schedule (one ``join`` spec) trained once from
  scratch: does the schedule itself carry the gain, without the copied weights?

Final validation losses, and per-seed ratios to cosine as a geometric mean with a t-interval.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import random
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cadence.clock import Clock
from cadence.errors import CadenceError
from cadence.forecast.fit import fit_law
from cadence.forecast.optimize import optimize_wsd
from cadence.labs.pretrain.corpus import load_corpus
from cadence.labs.pretrain.stream import DocumentStream
from cadence.labs.pretrain.train import PretrainConfig, evaluate, make_model, train, validation_batch
from cadence.labs.pretrain.tree_bench import lab_config
from cadence.labs.rl.bench import interval

METHODS = ("cosine", "forecast WSD", "PBT (best trial)", "PBT replayed")
COMPUTE = {"cosine": 1, "forecast WSD": 3, "PBT (best trial)": 4, "PBT replayed": 5}
"""Steps trained per method, in units of one run's ``N`` (PBT replayed: the search plus the replay)."""


def pbt_trainable(config: dict[str, Any]) -> None:
    """One lab run under a :class:`~cadence.integrations.ray_tune.RegimenTrial` (a Tune function trainable)."""
    from cadence.integrations.ray_tune import RegimenTrial

    torch.set_num_threads(1)
    cfg = PretrainConfig(**config["lab"])
    steps, seed = config["steps"], config["seed"]
    corpus = load_corpus()
    model = make_model(cfg, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0, betas=cfg.betas, weight_decay=cfg.weight_decay)
    stream = DocumentStream(corpus, batch_size=cfg.batch_size, context=cfg.context, seed=seed)
    clock = Clock(budget=steps, tokens_per_step=cfg.tokens_per_step, samples_per_step=cfg.batch_size)
    trial = RegimenTrial(config, optimizer, clock=clock, glide=config["glide"],
                         save={"model": model, "optimizer": optimizer, "data": stream})
    val = validation_batch(corpus, cfg)
    model.train()
    while not clock.done:  # the loop of cadence.labs.pretrain.train
        x, y = stream.next_batch()
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        trial.step(samples=cfg.batch_size, tokens=cfg.tokens_per_step)
        if clock.steps % config["interval"] == 0 or clock.done:
            trial.report({"val_loss": evaluate(model, val)})


@dataclass(frozen=True)
class PBTBenchmark:
    """``losses[method]``: final validation loss per seed; ``specs[seed]``: the PBT-found schedule."""

    losses: dict[str, np.ndarray]
    specs: list[str]
    forecast_specs: list[str]
    steps: int
    size: str
    seconds: float
    peak: float = 4e-3

    def ratios(self, method: str) -> tuple[float, float, float]:
        """Geometric mean of ``method``'s loss over cosine's, per seed, with its 95% t-interval."""
        return interval(self.losses[method] / self.losses["cosine"])


def run_pbt_benchmark(*, steps: int = 400, seeds: int = 2, size: str = "default", peak: float = 4e-3,
                      population: int = 4, glide: str = "2%", storage: str | None = None) -> PBTBenchmark:
    """Train every method for every seed (see the module docstring); Ray must be importable.
    Tune's files go to ``storage`` (default: a temporary directory, removed afterwards)."""
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining

    from cadence.integrations.ray_tune import TIME_ATTRS, load_record, quiet_local_ray, search_space

    if steps < 16 or seeds < 1 or population < 2:
        raise CadenceError(f"need steps >= 16, seeds >= 1, population >= 2; got {steps}, {seeds}, {population}")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = lab_config(size)
    warmup = max(1, round(0.02 * steps))
    interval_steps = max(1, steps // 8)
    run = dict(progress=False, eval_every=max(1, steps // 20))
    losses: dict[str, list[float]] = {m: [] for m in METHODS}
    specs, forecast_specs = [], []
    scratch = tempfile.TemporaryDirectory(prefix="cadence-pbt-") if storage is None else None
    storage = scratch.name if scratch is not None else storage
    try:
        with quiet_local_ray(num_cpus=min(population, os.cpu_count() or 1)):
            for seed in range(seeds):
                cosine = f"warmup(cosine(peak={peak:g}), {warmup} steps)"
                cos = train(cfg, cosine, steps=steps, seed=seed, **run)
                const = train(cfg, f"warmup(constant({peak:g}), {warmup} steps)", steps=steps, seed=seed, **run)
                law = fit_law([const.log, cos.log], law="annealing", target="val_loss", skip=0.2).law
                wsd = optimize_wsd(law, steps, peak=peak, warmup=f"{warmup} steps").schedule
                forecast_specs.append(str(wsd))
                losses["cosine"].append(cos.final_val_loss)
                losses["forecast WSD"].append(train(cfg, wsd, steps=steps, seed=seed, **run).final_val_loss)

                space = search_space(f"wsd(peak={{peak}}, warmup={warmup} steps, decay={{decay}})",
                                     peak=tune.loguniform(peak / 4, peak * 2), decay=tune.uniform(0.05, 0.6))
                pbt = PopulationBasedTraining(time_attr=TIME_ATTRS["steps"], perturbation_interval=interval_steps,
                                              hyperparam_mutations=space.mutations, quantile_fraction=0.25,
                                              synch=True, custom_explore_fn=space.clip)
                config = {**space.param_space, "lab": dataclasses.asdict(cfg), "steps": steps, "seed": seed,
                          "interval": interval_steps, "glide": glide}
                random.seed(seed)  # Tune samples and PBT perturbs with the global RNGs
                np.random.seed(seed)
                tuner = tune.Tuner(
                    pbt_trainable, param_space=config,
                    tune_config=tune.TuneConfig(scheduler=pbt, metric="val_loss", mode="min",
                                                num_samples=population, reuse_actors=True),
                    run_config=tune.RunConfig(storage_path=storage, name=f"pbt-seed{seed}", verbose=0,
                                              stop={TIME_ATTRS["steps"]: steps}))
                with contextlib.redirect_stdout(io.StringIO()):  # Tune names its results folder: deleted at exit
                    results = tuner.fit()
                if results.errors:
                    raise CadenceError(f"PBT trials failed: {results.errors[0]}")
                best = results.get_best_result(metric="val_loss", mode="min")
                spec = load_record(best.checkpoint)["specs"]["lr"]
                specs.append(spec)
                losses["PBT (best trial)"].append(float(best.metrics["val_loss"]))
                losses["PBT replayed"].append(train(cfg, spec, steps=steps, seed=seed, **run).final_val_loss)
    finally:
        if scratch is not None:
            scratch.cleanup()
    return PBTBenchmark({m: np.asarray(v) for m, v in losses.items()}, specs, forecast_specs, steps, size,
                        time.perf_counter() - t0, peak)


def plot_pbt_benchmark(bench: PBTBenchmark, path: str) -> str:
    """The LR of each seed's cosine, forecast WSD and PBT-found schedule (top); final losses (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cadence.forecast.law import lr_per_step

    n = bench.steps
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(8, 7))
    warmup = max(1, round(0.02 * n))
    for seed, (spec, wsd) in enumerate(zip(bench.specs, bench.forecast_specs)):
        ax.plot(lr_per_step(spec, n), color=f"C{seed}", label=f"PBT-found, seed {seed}")
        ax.plot(lr_per_step(wsd, n), color=f"C{seed}", ls=":", label=f"forecast WSD, seed {seed}")
    ax.plot(lr_per_step(f"warmup(cosine(peak={bench.peak:g}), {warmup} steps)", n), color="0.5", ls="--", label="cosine")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.legend(fontsize=7)
    for i, m in enumerate(METHODS):
        v = bench.losses[m]
        bx.scatter([i] * len(v), v, color=f"C{i}")
        bx.errorbar([i], [v.mean()], fmt="_", color="k", ms=20)
    bx.set_xticks(range(len(METHODS)), METHODS)
    bx.set_ylabel("final validation loss (nats/char)")
    fig.suptitle(f"PBT on the pre-training lab ({bench.size}, {bench.steps} steps, {len(bench.specs)} seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
