"""A layer plan on a DistributedDataParallel model, 2 gloo processes on CPU: every rank freezes and
unfreezes the same layers at every step (Drop-Muon's random cutoffs change them each step), DDP
neither hangs nor errors on the parameters that get no gradient (``find_unused_parameters=True``),
frozen layers stay put, and both ranks end with bit-identical weights."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import gloo
from cadence import Clock
from cadence.optim import ScheduledLR
from cadence.progressive import RandomizedProgressive, leaf_layers

WORLD, STEPS = 2, 8


def train(rank: int) -> dict:
    torch.manual_seed(0)  # the same initial weights on every rank
    net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                        nn.Linear(16, 1))
    clock = Clock(budget=STEPS)
    plan = RandomizedProgressive(leaf_layers(net), clock=clock, seed=7)  # same seed, same cutoffs on every rank
    # frozen layers get no gradient: DDP must look for unused parameters, or it waits for them forever
    model = nn.parallel.DistributedDataParallel(net, find_unused_parameters=True)
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    sched = ScheduledLR(opt, lr="constant(0.05)", clock=clock)
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own shard of data
    x, y = torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)
    masks, moved = [], []
    for _ in range(STEPS):
        plan.update()
        before = [layer.weight.detach().clone() for layer in plan.layers]
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        masks.append(plan.trainable.tolist())
        moved.append([not torch.equal(b, layer.weight) for b, layer in zip(before, plan.layers)])
    return {"masks": masks, "moved": moved, "weights": [p.detach().clone() for p in net.parameters()]}


def worker(rank: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(out, 'rendezvous')}", rank=rank,
                            world_size=WORLD)
    torch.set_num_threads(1)
    result = train(rank)
    Path(out, f"rank{rank}.pkl").write_bytes(pickle.dumps(result))
    gloo.leave()


def test_ddp_ranks_freeze_the_same_layers_every_step_and_end_identical(tmp_path):
    # spawn, not fork: forking a process that already holds torch threads can deadlock
    gloo.spawn(worker, (str(tmp_path),), WORLD)
    ranks = [pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in range(WORLD)]
    assert ranks[0]["masks"] == ranks[1]["masks"]  # the same plan step on both ranks
    assert len({tuple(m) for m in ranks[0]["masks"]}) > 2  # layers froze and unfroze during the run
    for r in ranks:
        assert r["moved"] == r["masks"]  # exactly the trainable layers moved; frozen ones stayed put
    for a, b in zip(ranks[0]["weights"], ranks[1]["weights"]):
        assert torch.equal(a, b)
