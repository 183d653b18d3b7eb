"""Fit speed of the loss laws: the implementation before the fast fit vs the current one, side by side.

Fits each law on the Multi-Power Law paper's three training curves (``cosine_24000``,
``constant_24000``, ``wsdcon_9`` of the shipped 25M set, 24,000 and 16,000 steps) with the
old code (``cadence.forecast`` at commit ``BASE``, loaded from git history into a temporary
package) and with the current code, in one process, and prints wall and CPU time and the fit
objective (the same Huber objective, evaluated exactly for both). ``new`` keeps the lowest
objective (``choose="objective"``); ``new + leave-one-out`` is ``fit_law``'s default, which also
refits the good candidates without each run.

    python benchmarks/forecast_fit_speed.py              # both laws, old and new (the old multi-power fit takes minutes)
    python benchmarks/forecast_fit_speed.py --new-only   # only the current code (seconds)
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE = "93e8570"
"""The last commit before the fast fit."""
FILES = ("__init__", "fit", "law", "laws", "multipower", "multipower_fit", "objective", "optimize", "runlog")


def old_forecast(root: Path, tmp: Path):
    """``cadence.forecast`` as of :data:`BASE`, importable as ``old_forecast``."""
    pkg = tmp / "old_forecast"
    pkg.mkdir()
    for name in FILES:
        text = subprocess.run(["git", "-C", str(root), "show", f"{BASE}:src/cadence/forecast/{name}.py"],
                              check=True, capture_output=True, text=True).stdout
        (pkg / f"{name}.py").write_text(text.replace("cadence.forecast", "old_forecast"))
    sys.path.insert(0, str(tmp))
    return importlib.import_module("old_forecast.fit")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-only", action="store_true", help="skip the old implementation")
    ap.add_argument("--curves", default="multipower-25m", help="shipped set or folder (multipower-25m)")
    args = ap.parse_args()

    from threadpoolctl import threadpool_limits

    from cadence.forecast.fit import fit_law
    from cadence.forecast.published import load_curves

    curves = [c for c in load_curves(args.curves) if c.fitted]
    targets = [c.target for c in curves]
    print(f"fitting on {', '.join(c.name for c in curves)} ({args.curves}; "
          f"{', '.join(str(len(t.lr)) for t in targets)} steps, {sum(len(t.steps) for t in targets)} points)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(limits=1):
        old = None if args.new_only else old_forecast(Path(__file__).resolve().parents[1], Path(tmp))
        for law in ("annealing", "multi-power"):
            if old is not None:
                old_targets = [old.FitTarget(t.steps, t.loss, t.lr, t.name) for t in targets]
                rows.append((law, "old", *timed(lambda: old.fit_law(old_targets, law=law), targets)))
            rows.append((law, "new", *timed(lambda: fit_law(targets, law=law, choose="objective"), targets)))
            rows.append((law, "new + leave-one-out", *timed(lambda: fit_law(targets, law=law), targets)))
            print(*(f"{x:.6g}" if isinstance(x, float) else x for x in rows[-1]), flush=True)
    print(f"{'law':<12} {'code':<20} {'wall s':>8} {'CPU s':>8} {'objective':>12}")
    for law, code, wall, cpu, objective in rows:
        print(f"{law:<12} {code:<20} {wall:8.2f} {cpu:8.2f} {objective:12.8f}")


def timed(fit, targets) -> tuple[float, float, float]:
    """Wall and CPU seconds of ``fit()``, and the exact objective of the law it returns."""
    from cadence.forecast import law_from_dict
    from cadence.forecast.fit import exact_objective

    wall, cpu = time.perf_counter(), time.process_time()
    law = fit().law
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    saved = law.to_dict()  # the old code's law, read back as the current class
    law = law_from_dict({**saved, "kind": saved["kind"].replace("old_forecast", "cadence.forecast")})
    return wall, cpu, exact_objective(law, targets)


if __name__ == "__main__":
    main()
