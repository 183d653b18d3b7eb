"""Why the Multi-Power Law paper's published figures are lower than cadence's multi-power fit: its
released fit evaluated on the shipped curves, refitted from where it stopped, and cadence's fits in
both forms of the law (docs/forecast-evidence.md, "Why the published figures are lower").

Per set and fit: the fitted curves' mean PredE, the fitting objective (cadence's: mean over runs
of the mean Huber loss of log residuals / δ), and on the six held-out curves the figures as the
paper's repository computes them (mean PredE, mean WorstE), the largest WorstE and the largest
|final-loss error|, and the size-out criterion (mean PredE + mean |final|, docs/forecast-evidence.md). Rows:

* ``released``: the paper's published constants (:func:`~cadence.forecast.published.released_law`)
  in its code's form (the warmup's rise in the loss drop); ``released, text form``: the same
  constants in cadence's default form (no warmup term).
* ``released → L-BFGS-B N it.``: cadence's optimiser run N iterations from the released constants,
  same form and objective (where the released optimiser stopped, relative to the optimum).
* ``cadence multi-start, <form>``: cadence's search (36 starts, the best 3 polished), lowest
  objective, in each form; ``shipped default``: ``fit_law(law="multi-power")`` (leave-one-out choice).

    nice -n 15 python benchmarks/multipower_paper_fit.py            # ~40 s of CPU
"""

from __future__ import annotations

import time

import numpy as np

from cadence.forecast.fit import exact_objective, fit_law
from cadence.forecast.multipower import MultiPowerLaw
from cadence.forecast.multipower_fit import MultiPowerProblem, search_multi_power
from cadence.forecast.published import PUBLISHED, RELEASED, load_curves, prediction_errors, released_law

SETS = ("multipower-25m", "multipower-100m", "schaipp-124m")
ITERATIONS = (30, 100, 1000)


def row(label: str, law, curves, fitted) -> None:
    scores = [(c, prediction_errors(law.predict(c.target.lr, c.target.steps), c.target.loss)) for c in curves]
    held = [s for c, s in scores if not c.fitted]
    fit_pred = np.mean([s[0] for c, s in scores if c.fitted])
    pred, final = np.mean([s[0] for s in held]), np.mean([abs(s[2]) for s in held])
    print(f"| {label} | {exact_objective(law, fitted):.3g} | {fit_pred:.3%} | {pred:.3%} "
          f"| {np.mean([s[1] for s in held]):.3%} | {max(s[1] for s in held):.3%} "
          f"| {max(abs(s[2]) for s in held):.3%} | {pred + final:.3%} |", flush=True)


def main() -> None:
    started = time.process_time()
    print("| set, fit | objective | fitted PredE | held-out mean PredE | mean WorstE | max WorstE | max \\|final\\| "
          "| criterion |")
    print("|---|---|---|---|---|---|---|---|")
    for name in SETS:
        curves = load_curves(name)
        fitted = [c.target for c in curves if c.fitted]
        lr_ref = max(float(t.lr.max()) for t in fitted)
        steps_ref = float(max(len(t.lr) for t in fitted))
        if name in RELEASED:
            print(f"| **{name}** (published: {PUBLISHED[name][0]:.3%}, {PUBLISHED[name][1]:.3%}) | | | | | | | |")
            law = released_law(name).in_units(lr_ref, steps_ref)
            row("released", law, curves, fitted)
            row("released, text form", MultiPowerLaw(**vars(law)), curves, fitted)
            problem = MultiPowerProblem([t.lr for t in fitted], [t.steps for t in fitted], [t.loss for t in fitted],
                                        delta=1e-3, lr_ref=lr_ref, steps_ref=steps_ref, warmup_rise=True)
            for n in ITERATIONS:
                row(f"released → L-BFGS-B {n} it.", problem.law(problem.solve(problem.theta(law), n)[1]), curves, fitted)
        else:
            print(f"| **{name}** (no released fit) | | | | | | | |")
        for rise in (False, True):
            [(_, law)] = search_multi_power([t.lr for t in fitted], [t.steps for t in fitted],
                                            [t.loss for t in fitted], delta=1e-3, warmup_rise=rise)
            row(f"cadence multi-start, {'warmup rise (code form)' if rise else 'text form'}", law, curves, fitted)
        row("shipped default (leave-one-out)", fit_law(fitted, law="multi-power").law, curves, fitted)
    print(f"\n{time.process_time() - started:.0f} s of CPU")


if __name__ == "__main__":
    main()
