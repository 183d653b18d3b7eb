"""Curricula benchmark: draws per second, update cost per policy, index memory.

    python benchmarks/curricula_bench.py            # full sizes (10M-item index)
    python benchmarks/curricula_bench.py --quick    # small sizes, a few seconds

Goals (issue 3): ≥ 1M indices/s for fixed mixtures; an adaptive update over 1,000 arms ≤ 100 µs
(Skill-it with a realistic sparse skills graph; a dense 1000 × 1000 graph is shown for comparison);
a sampler over 10M items holding its index in ≤ 200 MB. Figures are wall-clock on this machine,
best of several repeats; compare them only with figures from the same run.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # one BLAS thread: before numpy is imported

import argparse  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse  # noqa: E402
import torch  # noqa: E402

from cadence import Clock  # noqa: E402
from cadence.curricula import Arms, CurriculumSampler, make_policy  # noqa: E402


def best_time(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls of ``fn`` (seconds)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def draws(num_items: int, num_arms: int, repeats: int) -> None:
    arms = Arms.from_codes(np.arange(num_items) % num_arms, [f"arm{j}" for j in range(num_arms)])
    weights = np.random.default_rng(0).random(num_arms) + 0.1
    fixed = make_policy("fixed", arms, weights=weights)
    n = 1_000_000
    t = best_time(lambda: fixed.sample(n), repeats)
    print(f"fixed mixture, policy.sample({n:,}) over {num_arms} arms: {n / t / 1e6:8.2f} M indices/s")
    for replacement in (True, False):
        sampler = CurriculumSampler(fixed, 4096, replacement=replacement, on_exhausted="refill")
        batches = 50
        t = best_time(lambda: [sampler.next_batch() for _ in range(batches)], repeats)
        print(f"fixed mixture, sampler.next_batch(4096), replacement={replacement!s:5}: "
              f"{batches * 4096 / t / 1e6:8.2f} M indices/s")


def skills_graph(num_skills: int, edges_per_skill: int, rng: np.random.Generator) -> scipy.sparse.csr_array:
    """A random skills graph: unit diagonal plus ``edges_per_skill`` edges of weight 0.5 from each skill."""
    rows = np.repeat(np.arange(num_skills), edges_per_skill)
    cols = rng.integers(0, num_skills, rows.size)
    graph = scipy.sparse.coo_array((np.full(rows.size, 0.5), (rows, cols)), shape=(num_skills, num_skills))
    return (graph + scipy.sparse.eye_array(num_skills)).tocsr()


def updates(num_arms: int, batch: int, calls: int) -> None:
    items_per_arm = 20
    arms = Arms.from_codes(np.arange(num_arms * items_per_arm) % num_arms, [f"arm{j}" for j in range(num_arms)])
    clock = Clock(budget=1000)
    rng = np.random.default_rng(0)
    graph = skills_graph(num_arms, 10, rng)
    specs = {
        "dump": ("dump", {}), "sec": ("sec", {}), "exp3": ("exp3", {}), "learning_progress": ("learning_progress", {}),
        "doremi": ("doremi", {"reference": np.ones(arms.num_items)}),
        "skillit (dense)": ("skillit", {"graph": graph.toarray()}),
        "skillit (sparse)": ("skillit", {"graph": graph}),
        "loss_reweighting": ("loss_reweighting", {}), "pass_rate": ("pass_rate", {}),
    }
    print(f"update cost over {num_arms} arms: observe({batch} items) + probabilities(), {calls} single calls "
          f"(Skill-it: one graph, unit diagonal + 10 random edges per skill, {graph.nnz:,} non-zeros, "
          f"as a dense array and as scipy.sparse)")
    print(f"  {'policy':18s} {'min':>9s} {'median':>9s}")
    for label, (name, kw) in specs.items():
        policy = make_policy(name, arms, clock=clock, **kw)
        ids = rng.integers(0, arms.num_items, batch)
        x = rng.random(batch)
        sig = {"loss": 1 + x, "reward": x, "advantage": x - 0.5, "correct": (x > 0.5).astype(float)}
        needed = {k: v for k, v in sig.items() if k in policy.requires}

        times = np.empty(calls)
        for i in range(calls):
            t0 = time.perf_counter()
            policy.observe(ids, **needed)
            policy.probabilities()
            times[i] = time.perf_counter() - t0
        print(f"  {label:18s} {times.min() * 1e6:6.1f} µs {np.median(times) * 1e6:6.1f} µs")


def memory(num_items: int, num_arms: int) -> None:
    tracemalloc.start()
    codes = (np.arange(num_items, dtype=np.int64) * 2654435761 % num_arms).astype(np.int32)
    base = tracemalloc.get_traced_memory()[0]
    arms = Arms.from_codes(codes, [f"arm{j}" for j in range(num_arms)])
    del codes
    sampler = CurriculumSampler(make_policy("uniform", arms), 1024, replacement=False)
    for _ in range(10):
        sampler.next_batch()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"index over {num_items:,} items, {num_arms} arms: arms arrays {arms.nbytes() / 2**20:.1f} MiB, "
          f"sampler used-mask {sampler.used.nbytes / 2**20:.1f} MiB, held after 10 batches "
          f"{(current) / 2**20:.1f} MiB, peak while building {(peak - base) / 2**20:.1f} MiB (tracemalloc)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    repeats = 3 if args.quick else 7
    draws(100_000 if args.quick else 1_000_000, 16, repeats)
    updates(1000, 256, 50 if args.quick else 300)
    memory(1_000_000 if args.quick else 10_000_000, 64)


if __name__ == "__main__":
    main()
