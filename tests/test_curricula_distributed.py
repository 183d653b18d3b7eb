"""Two processes on the gloo backend (CPU) behave like one process with the same global batch, for
every registered policy: disjoint shards that make up the global batch, and identical policy and
sampler state after feedback (NaN rows dropped on every rank alike). The workers are spawned once
and loop over the policies."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import gloo
from test_curricula_policies import ALL, build, signals

from cadence import Clock
from cadence.curricula import CurriculumSampler

STEPS = 6
BATCH = 8


def _train(name: str) -> dict:
    """STEPS global batches through a without-replacement sampler (with replacement for the replay mixture,
    which counts each draw as one batch), feedback after each one."""
    clock = Clock(budget=20)
    policy = build(name, clock)
    sampler = CurriculumSampler(policy, BATCH, seed=11, replacement=name == "replay", on_exhausted="refill")
    stream = iter(sampler)
    shards, weighted = [], []
    for step in range(STEPS):
        local = np.array([next(stream) for _ in range(sampler.local_batch_size)])
        shards.append(local.tolist())
        feedback = signals(local)
        if step == 2 and sampler.rank == 0:
            for values in feedback.values():
                values[0] = np.nan                    # the global batch's first row: dropped on every rank
        sampler.observe(local, **feedback)
        if name == "loss_reweighting":
            weighted.append(float(policy.weighted_loss(torch.tensor(signals(local)["loss"]))))   # finite losses
        clock.advance()
    state = sampler.state_dict()
    del state["num_replicas"], state["pos"]           # the world itself, and the position inside the shard
    return {"shards": shards, "state": pickle.dumps(state), "dropped": dict(policy.dropped), "weighted": weighted}


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    results = {name: _train(name) for name in ALL}
    Path(out_dir, f"rank{rank}.pkl").write_bytes(pickle.dumps(results))
    gloo.leave()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("gloo")
    gloo.spawn(_worker, (2, str(out / "init"), str(out)), 2)
    return [pickle.loads((out / f"rank{r}.pkl").read_bytes()) for r in range(2)]


@pytest.mark.parametrize("name", ALL)
def test_two_gloo_processes_match_one_process(name, ranks):
    single = _train(name)
    r0, r1 = ranks[0][name], ranks[1][name]
    for step in range(STEPS):
        a, b = r0["shards"][step], r1["shards"][step]
        assert len(a) == len(b) == BATCH // 2
        assert name == "replay" or not set(a) & set(b)      # drawn with replacement, an item may recur
        assert a + b == single["shards"][step]
    assert r0["state"] == r1["state"] == single["state"]    # policy (RNG included), sampler RNG, used mask
    needed = build(name, Clock(budget=20)).requires
    assert single["dropped"] == {k: int(k in needed) for k in single["dropped"]}
    if name == "loss_reweighting":     # weights over the global batch: the ranks' losses average to one process's
        np.testing.assert_allclose((np.array(r0["weighted"]) + np.array(r1["weighted"])) / 2, single["weighted"],
                                   rtol=1e-12)
