"""The Hugging Face Trainer and TRL GRPOTrainer adapters under 2 CPU processes (gloo, launched with
torch.distributed.run): Accelerate shards the curriculum stream batch by batch, every rank's regimen
state stays identical, each step's shards are disjoint and together are the global batch the
curriculum drew, learning rates agree, resume continues each rank exactly, and GRPO prompt groups
follow the repeat layout across both processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

WORLD, STEPS, PER_DEVICE, TRL_STEPS = 2, 4, 2, 2
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

HF_WORKER = textwrap.dedent("""
    import json, os, sys

    import numpy as np
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, {tests_dir!r})
    from transformers import Trainer, TrainingArguments

    from cadence.curricula import Arms, CurriculumSampler, DoReMi
    from cadence.integrations.hf import attach
    from test_integrations_hf import TEXTS, Rows, char_tokenizer, tiny_model, without_seconds

    out, steps, per_device = sys.argv[1], {steps}, {per_device}
    tokenizer = char_tokenizer()


    def run(resume=None):  # DoReMi chooses the rows; records what was drawn, trained on this rank and observed
        args = TrainingArguments(output_dir=out, max_steps=steps, per_device_train_batch_size=per_device,
                                 learning_rate=1.0, logging_steps=1, save_steps=steps // 2, report_to=[],
                                 use_cpu=True, seed=0, disable_tqdm=True)
        trainer = Trainer(model=tiny_model(len(tokenizer)), args=args,
                          train_dataset=Rows(TEXTS["easy"] + TEXTS["hard"], tokenizer))
        policy = DoReMi(Arms(["easy"] * 4 + ["hard"] * 4), reference={{"easy": 0.0, "hard": 0.0}}, seed=1)
        # one global stream on every process, Accelerate shards it batch by batch (docs/integrations/hf.md);
        # rank=0 too, else the sampler takes this process's rank from torch.distributed and rejects it
        sampler = CurriculumSampler(policy, batch_size=per_device * args.world_size, num_replicas=1, rank=0, seed=2,
                                    replacement=False, on_exhausted="refill")  # no repeats within a global batch
        callback = attach(trainer, lr="cosine(peak=1e-2)", sampler=sampler)

        drawn, trained, observed = [], [], []
        next_batch, consume, observe = sampler.next_batch, callback.link.tracker.consume, policy.observe
        sampler.next_batch = lambda: drawn.append(next_batch().tolist()) or np.array(drawn[-1])
        callback.link.tracker.consume = lambda n: trained.append(consume(n).tolist()) or np.array(trained[-1])
        policy.observe = lambda ids, **signals: (observed.append(np.asarray(ids).tolist()), observe(ids, **signals))[1]
        trainer.train(resume_from_checkpoint=resume)

        logs = [h for h in trainer.state.log_history if "loss" in h]
        return {{"world": args.world_size, "rank": args.process_index, "global_step": trainer.state.global_step,
                 "drawn": drawn, "trained": trained, "observed": observed,
                 "learning_rate": [h["learning_rate"] for h in logs],
                 "cadence_lr": [h["cadence/lr/0"] for h in logs],
                 "optimizer_lr": [g["lr"] for g in trainer.optimizer.param_groups],
                 "state": without_seconds(callback.link.state_dict())}}


    straight = run()
    resumed = run(os.path.join(out, f"checkpoint-{{steps // 2}}"))
    with open(os.path.join(out, f"rank{{straight['rank']}}.json"), "w") as f:
        json.dump({{**straight, "resumed": resumed}}, f)
    if torch.distributed.is_initialized():  # tear down gloo before exit: no threads left to abort
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown, where gloo's threads can abort a finished worker
""")

TRL_WORKER = textwrap.dedent("""
    import json, os, sys

    import numpy as np
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, {tests_dir!r})
    from cadence.curricula import DUMP, Arms, CurriculumSampler
    from cadence.integrations.trl import attach
    from test_integrations_hf import without_seconds
    from test_integrations_trl import SOURCES, grpo_trainer

    out = sys.argv[1]
    seen = []

    def reward(completions, cadence_id, max_response_length, **kwargs):  # called with this process's rows
        seen.append({{"ids": [int(i) for i in cadence_id], "budget": list(max_response_length)}})
        return [float(len(c) % 3) + 0.1 * i for i, c in enumerate(completions)]

    trainer = grpo_trainer(out, [reward], max_steps={steps})
    per_round = trainer.args.generation_batch_size // trainer.num_generations  # prompts of all processes
    policy = DUMP(Arms(SOURCES), seed=0)
    sampler = CurriculumSampler(policy, batch_size=per_round, num_replicas=1, rank=0, seed=1)
    drawn, observed = [], []
    next_batch, observe = sampler.next_batch, policy.observe
    sampler.next_batch = lambda: drawn.append(next_batch().tolist()) or np.array(drawn[-1])
    policy.observe = lambda ids, **signals: (observed.append(np.asarray(ids).tolist()), observe(ids, **signals))[1]
    callback = attach(trainer, sampler=sampler, knobs={{"max_response_length": "ramp(start=2, end=4)"}})
    trainer.train()

    with open(os.path.join(out, f"rank{{trainer.args.process_index}}.json"), "w") as f:
        json.dump({{"world": trainer.args.world_size, "per_round": per_round,
                    "num_generations": trainer.num_generations, "seen": seen, "drawn": drawn,
                    "observed": observed, "state": without_seconds(callback.link.state_dict())}}, f)
    if torch.distributed.is_initialized():  # tear down gloo before exit: no threads left to abort
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown, where gloo's threads can abort a finished worker
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script: str, out) -> list[dict]:
    """Run ``script`` on WORLD CPU processes with torch.distributed.run; each writes ``rank<r>.json``."""
    path = out / "worker.py"
    path.write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--master_addr",
           "127.0.0.1", "--master_port", str(free_port()), str(path), str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    results = []
    for r in range(WORLD):
        with open(out / f"rank{r}.json") as f:
            results.append(json.load(f))
    return results


@pytest.fixture(scope="module")
def hf_ranks(tmp_path_factory) -> list[dict]:
    script = HF_WORKER.format(tests_dir=TESTS_DIR, steps=STEPS, per_device=PER_DEVICE)
    return launch(script, tmp_path_factory.mktemp("hf_multiprocess"))


def test_hf_every_rank_trains_every_step(hf_ranks):
    for r in hf_ranks:
        assert r["world"] == WORLD
        assert r["global_step"] == STEPS
        assert len(r["trained"]) == STEPS and all(len(ids) == PER_DEVICE for ids in r["trained"])


def test_hf_shards_are_disjoint_and_form_the_drawn_global_batch(hf_ranks):
    assert hf_ranks[0]["drawn"][:STEPS] == hf_ranks[1]["drawn"][:STEPS]  # one global stream on both ranks
    for step in range(STEPS):
        shard0, shard1 = hf_ranks[0]["trained"][step], hf_ranks[1]["trained"][step]
        drawn = hf_ranks[0]["drawn"][step]
        assert len(drawn) == WORLD * PER_DEVICE
        assert not set(shard0) & set(shard1)
        assert shard0 + shard1 == drawn  # rank order within the global batch
        for r in hf_ranks:  # the policy saw the whole global batch, in rank order, on each rank
            assert r["observed"][step] == drawn


def test_hf_regimen_state_is_identical_across_ranks(hf_ranks):
    state0, state1 = hf_ranks[0]["state"], hf_ranks[1]["state"]
    assert {"clock", "scheduler", "sampler", "tracker"} <= set(state0) and "rng" in state0["sampler"]["policy"]
    assert state0 == state1  # clock, scheduler, sampler and policy incl. their RNGs, tracker
    global_rows = STEPS * PER_DEVICE * WORLD
    assert state0["clock"]["counts"]["steps"] == STEPS
    assert state0["clock"]["counts"]["samples"] == global_rows  # each clock counts the global batch
    policy = state0["sampler"]["policy"]
    assert sum(policy["observed"]["__ndarray__"]) == global_rows  # every rank's loss reached each policy
    assert policy["alpha"]["__ndarray__"] != [0.5, 0.5]  # and moved the mixture


def test_hf_learning_rates_are_identical_across_ranks(hf_ranks):
    for key in ("learning_rate", "cadence_lr", "optimizer_lr"):
        assert hf_ranks[0][key] == hf_ranks[1][key], key
    assert len(hf_ranks[0]["learning_rate"]) == STEPS
    assert len(set(hf_ranks[0]["learning_rate"])) > 1  # the schedule moved


@pytest.fixture(scope="module")
def trl_ranks(tmp_path_factory) -> list[dict]:
    pytest.importorskip("trl")
    pytest.importorskip("datasets")
    return launch(TRL_WORKER.format(tests_dir=TESTS_DIR, steps=TRL_STEPS), tmp_path_factory.mktemp("trl_multiprocess"))


def test_trl_prompt_groups_follow_the_repeat_layout_on_both_ranks(trl_ranks):
    g = trl_ranks[0]["num_generations"]
    assert trl_ranks[0]["drawn"] == trl_ranks[1]["drawn"]  # one global prompt stream
    for r in trl_ranks:
        assert r["world"] == WORLD and len(r["seen"]) == len(r["observed"]) == TRL_STEPS
    for step in range(TRL_STEPS):
        local = [r["seen"][step]["ids"] for r in trl_ranks]
        for ids in local:  # whole groups on each process: every prompt num_generations times in a row
            assert len(ids) % g == 0
            assert all(len(set(ids[i:i + g])) == 1 for i in range(0, len(ids), g))
        prompts = [ids[i] for ids in local for i in range(0, len(ids), g)]
        assert prompts == trl_ranks[0]["drawn"][step]  # together: the round the curriculum drew, in rank order
        for r in trl_ranks:  # each policy observed every process's completions, in rank order
            assert r["observed"][step] == local[0] + local[1]
        budgets = [b for r in trl_ranks for b in r["seen"][step]["budget"]]
        assert len(set(budgets)) == 1  # the knob has one value across processes


def test_trl_regimen_state_is_identical_across_ranks(trl_ranks):
    state0, state1 = trl_ranks[0]["state"], trl_ranks[1]["state"]
    policy = state0["sampler"]["sampler"]["policy"]  # RepeatLayout > CurriculumSampler > DUMP
    assert "rng" in policy and "rng" in state0["sampler"]["sampler"] and "tracker" in state0
    assert state0 == state1  # clock, layout position, sampler and policy incl. their RNGs, tracker
    assert state0["clock"]["counts"]["steps"] == TRL_STEPS
    completions = TRL_STEPS * trl_ranks[0]["per_round"] * trl_ranks[0]["num_generations"]
    assert sum(policy["observed"]["__ndarray__"]) == completions  # both processes' rewards reached each policy


def test_hf_resume_continues_each_rank_exactly(hf_ranks):
    for r in hf_ranks:
        resumed = r["resumed"]
        assert resumed["global_step"] == STEPS
        assert resumed["trained"] == r["trained"][STEPS // 2:]  # each rank trains the shards it would have
        assert resumed["learning_rate"] == r["learning_rate"]  # the restored log history continues the same run
        assert resumed["state"] == r["state"]
