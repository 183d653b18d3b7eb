"""The Hugging Face Trainer and TRL GRPOTrainer adapters under 2 CPU processes (gloo, launched with
torch.distributed.run): Accelerate shards the curriculum stream batch by batch, every rank's regimen
state stays identical, each step's shards are disjoint and together are the global batch the
curriculum drew, learning rates agree, resume continues each rank exactly, and GRPO prompt groups
follow the repeat layout across both processes, and dynamic sampling's decisions agree; a 2-process TRL
checkpoint between generation rounds resumes on 1 process with the uninterrupted run's prompts, refills and
regimen state. The same HF launch also trains with size plans and
layer freezing: every rank's micro-batches have their step's size and length, the ranks split each
step's global rows, the clock counts global samples and tokens, and the weights stay identical across ranks."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

WORLD, STEPS, PER_DEVICE, TRL_STEPS = 2, 4, 2, 2
# the size-plan run: lengths 4, 5, 7, 8 and sizes 1, 2, 3, 4 in steps 0-3 (a batch one step early would show),
# 2 accumulated micro-batches per rank and step, the first of the model's 2 blocks frozen from step 2 on
LENGTH, SIZE, FREEZE, FROZEN_FROM, ACCUMULATE, BASE_LR = (
    "ramp(start=4, end=10)", "ramp(start=1, end=5)", "ramp(start=0, end=1, over=2 steps)", 2, 2, 0.1)
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def planned(step: int) -> tuple[int, int]:
    """(rows, length) of every micro-batch of step ``step``: SIZE and LENGTH over a STEPS-step budget."""
    return math.floor(1 + 4 * step / STEPS + 1e-9), math.floor(4 + 6 * step / STEPS + 1e-9)


SIZED_ROWS = ACCUMULATE * WORLD * sum(planned(s)[0] for s in range(STEPS))  # the run takes one pass over the data

HF_WORKER = textwrap.dedent("""
    import hashlib, json, os, sys

    import numpy as np
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, {tests_dir!r})
    from transformers import Trainer, TrainingArguments

    from cadence import Clock
    from cadence.curricula import Arms, CurriculumSampler, DoReMi
    from cadence.integrations.hf import attach
    from cadence.progressive import BatchSizeSchedule, LayerFreezing, SequenceLengthWarmup
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


    def digest(params):
        return hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in params)).hexdigest()


    def sized_run():  # size plans and layer freezing shape the batches; records what each forward receives
        data = Rows([f"{{i:02d}}+1={{i + 1}}" for i in range({sized_rows})], tokenizer)  # two digits name a row
        row_of = {{tuple(row["input_ids"][:2].tolist()): i for i, row in enumerate(data.rows)}}
        args = TrainingArguments(output_dir=os.path.join(out, "sized"), max_steps=steps,
                                 gradient_accumulation_steps={accumulate}, logging_steps=1, save_strategy="no",
                                 report_to=[], use_cpu=True, seed=0, disable_tqdm=True)
        trainer = Trainer(model=tiny_model(len(tokenizer)), args=args, train_dataset=data)
        clock, blocks = Clock(budget=steps), trainer.model.transformer.h
        plans = [SequenceLengthWarmup(clock=clock, length={length!r}, multiple_of=1),
                 BatchSizeSchedule(clock=clock, batch_size={size!r}, rule="linear",
                                   batches_per_step=args.gradient_accumulation_steps * args.world_size),
                 LayerFreezing(list(blocks), clock=clock, fraction={freeze!r})]
        seen = []

        def record(module, inputs, kwargs):
            if module.training:
                ids = kwargs["input_ids"]
                seen.append({{"step": trainer.state.global_step, "rows": [row_of[tuple(r[:2].tolist())] for r in ids],
                             "length": ids.shape[1], "lr": trainer.optimizer.param_groups[0]["lr"],
                             "first_block_trains": blocks[0].attn.c_attn.weight.requires_grad,
                             "first_block": digest(blocks[0].parameters())}})

        trainer.model.register_forward_pre_hook(record, with_kwargs=True)
        callback = attach(trainer, lr=plans[1].coupled_lr("constant({base_lr})"), plans=plans)
        trainer.train()
        return {{"seen": seen, "counts": callback.link.state_dict()["clock"]["counts"],
                 "first_block": digest(blocks[0].parameters()), "weights": digest(trainer.model.parameters()),
                 "initial_weights": digest(tiny_model(len(tokenizer)).parameters())}}


    straight = run()
    resumed = run(os.path.join(out, f"checkpoint-{{steps // 2}}"))
    sized = sized_run()
    with open(os.path.join(out, f"rank{{straight['rank']}}.json"), "w") as f:
        json.dump({{**straight, "resumed": resumed, "sized": sized}}, f)
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
    from cadence.rl import DynamicSampling
    from test_integrations_hf import without_seconds
    from test_integrations_trl import SOURCES, grpo_trainer

    out, resume = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)  # resume: a checkpoint, on 1 process
    seen, outputs = [], []

    def reward(completions, cadence_id, max_response_length, **kwargs):  # called with this process's rows
        seen.append({{"ids": [int(i) for i in cadence_id], "budget": list(max_response_length)}})
        # right or wrong by the prompt and the completion's place in its group (over all processes' rows), the
        # same at every world size: rows 1 and 4 get all-wrong groups, the others one right and one wrong
        first = trainer.accelerator.process_index * len(cadence_id)
        return [float((int(i) + (first + k) % trainer.num_generations) % 3 == 0) for k, i in enumerate(cadence_id)]

    # the global batch at every world size: 8 completions, 4 prompts per generation round
    trainer = grpo_trainer(out, [reward], max_steps={steps}, per_device=8 // int(os.environ.get("WORLD_SIZE", 1)))
    if resume is None:
        trainer.args.save_strategy, trainer.args.save_steps = "steps", 1  # checkpoint-1: between two rounds
    per_round = trainer.args.generation_batch_size // trainer.num_generations  # prompts of all processes
    policy = DUMP(Arms(SOURCES), seed=0)
    sampler = CurriculumSampler(policy, batch_size=per_round, num_replicas=1, rank=0, seed=1)
    drawn, observed = [], []
    next_batch, observe = sampler.next_batch, policy.observe
    sampler.next_batch = lambda *size: drawn.append(next_batch(*size).tolist()) or np.array(drawn[-1])
    policy.observe = lambda ids, **signals: (observed.append(np.asarray(ids).tolist()), steps.append(
        trainer.state.global_step), observe(ids, **signals))[-1]
    steps = []  # the step each observed round was generated for
    callback = attach(trainer, sampler=sampler, knobs={{"max_response_length": "ramp(start=2, end=4)"}},
                      correct="reward", dynamic=DynamicSampling(max_extra_rounds=8))
    generate = trainer._generate_and_score_completions
    trainer._generate_and_score_completions = lambda inputs: (
        lambda o: (outputs.append(o["advantages"].tolist()) if trainer.model.training else None) or o)(generate(inputs))
    trainer.train(resume_from_checkpoint=resume)

    with open(os.path.join(out, f"rank{{trainer.args.process_index}}.json"), "w") as f:
        json.dump({{"world": trainer.args.world_size, "per_round": per_round,
                    "num_generations": trainer.num_generations, "seen": seen, "drawn": drawn,
                    "observed": observed, "steps": steps, "outputs": outputs,
                    "state": without_seconds(callback.link.state_dict())}}, f)
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
def hf_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("hf_multiprocess")


@pytest.fixture(scope="module")
def hf_ranks(hf_dir) -> list[dict]:
    script = HF_WORKER.format(tests_dir=TESTS_DIR, steps=STEPS, per_device=PER_DEVICE, sized_rows=SIZED_ROWS,
                              length=LENGTH, size=SIZE, freeze=FREEZE, base_lr=BASE_LR, accumulate=ACCUMULATE)
    return launch(script, hf_dir)


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
    assert sum(policy["observed"]) == global_rows  # every rank's loss reached each policy
    assert policy["alpha"] != [0.5, 0.5]  # and moved the mixture


def test_hf_learning_rates_are_identical_across_ranks(hf_ranks):
    for key in ("learning_rate", "cadence_lr", "optimizer_lr"):
        assert hf_ranks[0][key] == hf_ranks[1][key], key
    assert len(hf_ranks[0]["learning_rate"]) == STEPS
    assert len(set(hf_ranks[0]["learning_rate"])) > 1  # the schedule moved


@pytest.fixture(scope="module")
def trl_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("trl_multiprocess")


@pytest.fixture(scope="module")
def trl_ranks(trl_dir) -> list[dict]:
    pytest.importorskip("trl")
    pytest.importorskip("datasets")
    return launch(TRL_WORKER.format(tests_dir=TESTS_DIR, steps=TRL_STEPS), trl_dir)


def test_trl_rounds_follow_the_repeat_layout_and_decisions_agree_on_both_ranks(trl_ranks):
    g = trl_ranks[0]["num_generations"]
    assert trl_ranks[0]["drawn"] == trl_ranks[1]["drawn"]  # one prompt stream, the same refills on every rank
    assert trl_ranks[0]["observed"] == trl_ranks[1]["observed"]
    seen0, seen1 = trl_ranks[0]["seen"], trl_ranks[1]["seen"]
    assert len(seen0) == len(seen1) == len(trl_ranks[0]["observed"]) > TRL_STEPS  # dynamic sampling refilled
    for k, (a, b) in enumerate(zip(seen0, seen1)):
        rows = a["ids"] + b["ids"]  # the round in rank order: each prompt num_generations times in a row
        assert all(len(set(rows[i:i + g])) == 1 for i in range(0, len(rows), g))
        assert trl_ranks[0]["observed"][k] == rows  # every policy observed every process's completions
        assert len(set(a["budget"] + b["budget"])) == 1  # the knob has one value across processes


def test_trl_dynamic_sampling_trains_full_in_band_rounds_on_both_ranks(trl_ranks):
    g, per_round = trl_ranks[0]["num_generations"], trl_ranks[0]["per_round"]
    out0, out1 = trl_ranks[0]["outputs"], trl_ranks[1]["outputs"]
    assert len(out0) == len(out1) == TRL_STEPS
    for a, b in zip(out0, out1):  # each rank trains its share of the assembled round
        groups = np.array(a + b).reshape(-1, g)  # reward = correctness: in band means non-zero advantages
        assert len(groups) == per_round and np.all(np.abs(groups).sum(axis=1) > 0)


def test_trl_regimen_state_is_identical_across_ranks(trl_ranks):
    state0, state1 = trl_ranks[0]["state"], trl_ranks[1]["state"]
    selector = state0["sampler"]  # PromptSelector > CurriculumSampler > DUMP
    policy = selector["sampler"]["policy"]
    assert "rng" in policy and "rng" in selector["sampler"] and selector["dynamic"] is not None
    assert state0 == state1  # clock, selector, sampler and policy incl. their RNGs, dynamic sampling's counts
    assert state0["clock"]["counts"]["steps"] == TRL_STEPS
    generated = sum(len(r["ids"]) for rank in trl_ranks for r in rank["seen"])
    assert state0["clock"]["counts"]["samples"] == generated == selector["dynamic"]["counts"]["rollouts"]
    assert sum(policy["observed"]) == generated  # both processes' rewards reached each policy


def test_trl_resumes_a_two_process_checkpoint_between_rounds_on_one_process_continuing_the_global_stream(
        trl_ranks, trl_dir, tmp_path):
    """checkpoint-1 of the 2-process run (between generation rounds) resumed by one process with the same global
    batch: the prompts drawn and observed after it, dynamic sampling's refills and the final regimen state
    (selector, sampler, policy and their RNGs, clock counts but the completion tokens) equal the uninterrupted
    run's. The rewards depend on the prompt and its place in the group only, so the comparison is exact."""
    script = tmp_path / "worker.py"
    script.write_text(TRL_WORKER.format(tests_dir=TESTS_DIR, steps=TRL_STEPS))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(script), str(tmp_path), str(trl_dir / "checkpoint-1")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    one, straight = json.loads((tmp_path / "rank0.json").read_text()), trl_ranks[0]
    assert one["world"] == 1 and one["per_round"] == straight["per_round"]
    after = [k for k, step in enumerate(straight["steps"]) if step >= 1]     # the rounds generated for step 1
    assert 0 < after[0] and one["steps"] == [1] * len(after)
    assert one["observed"] == [straight["observed"][k] for k in after]       # refills included
    assert one["drawn"] == straight["drawn"][-len(one["drawn"]):] and len(one["drawn"]) < len(straight["drawn"])
    state, expected = one["state"], straight["state"]
    for s in (state, expected):  # completion lengths differ: each world size samples its own completions
        s["clock"]["counts"].pop("tokens")
    assert state == expected


def test_hf_resume_continues_each_rank_exactly(hf_ranks):
    for r in hf_ranks:
        resumed = r["resumed"]
        assert resumed["global_step"] == STEPS
        assert resumed["trained"] == r["trained"][STEPS // 2:]  # each rank trains the shards it would have
        assert resumed["learning_rate"] == r["learning_rate"]  # the restored log history continues the same run
        assert resumed["state"] == r["state"]


HF_ONE_PROCESS = textwrap.dedent("""
    import json, sys

    import numpy as np
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, {tests_dir!r})
    from transformers import Trainer, TrainingArguments

    from cadence.curricula import Arms, CurriculumSampler, DoReMi
    from cadence.integrations.hf import attach
    from test_integrations_hf import TEXTS, Rows, char_tokenizer, tiny_model, without_seconds

    out, checkpoint, steps, per_device = sys.argv[1], sys.argv[2], {steps}, {per_device}
    tokenizer = char_tokenizer()
    args = TrainingArguments(output_dir=out, max_steps=steps, per_device_train_batch_size=per_device, learning_rate=1.0,
                             logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0, disable_tqdm=True)
    trainer = Trainer(model=tiny_model(len(tokenizer)), args=args,
                      train_dataset=Rows(TEXTS["easy"] + TEXTS["hard"], tokenizer))
    policy = DoReMi(Arms(["easy"] * 4 + ["hard"] * 4), reference={{"easy": 0.0, "hard": 0.0}}, seed=1)
    sampler = CurriculumSampler(policy, batch_size=per_device * args.world_size, num_replicas=1, rank=0, seed=2,
                                replacement=False, on_exhausted="refill")
    callback = attach(trainer, lr="cosine(peak=1e-2)", sampler=sampler)
    trained, observed = [], []
    consume, observe = callback.link.tracker.consume, policy.observe
    callback.link.tracker.consume = lambda n: trained.append(consume(n).tolist()) or np.array(trained[-1])
    policy.observe = lambda ids, **signals: (observed.append(np.asarray(ids).tolist()), observe(ids, **signals))[1]
    trainer.train(resume_from_checkpoint=checkpoint)
    with open(out + "/one.json", "w") as f:
        json.dump({{"world": args.world_size, "global_step": trainer.state.global_step, "trained": trained,
                   "observed": observed, "state": without_seconds(callback.link.state_dict())}}, f)
""")


def test_hf_resumes_a_two_process_checkpoint_on_one_process_continuing_the_global_stream(hf_ranks, hf_dir, tmp_path):
    """The same global batch (one process, twice the rows): the ids left in the stream at the checkpoint are
    trained in order, and the counts go on from the checkpoint (losses differ: dropout's RNG is per process)."""
    script = tmp_path / "one.py"
    script.write_text(HF_ONE_PROCESS.format(tests_dir=TESTS_DIR, steps=STEPS, per_device=PER_DEVICE * WORLD))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(script), str(tmp_path), str(hf_dir / f"checkpoint-{STEPS // 2}")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    one = json.loads((tmp_path / "one.json").read_text())
    straight = hf_ranks[0]
    assert one["world"] == 1 and one["global_step"] == STEPS and len(one["trained"]) == STEPS - STEPS // 2
    assert one["trained"][0] == straight["drawn"][STEPS // 2]   # drawn before the checkpoint: the same global batch
    assert one["observed"][0] == straight["observed"][STEPS // 2]
    assert all(len(ids) == PER_DEVICE * WORLD for ids in one["trained"])
    state = one["state"]
    assert state["clock"]["counts"]["steps"] == STEPS and state["clock"]["counts"]["samples"] == STEPS * PER_DEVICE * WORLD
    assert sum(state["sampler"]["policy"]["observed"]) == STEPS * PER_DEVICE * WORLD  # nothing lost or observed twice
    assert state["tracker"] == straight["state"]["tracker"]                           # the same global count


# ------------------------------------------------------------------ size plans on 2 processes (same launch)
def sized_forwards(rank: dict, step: int) -> list[dict]:
    return [seen for seen in rank["sized"]["seen"] if seen["step"] == step]


def test_hf_size_plans_give_every_rank_batches_of_its_steps_size_and_length(hf_ranks):
    for r in hf_ranks:
        seen = r["sized"]["seen"]
        assert [s["step"] for s in seen] == [s for s in range(STEPS) for _ in range(ACCUMULATE)]
        for s in seen:
            rows, length = planned(s["step"])
            assert (len(s["rows"]), s["length"]) == (rows, length), s["step"]
            assert s["lr"] == pytest.approx(BASE_LR * rows)  # linear coupling to the batch used (base size 1)


def test_hf_size_plans_split_each_steps_global_rows_between_ranks(hf_ranks):
    from cadence import Clock
    from cadence.progressive import BatchSizeSchedule

    # the step's global rows: one process drawing all of its ACCUMULATE × WORLD batches
    plan = BatchSizeSchedule(clock=Clock(budget=STEPS), batch_size=SIZE, batches_per_step=ACCUMULATE * WORLD)
    batches = iter(plan.batch_sampler(SIZED_ROWS, seed=0))  # seed: the Trainer's args.seed
    for step in range(STEPS):
        step_rows = [next(batches) for _ in range(ACCUMULATE * WORLD)]
        local = [[s["rows"] for s in sized_forwards(r, step)] for r in hf_ranks]
        assert not {row for b in local[0] for row in b} & {row for b in local[1] for row in b}, step
        for rank, batches_of_rank in enumerate(local):  # the step's k-th batch trains on rank k mod WORLD
            assert batches_of_rank == step_rows[rank::WORLD], (step, rank)
    trained = sorted(row for r in hf_ranks for s in r["sized"]["seen"] for row in s["rows"])
    assert trained == list(range(SIZED_ROWS))  # one pass: every row trained once, on one rank


def test_hf_size_plans_count_global_samples_and_keep_ranks_identical(hf_ranks):
    counts = [{k: v for k, v in r["sized"]["counts"].items() if k != "seconds"} for r in hf_ranks]
    assert counts[0] == counts[1]
    assert counts[0]["steps"] == STEPS
    assert counts[0]["samples"] == ACCUMULATE * WORLD * sum(planned(s)[0] for s in range(STEPS))
    # the plans' token reports are summed over processes: the clock counts the global step's tokens
    assert counts[0]["tokens"] == ACCUMULATE * WORLD * sum(rows * length for rows, length in map(planned, range(STEPS)))
    weights = [r["sized"]["weights"] for r in hf_ranks]
    assert weights[0] == weights[1] != hf_ranks[0]["sized"]["initial_weights"]  # trained, bit-identical


def test_hf_layer_freezing_holds_the_first_block_on_both_ranks(hf_ranks):
    history = []
    for r in hf_ranks:
        assert [s["first_block_trains"] for s in r["sized"]["seen"]] == [
            step < FROZEN_FROM for step in range(STEPS) for _ in range(ACCUMULATE)]
        # the first block's weights as each step begins, then at the end
        before = [sized_forwards(r, step)[0]["first_block"] for step in range(STEPS)] + [r["sized"]["first_block"]]
        assert len(set(before[:FROZEN_FROM + 1])) == FROZEN_FROM + 1  # changed by every step before the freeze
        assert set(before[FROZEN_FROM:]) == {before[FROZEN_FROM]}  # and by none after
        history.append(before)
    assert history[0] == history[1]
