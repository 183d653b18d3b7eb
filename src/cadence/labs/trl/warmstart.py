"""The TRL lab's warm start: Hugging Face's own ``Trainer`` teaches the small Llama to answer in
format on the suite's train split (cross-entropy on the answer and end token only), to the role
the lab's warm start plays: some arms solved, some learnable, some out of reach.

The weights are cached on disk per seed and configuration (:func:`cache_path`), so every policy
of a comparison, and every later run, starts from the same file.

    >>> from cadence.labs.rl.tasks import TaskSuite
    >>> suite = TaskSuite(families=("add",), levels=(1,), items_per_arm=8, eval_per_arm=2)
    >>> warm = WarmStartConfig(steps=2, batch=4, n_layer=1, n_head=2, d_model=16)
    >>> cache_path(suite, warm, 3e-3, seed=0) == cache_path(suite, warm, 3e-3, seed=0)
    True
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cadence.errors import CadenceError
from cadence.labs.rl.policy import answer_batch
from cadence.labs.rl.tasks import TaskSuite
from cadence.labs.rl.warmstart import WarmStartConfig
from cadence.labs.trl.workload import build_model

CACHE_ENV = "CADENCE_CACHE"
"""Environment variable naming the cache folder (default: ``~/.cache/cadence``)."""


def cache_path(suite: TaskSuite, warm: WarmStartConfig, lr: float, *, seed: int) -> Path:
    """Where the warm start of this suite, configuration, learning rate and seed is cached."""
    import transformers

    key = repr((suite.family_names, [f.key for f in suite.families], suite.levels, suite.items_per_arm,
                suite.eval_per_arm, suite.seed, suite.prompts.tolist()[:8], warm, lr, seed,
                transformers.__version__, torch.__version__))
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "cadence")
    return root / "trl-warm" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.pt"


class _AnswerRows(torch.utils.data.Dataset):
    """The train pool as teacher-forcing rows: prompt, answer, end token; labels only on the answer."""

    def __init__(self, suite: TaskSuite, warm: WarmStartConfig) -> None:
        tokens, mask = answer_batch(suite.prompts, suite.answers, suite.tokenizer,
                                    np.zeros(len(suite.prompts), dtype=np.int64), warm.max_new_tokens(suite),
                                    width=suite.prompt_len)
        self.tokens, self.labels = tokens, tokens.masked_fill(mask == 0, -100)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokens[i], "labels": self.labels[i]}


def warm_start_hf(suite: TaskSuite, warm: WarmStartConfig, lr: float = 3e-3, *, seed: int = 0,
                  cache: bool = True) -> dict[str, torch.Tensor]:
    """The warm-started weights (a state dict) for ``suite``: ``warm.steps`` steps of batch
    ``warm.batch`` with HF ``Trainer`` (AdamW, peak ``lr``, 5% warmup, cosine to 10%), read from the
    cache when present."""
    from transformers import PrinterCallback, Trainer, TrainingArguments

    path = cache_path(suite, warm, lr, seed=seed)
    if cache and path.exists():
        try:
            return torch.load(path, weights_only=True)
        except Exception as e:  # noqa: BLE001 - an unreadable cache entry is rebuilt, but said
            raise CadenceError(f"cannot read the cached warm start {path}: {e}; delete it to rebuild") from None
    model = build_model(suite, warm, seed)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=warm.batch, max_steps=warm.steps,
                                 learning_rate=lr, lr_scheduler_type="cosine_with_min_lr",
                                 lr_scheduler_kwargs={"min_lr_rate": 0.1}, warmup_steps=max(1, warm.steps // 20),
                                 weight_decay=0.0, seed=seed, data_seed=seed, use_cpu=True, report_to=[],
                                 save_strategy="no", logging_strategy="no", disable_tqdm=True,
                                 dataloader_num_workers=0)
        trainer = Trainer(model=model, args=args, train_dataset=_AnswerRows(suite, warm))
        trainer.remove_callback(PrinterCallback)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            trainer.train()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
    return state
