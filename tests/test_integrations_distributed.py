"""torch.distributed with 2 CPU processes (gloo): schedules identical across ranks, curriculum
shards disjoint, policy state identical after feedback, and save/load resume exact."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist

import gloo
from cadence import Clock
from cadence.curricula import Arms, CurriculumSampler, DoReMi
from cadence.integrations import RegimenLink
from cadence.integrations.jsonstate import encode
from cadence.optim import ScheduledLR

WORLD, STEPS, GLOBAL_BATCH = 2, 8, 4
KEYS = ["short"] * 6 + ["long"] * 10


def build() -> tuple[torch.nn.Module, torch.optim.Optimizer, RegimenLink]:
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = ScheduledLR(opt, lr="wsd(peak=0.1, warmup=25%, decay=25%)", clock=Clock(budget=STEPS))
    policy = DoReMi(Arms(KEYS), reference={"short": 0.0, "long": 0.5}, seed=3)
    sampler = CurriculumSampler(policy, batch_size=GLOBAL_BATCH, seed=4, replacement=False, on_exhausted="refill")
    return model, opt, RegimenLink(scheduler=sched, policy=policy, sampler=sampler)


def train(model, opt, link: RegimenLink, steps: int, log: list) -> None:
    g = torch.Generator().manual_seed(5)
    data_x, data_y = torch.randn(len(KEYS), 3, generator=g), torch.randn(len(KEYS), generator=g)
    stream = iter(link.sampler)
    for _ in range(steps):
        ids = np.array([next(stream) for _ in range(link.sampler.local_batch_size)])
        per_sample = (model(data_x[ids]).squeeze(-1) - data_y[ids]) ** 2
        per_sample.mean().backward()
        opt.step()
        opt.zero_grad()
        link.scheduler.step()
        link.observe(ids, loss=per_sample.detach())
        log.append({"ids": ids.tolist(), "values": link.values()})


def without_seconds(state: dict) -> dict:
    state = json.loads(json.dumps(encode(state)))
    for clock in (state["clock"], state["scheduler"]["clock"]):
        clock["counts"].pop("seconds")
    return state


def worker(rank: int, out: str) -> None:
    # a file rendezvous: no TCP port to race for
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(out, 'rendezvous')}", rank=rank,
                            world_size=WORLD)
    torch.set_num_threads(1)
    straight_log: list = []
    model, opt, link = build()
    train(model, opt, link, STEPS, straight_log)
    straight = without_seconds(link.state_dict())

    resumed_log: list = []
    model, opt, link = build()
    train(model, opt, link, STEPS // 2, resumed_log)
    path = os.path.join(out, "checkpoint.pt")
    if rank == 0:  # one copy of the regimen state serves every rank
        torch.save({"link": link.state_dict(), "model": model.module.state_dict(), "opt": opt.state_dict()}, path)
    dist.barrier()
    model, opt, link = build()
    saved = torch.load(path, weights_only=False)
    link.load_state_dict(saved["link"])
    model.module.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    train(model, opt, link, STEPS - STEPS // 2, resumed_log)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"straight_log": straight_log, "resumed_log": resumed_log, "straight": straight,
                   "resumed": without_seconds(link.state_dict())}, f)
    gloo.leave()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = str(tmp_path_factory.mktemp("ddp"))
    gloo.spawn(worker, (out,), WORLD)
    results = []
    for r in range(WORLD):
        with open(os.path.join(out, f"rank{r}.json")) as f:
            results.append(json.load(f))
    return results


def test_schedules_are_identical_across_ranks(ranks):
    lrs = [[step["values"]["cadence/lr/0"] for step in r["straight_log"]] for r in ranks]
    assert lrs[0] == lrs[1]
    assert len(set(lrs[0])) > 2  # warmup, stable and decay all happened


def test_curriculum_shards_are_disjoint_and_cover_the_global_batch(ranks):
    for step0, step1 in zip(ranks[0]["straight_log"], ranks[1]["straight_log"]):
        assert len(step0["ids"]) == len(step1["ids"]) == GLOBAL_BATCH // WORLD
        assert not set(step0["ids"]) & set(step1["ids"])


def test_policy_state_is_identical_after_feedback(ranks):
    assert ranks[0]["straight"] == ranks[1]["straight"]
    probabilities = [ranks[0]["straight_log"][i]["values"]["cadence/curriculum/probabilities/short"] for i in (0, -1)]
    assert probabilities[0] != probabilities[1]  # feedback moved the mixture


def test_resume_matches_the_uninterrupted_run(ranks):
    for r in ranks:
        assert r["resumed_log"] == r["straight_log"]
        assert r["resumed"] == r["straight"]
