"""Torch adapters: determinism, with/without replacement, exhaustion, exact resume, sharding."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from cadence import Clock
from cadence.curricula import (DUMP, Arms, CurriculumDataset, CurriculumSampler, FixedMixture, SamplerExhausted,
                               Uniform, make_policy)
from cadence.errors import CadenceError, StateError

KEYS = ["easy"] * 30 + ["mid"] * 40 + ["hard"] * 33          # 103 items


def adv(ids):
    return np.cos(np.asarray(ids) * 0.37)


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_same_seed_same_stream_other_seed_other_stream():
    def stream(seed):
        return list(CurriculumSampler(Uniform(Arms(KEYS)), 8, seed=seed, batches_per_epoch=5))
    assert stream(1) == stream(1) and stream(1) != stream(2) and len(stream(1)) == 40


def test_without_replacement_epoch_has_no_repeats_and_ends_with_a_defined_event():
    sampler = CurriculumSampler(FixedMixture(Arms(KEYS), {"easy": 5, "mid": 1, "hard": 1}), 10, replacement=False)
    epoch = list(sampler)
    assert len(epoch) == 100 and len(set(epoch)) == 100          # 10 full batches; 3 items cannot fill an 11th
    assert sampler.exhausted == 1 and sampler.epoch == 1 and sampler.used.sum() == 0
    second = list(sampler)
    assert len(set(second)) == 100 and second != epoch and sampler.exhausted == 2
    assert len(sampler) == 100


def test_next_batch_raises_when_exhausted():
    sampler = CurriculumSampler(Uniform(Arms(["a"] * 5)), 4, replacement=False)
    sampler.next_batch()
    with pytest.raises(SamplerExhausted, match="cannot fill"):
        sampler.next_batch()


def test_refill_mode_continues_across_epochs_without_repeats_inside_one():
    sampler = CurriculumSampler(Uniform(Arms(["a"] * 12)), 5, replacement=False, on_exhausted="refill")
    batches = [sampler.next_batch() for _ in range(5)]
    assert all(len(set(b.tolist())) == 5 for b in batches) and sampler.epoch == 2
    assert len(set(np.concatenate(batches[:2]).tolist())) == 10


def test_without_replacement_follows_an_ordered_window():
    clock = Clock(budget=100)
    policy = make_policy("ordered", Arms(["x"] * 50, difficulty=np.arange(50.0)), pacing="constant(0.4)",
                         clock=clock)
    epoch = list(CurriculumSampler(policy, 5, replacement=False))
    assert sorted(epoch) == list(range(20))                  # only the admitted 40% is used, each once


def test_resume_mid_batch_is_exact_with_feedback():
    for replacement in (True, False):
        def fresh():
            return CurriculumSampler(DUMP(Arms(KEYS), window=20), 8, seed=3, replacement=replacement,
                                     on_exhausted="refill")

        def run(sampler, it, n, out):
            for _ in range(n):
                out.append(next(it))
                if sampler._pos == sampler.local_batch_size:   # a batch finished: feed it back
                    batch = out[-8:]
                    sampler.observe(batch, advantage=adv(batch))

        straight, s_out = fresh(), []
        run(straight, iter(straight), 200, s_out)
        first, f_out = fresh(), []
        run(first, iter(first), 93, f_out)                       # stops mid-batch
        state = pickle.loads(pickle.dumps(first.state_dict()))
        resumed = fresh()
        resumed.policy.observe([0], advantage=[5.0])             # garbage that the load must overwrite
        resumed.load_state_dict(state)
        run(resumed, iter(resumed), 107, f_out)
        assert f_out == s_out
        assert pickle.dumps(resumed.state_dict()) == pickle.dumps(straight.state_dict())


def test_sampler_state_for_another_setup_is_rejected_and_nothing_changes():
    sampler = CurriculumSampler(Uniform(Arms(KEYS)), 8, replacement=False)
    next(iter(sampler))
    before = pickle.dumps(sampler.state_dict())
    with pytest.raises(StateError, match="batch_size"):
        sampler.load_state_dict(CurriculumSampler(Uniform(Arms(KEYS)), 4, replacement=False).state_dict())
    with pytest.raises(StateError, match="another arm set"):
        sampler.load_state_dict(CurriculumSampler(Uniform(Arms(KEYS[:-1] + ["zzz"])), 8,
                                                  replacement=False).state_dict())
    assert pickle.dumps(sampler.state_dict()) == before


def test_shards_of_two_replicas_make_up_the_single_process_batch():
    def sampler(**kw):
        return CurriculumSampler(FixedMixture(Arms(KEYS), [1, 2, 3]), 8, seed=7, replacement=False, **kw)
    single = list(sampler(num_replicas=1, rank=0))
    r0, r1 = list(sampler(num_replicas=2, rank=0)), list(sampler(num_replicas=2, rank=1))
    assert len(r0) == len(r1) == len(single) // 2
    rebuilt = [x for k in range(len(r0) // 4) for x in r0[4 * k:4 * k + 4] + r1[4 * k:4 * k + 4]]
    assert rebuilt == single and not set(r0) & set(r1)


def test_dataloader_and_iterable_dataset():
    data = TensorDataset(torch.arange(len(KEYS)).float())
    sampler = CurriculumSampler(Uniform(Arms(KEYS)), 6, seed=1, batches_per_epoch=3)
    batches = [b[0].long().tolist() for b in DataLoader(data, batch_size=sampler.local_batch_size, sampler=sampler)]
    again = CurriculumSampler(Uniform(Arms(KEYS)), 6, seed=1, batches_per_epoch=3)
    assert batches == [[next(it) for _ in range(6)] for it in [iter(again)] for _ in range(3)]
    ds = CurriculumDataset(list(range(100, 100 + len(KEYS))), CurriculumSampler(Uniform(Arms(KEYS)), 5,
                                                                                  replacement=False), with_ids=True)
    pairs = list(ds)
    assert len(pairs) == 100 and all(v == 100 + i for i, v in pairs)
    with pytest.raises(CadenceError, match="num_workers=0"):
        list(DataLoader(ds, batch_size=5, num_workers=1))


def test_batch_size_must_split_over_replicas():
    with pytest.raises(CadenceError, match="multiple of num_replicas=3"):
        CurriculumSampler(Uniform(Arms(KEYS)), 8, num_replicas=3, rank=0)


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=1, max_size=5), batch=st.integers(1, 7),
       weights_seed=st.integers(0, 10_000))
def test_without_replacement_never_repeats_and_uses_every_item_it_can(sizes, batch, weights_seed):
    keys = [f"arm{j}" for j, n in enumerate(sizes) for _ in range(n)]
    assume(batch <= len(keys))
    weights = np.random.default_rng(weights_seed).random(len(sizes)) + 0.01
    sampler = CurriculumSampler(FixedMixture(Arms(keys), weights), batch, seed=weights_seed, replacement=False)
    epoch = list(sampler)
    assert len(epoch) == len(set(epoch)) == (len(keys) // batch) * batch


def test_a_single_explicit_replica_is_rank_zero_even_inside_a_process_group(monkeypatch):
    import cadence.curricula.sampler as sampler_module

    monkeypatch.setattr(sampler_module, "world", lambda: (2, 1))  # as on rank 1 of a 2-process group
    s = CurriculumSampler(Uniform(Arms(["a"] * 8)), batch_size=4, seed=0, num_replicas=1)
    assert (s.num_replicas, s.rank, s.local_batch_size) == (1, 0, 4)
    assert CurriculumSampler(Uniform(Arms(["a"] * 8)), batch_size=4, seed=0).rank == 1
