"""Two variants of the multi-power fit that are not options, measured on the held-out schedules
(docs/forecast-evidence.md, "Why the published figures are lower", checks 5 and 6):

* ``weights``: every point weighs the same, as in the paper's released code (its objective sums
  the Huber loss over points), instead of every run; ``fit_law(choose="objective")``.
* ``beta``: a lower bound on ``β`` from :data:`FLOORS` (shipped: 1e-4), with the shipped
  leave-one-out choice; decided on 25M by the size-out criterion, judged on 100M and 124M.

Each variant is applied by replacing a constant or the loss function of
:mod:`cadence.forecast.multipower_fit` for the duration of one fit (restored afterwards): a
measurement, not a supported setting.

    nice -n 15 python benchmarks/multipower_fit_variants.py      # ~25 s of CPU
"""

from __future__ import annotations

import contextlib
import time
import warnings

import numpy as np

import cadence.forecast.multipower_fit as mf
from cadence.forecast.fit import fit_law
from cadence.forecast.published import load_curves, prediction_errors

SETS = ("multipower-25m", "multipower-100m", "schaipp-124m")
FLOORS = (1e-4, 0.1, 0.3, 0.5)
PER_POINT = 150.0
"""Points per run the per-point objective is scaled by (keeps it O(1); the optimum does not move)."""
SHIPPED_LOSS = mf.huber_log


@contextlib.contextmanager
def patched(name: str, value):
    old = getattr(mf, name)
    setattr(mf, name, value)
    try:
        yield
    finally:
        setattr(mf, name, old)


def per_point(pred: np.ndarray, log_target: np.ndarray, delta: float):
    """The mean Huber loss times the run's points: every point weighs the same across runs."""
    value, grad = SHIPPED_LOSS(pred, log_target, delta)
    return value * len(pred) / PER_POINT, grad * len(pred) / PER_POINT


def held_out(curves, law) -> str:
    rows = []
    for c in curves:
        if not c.fitted:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the 72,000-step runs are outside the fitted regime
                rows.append(prediction_errors(law.predict(c.target.lr, c.target.steps), c.target.loss))
    pred, final = np.mean([r[0] for r in rows]), np.mean([abs(r[2]) for r in rows])
    return (f"PredE {pred:.3%}, WorstE {np.mean([r[1] for r in rows]):.3%}, largest WorstE "
            f"{max(r[1] for r in rows):.3%}, max |final| {max(abs(r[2]) for r in rows):.3%}, criterion {pred + final:.3%}")


def main() -> None:
    started = time.process_time()
    for name in SETS:
        curves = load_curves(name)
        fitted = [c.target for c in curves if c.fitted]
        for weights in ("per run (shipped)", "per point"):
            with patched("huber_log", per_point) if weights == "per point" else contextlib.nullcontext():
                law = fit_law(fitted, law="multi-power", choose="objective").law
            print(f"{name}, weights {weights}: {held_out(curves, law)}", flush=True)
        for floor in FLOORS:
            with patched("LOG_BETA_BOUNDS", (np.log(floor), mf.LOG_BETA_BOUNDS[1])):
                law = fit_law(fitted, law="multi-power").law
            print(f"{name}, beta >= {floor:g}: beta {law.beta:.3g}; {held_out(curves, law)}", flush=True)
    print(f"{time.process_time() - started:.0f} s of CPU")


if __name__ == "__main__":
    main()
