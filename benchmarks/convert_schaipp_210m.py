"""Rebuild ``cadence/forecast/data/schaipp/210m/*.csv`` from the JSON run logs of
github.com/fabian-sp/lr-scheduling (MIT; "The Surprising Agreement Between Convex Optimization
Theory and Learning-Rate Scheduling for Large Model Training", arXiv 2501.18965).

    python benchmarks/convert_schaipp_210m.py --repo PATH [-o src/cadence/forecast/data/schaipp/210m]

``PATH`` is a clone of that repository (its ``data/`` folder) or a bare git directory of it (read
with ``git show HEAD:data/...``). The 210M model (24 layers, 12 heads, width 768, the ``llama``
model without extra norm): the constant run ``stable-210m`` (peak 5e-4, 40,000 steps), the cosine
runs ``cos-210m`` (peak 1e-3, to 10%) and the WSD cooldowns ``ann210-0.2`` (linear to 0 over the
last 20%, each resumed from a checkpoint of the constant run). Each WSD curve is the constant
run's points before the cooldown run's resume step, then the cooldown run's from it on.

Written rows: ``step,lr,loss``. The LR as logged (every 10 steps) through step 400 (the warmup
ends at 300) and within 50 steps of a cooldown's start, every 50 steps elsewhere, and the last one;
the validation loss every 200 steps (step 0 left out).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
from pathlib import Path

NAME = "_slimpajama_llama_nlayers24_nhead12_lr{lr}_sched_{sched}_warmup300_iter{n}_bs50x2_ws2_seed0_data_seed1337.json"
LENGTHS = (22222, 33333, 44444)
STABLE = ("stable-210m", "0.0005", "wsd", 40000)


def read_json(repo: Path, name: str) -> dict:
    """One run's JSON log from a checkout (``data/NAME``) or a bare git directory."""
    path = repo / "data" / name
    if path.is_file():
        return json.loads(path.read_text())
    out = subprocess.run(["git", "-C", str(repo), "show", f"HEAD:data/{name}"], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def history(run: dict) -> tuple[dict[int, float], dict[int, float]]:
    """``(lr by step, validation loss by step)``; a repeated step keeps its first value."""
    lr: dict[int, float] = {}
    for step, value in zip(run["history"]["train"]["iter"], run["history"]["train"]["train_lr"]):
        lr.setdefault(int(step), float(value))
    loss: dict[int, float] = {}
    for step, value in zip(run["history"]["val"]["iter"], run["history"]["val"]["val_loss"]):
        if step > 0:
            loss.setdefault(int(step), float(value))
    return lr, loss


def resume_step(run: dict) -> int:
    """The checkpoint step a cooldown run was resumed from (``.../ckpts/STEP``)."""
    m = re.search(r"/ckpts/(\d+)$", str(run["config"]["resume_from"]))
    if m is None:
        raise ValueError(f"{run['name']}: no checkpoint step in resume_from")
    return int(m[1])


def write(path: Path, lr: dict[int, float], loss: dict[int, float], budget: int) -> None:
    """Rows at the kept LR steps and the loss steps, up to the budget: every logged LR through the
    warmup and within 50 steps of the cooldown's start (where the LR first falls below its peak
    after the warmup), every 50th step elsewhere, and the last one."""
    peak = max(lr.values())
    falls = min((s for s, v in lr.items() if s > 400 and v < peak), default=-1000)
    kept = {s for s in lr if s <= 400 or s % 50 == 0 or s == max(lr) or abs(s - falls) <= 50}
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["step", "lr", "loss"])
        for step in sorted((kept | set(loss)) & set(range(1, budget + 1))):
            out.writerow([step, repr(lr[step]) if step in lr else "", repr(loss[step]) if step in loss else ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path,
                        default=Path(__file__).parents[1] / "src/cadence/forecast/data/schaipp/210m")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    prefix, peak, sched, n = STABLE
    stable_lr, stable_loss = history(read_json(args.repo, prefix + NAME.format(lr=peak, sched=sched, n=n)))
    write(args.output / f"stable_{n}.csv", stable_lr, stable_loss, n - 1)  # its logged LR at step n is 0
    for n in LENGTHS:
        lr, loss = history(read_json(args.repo, "cos-210m" + NAME.format(lr="0.001", sched="cos", n=n)))
        write(args.output / f"cosine10_{n}.csv", lr, loss, n)
        run = read_json(args.repo, "ann210-0.2" + NAME.format(lr="0.0005", sched="wsd", n=n))
        start = resume_step(run)
        lr, loss = history(run)
        lr = {**{s: v for s, v in stable_lr.items() if s <= start}, **{s: v for s, v in lr.items() if s > start}}
        loss = {**{s: v for s, v in stable_loss.items() if s < start}, **{s: v for s, v in loss.items() if s >= start}}
        write(args.output / f"wsdlinear20_{n}.csv", lr, loss, n)
        print(f"wsdlinear20_{n}: constant run to step {start}, cooldown run from it")


if __name__ == "__main__":
    main()
