"""Lightning on 2 CPU processes (``ddp_spawn``, gloo): every rank's clock counts the global step.

A script trains a tiny module with a ``SequenceLengthWarmup`` and a ``BatchSizeSchedule`` under
gradient accumulation; each rank writes its clock counts and the batches its ``training_step`` saw.
Both clocks must hold the run's global samples and tokens, and every batch must have its step's
size and length.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("lightning.pytorch")

STEPS, ACCUMULATE, WORLD = 4, 2, 2
PER_STEP = ACCUMULATE * WORLD  # batches in one optimizer step, over all processes

SCRIPT = textwrap.dedent('''
    import json, sys

    import lightning.pytorch as L
    import torch

    import cadence
    from cadence.integrations.lightning import CadenceCallback
    from cadence.progressive import BatchSizeSchedule, SequenceLengthWarmup

    STEPS, ACCUMULATE, WORLD, OUT = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]


    class Net(L.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.embed, self.head = torch.nn.Embedding(16, 4), torch.nn.Linear(4, 1)
            self.seen = []

        def train_dataloader(self):
            callback = next(c for c in self.trainer.callbacks if isinstance(c, CadenceCallback))
            sizes = next(p for p in callback.plans if isinstance(p, BatchSizeSchedule))
            g = torch.Generator().manual_seed(0)
            data = torch.utils.data.TensorDataset(torch.randint(0, 16, (40, 12), generator=g),
                                                  torch.randn(40, generator=g))
            sampler = sizes.batch_sampler(len(data), seed=1, rank=self.global_rank, world=self.trainer.world_size)
            return torch.utils.data.DataLoader(data, batch_sampler=sampler)

        def training_step(self, batch, batch_idx):
            x, y = batch
            self.seen.append([self.global_step, *x.shape])
            return torch.nn.functional.mse_loss(self.head(self.embed(x).mean(1)).squeeze(-1), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def on_train_end(self):
            callback = next(c for c in self.trainer.callbacks if isinstance(c, CadenceCallback))
            clock = callback.link.clock
            record = {"steps": clock.steps, "samples": clock.samples, "tokens": clock.tokens,
                      "pending": clock.pending, "seen": self.seen}
            with open(f"{OUT}/rank{self.global_rank}.json", "w") as f:
                json.dump(record, f)


    if __name__ == "__main__":
        torch.set_num_threads(1)
        clock = cadence.Clock(budget=STEPS)
        plans = [SequenceLengthWarmup(clock=clock, length=f"ramp(start=4, end={4 + STEPS})", multiple_of=1),
                 BatchSizeSchedule(clock=clock, batch_size=f"ramp(start=2, end={2 + STEPS})", rule="linear",
                                   batches_per_step=ACCUMULATE * WORLD)]
        trainer = L.Trainer(accelerator="cpu", devices=WORLD, strategy="ddp_spawn", max_steps=STEPS,
                            accumulate_grad_batches=ACCUMULATE, use_distributed_sampler=False,
                            callbacks=[CadenceCallback(lr="constant(0.1)", plans=plans)], logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            default_root_dir=OUT)
        trainer.fit(Net())
''')


def expected(step: int) -> tuple[int, int]:
    """(rows, length) of every batch in ``step``: both ramps rise by one per step over the budget."""
    return 2 + step, 4 + step


def test_every_rank_counts_the_global_samples_and_tokens_under_ddp(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(script), str(STEPS), str(ACCUMULATE), str(WORLD), str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]

    global_rows = sum(PER_STEP * expected(s)[0] for s in range(STEPS))
    global_tokens = sum(PER_STEP * expected(s)[0] * expected(s)[1] for s in range(STEPS))
    for rank in ranks:
        assert rank["seen"] == [[s, *expected(s)] for s in range(STEPS) for _ in range(ACCUMULATE)]
        assert (rank["steps"], rank["samples"], rank["tokens"]) == (STEPS, global_rows, global_tokens)
        assert rank["pending"] == {"samples": 0.0, "tokens": 0.0}
    assert {k: v for k, v in ranks[0].items() if k != "seen"} == {k: v for k, v in ranks[1].items() if k != "seen"}
