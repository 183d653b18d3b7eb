"""Two processes on the gloo backend (CPU) behave like one process with the same global batch:
disjoint shards that make up the global batch, and identical policy state after feedback."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cadence.curricula import DUMP, Arms, CurriculumSampler, LossReweighting

KEYS = ["easy"] * 30 + ["mid"] * 40 + ["hard"] * 33
STEPS = 6
BATCH = 8


def _train() -> dict:
    arms = Arms(KEYS)
    sampler = CurriculumSampler(DUMP(arms, window=16), BATCH, seed=11, replacement=False, on_exhausted="refill")
    reweight = LossReweighting(arms, strategy="quadratic", temperature=0.5)
    stream = iter(sampler)
    shards, weighted = [], []
    for step in range(STEPS):
        local = [next(stream) for _ in range(sampler.local_batch_size)]
        shards.append(local)
        advantage = np.cos(np.array(local) * 0.37)
        if step == 2 and sampler.rank == 0:
            advantage[0] = np.nan                     # the global batch's first value: dropped on every rank
        sampler.observe(local, advantage=advantage)
        loss = torch.tensor(np.sin(np.array(local)) + 2.0)
        weighted.append(float(reweight.weighted_loss(loss)))
    return {"shards": shards, "policy": pickle.dumps(sampler.policy.state_dict()),
            "rng": sampler.state_dict()["rng"], "used": sampler.state_dict()["used"].tolist(), "weighted": weighted}


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = _train()
    finally:
        dist.destroy_process_group()
    Path(out_dir, f"rank{rank}.pkl").write_bytes(pickle.dumps(result))


def test_two_gloo_processes_match_one_process(tmp_path):
    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")  # spawn: forking a process that holds torch threads can deadlock
    ranks = [pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in range(2)]
    single = _train()
    for step in range(STEPS):
        a, b = ranks[0]["shards"][step], ranks[1]["shards"][step]
        assert len(a) == len(b) == BATCH // 2 and not set(a) & set(b)
        assert a + b == single["shards"][step]
    assert ranks[0]["policy"] == ranks[1]["policy"] == single["policy"]
    assert pickle.loads(single["policy"])["dropped"]["advantage"] == 1
    assert ranks[0]["rng"] == ranks[1]["rng"] == single["rng"] and ranks[0]["used"] == single["used"]
    mean_over_ranks = (np.array(ranks[0]["weighted"]) + np.array(ranks[1]["weighted"])) / 2
    np.testing.assert_allclose(mean_over_ranks, single["weighted"], rtol=1e-12)
