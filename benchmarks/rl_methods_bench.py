"""The RL-methods bench: PCL, GVM-RAFT allocation, selective sample replay and hints against uniform
sampling (and dynamic sampling, the baseline replay improves on), through the same function as
``cadence bench rl`` (:func:`cadence.labs.rl.bench.bench_curricula`), plus what that table lacks:

* rollouts per step, and pass@1 at uniform's total rollouts (the last evaluation within that budget:
  the equal-rollout-budget comparison for policies that generate more per step);
* replay: groups replayed and rollouts saved, and against dynamic sampling alone (the paper's
  comparison) when both ran: rollouts saved over the steps both ran, pass@1 differences;
* hints: all-wrong groups past the plateau, the shares a guidance tier gave a correct answer / a
  learnable (not all right) group, and the share of prompts that were ever all wrong later solved
  without guidance (uniform's over the same steps beside it).

``--equal-rollouts`` trains uniform first and stops every other policy at uniform's rollouts (each
run is its full run's prefix, so pass@1 at uniform's rollouts is unchanged; to-target ratios of runs
that never reach the target are censored at that budget). ``--seed S --save F`` runs one seed into a
pickle; ``--load F ...`` summarises pickles, merging those of one seed (policies split over processes).

    python benchmarks/rl_methods_bench.py --size default --steps 40 --prompts 16 --seeds 5 --workers 2
    python benchmarks/rl_methods_bench.py --policies uniform,replay,hints --equal-rollouts --seed 0 --save a0.pkl
    python benchmarks/rl_methods_bench.py --load a*.pkl b*.pkl -o rows.json

Prints a table and writes the raw numbers as JSON (``-o``).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from cadence.errors import CadenceError
from cadence.labs.rl.bench import bench_curricula, ratio_rows
from cadence.labs.rl.experiment import compare
from cadence.labs.rl.demo import lab_for

POLICIES = "uniform,pcl,gvm,replay,hints,dynamic"


def at_budget(history, budget: int) -> float:
    """Mean pass@1 at the last evaluation whose rollouts stay within ``budget``."""
    acc = [np.mean(a) for a, r in zip(history.eval_accuracy, history.eval_rollouts) if r <= budget]
    return float(acc[-1])


def freed(history, steps: int | None = None) -> tuple[int, float]:
    """``(prompts, share)``: prompts whose trained group was ever all wrong, and the share of them with
    a correct answer in a later group (patience 1, as :class:`cadence.rl.Hints` counts; for policies
    whose trained groups are all plain, e.g. uniform), over the first ``steps`` steps (default: all)."""
    stuck, later = set(), set()
    for step in history.step_samples[:steps]:
        for item, mean in step:
            if mean > 0 and item in stuck:
                later.add(item)
        stuck.update(item for item, mean in step if mean == 0)
    return len(stuck), len(later) / len(stuck) if stuck else 0.0


def interval(diff) -> list[float]:
    """``[mean, half-width of the 95% t-interval]`` of paired differences (0 for one pair)."""
    diff = np.asarray(diff, dtype=float)
    half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
    return [float(diff.mean()), float(half)]


def against(comparisons: list, policy: str, baseline: str) -> dict:
    """``policy`` against ``baseline`` on the seeds that ran both (replay vs dynamic sampling alone:
    the paper's comparison): rollouts per step; rollouts each spent on their first ``k`` steps (``k``:
    the steps both ran) and the share ``policy`` saved there; pass@1 at uniform's rollouts and at the
    last evaluation step both made, as paired differences ± 95% t-interval."""
    both = [c for c in comparisons if policy in c.histories and baseline in c.histories]
    saved, share, at_budget_, at_step, steps = [], [], [], [], []
    for c in both:
        h, b = c.histories[policy], c.histories[baseline]
        k = min(len(h.step_rollouts), len(b.step_rollouts))
        spent, base = sum(h.step_rollouts[:k]), sum(b.step_rollouts[:k])
        saved.append(base - spent)
        share.append((base - spent) / base)
        budget = c.histories["uniform"].rollouts
        at_budget_.append(at_budget(h, budget) - at_budget(b, budget))
        common = max(set(h.eval_steps) & set(b.eval_steps))
        at_step.append(float(np.mean(h.eval_accuracy[h.eval_steps.index(common)])
                             - np.mean(b.eval_accuracy[b.eval_steps.index(common)])))
        steps.append([k, common])
    per_step = {name: float(np.mean([c.histories[name].rollouts / len(c.histories[name].step_rollouts) for c in both]))
                for name in (policy, baseline)}
    return {"seeds": [c.seed for c in both], "rollouts_per_step": per_step,
            "common_steps_and_eval_step_per_seed": steps, "rollouts_saved_in_common_steps_per_seed": saved,
            "saved_share": interval(share), "delta_pass@1_at_uniform_rollouts": interval(at_budget_),
            "delta_pass@1_at_common_eval_step": interval(at_step),
            "delta_pass@1_at_uniform_rollouts_per_seed": at_budget_, "delta_pass@1_at_common_eval_step_per_seed": at_step}


def merged(comparisons: list) -> list:
    """Pickled comparisons of the same seed (and lab) as one: their policies' histories together. The
    runs of a policy in two of them must agree (the lab is deterministic: uniform, run in each, checks it)."""
    by_seed: dict = {}
    for c in comparisons:
        if c.seed not in by_seed:
            by_seed[c.seed] = replace(c, histories=dict(c.histories), seconds=dict(c.seconds))
            continue
        into = by_seed[c.seed]
        if (into.lab.suite, into.lab.warm, into.lab.grpo, into.lab.target) != (c.lab.suite, c.lab.warm, c.lab.grpo,
                                                                            c.lab.target):
            raise CadenceError(f"the pickles of seed {c.seed} come from different labs")
        for name, history in c.histories.items():
            if name in into.histories and into.histories[name] != history:
                raise CadenceError(f"seed {c.seed}: the two runs of {name} differ (not the same code or lab)")
            into.histories.setdefault(name, history)
            into.seconds.setdefault(name, c.seconds[name])
    return [by_seed[s] for s in sorted(by_seed)]


def per_policy(comparisons: list) -> list:
    """``(row, comparisons)`` per policy, over the seeds that ran it (each against uniform on its seed)."""
    names = list(dict.fromkeys(n for c in comparisons for n in c.histories))
    out = []
    for name in names:
        having = [replace(c, histories={"uniform": c.histories["uniform"], name: c.histories[name]})
                  for c in comparisons if name in c.histories]
        out.append(([r for r in ratio_rows(having) if r.policy == name][0], having))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("default", "tiny"), default="default")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--policies", default=POLICIES)
    parser.add_argument("--families", default=None)
    parser.add_argument("--prompts", type=int, default=None, help="prompts per step (default: the size's)")
    parser.add_argument("--warm-steps", type=int, default=None, help="warm-start steps (default: the size's)")
    parser.add_argument("--equal-rollouts", action="store_true",
                        help="train uniform first and stop every other policy at uniform's rollouts (saves the "
                             "compute past that budget; to-target ratios of unreached runs are then censored there)")
    parser.add_argument("-o", "--output", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=None, help="run this one seed and pickle it to --save")
    parser.add_argument("--save", type=Path, default=None, help="where --seed pickles its comparison")
    parser.add_argument("--load", nargs="+", type=Path, default=None, help="summarise pickled seeds instead of running")
    args = parser.parse_args(argv)
    if args.seeds < 1 or (args.steps is not None and args.steps < 1) or args.workers < 1:
        raise CadenceError("--seeds, --steps and --workers must be at least 1")
    if args.output is not None and not args.output.parent.is_dir():
        raise CadenceError(f"the output folder {args.output.parent} does not exist")
    if args.seed is not None and (args.save is None or not args.save.parent.is_dir()):
        raise CadenceError("--seed needs --save in an existing folder")
    torch.set_num_threads(1)
    families = None if args.families is None else [f.strip() for f in args.families.split(",")]
    lab = lab_for(args.size, args.steps, None, args.policies, families)
    if args.prompts is not None:
        lab = replace(lab, grpo=replace(lab.grpo, prompts_per_step=args.prompts))
    if args.warm_steps is not None:
        lab = replace(lab, warm=replace(lab.warm, steps=args.warm_steps))
    lab = replace(lab, grpo=replace(lab.grpo, eval_every=max(1, min(lab.grpo.eval_every, lab.grpo.steps // 6))))
    start = time.time()
    done = [0]

    def on_seed(seed: int) -> None:
        done[0] += 1
        print(f"seed {seed} done after {time.time() - start:.0f} s", file=sys.stderr, flush=True)

    if args.seed is not None:       # one seed per process: seeds run side by side, summarised with --load
        comparison = compare(lab, args.seed, workers=args.workers, equal_rollouts=args.equal_rollouts)
        args.save.write_bytes(pickle.dumps(comparison))
        return 0
    if args.load is not None:
        comparisons = merged([pickle.loads(f.read_bytes()) for f in args.load])
        lab = comparisons[0].lab
        args.seeds = len(comparisons)
    else:
        _, comparisons = bench_curricula(lab, args.seeds, on_seed=on_seed, workers=args.workers,
                                         equal_rollouts=args.equal_rollouts)
    out = {"command": " ".join(sys.argv), "seconds": time.time() - start, "families": lab.suite.family_names,
           "warm_steps": lab.warm.steps, "eval_every": lab.grpo.eval_every,
           "steps": lab.grpo.steps, "prompts_per_step": lab.grpo.prompts_per_step, "group": lab.grpo.group,
           "seeds": args.seeds, "policies": {}}
    print(f"{'policy':10} {'rollouts ratio [95% CI]':>26} {'reached':>8} {'final pass@1':>12} "
          f"{'pass@1 @ uniform rollouts':>26} {'rollouts/step':>13}  extra")
    all_comparisons = comparisons
    for r, comparisons in per_policy(comparisons):
        hs = [c.histories[r.policy] for c in comparisons]
        budget = [c.histories["uniform"].rollouts for c in comparisons]
        equal = [at_budget(h, b) for h, b in zip(hs, budget)]
        per_step = float(np.mean([h.rollouts / len(h.step_rollouts) for h in hs]))
        last = [h.step_source[-1] if h.step_source else {} for h in hs]
        extra = {}
        if r.policy == "replay":
            extra = {"replayed_groups": float(np.mean([v["replay/replayed"] for v in last])),
                     "rollouts_saved": float(np.mean([v["replay/saved"] for v in last])),
                     "saved_share": float(np.mean([v["replay/saved"] / (v["replay/saved"] + h.rollouts)
                                                   for v, h in zip(last, hs)]))}
        if r.policy == "hints":
            extra = {"plateaued_groups": float(np.mean([v["hints/plateaued"] for v in last])),
                     "rescued_share": float(np.mean([v["hints/rescued_share"] for v in last])),
                     "learnable_share": float(np.mean([v["hints/learnable_share"] for v in last])),
                     "stuck_prompts": float(np.mean([v["hints/stuck_prompts"] for v in last])),
                     "freed_share": float(np.mean([v["hints/freed_share"] for v in last])),
                     "uniform_same_steps_stuck_prompts": float(np.mean(
                         [freed(c.histories["uniform"], len(h.step_rollouts))[0] for c, h in zip(comparisons, hs)])),
                     "uniform_same_steps_freed_share": float(np.mean(
                         [freed(c.histories["uniform"], len(h.step_rollouts))[1] for c, h in zip(comparisons, hs)])),
                     "hint_rollouts": float(np.mean([v["hints/hint_rollouts"] for v in last]))}
        if r.policy == "uniform":
            extra = {"stuck_prompts": float(np.mean([freed(h)[0] for h in hs])),
                     "freed_share": float(np.mean([freed(h)[1] for h in hs]))}
        out["policies"][r.policy] = {
            "rollouts_ratio": r.rollouts_ratio, "steps_ratio": r.steps_ratio, "reached": r.reached,
            "final_pass@1": r.final_accuracy, "final_pass@1_per_seed": [float(c.final_accuracy(r.policy).mean())
                                                                       for c in comparisons],
            "pass@1_at_uniform_rollouts": equal, "rollouts_per_step": per_step,
            "seeds": [c.seed for c in comparisons],
            "warm_pass@1_per_seed": [float(c.warm_accuracy.mean()) for c in comparisons],
            "target_per_seed": [float(c.target) for c in comparisons], "rollouts_per_seed": [h.rollouts for h in hs],
            "steps_per_seed": [len(h.step_rollouts) for h in hs],
            "rollouts_to_target_per_seed": [c.reach(r.policy)[1] for c in comparisons],  # None: not reached
            "pass@1_per_eval_per_seed": [[[s, r_, float(np.mean(a))] for s, r_, a in
                                          zip(h.eval_steps, h.eval_rollouts, h.eval_accuracy)] for h in hs],
            "seconds_per_seed": [c.seconds[r.policy] for c in comparisons], **extra}
        diff = np.array(equal) - np.array([at_budget(c.histories["uniform"], b) for c, b in zip(comparisons, budget)])
        ci = interval(diff)[1]
        ratio = f"{r.rollouts_ratio[0]:.2f} [{r.rollouts_ratio[1]:.2f}, {r.rollouts_ratio[2]:.2f}]"
        print(f"{r.policy:10} {ratio:>26} {r.reached:>4}/{r.seeds:<3} {r.final_accuracy:12.3f} "
              f"{np.mean(equal):8.3f} (Δ {diff.mean():+.3f} ± {ci:.3f}) {per_step:13.0f}  "
              + ", ".join(f"{k} {v:.3g}" for k, v in extra.items()), flush=True)
        out["policies"][r.policy]["delta_vs_uniform_at_equal_rollouts"] = [float(diff.mean()), float(ci)]
    if "replay" in out["policies"] and "dynamic" in out["policies"]:
        vs = out["replay_vs_dynamic"] = against(all_comparisons, "replay", "dynamic")
        print(f"replay vs dynamic sampling alone ({len(vs['seeds'])} seeds): rollouts/step "
              f"{vs['rollouts_per_step']['replay']:.0f} vs {vs['rollouts_per_step']['dynamic']:.0f}; rollouts saved over "
              f"the steps both ran {np.mean(vs['rollouts_saved_in_common_steps_per_seed']):.0f} "
              f"({vs['saved_share'][0]:.1%} ± {vs['saved_share'][1]:.1%}); pass@1 Δ at uniform's rollouts "
              f"{vs['delta_pass@1_at_uniform_rollouts'][0]:+.3f} ± {vs['delta_pass@1_at_uniform_rollouts'][1]:.3f}, "
              f"at the last common evaluation step {vs['delta_pass@1_at_common_eval_step'][0]:+.3f} ± "
              f"{vs['delta_pass@1_at_common_eval_step'][1]:.3f}")
    print(f"wall {time.time() - start:.0f} s")
    if args.output is not None:
        args.output.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CadenceError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
