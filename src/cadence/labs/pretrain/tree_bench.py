"""Benchmarks of the WSD tree and of the curriculum × LR co-design on the pre-training lab.

* :func:`run_tree_benchmark` — budgets ``B, 2B, 4B, 8B``: one constant-LR trunk with 1-sqrt cooldown
  branches (and optionally a WSD-S chain) against four dedicated cosine runs; total compute against
  ``(1 − d)·B_max + d·ΣB_k`` and each model's final validation loss against its dedicated run.
* :func:`run_codesign` — quality-ascending data order vs a random order of the same documents, each
  with (a) full LR decay, (b) moderate decay, (c) constant LR plus tail averaging of the last
  checkpoints; validation losses over seeds ("How Learning Rate Decay Wastes Your Best Data in
  Curriculum-Based LLM Pretraining", Luo et al., arXiv 2511.18903).

``cadence bench tree`` and ``cadence bench codesign`` print them; sizes are arguments so tests run
them tiny.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from cadence.averaging import average_state_dicts, tail_weights
from cadence.errors import CadenceError
from cadence.labs.pretrain.corpus import load_corpus
from cadence.labs.pretrain.train import PretrainConfig, evaluate, make_model, train, validation_batch
from cadence.tree import TreePlan, WSDTree, plan_tree


def lab_config(size: str) -> Any:
    """Lab model sizes for the benches: ``tiny`` (tests, seconds) and ``default`` (the benchmarks;
    ``small`` is its former name)."""
    cfg = PretrainConfig
    sizes = {
        "tiny": cfg(context=16, batch_size=4, n_layer=1, n_head=2, d_model=16, val_sequences=8),
        "default": cfg(context=32, batch_size=16, n_layer=2, n_head=4, d_model=48, val_sequences=64),
    }
    size = "default" if size == "small" else size
    if size not in sizes:
        raise CadenceError(f"unknown lab size {size!r}; use one of {', '.join(sizes)}")
    return sizes[size]


def _trainer(cfg: Any, seed: int):
    """The lab's ``train`` bound to a config, in the tree's trainer form (validation only at the end)."""
    return functools.partial(train, cfg, seed=seed, progress=False, eval_every=10**9)


@dataclass(frozen=True)
class TreeRow:
    """Final validation losses for one budget: dedicated cosine run, tree branch, WSD-S (if run)."""

    budget: int
    dedicated_loss: float
    tree_loss: float
    wsds_loss: float | None

    @property
    def gap(self) -> float:
        """Relative gap of the tree's model to the dedicated run (positive: the tree is worse)."""
        return self.tree_loss / self.dedicated_loss - 1.0


@dataclass(frozen=True)
class TreeBenchmark:
    """What :func:`run_tree_benchmark` measured, with the tree's lineage and every run's log."""

    plan: TreePlan
    rows: tuple[TreeRow, ...]
    tree_compute: int
    wsds_compute: int | None
    lineage: dict[str, Any]
    seconds: float
    logs: dict[str, list[Any]] = field(default_factory=dict)  # "tree" / "wsd-s" / "dedicated" -> RunLogs


@dataclass
class _Recorder:
    """Wraps a trainer and keeps the log of every run it makes (for the plot)."""

    trainer: Callable[..., Any]
    on_steps: Callable[[int], None] | None = None
    logs: list[Any] = field(default_factory=list)

    def __call__(self, schedule: Any, *, steps: int, start_from: Any, checkpoint_at: Sequence[int], **data: Any) -> Any:
        result = self.trainer(schedule, steps=steps, start_from=start_from, checkpoint_at=checkpoint_at, **data)
        self.logs.append(result.log)
        if self.on_steps is not None:
            self.on_steps(len(result.log))
        return result


def cosine_spec(peak: float, warmup: int, floor: float) -> str:
    """The dedicated baseline: linear warmup, then cosine to ``floor·peak`` over the rest."""
    return f"warmup(cosine(peak={peak:g}, floor={floor:g}), {warmup} steps)"


def run_tree_benchmark(*, base: int = 200, multiples: Sequence[int] = (1, 2, 4, 8), decay: float = 0.2,
                       peak: float = 3e-3, warmup: int | None = None, cosine_floor: float = 0.1,
                       size: str = "default", seed: int = 0, wsds: bool = False,
                       on_steps: Callable[[int], None] | None = None) -> TreeBenchmark:
    """Train the tree (and optionally a WSD-S chain) and one dedicated cosine run per budget;
    ``on_steps(n)`` is called after each run with the steps it trained."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = lab_config(size)
    budgets = [base * m for m in multiples]
    warmup = max(1, base // 10) if warmup is None else warmup
    recorders = {k: _Recorder(_trainer(cfg, seed), on_steps) for k in ("tree", "wsd-s", "dedicated")}
    plan = plan_tree(budgets, decay=decay, peak=peak, warmup=warmup)
    tree = WSDTree(recorders["tree"], plan)
    tree_models = {m.budget: m for m in tree.run()}
    wsds_models: dict[int, Any] = {}
    wsds_compute = None
    if wsds:
        wsds_plan = plan_tree(budgets, decay=decay, peak=peak, warmup=warmup, mode="wsd-s")
        wsds_tree = WSDTree(recorders["wsd-s"], wsds_plan)
        wsds_models = {m.budget: m for m in wsds_tree.run()}
        wsds_compute = wsds_tree.lineage.total_compute
    rows = []
    for b in budgets:
        dedicated = recorders["dedicated"](cosine_spec(peak, warmup, cosine_floor), steps=b, start_from=None,
                                           checkpoint_at=())
        rows.append(TreeRow(b, dedicated.final_val_loss, tree_models[b].final_val_loss,
                            wsds_models[b].final_val_loss if wsds else None))
    return TreeBenchmark(plan, tuple(rows), tree.lineage.total_compute, wsds_compute, tree.lineage.to_dict(),
                         time.perf_counter() - t0, {k: r.logs for k, r in recorders.items() if r.logs})


def plot_tree_benchmark(bench: TreeBenchmark, path: str | Path) -> Path:
    """LR (top) and smoothed training loss (bottom) of every run, final validation losses marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_lr, ax_loss) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    styles = {"dedicated": ("0.55", "--", "x"), "tree": ("tab:blue", "-", "o"), "wsd-s": ("tab:orange", "-", "^")}
    width = max(1, bench.plan.budgets[0] // 10)
    for kind, logs in bench.logs.items():
        color, ls, _ = styles[kind]
        for i, log in enumerate(logs):
            label = (f"{kind} (cosine)" if kind == "dedicated" else kind) if i == 0 else None
            ax_lr.plot(log.step, log.lr, color=color, ls=ls, lw=1.2, label=label)
            smooth = np.convolve(log.loss, np.ones(width) / width, mode="valid") if len(log.loss) > width else log.loss
            ax_loss.plot(log.step[len(log.step) - len(smooth):], smooth, color=color, ls=ls, lw=1.0)
    for kind, attr in (("dedicated", "dedicated_loss"), ("tree", "tree_loss"), ("wsd-s", "wsds_loss")):
        pts = [(r.budget, getattr(r, attr)) for r in bench.rows if getattr(r, attr) is not None]
        if pts and kind in bench.logs:
            color, _, marker = styles[kind]
            ax_loss.scatter(*zip(*pts), color=color, marker=marker, zorder=3, s=40,
                            label=f"{kind} final val loss")
    ax_lr.set_ylabel("learning rate")
    ax_lr.legend(fontsize=8)
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel(f"train loss ({width}-step mean)")
    ax_loss.set_xlabel("step")
    ax_loss.legend(fontsize=8)
    for ax in (ax_lr, ax_loss):
        ax.grid(alpha=0.3)
    fig.suptitle(f"WSD tree (decay {bench.plan.decay:.0%}) vs dedicated cosine runs")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


LR_VARIANTS = ("full decay", "moderate decay", "constant", "constant + tail avg")


@dataclass(frozen=True)
class CodesignResult:
    """Validation losses: ``losses[order][variant]`` is an array over seeds."""

    losses: dict[str, dict[str, np.ndarray]]
    steps: int
    moderate_floor: float
    tail: int
    tail_steps: tuple[int, ...]
    val_min_quality: float
    seconds: float


def training_documents(corpus: Any, tokens: int, rng: np.random.Generator) -> np.ndarray:
    """A random set of training documents with about ``tokens`` tokens in all (ids, unsorted)."""
    ids = rng.permutation(corpus.n_train)
    lengths = corpus.lengths[ids] + 1  # +1: the separator
    n = int(np.searchsorted(np.cumsum(lengths), tokens)) + 1
    if n > corpus.n_train:
        raise CadenceError(f"the run needs {tokens} tokens but the corpus has {int(lengths.sum())}")
    return ids[:n]


def run_codesign(*, steps: int = 500, seeds: int = 3, peak: float = 3e-3, moderate_floor: float = 0.3,
                 tail: int = 5, tail_span: float = 0.1, size: str = "default",
                 val_min_quality: float = 0.9, on_steps: Callable[[int], None] | None = None) -> CodesignResult:
    """For each seed, one document set seen once, ordered by ascending quality or at random, trained
    with (a) cosine to 0, (b) cosine to ``moderate_floor·peak``, (c) constant LR; (c) is scored as
    it ends and as the uniform average of its last ``tail`` checkpoints, spaced over the last
    ``tail_span`` of the run. Validation uses documents of quality ``>= val_min_quality`` (clean
    text: what a quality curriculum aims at)."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = dataclasses.replace(lab_config(size), val_min_quality=val_min_quality)
    corpus = load_corpus()
    val = validation_batch(corpus, cfg)
    warmup = max(1, steps // 20)
    schedules = {"full decay": f"warmup(cosine(peak={peak:g}), {warmup} steps)",
                 "moderate decay": f"warmup(cosine(peak={peak:g}, floor={moderate_floor:g}), {warmup} steps)",
                 "constant": f"warmup(constant({peak:g}), {warmup} steps)"}
    tail_steps = sorted({steps - round(i * tail_span * steps / tail) for i in range(tail)})
    losses: dict[str, dict[str, list[float]]] = {o: {v: [] for v in LR_VARIANTS} for o in ("random", "quality-ascending")}
    for seed in range(seeds):
        docs = training_documents(corpus, steps * cfg.batch_size * (cfg.context + 1), np.random.default_rng([seed, 7]))
        orders = {"random": np.random.default_rng([seed, 8]).permutation(docs),
                  "quality-ascending": docs[np.argsort(corpus.quality[docs], kind="stable")]}
        for name, order in orders.items():
            for variant, spec in schedules.items():
                wanted = tail_steps if variant == "constant" else ()
                result = _trainer(cfg, seed)(spec, steps=steps, order=order, checkpoint_at=wanted, corpus=corpus)
                losses[name][variant].append(result.final_val_loss)
                if on_steps is not None:
                    on_steps(steps)
                if variant == "constant":
                    states = [result.checkpoints[s]["model"] for s in tail_steps]
                    model = make_model(cfg, seed)
                    model.load_state_dict(average_state_dicts(states, tail_weights("uniform", len(states))))
                    losses[name]["constant + tail avg"].append(evaluate(model, val))
    out = {o: {v: np.asarray(x) for v, x in d.items()} for o, d in losses.items()}
    return CodesignResult(out, steps, moderate_floor, len(tail_steps), tuple(tail_steps), val_min_quality,
                          time.perf_counter() - t0)


QUALITY_ARMS = ("noisy", "clean")
"""Arms of the lab corpus for branch mixtures: documents of quality below 0.5, and the rest."""

BRANCH_MIXTURES: dict[str, dict[str, Any] | None] = {
    "trunk data": None,
    "clean-heavy": {"kind": "fixed", "weights": {"clean": 0.9, "noisy": 0.1}},
    "noisy-heavy": {"kind": "fixed", "weights": {"clean": 0.1, "noisy": 0.9}},
}
"""Decay-branch data compared by :func:`run_branch_data`: the trunk's own (random documents), and
two fixed mixtures over :data:`QUALITY_ARMS` (OctoThinker, arXiv 2506.20512, decays one trunk on
several mixtures; these mixtures are the lab's, not the paper's)."""


def mixture_order(corpus: Any, data: dict[str, Any], documents: int, seed: int) -> np.ndarray:
    """``documents`` document ids drawn by the curriculum policy that ``data`` names (``kind`` and its
    arguments, e.g. ``{"kind": "fixed", "weights": {"clean": 1}}``) over :data:`QUALITY_ARMS`."""
    from cadence.curricula import Arms, make_policy

    spec = dict(data)
    kind = spec.pop("kind", None)
    if not isinstance(kind, str):
        raise CadenceError(f"branch data needs a policy kind, e.g. {{'kind': 'fixed', 'weights': ...}}; got {data!r}")
    arms = Arms(np.where(corpus.quality >= 0.5, QUALITY_ARMS[1], QUALITY_ARMS[0]).tolist())
    return make_policy(kind, arms, seed=seed, **spec).sample(documents)


def data_trainer(cfg: Any, seed: int, corpus: Any):
    """The lab's ``train`` as a tree trainer that reads a branch's ``data`` spec (:func:`mixture_order`);
    without one it trains on the run's own random order (the trunk's data)."""
    base = _trainer(cfg, seed)

    def trainer(schedule: Any, *, steps: int, start_from: Any, checkpoint_at: Sequence[int],
                data: dict[str, Any] | None = None) -> Any:
        order = None
        if data is not None:
            begin = 0 if start_from is None else int(start_from["step"])
            tokens = (steps - begin) * cfg.batch_size * (cfg.context + 1)
            documents = int(tokens / (corpus.lengths.mean() + 1)) + 2
            order = mixture_order(corpus, data, documents, seed)
        return base(schedule, steps=steps, start_from=start_from, checkpoint_at=checkpoint_at, order=order,
                    corpus=corpus)
    return trainer


@dataclass(frozen=True)
class BranchDataResult:
    """Final validation loss (clean held-out text) per branch mixture over seeds: (mean, low, high)."""

    budget: int
    trunk_steps: int
    losses: dict[str, tuple[float, float, float]]
    per_seed: dict[str, list[float]]
    lineage: dict[str, Any]
    seconds: float


def run_branch_data(*, budget: int = 600, decay: float = 0.2, peak: float = 3e-3, seeds: int = 3,
                    size: str = "small", mixtures: dict[str, dict[str, Any] | None] | None = None,
                    on_steps: Callable[[int], None] | None = None) -> BranchDataResult:
    """Per seed, one WSD trunk to ``budget − ⌊decay·budget⌋`` steps, decayed into one model per
    mixture (``None``: the trunk's data) from the same checkpoint; validation loss of each."""
    from cadence.labs.pretrain.continual import mean_interval

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    mixtures = dict(BRANCH_MIXTURES if mixtures is None else mixtures)
    cfg = lab_config(size)
    corpus = load_corpus()
    plan = plan_tree([budget], decay=decay, peak=peak, warmup=max(1, budget // 20))
    losses: dict[str, list[float]] = {name: [] for name in mixtures}
    lineage: dict[str, Any] = {}
    for seed in range(seeds):
        tree = WSDTree(_Recorder(data_trainer(cfg, seed, corpus), on_steps), plan)
        tree.grow_trunk()
        for name, data in mixtures.items():
            losses[name].append(tree.branch(budget, data=data, name=name).final_val_loss)
        lineage = tree.lineage.to_dict()
    return BranchDataResult(budget, plan.trunk_end, {n: mean_interval(v) for n, v in losses.items()}, losses, lineage,
                            time.perf_counter() - t0)
