"""cadence under torch.distributed: 2 CPU processes (gloo), one schedule, one curriculum, one state.

Every rank holds the same policy and draws the same global batch, trains on its own shard, and
feeds its per-sample losses back through ``link.observe`` (all-gathered, so every rank's policy stays
identical). Rank 0 saves the regimen state; every rank loads it to resume.

    python examples/ddp.py            # spawns 2 processes itself
    torchrun --nproc_per_node 2 examples/ddp.py
"""

import os
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cadence import Clock
from cadence.curricula import Arms, CurriculumSampler, DoReMi
from cadence.integrations import RegimenLink
from cadence.optim import ScheduledLR

STEPS, GLOBAL_BATCH = 40, 8
KEYS = ["easy"] * 32 + ["hard"] * 32


def build():
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = ScheduledLR(opt, lr="wsd(peak=0.05, warmup=10%, decay=25%)", clock=Clock(budget=STEPS))
    policy = DoReMi(Arms(KEYS), reference={"easy": 0.0, "hard": 0.0})
    sampler = CurriculumSampler(policy, batch_size=GLOBAL_BATCH, replacement=False, on_exhausted="refill")
    return model, opt, RegimenLink(scheduler=sched, policy=policy, sampler=sampler)


def train(model, opt, link, steps):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(len(KEYS), 4, generator=g)
    y = x.sum(1) * torch.tensor([1.0 if k == "easy" else -1.0 for k in KEYS])
    stream = iter(link.sampler)                                   # this rank's shard of each global batch
    for _ in range(steps):
        ids = torch.tensor([next(stream) for _ in range(link.sampler.local_batch_size)])
        per_sample = (model(x[ids]).squeeze(-1) - y[ids]) ** 2
        per_sample.mean().backward()
        opt.step()
        opt.zero_grad()
        link.scheduler.step()
        link.observe(ids, loss=per_sample.detach())                # gathered across ranks


def main(rank=None, world=None, workdir=None):
    if rank is None:                                              # torchrun: its env:// rendezvous
        dist.init_process_group("gloo")
        workdir = tempfile.gettempdir()
    else:                                                         # self-spawned: a private file rendezvous
        dist.init_process_group("gloo", init_method=f"file://{os.path.join(workdir, 'rendezvous')}",
                                rank=rank, world_size=world)
    torch.set_num_threads(1)
    path = os.path.join(workdir, f"cadence_ddp_example_{os.getppid() if rank is None else 'spawned'}.pt")
    model, opt, link = build()
    train(model, opt, link, STEPS // 2)
    if dist.get_rank() == 0:
        torch.save({"link": link.state_dict(), "model": model.module.state_dict(), "opt": opt.state_dict()}, path)
    dist.barrier()

    model, opt, link = build()                                    # a fresh process would start here
    saved = torch.load(path, weights_only=False)
    link.load_state_dict(saved["link"])
    model.module.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    train(model, opt, link, STEPS - STEPS // 2)
    values = link.values()
    line = (f"rank {dist.get_rank()}: lr={values['cadence/lr/0']:.4g} "
            f"p(hard)={values['cadence/curriculum/probabilities/hard']:.3f} steps={link.clock.steps:.0f}")
    for r in range(dist.get_world_size()):  # one rank at a time: whole lines, in rank order
        if r == dist.get_rank():
            print(line, flush=True)
        dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # done: skip interpreter teardown, where gloo's threads can abort the process (seen on CPU)


if __name__ == "__main__":
    if "RANK" in os.environ:                                      # started by torchrun
        main()
    else:
        with tempfile.TemporaryDirectory() as workdir:
            mp.start_processes(main, args=(2, workdir), nprocs=2, start_method="spawn")
