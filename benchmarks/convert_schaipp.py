"""Rebuild the shipped curves of github.com/fabian-sp/lr-scheduling (MIT; "The Surprising Agreement
Between Convex Optimization Theory and Learning-Rate Scheduling for Large Model Training", arXiv
2501.18965) from the repository's JSON run logs: ``cadence/forecast/data/schaipp/210m`` and
``124m`` (the 124M model at a peak LR, ``--lr``).

    python benchmarks/convert_schaipp.py 210m --repo PATH
    python benchmarks/convert_schaipp.py 124m --lr 0.002 --repo PATH -o OUT

``PATH`` is a clone of that repository (its ``data/`` folder) or a bare git directory of it (read
with ``git show HEAD:data/...``).

210M (24 layers, 12 heads, width 768, the ``llama`` model without extra norm): the constant run
``stable-210m`` (peak 5e-4, 40,000 steps), the cosine runs ``cos-210m`` (peak 1e-3, to 10%) and
the WSD cooldowns ``ann210-0.2`` (linear to 0 over the last 20%). 124M (12 layers, 12 heads): the
constant run ``stable-124m`` (50,000 steps), ``cos-10-124m`` (cosine to 10%) and the cooldowns
``ann124-F`` (linear or 1−sqrt over the last fraction F), all at the peak ``--lr``. Every WSD
curve is the constant run's points before the cooldown run's resume step (``resume_from``), then
the cooldown run's from it on.

Written rows: ``step,lr,loss``. The LR as logged (210M: every 10 steps) through step 400 and
within 50 steps of a cooldown's start, every 50 steps elsewhere, and the last one; the validation
loss every 200 steps (step 0 left out).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
from pathlib import Path

NAME_210M = ("_slimpajama_llama_nlayers24_nhead12_lr{lr}_sched_{sched}_warmup300_iter{n}_bs50x2_ws2_seed0"
             "_data_seed1337.json")
NAME_124M = ("_slimpajama_llama_norm_nlayers12_nhead12_lr{lr}_sched_{sched}_warmup300_decay_{shape}_{fraction}_iter{n}"
             "_bs50x2_ws2_seed0_data_seed1337.json")
CURVES_124M = (("cosine10", 25000), ("cosine10", 50000), ("wsdlinear10", 25000), ("wsdlinear20", 25000),
               ("wsdlinear40", 25000), ("wsdlinear80", 25000), ("wsdlinear20", 50000), ("wsdsqrt20", 25000))
"""The 124M curves shipped besides the constant run (the same names at every peak LR)."""


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


def cooldown(run: dict, stable_lr: dict[int, float], stable_loss: dict[int, float]) -> tuple[dict, dict]:
    """A WSD curve: the constant run's points before the cooldown run's resume step, then the cooldown run's."""
    start = resume_step(run)
    lr, loss = history(run)
    return ({**{s: v for s, v in stable_lr.items() if s <= start}, **{s: v for s, v in lr.items() if s > start}},
            {**{s: v for s, v in stable_loss.items() if s < start}, **{s: v for s, v in loss.items() if s >= start}})


def convert_210m(repo: Path, out: Path) -> None:
    stable = read_json(repo, "stable-210m" + NAME_210M.format(lr="0.0005", sched="wsd", n=40000))
    stable_lr, stable_loss = history(stable)
    write(out / "stable_40000.csv", stable_lr, stable_loss, 39999)  # its logged LR at step 40,000 is 0
    for n in (22222, 33333, 44444):
        lr, loss = history(read_json(repo, "cos-210m" + NAME_210M.format(lr="0.001", sched="cos", n=n)))
        write(out / f"cosine10_{n}.csv", lr, loss, n)
        run = read_json(repo, "ann210-0.2" + NAME_210M.format(lr="0.0005", sched="wsd", n=n))
        write(out / f"wsdlinear20_{n}.csv", *cooldown(run, stable_lr, stable_loss), n)


def convert_124m(repo: Path, out: Path, peak: str) -> None:
    name = lambda prefix, sched, shape, fraction, n: prefix + NAME_124M.format(  # noqa: E731
        lr=peak, sched=sched, shape=shape, fraction=fraction, n=n)
    stable_lr, stable_loss = history(read_json(repo, name("stable-124m", "wsd", "linear", "0.0", 50000)))
    write(out / "stable_50000.csv", stable_lr, stable_loss, 50000)
    for curve, n in CURVES_124M:
        if curve == "cosine10":
            write(out / f"{curve}_{n}.csv", *history(read_json(repo, name("cos-10-124m", "cos", "sqrt", "0.0", n))), n)
            continue
        shape, percent = ("linear", curve[len("wsdlinear"):]) if "linear" in curve else ("sqrt", curve[len("wsdsqrt"):])
        fraction = f"{int(percent) / 100:g}"
        run = read_json(repo, name(f"ann124-{fraction}", "wsd", shape, fraction, n))
        write(out / f"{curve}_{n}.csv", *cooldown(run, stable_lr, stable_loss), n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("size", choices=("210m", "124m"))
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--lr", default="0.001", help="124m: the peak LR, as in the run names (0.0005, 0.001, 0.002)")
    parser.add_argument("-o", "--output", type=Path, help="default: cadence/forecast/data/schaipp/SIZE")
    args = parser.parse_args()
    out = args.output or Path(__file__).parents[1] / "src/cadence/forecast/data/schaipp" / args.size
    out.mkdir(parents=True, exist_ok=True)
    if args.size == "210m":
        convert_210m(args.repo, out)
    else:
        convert_124m(args.repo, out, args.lr)
    print(f"wrote {len(list(out.glob('*.csv')))} curves to {out}")


if __name__ == "__main__":
    main()
