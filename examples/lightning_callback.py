"""cadence in Lightning: one Callback for a WSD schedule, a loss-driven curriculum, logs and checkpoints.

    python examples/lightning_callback.py
"""

import tempfile

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from cadence.curricula import Arms, CurriculumSampler, DoReMi
from cadence.integrations.lightning import CadenceCallback

torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
x = torch.randn(200, 4, generator=g)
broad = torch.arange(200) >= 100
x[~broad, 2:] = 0                                        # "narrow" rows only exercise the first two inputs
y = x.sum(1)
dataset = TensorDataset(x, y)
keys = ["broad" if b else "narrow" for b in broad.tolist()]


class Regression(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        xb, yb = batch
        per_sample = (self.net(xb).squeeze(-1) - yb) ** 2
        return {"loss": per_sample.mean(), "sample_loss": per_sample}   # per-sample losses feed the curriculum

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)          # the callback's schedule drives it


# The targets are noise-free, so a trained reference model reaches 0 loss on both sources: every bit of
# loss is excess. eta=0.1: squared errors start near 5, far above the paper's per-token excess losses.
policy = DoReMi(Arms(keys), reference={"narrow": 0.0, "broad": 0.0}, eta=0.1)
callback = CadenceCallback(lr="wsd(peak=0.05, warmup=10%, decay=30%)", sampler=CurriculumSampler(policy, batch_size=16))
loader = DataLoader(dataset, batch_size=16, sampler=callback.sampler)
root = tempfile.mkdtemp()
saver = pl.callbacks.ModelCheckpoint(dirpath=root, every_n_train_steps=50, save_top_k=-1)
logger = pl.loggers.CSVLogger(root)                              # receives cadence/lr/0, cadence/curriculum/...
trainer = pl.Trainer(max_steps=100, callbacks=[callback, saver], logger=logger, accelerator="cpu",
                     enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=10,
                     default_root_dir=root)
trainer.fit(Regression(), loader)
print("lr at the end:", callback.link.values()["cadence/lr/0"])
print("mixture:", dict(zip(policy.arms.names, policy.probabilities().round(3).tolist())))   # weight moved to "broad"

# resume from the step-50 checkpoint: schedule, clock and curriculum continue where they were
callback = CadenceCallback(lr="wsd(peak=0.05, warmup=10%, decay=30%)",
                           sampler=CurriculumSampler(DoReMi(Arms(keys), reference={"narrow": 0.0, "broad": 0.0}, eta=0.1),
                                                     batch_size=16))
resumed = pl.Trainer(max_steps=100, callbacks=[callback], logger=False, enable_checkpointing=False,
                     accelerator="cpu", enable_progress_bar=False, enable_model_summary=False, default_root_dir=root)
resumed.fit(Regression(), DataLoader(dataset, batch_size=16, sampler=callback.sampler),
            ckpt_path=f"{root}/epoch=0-step=50.ckpt")
print("resumed mixture:", dict(zip(callback.link.policy.arms.names, callback.link.policy.probabilities().round(3).tolist())))
