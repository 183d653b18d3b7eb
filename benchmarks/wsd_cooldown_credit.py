"""Where the annealing law's WSD final-loss error comes from: the loss drop over each WSD cooldown of
the published curves, measured and as the two laws predict it, with the annealing law's drop split
into its two terms (``A·S1^(−α)``: training on; ``C·S2``: the annealing credit).

Each law is fitted with the shipped defaults on the set's protocol curves (nothing tuned here); the
cooldown starts at the first step whose LR falls below the peak after the warmup
(:func:`~cadence.forecast.law.warmup_end`), and the drop is from the last point before it to the
run's last point.

    python benchmarks/wsd_cooldown_credit.py
"""

from __future__ import annotations

import numpy as np

from cadence.forecast.evaluate import Setting
from cadence.forecast.law import warmup_end
from cadence.forecast.published import load_curves

SETS = ("multipower-25m", "multipower-100m", "schaipp-124m")


def main() -> None:
    print("| set | curve | cooldown | error before it (annealing) | drop measured | annealing: drop (S1 term + S2 term) "
          "| multi-power: drop | final error annealing / multi-power |")
    print("|---|---|---|---|---|---|---|---|")
    for name in SETS:
        curves = load_curves(name)
        fitted = [c.target for c in curves if c.fitted]
        ann, mp = Setting().fit(fitted).law, Setting(law="multi-power").fit(fitted).law
        for c in curves:
            if not c.name.startswith("wsd") or c.name.startswith("wsdcon"):
                continue  # wsdcon: one abrupt drop (a step schedule), not a cooldown
            t = c.target
            start = warmup_end(t.lr) + 1  # 1-based first step below the peak
            before = int(np.searchsorted(t.steps, start)) - 1
            pa, pm = ann.predict(t.lr, t.steps), mp.predict(t.lr, t.steps)
            s1, s2 = ann.areas(t.lr)
            i, j = t.steps[before] - 1, t.steps[-1] - 1
            forward = ann.A * (s1[i] ** -ann.alpha - s1[j] ** -ann.alpha)
            credit = ann.C * (s2[j] - s2[i])
            print(f"| {name} | {c.name}{' (fitted)' if c.fitted else ''} | last {1 - (start - 1) / len(t.lr):.0%} "
                  f"| {pa[before] / t.loss[before] - 1:+.3%} | {t.loss[before] - t.loss[-1]:.4f} "
                  f"| {pa[before] - pa[-1]:.4f} ({forward:.4f} + {credit:.4f}) | {pm[before] - pm[-1]:.4f} "
                  f"| {pa[-1] / t.loss[-1] - 1:+.3%} / {pm[-1] / t.loss[-1] - 1:+.3%} |")


if __name__ == "__main__":
    main()
