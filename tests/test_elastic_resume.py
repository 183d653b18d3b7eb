"""Resume on another number of processes (gloo): a regimen checkpointed by 2 processes continues at 1
and at 4 with the global draws, learning rates and policy state of the uninterrupted run; 3 processes
cannot split the global batch of 4 and are refused; and a process killed mid-run under
``torchrun --max-restarts`` resumes from the last checkpoint with no global batch lost or observed twice.

The losses the policy learns from are a fixed function of the item and the step, so the comparison is
exact (a model's losses would differ in the last bits between world sizes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.distributed as dist

import gloo
from cadence import Clock
from cadence.curricula import Arms, CurriculumSampler, DoReMi
from cadence.errors import CadenceError, StateError
from cadence.integrations import RegimenLink
from cadence.integrations.jsonstate import encode
from cadence.optim import ScheduledLR

STEPS, SAVE_AT, GLOBAL_BATCH, KILL_AT = 8, 4, 4, 5
KEYS = ["short"] * 6 + ["long"] * 10
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def build(world: int = 1, rank: int = 0) -> RegimenLink:
    """The regimen every process builds: a scheduled LR, DoReMi choosing a global batch of 4 without repeats."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = ScheduledLR(opt, lr="wsd(peak=0.1, warmup=25%, decay=25%)", clock=Clock(budget=STEPS))
    policy = DoReMi(Arms(KEYS), reference={"short": 0.0, "long": 0.5}, seed=3)
    sampler = CurriculumSampler(policy, batch_size=GLOBAL_BATCH, seed=4, replacement=False, on_exhausted="refill",
                                num_replicas=world, rank=rank)
    return RegimenLink(scheduler=sched, policy=policy, sampler=sampler)


def fake_loss(ids: list[int], step: float) -> np.ndarray:
    """A per-sample loss that depends only on the item and the step (exact at every world size)."""
    return (np.asarray(ids) % 5 + 1) * 0.1 * (1 + 0.05 * step)


def train(link: RegimenLink, steps: int, log: list) -> None:
    """``steps`` optimizer steps on this process's shard; ``log`` gets each step's global batch (as observed)
    and the learning rate it used."""
    stream = iter(link.sampler)
    observe = link.policy.observe
    link.policy.observe = lambda ids, **s: (log.append({"ids": np.asarray(ids).tolist(),
                                                          "lr": link.values()["cadence/lr/0"]}), observe(ids, **s))[1]
    try:
        for _ in range(steps):
            ids = [next(stream) for _ in range(link.sampler.local_batch_size)]
            link.observe(ids, loss=fake_loss(ids, link.clock.steps))
            link.scheduler.step()
    finally:
        link.policy.observe = observe


def comparable(state: dict) -> dict:
    """A link state as JSON without wall-clock seconds, the sampler's position counted over all processes."""
    state = json.loads(json.dumps(encode(state)))
    for clock in (state["clock"], state["scheduler"]["clock"]):
        clock["counts"].pop("seconds")
    sampler = state["sampler"]
    sampler["pos"] *= sampler.pop("num_replicas")
    return state


def worker(rank: int, world: int, out: str, phase: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(out, f'rendezvous-{phase}-{world}')}",
                            rank=rank, world_size=world)
    torch.set_num_threads(1)
    link, log, path = build(world, rank), [], os.path.join(out, "saved.pt")
    if phase == "save":
        train(link, SAVE_AT, log)
        if rank == 0:
            torch.save({"link": link.state_dict()}, path)
    else:
        link.load_state_dict(torch.load(path, weights_only=True)["link"])
        train(link, STEPS - SAVE_AT, log)
    with open(os.path.join(out, f"{phase}-{world}-rank{rank}.json"), "w") as f:
        json.dump({"log": log, "state": comparable(link.state_dict())}, f)
    gloo.leave()


def spawn(world: int, out: str, phase: str) -> list[dict]:
    gloo.spawn(worker, (world, out, phase), world)
    results = []
    for r in range(world):
        with open(os.path.join(out, f"{phase}-{world}-rank{r}.json")) as f:
            results.append(json.load(f))
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    out = str(tmp_path_factory.mktemp("elastic"))
    straight: list = []
    link = build()
    train(link, STEPS, straight)
    one: list = []
    saved = spawn(2, out, "save")
    single = build()  # resumed by one process: no process group at all
    single.load_state_dict(torch.load(os.path.join(out, "saved.pt"), weights_only=True)["link"])
    train(single, STEPS - SAVE_AT, one)
    return {"straight": straight, "straight_state": comparable(link.state_dict()), "saved": saved,
            "one": {"log": one, "state": comparable(single.state_dict())}, "four": spawn(4, out, "resume")}


def test_two_processes_draw_the_single_process_stream(runs):
    for rank in runs["saved"]:
        assert rank["log"] == runs["straight"][:SAVE_AT]


@pytest.mark.parametrize("resumed", ["one", "four"])
def test_resume_at_another_world_size_continues_the_global_stream(runs, resumed):
    ranks = [runs["one"]] if resumed == "one" else runs["four"]
    for rank in ranks:
        assert rank["log"] == runs["straight"][SAVE_AT:]        # global batches and learning rates
        assert rank["state"] == runs["straight_state"]          # policy, sampler RNG, used mask, clock


def test_resume_at_a_world_size_that_cannot_split_the_global_batch_is_refused():
    with pytest.raises(CadenceError, match="multiple of num_replicas=3"):
        build(3, 0)


def test_resume_mid_shard_at_another_world_size_is_refused_and_changes_nothing():
    link = build(2, 1)
    next(iter(link.sampler))                                   # one id of a 2-id shard: mid-batch
    state = link.state_dict()
    other = build(1, 0)
    before = comparable(other.state_dict())
    with pytest.raises(StateError, match=r"1 ids into each process's 2-id shard .* num_replicas=2.* Resume with 2"):
        other.load_state_dict(state)
    assert comparable(other.state_dict()) == before
    same = build(2, 1)
    same.load_state_dict(state)                                # at the same world size it continues
    assert next(iter(same.sampler)) == next(iter(link.sampler))


def test_another_global_batch_size_is_refused_naming_why():
    state = build().state_dict()
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    policy = DoReMi(Arms(KEYS), reference={"short": 0.0, "long": 0.5}, seed=3)
    other = RegimenLink(scheduler=ScheduledLR(opt, lr="wsd(peak=0.1, warmup=25%, decay=25%)", clock=Clock(budget=STEPS)),
                        policy=policy, sampler=CurriculumSampler(policy, batch_size=8, seed=4, replacement=False,
                                                                 on_exhausted="refill"))
    with pytest.raises(StateError, match="same global batch size"):
        other.load_state_dict(state)


RESTART_WORKER = textwrap.dedent("""
    import datetime, json, os, signal, sys

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    sys.path.insert(0, {tests_dir!r})
    import gloo
    from test_elastic_resume import STEPS, build, fake_loss

    out, kill_at = sys.argv[1], {kill_at}
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
    # a rendezvous of this attempt's own: torchrun's TCPStore outlives a restart and still holds the killed
    # attempt's gloo addresses under the same keys, which a restarted worker can read before they are replaced
    dist.init_process_group("gloo", init_method="file://" + os.path.join(out, f"rendezvous-{{attempt}}"),
                            rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120))
    link, path, start = build(world, rank), os.path.join(out, "checkpoint.pt"), 0
    if os.path.exists(path):  # the last checkpoint: every process loads rank 0's copy
        saved = torch.load(path, weights_only=True)
        link.load_state_dict(saved["link"])
        start = saved["step"]
    stream = iter(link.sampler)
    for step in range(start, STEPS):
        ids = [next(stream) for _ in range(link.sampler.local_batch_size)]
        observe = link.policy.observe
        link.policy.observe = lambda g, **s: (seen.append(g.tolist()), observe(g, **s))[1]
        seen = []
        link.observe(ids, loss=fake_loss(ids, link.clock.steps))
        link.policy.observe = observe
        link.scheduler.step()
        if rank == 0:
            with open(os.path.join(out, "observed.jsonl"), "a") as f:
                f.write(json.dumps({{"attempt": attempt, "step": step, "ids": seen[0]}}) + "\\n")
            killed = os.path.join(out, "killed")
            if step == kill_at and not os.path.exists(killed):  # observed, not yet checkpointed: lost with it
                open(killed, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
            torch.save({{"link": link.state_dict(), "step": step + 1}}, path + ".tmp")
            os.replace(path + ".tmp", path)
        dist.barrier()
    if rank == 0:
        with open(os.path.join(out, "final.json"), "w") as f:
            json.dump({{"attempt": attempt, "start": start}}, f)
        torch.save(link.state_dict(), os.path.join(out, "final.pt"))
    gloo.leave()
""")


def test_a_process_killed_under_torchrun_resumes_from_the_last_checkpoint_losing_nothing(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(RESTART_WORKER.format(tests_dir=TESTS_DIR, kill_at=KILL_AT))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--max-restarts", "1",
           "--monitor-interval", "0.2", "--master_addr", "127.0.0.1", "--master_port", "0",  # any free port
           str(script), str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    final = json.loads((tmp_path / "final.json").read_text())
    assert final["attempt"] == 1 and final["start"] == KILL_AT          # one restart, from the last checkpoint
    entries = [json.loads(line) for line in (tmp_path / "observed.jsonl").read_text().splitlines()]
    assert any(e["attempt"] < final["attempt"] and e["step"] == KILL_AT for e in entries)  # observed, then lost
    # what the final policy learned from: the checkpointed steps before the kill, then the last attempt's
    kept = [e for e in entries if e["attempt"] == final["attempt"] or e["step"] < final["start"]]
    assert [e["step"] for e in kept] == list(range(STEPS))                # every step once: none lost or doubled
    straight: list = []
    link = build()
    train(link, STEPS, straight)
    assert [e["ids"] for e in kept] == [s["ids"] for s in straight]
    assert comparable(torch.load(tmp_path / "final.pt", weights_only=True)) == comparable(link.state_dict())


def test_prefetched_ids_that_cannot_be_folded_are_refused_at_several_processes():
    from cadence.integrations.tracking import TrackedSampler

    sampler = build(2, 0).sampler
    tracked = TrackedSampler(sampler)                       # a sampler that shards itself (as under Lightning)
    stream = iter(tracked)
    drawn = [next(stream) for _ in range(3)]                # prefetched past a global batch: 2 ids, then 1 more
    sampler_state, state = tracked.fold(sampler.state_dict(), tracked.state_dict())
    assert state["pending"] == drawn and state["shards"] == 2  # not the tail of one shard: kept, marked
    with pytest.raises(StateError, match="3 ids that one of 2 processes drew but had not trained"):
        TrackedSampler(build(2, 1).sampler).load_state_dict(state)
    tracked.consume(2)                                      # the first shard trained: one id left
    stream_state = tracked.fold(sampler.state_dict(), tracked.state_dict())
    assert stream_state[1]["pending"] == [] and stream_state[0]["pos"] == 0  # the tail of the shard: folded


def test_trl_checkpoint_inside_a_generation_round_is_refused_at_another_world_size(tmp_path):
    from types import SimpleNamespace

    trl_adapter = pytest.importorskip("cadence.integrations.trl")

    class Trainer:  # what the checkpoint wrapper reads of a GRPOTrainer
        def __init__(self, world):
            self.accelerator = SimpleNamespace(num_processes=world, process_index=0, device="cpu")
            self.state, self.num_iterations = SimpleNamespace(global_step=3), 1
            self.args = SimpleNamespace(gradient_accumulation_steps=1, steps_per_generation=2)
            self._buffered_inputs = None

        def _save_checkpoint(self, model, trial): ...

        def _load_optimizer_and_scheduler(self, checkpoint): ...

    for rank in range(2):  # a round buffered by 2 processes
        torch.save({"step": 3, "buffer": [{"rank": torch.tensor(rank)}]},
                   tmp_path / trl_adapter.BUFFER_FILE.format(rank=rank))
    one = Trainer(1)
    trl_adapter._wrap_checkpoints(one)
    with pytest.raises(CadenceError, match="split over 2 processes .* cannot be re-split over 1. Resume it with 2"):
        one._load_optimizer_and_scheduler(str(tmp_path))
    two = Trainer(2)
    trl_adapter._wrap_checkpoints(two)
    two._load_optimizer_and_scheduler(str(tmp_path))       # the same world size takes its own part back
    assert two._step == 3 and int(two._buffered_inputs[0]["rank"]) == 0
