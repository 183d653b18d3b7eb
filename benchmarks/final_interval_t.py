"""A final-loss interval with no tuned factor: Student's t over the leave-one-run-out final misses.

    nice -n 15 python benchmarks/final_interval_t.py [--law annealing]

Registered before its first run (round five). Every shipped final-loss interval carries a factor
decided on some curves (``RUNS_INTERVAL_SCALE``, ``FINAL_INTERVAL_SCALE``), and none carried
across curve families (``benchmarks/final_interval_families.py``). This checks the textbook
predictive interval, which has none: if the relative misses of a fit on a run's final loss were
draws from N(0, σ²), the ``n`` leave-one-run-out last-point misses ``m_i`` estimate σ with ``n``
degrees of freedom (mean zero: the sign of a law's bias on an unseen schedule is not known), and
a new final loss lies inside ``L̂·(1 ∓ t_{(1+level)/2, n}·sqrt(mean m_i²))`` with probability
``level``.

Decision rule, fixed before any number: the form becomes ``FitResult.final_interval``'s default
if, over the held-out final losses of the sets the project had before round four
(multipower-25m, multipower-100m, schaipp-124m: 18), its share inside lies in 75–90% *and* is
nearer 80% than the current default's (the run envelope at ``RUNS_INTERVAL_SCALE``). Either way
its share on the three sets added in round four (schaipp-124m-lr2e-3, schaipp-124m-lr5e-4,
schaipp-210m: 16 held-out final losses) is reported as the held-out figure.

Why not more: with ``n`` fitted runs exchangeable with the new one, the largest of ``n`` misses
covers the next with probability ``n/(n+1)`` — 75% for the three fitted runs of every shipped
set — and any wider interval rests on an assumption about the misses' distribution, such as this
one's normality.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.stats import t as student_t

from cadence.forecast.evaluate import Setting
from cadence.forecast.fit import DEFAULT_LEVEL
from cadence.forecast.published import load_curves

DECIDE = ("multipower-25m", "multipower-100m", "schaipp-124m")
JUDGE = ("schaipp-124m-lr2e-3", "schaipp-124m-lr5e-4", "schaipp-210m")


def t_half_width(misses: np.ndarray, level: float = DEFAULT_LEVEL) -> float:
    """``t_{(1+level)/2, n}·sqrt(mean m²)`` for the ``n`` relative last-point misses ``m``."""
    return float(student_t.ppf((1 + level) / 2, len(misses)) * np.sqrt(np.mean(np.square(misses))))


def finals(name: str, law: str) -> list[tuple[str, bool, bool, float, float]]:
    """Per held-out schedule of ``name``: inside the t interval, inside the current default, the
    relative final-loss error and the t interval's relative half-width."""
    curves = load_curves(name)
    fit = Setting(law=law).fit([c.target for c in curves if c.fitted])
    half = t_half_width(np.array([r[-1] for r in fit.loo_residuals]))
    out = []
    for c in curves:
        if c.fitted:
            continue
        lr, truth = c.target.lr[:c.target.steps[-1]], float(c.target.loss[-1])
        pred = float(fit.law.predict(lr, np.array([len(lr)]))[0])
        low, high = fit.final_interval(lr)
        out.append((c.name, pred * (1 - half) <= truth <= pred * (1 + half), low <= truth <= high,
                    pred / truth - 1.0, half))
    return out


def main() -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--law", default="annealing")
    args = parser.parse_args()
    rows = {name: finals(name, args.law) for name in (*DECIDE, *JUDGE)}
    print("| set | t interval ± | finals inside: t | finals inside: run envelope (default) |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r[0][4]:.3%} | {sum(x[1] for x in r)}/{len(r)} | {sum(x[2] for x in r)}/{len(r)} |")
    share = {}
    for label, names in (("decide", DECIDE), ("judge", JUDGE)):
        r = [x for n in names for x in rows[n]]
        share[label] = (np.mean([x[1] for x in r]), np.mean([x[2] for x in r]))
        print(f"| {label}: {', '.join(names)} | | {sum(x[1] for x in r)}/{len(r)} ({share[label][0]:.0%}) "
              f"| {sum(x[2] for x in r)}/{len(r)} ({share[label][1]:.0%}) |")
    t_share, default_share = share["decide"]
    adopt = 0.75 <= t_share <= 0.90 and abs(t_share - DEFAULT_LEVEL) < abs(default_share - DEFAULT_LEVEL)
    print(f"\nregistered rule on the decision sets: {'adopt' if adopt else 'keep the run envelope'} "
          f"(t {t_share:.0%}, run envelope {default_share:.0%}; adopt needs 75–90% and nearer 80%)")


if __name__ == "__main__":
    main()
