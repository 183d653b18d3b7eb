"""cadence in verl 0.9's v1 trainer, driven through verl's own code on CPU.

The config is verl's (Hydra, from verl's shipped ``ppo_trainer.yaml``) with the override lines of
docs/integrations/verl.md; cadence's classes are loaded by verl's ``_build_replay_buffer`` and
``create_rl_dataset``; prompts come from verl's ``_init_dataloader``/``_next_train_batch``; groups
are chosen by verl's ``ReplayBuffer.sample`` with its eviction and refill; checkpoints go through
verl's ``_save_checkpoint``/``_load_checkpoint``. What needs GPUs is replaced: rollouts are scripted
(each prompt's responses score by its arm) and TransferQueue's key-value calls are served from memory,
returning TensorDicts built by verl's ``list_of_dict_to_tensordict`` as its rollout workers do.
"""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("verl")
pytest.importorskip("transfer_queue")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
import hydra  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import open_dict  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402
from verl.experimental.agent_loop.agent_loop import DictConfigWrap, _agent_loop_registry  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402
from verl.trainer.ppo.checkpoint_callback import build_checkpoint_callback  # noqa: E402
from verl.trainer.ppo.v1 import replay_buffer as verl_replay_buffer  # noqa: E402
from verl.trainer.ppo.v1 import trainer_base  # noqa: E402
from verl.trainer.ppo.v1.trainer_base import PPOTrainer  # noqa: E402
from verl.utils.tensordict_utils import list_of_dict_to_tensordict  # noqa: E402
from verl.workers.config import FSDPOptimizerConfig  # noqa: E402
from verl.workers.config.optimizer import build_optimizer  # noqa: E402
from verl.workers.rollout.replica import TokenOutput  # noqa: E402
from verl.workers.utils.losses import ppo_loss  # noqa: E402

from cadence.errors import CadenceError  # noqa: E402
from cadence.integrations import verl as cv  # noqa: E402
from cadence.integrations import verl_regimen  # noqa: E402
from cadence.regimen.pieces import PathError  # noqa: E402
from cadence.rl import GVMAllocation, KnapsackAllocation  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "integrations" / "verl.md"
N = 4            # rollouts per prompt
BATCH = 4        # prompts per step
SCORES = {"easy": [1, 1, 1, 1], "hard": [0, 0, 0, 0], "mid": [1, 0, 1, 0]}   # each arm's responses


def doc_block(marker: str) -> list[str]:
    """The words of the docs' shell block after ``<!-- marker -->``, as the shell passes them."""
    block = DOC.read_text().split(f"<!-- {marker} -->", 1)[1].split("```", 2)[1]
    return shlex.split(block.split("\n", 1)[1].replace("\\\n", " "))


def doc_overrides() -> list[str]:
    """The override lines of the docs' config block."""
    words = doc_block("verl-overrides")
    return words[words.index("verl.trainer.main_ppo") + 1:]


VERL = ["trainer.use_v1=True", "trainer.v1.trainer_mode=sync", "algorithm.adv_estimator=grpo",
        "data.dataloader_num_workers=0"]
"""The docs' config lines that are verl's own (the rest are cadence's)."""


def verl_config(tmp_path: Path, extra: list[str] = (), guidance: bool = False, cadence: list[str] | None = None):
    """verl's config from the docs' lines, or from ``cadence`` (cadence's lines) and verl's own."""
    rows = [{"prompt": [{"role": "user", "content": f"question {i}"}], "data_source": src,
             "reward_model": {"ground_truth": "1", "style": "rule"}, "extra_info": {"index": i, "level": src}}
            for i, src in enumerate(["easy", "hard", "mid"] * 4)]
    if guidance:                                      # each row's guidance tiers
        rows = [{**row, "hints": [" Think.", " It is 1!!"]} for row in rows]
    pd.DataFrame(rows).to_parquet(tmp_path / "train.parquet")
    pd.DataFrame(rows[:3]).to_parquet(tmp_path / "val.parquet")
    own = [f"trainer.v1.sampler.sampler_kwargs.train_batch_size={BATCH}", "+trainer.v1.sampler.sampler_kwargs.seed=3"]
    overrides = (doc_overrides() + own if cadence is None else VERL + list(cadence)) + [
        f"data.train_files={tmp_path / 'train.parquet'}", f"data.val_files={tmp_path / 'val.parquet'}",
        f"data.train_batch_size={BATCH}", "data.filter_overlong_prompts=False", f"actor_rollout_ref.rollout.n={N}",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}", "trainer.total_training_steps=20", *extra]
    config_dir = str(Path(trainer_base.__file__).resolve().parents[2] / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(config_name="ppo_trainer", overrides=overrides)


class MemoryStore:
    """TransferQueue's key-value calls (kv_list, kv_batch_put, kv_batch_get, kv_clear) in memory."""

    def __init__(self):
        self.tags: dict[str, dict[str, dict]] = {}
        self.fields: dict[str, dict[str, dict]] = {}

    def kv_list(self, partition_id=None):
        parts = self.tags if partition_id is None else {partition_id: self.tags.get(partition_id, {})}
        return {p: {k: dict(t) for k, t in items.items()} for p, items in parts.items()}

    def kv_batch_put(self, keys, partition_id, tags=None, fields=None):
        if fields is not None and not isinstance(fields, list):     # a TensorDict, as verl's trainer puts
            fields = fields.tolist()
        for i, key in enumerate(keys):
            self.tags.setdefault(partition_id, {}).setdefault(key, {}).update(tags[i] if tags else {})
            if fields is not None:
                self.fields.setdefault(partition_id, {})[key] = fields[i]

    def kv_batch_get(self, keys, partition_id, select_fields=None):
        td = list_of_dict_to_tensordict([self.fields[partition_id][k] for k in keys])
        return td.select(*select_fields) if select_fields else td

    def kv_clear(self, keys, partition_id):
        for key in [keys] if isinstance(keys, str) else keys:
            self.tags.get(partition_id, {}).pop(key, None)
            self.fields.get(partition_id, {}).pop(key, None)


class ScriptedRollout:
    """Finishes every prompt at once: N responses each, scored by the prompt's arm, as verl's rollout
    workers store them (key ``uid_session_turn``, the prompt's fields with the trajectory's)."""

    def __init__(self, store: MemoryStore, arms: list[str]):
        self.store, self.arms, self.prompts, self.batches = store, arms, [], []

    def generate_sequences(self, batch):
        self.batches.append(batch)
        for i in range(len(batch)):
            uid, item = str(batch["uid"][i]), int(batch[cv.ITEM_KEY][i])
            self.prompts.append(item)
            n = int(batch[cv.ROLLOUTS_KEY][i]) if cv.ROLLOUTS_KEY in batch.keys() else N   # as verl's agent loop
            keys, fields = [], []
            for s in range(n):
                score = SCORES[self.arms[item]][s % N]
                length = 3 + s
                rm = torch.zeros(length)
                rm[-1] = float(score)
                keys.append(f"{uid}_{s}_0")
                fields.append({"rm_scores": rm, "response_mask": torch.ones(length, dtype=torch.int64),
                               "responses": torch.arange(length), cv.ITEM_KEY: torch.tensor(item)})
            if keys:
                self.store.kv_batch_put(keys, "train", tags=[{"status": "success", "response_len": 3}] * n,
                                        fields=fields)
            self.store.kv_batch_put([uid], "train", tags=[{"status": "finished"}])


class Workers:
    """The actor worker group's checkpoint calls (nothing to save on CPU) and its ``set_loss_fn``."""

    def __init__(self):
        self.loss_fns = []

    def set_loss_fn(self, loss_fn):
        self.loss_fns.append(loss_fn)

    def save_checkpoint(self, *args, **kwargs):
        pass

    def load_checkpoint(self, *args, **kwargs):
        pass


class Host:
    """The parts of verl's v1 ``PPOTrainer`` that choose prompts, sample groups and checkpoint, run
    as verl wrote them, on a trainer without workers."""

    _build_replay_buffer = PPOTrainer._build_replay_buffer
    _resolve_filter_groups_metric = PPOTrainer._resolve_filter_groups_metric
    _init_dataloader = PPOTrainer._init_dataloader
    _fetch_one_gen_batch = PPOTrainer._fetch_one_gen_batch
    _next_train_batch = PPOTrainer._next_train_batch
    _submit_batch_to_rollout = PPOTrainer._submit_batch_to_rollout
    _add_prompts_to_generate = PPOTrainer._add_prompts_to_generate
    _add_batch_to_generate = PPOTrainer._add_batch_to_generate.__wrapped__
    _save_checkpoint = PPOTrainer._save_checkpoint
    _load_checkpoint = PPOTrainer._load_checkpoint
    validation: list[float] = []       # the scripted validation metric at each global step (0: before training)

    def __init__(self, config, store):
        self.config, self.trainer_mode, self.parameter_sync_step = config, "sync", 1
        self.tokenizer = self.processor = None
        self.use_critic = False
        self.checkpoint_callback = build_checkpoint_callback(config)
        if config.algorithm.use_kl_in_reward:
            self.kl_ctrl_in_reward = core_algos.get_kl_controller(config.algorithm.kl_ctrl)
        self.replay_buffer = self._build_replay_buffer()
        self._init_dataloader()
        self.actor_rollout_wg = Workers()
        arms = [row["data_source"] for row in self.train_dataset.dataframe]
        self.agent_loop_manager = ScriptedRollout(store, arms)
        self.store, self.arms = store, arms
        self._load_checkpoint()

    def _validate(self):
        """verl's validation at the current global step, scripted."""
        return {VAL_METRIC: self.validation[self.global_steps]}

    def step(self):
        """One global step's prompt side, as ``PPOTrainer.fit``/``step`` run it; returns the batch,
        the metrics and the arm of each trajectory in the batch."""
        self.global_steps += 1
        self._add_batch_to_generate()
        batch, metrics = self.replay_buffer.sample(global_steps=self.global_steps, partition_id="train",
                                                   batch_size=self.config.data.train_batch_size)
        arms = [self.arms[int(self.store.fields["train"][k][cv.ITEM_KEY])] for k in batch.keys]
        self.trained_fields = {k: self.store.fields["train"][k] for k in batch.keys}
        self.store.kv_clear(keys=batch.keys, partition_id=batch.partition_id)
        return batch, metrics, arms


@pytest.fixture
def store(monkeypatch):
    store = MemoryStore()
    monkeypatch.setattr(verl_replay_buffer, "tq", store)
    monkeypatch.setattr(trainer_base, "tq", store)
    return store


def test_docs_lines_load_cadence_classes_through_verls_loaders(tmp_path, store):
    config = verl_config(tmp_path)
    host = Host(config, store)
    assert isinstance(host.replay_buffer, cv.CadenceReplayBuffer)
    assert isinstance(host.train_dataset, cv.CadencePrompts) and host.train_dataset.regimen is host.replay_buffer.regimen
    assert isinstance(host.val_dataset, cv.CadencePrompts) and host.val_dataset.regimen is None
    assert type(host.replay_buffer.regimen.link.policy).__name__ == "DUMP"
    assert host.replay_buffer.regimen.selector.predictive is not None
    assert config.data.gen_batch_size == 1


def test_band_keeps_mixed_groups_and_verl_refills(tmp_path, store):
    host = Host(verl_config(tmp_path), store)
    regimen = host.replay_buffer.regimen
    batch, metrics, arms = host.step()
    uids = {key.rsplit("_", 2)[0] for key in batch.keys}
    assert len(uids) == BATCH and len(batch.keys) == BATCH * N and set(arms) == {"mid"}
    # every prompt sent to rollout was observed; only "mid" prompts' groups are in the band
    rolled = host.agent_loop_manager.prompts
    assert regimen.counts["rollouts"] == len(rolled) * N == metrics["cadence/total/rollouts"]
    assert regimen.counts["kept"] >= BATCH and regimen.counts["dropped"] == sum(host.arms[i] != "mid" for i in rolled)
    assert len(rolled) > BATCH                                   # verl refilled the evicted groups
    assert metrics["training/filter_groups/evicted_samples"] == regimen.counts["dropped"]
    assert 0 < metrics["cadence/selection/kept_fraction"] < 1 and "cadence/selection/predictive/skipped_share" in metrics
    assert "cadence/curriculum/probabilities/mid" in metrics and metrics["cadence/progress"] == 0
    policy = regimen.link.policy
    assert policy.observed.sum() == len(rolled) * N               # one row per response reached the policy
    assert regimen.clock.samples == len(rolled) * N and regimen.clock.steps == 1   # the step closed on the clock


def test_predictive_filter_skips_zero_variance_prompts_before_rollout(tmp_path, store):
    host = Host(verl_config(tmp_path), store)
    regimen = host.replay_buffer.regimen
    for _ in range(6):
        host.step()
    filt = regimen.selector.predictive
    easy_or_hard = [i for i, a in enumerate(host.arms) if a != "mid"]
    assert filt.skipped > 0 and filt.easy_streak[easy_or_hard].sum() + filt.hard_streak[easy_or_hard].sum() > 0
    assert filt.easy_streak[[i for i, a in enumerate(host.arms) if a == "mid"]].sum() == 0
    assert regimen.clock.steps == 6                               # verl's global step 6 is done


def test_curriculum_chooses_the_prompts(tmp_path, store):
    extra = ["trainer.v1.sampler.sampler_kwargs.policy=fixed",
             "+trainer.v1.sampler.sampler_kwargs.policy_kwargs.weights.easy=0",
             "+trainer.v1.sampler.sampler_kwargs.policy_kwargs.weights.hard=0",
             "+trainer.v1.sampler.sampler_kwargs.policy_kwargs.weights.mid=1"]
    host = Host(verl_config(tmp_path, extra), store)
    host.step()
    host.step()
    assert {host.arms[i] for i in host.agent_loop_manager.prompts} == {"mid"}
    assert host.replay_buffer.regimen.counts["dropped"] == 0


def test_signals_from_verl_rollouts(tmp_path, store):
    host = Host(verl_config(tmp_path), store)
    seen = {}
    policy = host.replay_buffer.regimen.link.policy
    original = policy.observe

    def spy(ids, **signals):
        seen.setdefault("ids", []).extend(np.asarray(ids).tolist())
        for k, v in signals.items():
            seen.setdefault(k, []).extend(np.asarray(v).tolist())
        return original(ids, **signals)

    policy.observe = spy
    host.step()
    arms = [host.arms[i] for i in seen["ids"]]
    reward = np.array(seen["reward"])
    assert set(seen) == {"ids", "reward", "correct", "advantage", "length"}
    assert np.all(reward[np.array(arms) == "easy"] == 1) and np.all(reward[np.array(arms) == "hard"] == 0)
    assert np.array_equal(np.array(seen["correct"]), (reward >= 0.5).astype(float))
    adv = np.array(seen["advantage"])
    assert np.allclose(adv[np.array(arms) != "mid"], 0) and np.all(np.abs(adv[np.array(arms) == "mid"]) > 0.5)
    assert set(seen["length"]) == {3.0, 4.0, 5.0, 6.0}


def test_checkpoint_resumes_exactly_through_verls_data_pt(tmp_path, store, monkeypatch):
    config = verl_config(tmp_path, ["trainer.save_freq=1"])
    host = Host(config, store)
    host.step()
    host.step()
    host._save_checkpoint()
    before = len(host.agent_loop_manager.prompts)
    assert (tmp_path / "ckpt" / "global_step_2" / "data.pt").exists()
    saved = torch.load(tmp_path / "ckpt" / "global_step_2" / "data.pt", weights_only=True)   # plain data
    assert "cadence.VerlRegimen" in repr(saved)
    host.step()
    host.step()
    expected = host.agent_loop_manager.prompts[before:]
    state = host.replay_buffer.regimen.state_dict()

    store2 = MemoryStore()
    monkeypatch.setattr(verl_replay_buffer, "tq", store2)
    monkeypatch.setattr(trainer_base, "tq", store2)
    resumed = Host(config, store2)                                # resume_mode=auto finds global_step_2
    assert resumed.global_steps == 2
    resumed.step()
    resumed.step()
    assert resumed.agent_loop_manager.prompts == expected
    assert resumed.replay_buffer.regimen.state_dict()["counts"] == state["counts"]


def test_kl_coefficient_follows_its_knob(tmp_path, store):
    extra = ["algorithm.use_kl_in_reward=True", "algorithm.kl_ctrl.type=fixed",
             "+trainer.v1.sampler.sampler_kwargs.knobs.kl_coef='ramp(start=0.1, end=0)'"]
    host = Host(verl_config(tmp_path, extra), store)
    _, metrics, _ = host.step()
    assert host.kl_ctrl_in_reward.value == pytest.approx(0.1)
    host.step()
    host.step()
    assert host.kl_ctrl_in_reward.value == pytest.approx(0.1 * (1 - 2 / 200))
    assert metrics["cadence/kl_coef"] == pytest.approx(0.1)


def test_in_loss_kl_coefficient_reaches_the_actor_workers(tmp_path, store):
    extra = ["actor_rollout_ref.actor.use_kl_loss=True", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
             "+trainer.v1.sampler.sampler_kwargs.knobs.kl_loss_coef='ramp(start=0.1, end=0)'"]
    host = Host(verl_config(tmp_path, extra), store)
    for _ in range(3):
        _, metrics, _ = host.step()
    sent = host.actor_rollout_wg.loss_fns
    assert [fn.func for fn in sent] == [ppo_loss] * 3                 # verl's own loss, bound to a new config
    assert [fn.keywords["config"].kl_loss_coef for fn in sent] == pytest.approx([0.1, 0.0995, 0.099])
    assert metrics["cadence/kl_loss_coef"] == pytest.approx(0.099)
    first = sent[0].keywords["config"]
    assert first.use_kl_loss and first.kl_loss_type == host.config.actor_rollout_ref.actor.kl_loss_type
    constant = extra[:2] + ["+trainer.v1.sampler.sampler_kwargs.knobs.kl_loss_coef=0.05"]
    cv._active.clear()
    host = Host(verl_config(tmp_path, constant), store)
    host.step()
    host.step()
    assert [fn.keywords["config"].kl_loss_coef for fn in host.actor_rollout_wg.loss_fns] == [0.05]   # sent once


LENGTH = ["actor_rollout_ref.rollout.agent.default_agent_loop=cadence_single_turn",
          "+trainer.v1.sampler.sampler_kwargs.knobs.response_length='ramp(start=400, end=0)'",
          "+trainer.v1.sampler.sampler_kwargs.length_budget.schedule='step(peak=256, every=1 steps, gamma=0.5)'",
          "+trainer.v1.sampler.sampler_kwargs.length_budget.in_prompt=true"]


def test_knobs_reach_each_prompt_at_its_step(tmp_path, store):
    host = Host(verl_config(tmp_path, LENGTH), store)
    host.step()
    step_one = len(host.agent_loop_manager.batches)             # its batch and verl's refills
    host.step()
    batches = host.agent_loop_manager.batches
    assert step_one > 1 and len(batches) > step_one
    for n, batch in enumerate(batches):
        cap, budget = (400, 256) if n < step_one else (398, 128)  # step 2's prompts see step 1 done
        for i in range(len(batch)):
            assert int(batch[cv.MAX_TOKENS_KEY][i]) == cap
            info = batch["extra_info"][i]
            assert info["response_length"] == pytest.approx(cap) and info["length_budget"] == budget
            assert info["index"] == int(batch[cv.ITEM_KEY][i])          # the dataset's own entries stay
            assert batch["raw_prompt"][i][-1]["content"].endswith(f"Use at most {budget} tokens.")


def test_docs_knob_lines_drive_verl(tmp_path, store):
    lines = doc_block("verl-knobs") + ["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2"]
    host = Host(verl_config(tmp_path, lines), store)
    _, metrics, _ = host.step()
    assert host.kl_ctrl_in_reward.value == pytest.approx(0.05) == metrics["cadence/kl_coef"]
    assert host.actor_rollout_wg.loss_fns[0].keywords["config"].kl_loss_coef == pytest.approx(0.01)
    batch = host.agent_loop_manager.batches[0]
    assert int(batch[cv.MAX_TOKENS_KEY][0]) == 1024 and batch["extra_info"][0]["length_budget"] == 256
    assert batch["raw_prompt"][0][-1]["content"].endswith("Use at most 256 tokens.")


ALLOCATION = ["~trainer.v1.sampler.sampler_kwargs.band", "data.gen_batch_size=null", *doc_block("verl-allocation"),
              "+trainer.v1.sampler.sampler_kwargs.allocation.decay=1.0"]
UNIFORM = ["trainer.v1.sampler.sampler_kwargs.policy=uniform", "~trainer.v1.sampler.sampler_kwargs.predictive"]


def test_knapsack_allocation_spreads_rollouts_through_verls_rollout_n(tmp_path, store):
    host = Host(verl_config(tmp_path, ALLOCATION + UNIFORM), store)
    regimen = host.replay_buffer.regimen
    assert isinstance(regimen.allocation, KnapsackAllocation) and regimen.allocation.group == N
    assert regimen.allocation.max_group == 16                          # the docs' line
    sizes = []
    for _ in range(8):
        batch, metrics, arms = host.step()
        fetched = host.agent_loop_manager.batches[-1]
        sizes.append([(int(fetched[cv.ITEM_KEY][i]), int(fetched[cv.ROLLOUTS_KEY][i])) for i in range(len(fetched))])
        assert sum(n for _, n in sizes[-1]) == N * BATCH              # the fetch's budget, spread
        assert len(batch.keys) == N * BATCH                            # verl trained every rollout spent
    seen, settled, open_ = set(), [], []    # rollouts of prompts seen before: all right/wrong, or mixed
    for step in sizes:
        for i, n in step:
            if i in seen:
                (open_ if host.arms[i] == "mid" else settled).append(n)
        seen |= {i for i, n in step if n > 0}
    print(f"rollouts per prompt seen before: settled {np.mean(settled):.2f}, open {np.mean(open_):.2f} (N = {N})")
    assert settled and open_ and np.mean(settled) < N < np.mean(open_), (settled, open_)
    assert regimen.counts["unallocated"] == metrics["cadence/total/unallocated"] > 0
    assert regimen.counts["rollouts"] == N * BATCH * 8 == regimen.clock.samples
    state = torch.load(_saved(regimen.state_dict(), tmp_path), weights_only=True)
    cv._active.clear()
    again = Host(verl_config(tmp_path, ALLOCATION + UNIFORM), store).replay_buffer.regimen
    again.load_state_dict(state)
    items = np.arange(len(host.arms))
    assert np.array_equal(again.allocation.sizes(items), regimen.allocation.sizes(items))
    with pytest.raises(CadenceError, match="use one of them"):
        cv.VerlRegimen(band={"low": 0, "high": 1}, allocation={})
    cv._active.clear()
    with pytest.raises(CadenceError, match="gen_batch_size"):
        Host(verl_config(tmp_path, ALLOCATION[:1] + ALLOCATION[2:]), store)     # gen_batch_size=1 kept


def _saved(state, tmp_path):
    torch.save(state, tmp_path / "regimen.pt")
    return tmp_path / "regimen.pt"


def tiny_tokenizer():
    words = ["<pad>", "<unk>", "<|user|>", "<|assistant|>", "<|end|>", "question", "0", "1", "2", "a", "b"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<|end|>")
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|> {% endif %}")
    return tokenizer


def test_response_length_caps_generation_in_verls_agent_loop(tmp_path):
    """The agent loop verl instantiates from its registry sends each prompt's cap as ``max_tokens``."""
    config = verl_config(tmp_path, LENGTH + ["actor_rollout_ref.rollout.response_length=64"])
    requests = []

    class Server:                                                 # the LLM server the loop calls
        async def generate(self, request_id, prompt_ids, sampling_params, **kwargs):
            requests.append(dict(sampling_params))
            return TokenOutput(token_ids=[9, 10, 4])

    async def run_prompts():
        loop = hydra.utils.instantiate(
            config=_agent_loop_registry[config.actor_rollout_ref.rollout.agent.default_agent_loop],
            trainer_config=DictConfigWrap(config=config), server_manager=Server(), tokenizer=tiny_tokenizer(),
            processor=None, hf_model_type=None, dataset_cls=cv.CadencePrompts, data_config=DictConfigWrap(config.data),
            tools=None)
        assert isinstance(loop, cv.CadenceAgentLoop)
        prompt = {"raw_prompt": [{"role": "user", "content": "question 1"}], "index": 0}
        outputs = [await loop.run({"temperature": 1.0}, **prompt, **{cv.MAX_TOKENS_KEY: torch.tensor(cap)})
                   for cap in (7, 500)]
        outputs.append(await loop.run({"temperature": 1.0}, **prompt))
        return outputs

    outputs = asyncio.run(run_prompts())
    assert [r.get("max_tokens") for r in requests] == [7, 64, None]      # capped at rollout.response_length
    assert all(out.response_ids == [9, 10, 4] for out in outputs)


def test_lr_schedule_through_verls_optimizer_factory(tmp_path):
    config = verl_config(tmp_path)
    optim = FSDPOptimizerConfig(**{k: v for k, v in dict(config.actor_rollout_ref.actor.optim).items()
                                   if not k.startswith("_")})
    p = torch.nn.Parameter(torch.zeros(2))
    opt = build_optimizer([p], optim)
    assert isinstance(opt, cv.ScheduledAdamW)
    lrs = []
    for _ in range(12):
        p.grad = torch.ones(2)
        opt.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == lrs[3] and lrs[4] > lrs[0]                    # 4 updates per global step, warming up
    again = cv.ScheduledAdamW([torch.nn.Parameter(torch.zeros(2))], lr=1.0, lr_schedule=opt.lr_schedule,
                              budget=200, updates_per_step=4)
    again.load_state_dict(opt.state_dict())
    q = again.param_groups[0]["params"][0]
    q.grad = torch.ones(2)
    again.step()
    p.grad = torch.ones(2)
    opt.step()
    assert again.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_misconfigurations_are_named(tmp_path, store, monkeypatch):
    with pytest.raises(CadenceError, match="trainer_mode=sync"):
        cv.CadenceReplayBuffer("colocate_async", {}, None, "drop", {})
    with pytest.raises(CadenceError, match="train_batch_size"):
        cv.CadenceReplayBuffer("sync", {}, None, "drop", {"band": {"low": 0, "high": 1}}, refill_fn=print)
    host = Host(verl_config(tmp_path), store)
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())   # as inside a DataLoader worker
    with pytest.raises(CadenceError, match="dataloader_num_workers=0"):
        host.train_dataset[0]
    monkeypatch.undo()
    for lines, message in [(LENGTH[1:], "default_agent_loop=cadence_single_turn"),
                           (["+trainer.v1.sampler.sampler_kwargs.knobs.kl_loss_coef=0.1"], "use_kl_loss=True"),
                           (["+trainer.v1.sampler.sampler_kwargs.knobs.kl_coef=0.1"], "use_kl_in_reward=True")]:
        cv._active.clear()
        with pytest.raises(CadenceError, match=message):
            Host(verl_config(tmp_path, lines), store)
    cv._active.clear()
    host = Host(verl_config(tmp_path, ["+trainer.v1.sampler.sampler_kwargs.knobs.index=1"]), store)
    with pytest.raises(CadenceError, match=r"extra_info already has \['index'\]"):
        host.train_dataset[0]
    cv._active.clear()
    config = verl_config(tmp_path)
    with open_dict(config):
        config.trainer.v1.sampler.custom_sampler.path = None
    with pytest.raises(CadenceError, match="CadenceReplayBuffer"):
        Host(config, store)


def test_gvm_allocation_spreads_rollouts_through_verls_rollout_n(tmp_path, store):
    gvm = ALLOCATION + ["+trainer.v1.sampler.sampler_kwargs.allocation.method=gvm"]
    host = Host(verl_config(tmp_path, [line for line in gvm if "max_group" not in line] + UNIFORM), store)
    regimen = host.replay_buffer.regimen
    assert isinstance(regimen.allocation, GVMAllocation) and regimen.allocation.group == N
    sizes = []
    for _ in range(8):
        batch, _, _ = host.step()
        fetched = host.agent_loop_manager.batches[-1]
        sizes.append([(int(fetched[cv.ITEM_KEY][i]), int(fetched[cv.ROLLOUTS_KEY][i])) for i in range(len(fetched))])
        assert sum(n for _, n in sizes[-1]) == N * BATCH == len(batch.keys)   # the fetch's budget, all trained
    seen, by_arm = set(), {"easy": [], "mid": [], "hard": []}   # rollouts of prompts seen before, per arm
    for step in sizes:
        for i, n in step:
            if i in seen:
                by_arm[host.arms[i]].append(n)
        seen |= {i for i, n in step if n > 0}
    mean = {arm: np.mean(n) for arm, n in by_arm.items() if n}
    # n ∝ 1/sqrt(p + α/p) with equal norms: solved (p → 1) least, half-solved more, rarely solved most
    assert len(mean) == 3 and mean["easy"] < mean["mid"] < mean["hard"], by_arm
    state = torch.load(_saved(regimen.state_dict(), tmp_path), weights_only=True)
    cv._active.clear()
    again = Host(verl_config(tmp_path, [line for line in gvm if "max_group" not in line] + UNIFORM), store)
    again.replay_buffer.regimen.load_state_dict(state)
    items = np.arange(len(host.arms))
    assert np.array_equal(again.replay_buffer.regimen.allocation.sizes(items), regimen.allocation.sizes(items))
    with pytest.raises(CadenceError, match="unknown allocation method"):
        r = cv.VerlRegimen(allocation={"method": "nope", "group": 4})
        r.attach(["a", "b"])


class GuidedRollout(ScriptedRollout):
    """As :class:`ScriptedRollout`, but a prompt whose last message ends with the tier-2 guidance ("!!")
    is answered right half of the time; each trajectory carries the prompt's guidance tier (verl's
    agent loop stores a prompt's fields with its trajectories)."""

    def __init__(self, store, arms):
        super().__init__(store, arms)
        self.texts, self.levels = [], []

    def generate_sequences(self, batch):
        for i in range(len(batch)):
            prompt = batch["raw_prompt"][i]
            text = getattr(prompt, "data", prompt)[-1]["content"]
            item, level = int(batch[cv.ITEM_KEY][i]), int(batch[cv.HINT_KEY][i])
            self.texts.append(text)
            self.levels.append(level)
            self.prompts.append(item)
            uid = str(batch["uid"][i])
            scores = [1, 0, 1, 0] if text.endswith("!!") else SCORES[self.arms[item]]
            keys = [f"{uid}_{s}_0" for s in range(N)]
            fields = [{"rm_scores": torch.tensor([0.0, float(scores[s])]), "responses": torch.arange(2),
                       "response_mask": torch.ones(2, dtype=torch.int64), cv.ITEM_KEY: torch.tensor(item),
                       cv.HINT_KEY: torch.tensor(level)} for s in range(N)]
            self.store.kv_batch_put(keys, "train", tags=[{"status": "success", "response_len": 2}] * N, fields=fields)
            self.store.kv_batch_put([uid], "train", tags=[{"status": "finished"}])


def guided_host(config, store):
    host = Host(config, store)
    host.agent_loop_manager = GuidedRollout(store, host.arms)
    return host


def test_hints_rewrite_plateaued_prompts_where_cadence_draws_them_and_verl_refills(tmp_path, store):
    config = verl_config(tmp_path, UNIFORM + doc_block("verl-hints"), guidance=True)
    host = guided_host(config, store)
    regimen = host.replay_buffer.regimen
    assert regimen.hints.patience == 1 and regimen.hints.levels == 2
    trained = []
    for _ in range(6):
        batch, metrics, arms = host.step()
        trained += arms
    rollout = host.agent_loop_manager
    levels, texts = np.array(rollout.levels), rollout.texts
    guided = [host.arms[i] for i, level in zip(rollout.prompts, levels) if level]
    assert guided and set(guided) == {"hard"}                          # only never-solved prompts got guidance
    assert all(t.endswith(" Think.") for t, level in zip(texts, levels) if level == 1)
    assert all(t.endswith("question " + t.split()[1] + " It is 1!!") for t, level in zip(texts, levels) if level == 2)
    # tier 1 never helps, so every rescue is at tier 2, and each tier-2 re-roll followed a failed tier 1
    hints = regimen.hints
    assert hints.counts["rescued"] > 0 and hints.tier_counts.tolist() == [0, hints.counts["rescued"]]
    assert (levels == 2).sum() <= (levels == 1).sum() <= hints.counts["plateaued"]
    assert "hard" in trained                                           # rescued groups are trained on
    assert regimen.link.policy.observed.sum() == (levels == 0).sum() * N    # guided rollouts skip the curriculum
    assert regimen.clock.samples == len(levels) * N                    # and are paid for on the clock
    assert metrics["cadence/hints/rescued_share"] == hints.values()["rescued_share"]
    state = torch.load(_saved(regimen.state_dict(), tmp_path), weights_only=True)
    cv._active.clear()
    again = guided_host(config, store).replay_buffer.regimen
    again.load_state_dict(state)
    assert again.pending == regimen.pending and again.hints.state_dict() == hints.state_dict()
    with pytest.raises(cv.StateError, match="hints"):
        cv._active.clear()
        Host(verl_config(tmp_path), store).replay_buffer.regimen.load_state_dict(state)


def test_hints_and_replay_need_a_band_and_checkpointable_data(tmp_path, store, monkeypatch):
    lines = doc_block("verl-hints")
    with pytest.raises(CadenceError, match="give sampler_kwargs.band"):
        Host(verl_config(tmp_path, ["~trainer.v1.sampler.sampler_kwargs.band", *lines], guidance=True), store)
    cv._active.clear()
    with pytest.raises(CadenceError, match="hints.guidance 'hints': the dataset has no column"):
        Host(verl_config(tmp_path, lines), store)
    with pytest.raises(CadenceError, match="hints need hints.guidance"):
        cv.VerlRegimen(band={"low": 0, "high": 1}, hints={"patience": 2})
    with pytest.raises(CadenceError, match="replay fills the places of groups the band evicts"):
        cv.VerlRegimen(replay={"capacity": 8})
    with pytest.raises(cv.StateError, match=r"replay\[0\]\.extra_fields holds a object"):
        cv._checkpointable([{"extra_fields": object()}], "replay")
    monkeypatch.setattr(cv, "REPLAY_RELIES_ON", ("no_such_state",))    # another verl's ReplayBuffer
    cv._active.clear()
    with pytest.raises(CadenceError, match=r"no \['no_such_state'\].*supports verl 0.9.1"):
        Host(verl_config(tmp_path, UNIFORM + doc_block("verl-replay")), store)


def replay_run(tmp_path, monkeypatch, lines, steps, guidance=False):
    """``steps`` global steps (from the last checkpoint, if any) with the docs' band and the given lines;
    returns the host and, per step, the trained trajectories' fields as TransferQueue held them."""
    store = MemoryStore()
    monkeypatch.setattr(verl_replay_buffer, "tq", store)
    monkeypatch.setattr(trainer_base, "tq", store)
    cv._active.clear()
    tmp_path.mkdir(exist_ok=True)
    host = Host(verl_config(tmp_path, UNIFORM + ["trainer.save_freq=1", *lines], guidance), store)
    if guidance:
        host.agent_loop_manager = GuidedRollout(store, host.arms)
    trained = []
    for _ in range(steps):
        host.step()
        trained.append(host.trained_fields)
    return host, trained


def test_replay_puts_stored_groups_back_in_evicted_groups_places(tmp_path, monkeypatch):
    plain, _ = replay_run(tmp_path / "plain", monkeypatch, [], steps=6)
    host, trained = replay_run(tmp_path / "replay", monkeypatch, doc_block("verl-replay"), steps=6)
    regimen = host.replay_buffer.regimen
    replay = regimen.replay
    assert replay.capacity == 64 and replay.counts["replayed"] > 0
    generated = len(host.agent_loop_manager.prompts)
    assert generated < len(plain.agent_loop_manager.prompts)               # the same steps from fewer rollouts
    assert regimen.counts["rollouts"] == generated * N == regimen.clock.samples    # only generated ones are paid for
    assert replay.counts["saved"] == replay.counts["replayed"] * N
    stored = {g["uid"]: g for g in regimen.replay_groups.values()}
    seen = 0
    for step in trained:
        assert len(step) == BATCH * N                                      # full batches
        for key, fields in step.items():
            uid = key.split("_")[0]
            assert host.arms[int(fields[cv.ITEM_KEY])] == "mid"            # only groups with an advantage are kept
            if uid in stored and key in stored[uid]["keys"]:
                row = stored[uid]["rows"][stored[uid]["keys"].index(key)]
                assert set(row) == set(fields) and all(torch.equal(row[k], fields[k]) for k in row)
                seen += 1
    assert seen > 0


def test_replay_and_hints_resume_exactly_through_verls_data_pt(tmp_path, monkeypatch):
    lines = doc_block("verl-replay") + doc_block("verl-hints")
    host, _ = replay_run(tmp_path, monkeypatch, lines, steps=2, guidance=True)
    host._save_checkpoint()
    saved = torch.load(tmp_path / "ckpt" / "global_step_2" / "data.pt", weights_only=True)
    assert "replay" in repr(saved)
    before = len(host.agent_loop_manager.prompts)
    for _ in range(3):
        host.step()
    expected, state = host.agent_loop_manager.prompts[before:], host.replay_buffer.regimen.state_dict()
    assert state["replay"]["buffer"]["counts"]["replayed"] > 0 and state["hints"]["hints"]["counts"]["rescued"] > 0
    resumed, _ = replay_run(tmp_path, monkeypatch, lines, steps=3, guidance=True)
    assert resumed.agent_loop_manager.prompts == expected
    again = resumed.replay_buffer.regimen.state_dict()
    assert again["replay"]["buffer"] == state["replay"]["buffer"] and again["hints"] == state["hints"]


# ---------------------------------------------------------------------- a regimen file with stages
STAGED = {"budget": "6 steps", "lr": "constant(level=1e-6)", "knobs": {"temperature": "constant(level=1.0)"},
          "curriculum": {"policy": "fixed", "weights": {"easy": 1, "hard": 0, "mid": 1},
                         "arms": {"column": "data_source"}, "batch_size": 1, "seed": 5},
          "rl": {"dynamic": {"low": 0, "high": 1}},
          "stages": [{"name": "warm", "budget": "50%", "lr": "ramp(start=1e-6, end=2e-6)"},
                     {"name": "main", "lr": "cosine(peak=2e-6)", "knobs": {"temperature": "ramp(start=1.0, end=0.5)"},
                      "curriculum": {"policy": "uniform", "arms": {"column": "data_source"}, "batch_size": 1,
                                     "seed": 7},
                      "rl": {"length_budget": {"schedule": "ramp(start=256, end=64)", "in_prompt": True}}}]}
"""Two stages on 6 global steps: a band over easy and mid prompts, then every prompt with a length budget."""


def staged_lines(tmp_path, regimen=STAGED):
    from cadence.integrations.verl_config import verl_overrides
    from cadence.regimen import Regimen

    tmp_path.mkdir(exist_ok=True)
    Regimen.from_dict(regimen).to_file(tmp_path / "regimen.yaml")
    lines = verl_overrides(tmp_path / "regimen.yaml", train_batch_size=BATCH, updates_per_step=2)
    return [word for line in lines for word in shlex.split(line)]     # as the shell passes them


def staged_run(tmp_path, monkeypatch, steps):
    """``steps`` global steps of the staged file (from the last checkpoint, if any); per step, the
    prompts served, their rows' extra_info and prompt texts, and the regimen's band."""
    store = MemoryStore()
    monkeypatch.setattr(verl_replay_buffer, "tq", store)
    monkeypatch.setattr(trainer_base, "tq", store)
    cv._active.clear()
    host = Host(verl_config(tmp_path, ["trainer.save_freq=1"], cadence=staged_lines(tmp_path)), store)
    rollout, record = host.agent_loop_manager, []
    for _ in range(steps):
        prompts, batches = len(rollout.prompts), len(rollout.batches)
        regimen = host.replay_buffer.regimen
        band = regimen.band                     # the pieces in place when the step's prompts are drawn
        _, metrics, arms = host.step()
        rows = [(b["extra_info"][i], b["raw_prompt"][i][-1]["content"]) for b in rollout.batches[batches:]
                for i in range(len(b))]
        record.append({"prompts": rollout.prompts[prompts:], "rows": rows, "band": band, "arms": arms,
                       "metrics": metrics})
    return host, record


def test_staged_regimen_file_equals_the_plain_loop_step_for_step(tmp_path, monkeypatch):
    """verl's sampler and ScheduledAdamW, attached by the file's path, give what the plain-loop link of the same
    file gives at every step: the curriculum draws, the knobs, the RL pieces in place, the LR."""
    from cadence.regimen import Regimen

    host, record = staged_run(tmp_path, monkeypatch, steps=6)
    regimen = host.replay_buffer.regimen
    assert isinstance(regimen, cv.StagedVerlRegimen) and host.config.data.gen_batch_size == 1
    optim = host.config.actor_rollout_ref.actor.optim
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))],
                          FSDPOptimizerConfig(**{k: v for k, v in dict(optim).items() if not k.startswith("_")}))
    assert isinstance(opt, cv.ScheduledAdamW)
    file = Regimen.from_file(tmp_path / "regimen.yaml")
    link = file.attach(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0),
                       dataset={"data_source": host.arms})
    lrs, stages = [], []
    for step in record:
        stages.append(link.stages.current.name)
        served = step["prompts"]
        assert served == [int(link.sampler.next_batch(1)[0]) for _ in served]      # the same curriculum draws
        pieces = link.rl.current()
        assert (step["band"] is not None) == ("dynamic" in pieces)                   # the same RL pieces
        budget = pieces.get("length_budget")
        for info, text in step["rows"]:
            assert info["temperature"] == pytest.approx(link.knob("temperature"))
            if budget is None:
                assert "length_budget" not in info
            else:                                                                      # on the stage's progress
                assert info["length_budget"] == pytest.approx(budget(link.rl.clock()))
                assert text.endswith(f"Use at most {round(budget(link.rl.clock()))} tokens.")
        for _ in range(2):                                                             # updates_per_step=2
            opt.param_groups[0]["params"][0].grad = torch.ones(2)
            opt.step()
            assert opt.param_groups[0]["lr"] == pytest.approx(link.scheduler.get_last_lr()[0], rel=1e-12)
        lrs.append(link.scheduler.get_last_lr()[0])
        link.step()
    assert stages == ["warm"] * 3 + ["main"] * 3
    assert len(set(lrs)) == 6 and lrs[3] == pytest.approx(2e-6)                     # each stage's own schedule
    warm, main = [a for s in record[:3] for a in s["arms"]], [a for s in record[3:] for a in s["arms"]]
    assert set(warm) == {"mid"} and {"easy", "hard"} <= set(main)                    # the band runs in warm only
    assert {host.arms[i] for s in record[:3] for i in s["prompts"]} == {"easy", "mid"}   # warm's own curriculum
    assert [s["metrics"]["cadence/stage"] for s in record] == [0, 0, 0, 1, 1, 1]
    assert record[3]["metrics"]["cadence/length_budget"] == 256 and "cadence/length_budget" not in record[2]["metrics"]


@pytest.mark.parametrize("saved_at", [2, 3])     # mid-stage, and exactly at the transition (step 3 ends "warm")
def test_staged_regimen_resumes_exactly_through_verls_data_pt(tmp_path, monkeypatch, saved_at):
    host, _ = staged_run(tmp_path, monkeypatch, steps=saved_at)
    host._save_checkpoint()
    saved = torch.load(tmp_path / "ckpt" / f"global_step_{saved_at}" / "data.pt", weights_only=True)
    assert "cadence.StageRun" in repr(saved)
    before, rest = len(host.agent_loop_manager.prompts), 6 - saved_at
    for _ in range(rest):
        host.step()
    expected, state = host.agent_loop_manager.prompts[before:], host.replay_buffer.regimen.state_dict()
    resumed, record = staged_run(tmp_path, monkeypatch, steps=rest)
    assert resumed.global_steps == 6 and [p for s in record for p in s["prompts"]] == expected
    again = resumed.replay_buffer.regimen.state_dict()
    for s in (again, state):                                          # wall time is the one count that differs
        del s["link"]["clock"]["counts"]["seconds"]
    assert again == state


def test_staged_regimen_refuses_what_verl_cannot_run_by_path(tmp_path, store):
    ruled = {**STAGED, "stages": [STAGED["stages"][0], {**STAGED["stages"][1], "until": {"metric": "r", "above": 0.8}}]}
    with pytest.raises(PathError, match=r"^stages\[1\]\.until: verl trains trainer.total_training_steps and cannot"):
        cv.CadenceReplayBuffer("sync", {}, None, "drop", {"regimen": ruled, "train_batch_size": BATCH})
    with pytest.raises(PathError, match=r"^stages\[1\]\.until"):
        cv.ScheduledAdamW([torch.nn.Parameter(torch.zeros(1))], regimen=ruled)
    with pytest.raises(CadenceError, match=r"leave out sampler_kwargs \['policy'\]"):
        cv.CadenceReplayBuffer("sync", {}, None, "drop", {"regimen": STAGED, "policy": "dump"})
    hinted = {**STAGED, "stages": [STAGED["stages"][0], {**STAGED["stages"][1], "rl": {"hints": {}, "guidance": "x"}}]}
    with pytest.raises(PathError, match=r"^stages\[1\]\.rl: hints re-roll a plateaued group"):
        cv.regimen_from(hinted)
    config = verl_config(tmp_path, cadence=staged_lines(tmp_path, {**STAGED, "stages": [
        STAGED["stages"][0], {**STAGED["stages"][1], "curriculum": {**STAGED["stages"][1]["curriculum"],
                                                                     "arms": {"column": "level"}}}]}))
    with pytest.raises(PathError, match=r"^stages\[1\]\.curriculum\.arms\.column: the dataset has no column 'level'"):
        Host(config, store)
    with pytest.raises(CadenceError, match="needs lr_schedule= and budget=, or regimen="):
        cv.ScheduledAdamW([torch.nn.Parameter(torch.zeros(1))])


RESCUE = {"budget": "6 steps", "curriculum": {"policy": "uniform", "arms": {"column": "data_source"}, "batch_size": 1},
          "rl": {"dynamic": {"low": 0, "high": 1}},
          "stages": [{"name": "plain", "budget": "50%"},
                     {"name": "rescue", "rl": {"dynamic": {"low": 0, "high": 1}, "replay": {"capacity": 64},
                                               "hints": {"patience": 1, "levels": 2}, "guidance": "hints"}}]}
"""A second stage with its own replay and hints (stateful pieces the first stage does not run)."""


def rescue_run(tmp_path, monkeypatch, steps):
    store = MemoryStore()
    monkeypatch.setattr(verl_replay_buffer, "tq", store)
    monkeypatch.setattr(trainer_base, "tq", store)
    cv._active.clear()
    config = verl_config(tmp_path, ["trainer.save_freq=1"], guidance=True, cadence=staged_lines(tmp_path, RESCUE))
    host = guided_host(config, store)
    per_step = []
    for _ in range(steps):
        before = len(host.agent_loop_manager.levels)
        host.step()
        per_step.append(host.agent_loop_manager.levels[before:])
    return host, per_step


def test_a_stages_own_replay_and_hints_run_in_that_stage_and_resume_exactly(tmp_path, monkeypatch):
    host, levels = rescue_run(tmp_path, monkeypatch, steps=4)
    regimen = host.replay_buffer.regimen
    assert not any(level for step in levels[:3] for level in step)          # no guidance in the first stage
    assert regimen.replay is not None and regimen.hints is not None and regimen.parts[0].replay is None
    host._save_checkpoint()                                                    # mid-stage, with stored groups
    before = len(host.agent_loop_manager.prompts)
    for _ in range(2):
        host.step()
    rollout = host.agent_loop_manager
    assert any(rollout.levels) and regimen.replay.counts["replayed"] > 0     # the stage's own pieces ran
    expected, state = rollout.prompts[before:], regimen.state_dict()
    resumed, _ = rescue_run(tmp_path, monkeypatch, steps=2)
    assert resumed.global_steps == 6 and resumed.agent_loop_manager.prompts == expected
    again = resumed.replay_buffer.regimen.state_dict()
    assert again["parts"][1]["replay"]["buffer"] == state["parts"][1]["replay"]["buffer"]
    assert again["parts"][1]["hints"] == state["parts"][1]["hints"] and again["parts"][0] == state["parts"][0]
    other, _ = staged_run(tmp_path / "other", monkeypatch, steps=1)    # another file's regimen: nothing loads
    before = other.replay_buffer.regimen.state_dict()
    with pytest.raises(cv.StateError, match="has a replay buffer and this regimen has none"):
        other.replay_buffer.regimen.load_state_dict(state)
    after = other.replay_buffer.regimen.state_dict()
    assert after["parts"] == before["parts"] and after["link"]["stages"] == before["link"]["stages"]


def test_a_stages_own_allocation_spreads_rollouts_in_that_stage_only(tmp_path, store):
    spread = {"budget": "6 steps", "curriculum": {"policy": "uniform", "arms": {"column": "data_source"},
                                                  "batch_size": 1},
              "stages": [{"name": "even", "budget": "2 steps"},
                         {"name": "spread", "rl": {"knapsack": {"group": N, "decay": 1.0, "max_group": 16}}}]}
    lines = staged_lines(tmp_path, spread)
    assert not any(line.startswith("data.gen_batch_size") for line in lines)      # no band: whole fetches
    host = Host(verl_config(tmp_path, cadence=lines), store)
    regimen, sizes = host.replay_buffer.regimen, []
    for _ in range(6):
        batch, _, _ = host.step()
        fetched = host.agent_loop_manager.batches[-1]
        sizes.append([int(fetched[cv.ROLLOUTS_KEY][i]) for i in range(len(fetched))]
                     if cv.ROLLOUTS_KEY in fetched.keys() else None)
        assert len(batch.keys) == N * BATCH                                        # every rollout spent is trained
    assert sizes[:2] == [None, None] and all(sum(s) == N * BATCH for s in sizes[2:])
    assert any(len(set(s)) > 1 for s in sizes[3:])                                 # spread by what stage 2 observed
    assert regimen.allocation is regimen.parts[1].allocation and regimen.parts[0].allocation is None


# ---------------------------------------------------------------------- a stage that ends on a rule
VAL_METRIC = "val-core/data/reward/mean@1"
VAL = [0.5, 0.9, 0.95, 0.6, 0.7, 0.8, 0.9]
"""What verl's validation returns at each global step (0: the validation before training)."""
RULED = {**STAGED, "stages": [{**STAGED["stages"][0], "until": {"metric": VAL_METRIC, "above": 0.8, "times": 2}},
                              STAGED["stages"][1]]}
"""STAGED whose first stage ends once validation is above 0.8 twice in a row: after step 2, not its budget's 3."""


def ruled_run(tmp_path, monkeypatch, steps, save_at=None, regimen=RULED, test_freq=1):
    """As verl's ``fit`` runs it: validation before training (also when resuming), then per step the
    prompts, a checkpoint at ``save_at`` (verl writes it before validating the step), validation every
    ``test_freq`` steps."""
    store = MemoryStore()
    monkeypatch.setattr(verl_replay_buffer, "tq", store)
    monkeypatch.setattr(trainer_base, "tq", store)
    monkeypatch.setattr(Host, "validation", VAL)
    cv._active.clear()
    config = verl_config(tmp_path, ["trainer.save_freq=1", f"trainer.test_freq={test_freq}",
                                    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2"],
                         cadence=staged_lines(tmp_path, regimen))
    host = Host(config, store)
    host._validate()
    rollout, record = host.agent_loop_manager, []
    for _ in range(steps):
        prompts = len(rollout.prompts)
        _, metrics, arms = host.step()
        record.append({"prompts": rollout.prompts[prompts:], "loss": host.actor_rollout_wg.loss_fns[-1],
                       "metrics": metrics, "arms": arms})
        if host.global_steps == save_at:
            host._save_checkpoint()
        if host.global_steps % test_freq == 0:
            host._validate()
    return host, record


def test_a_rule_ended_stage_equals_the_plain_loop_step_for_step(tmp_path, monkeypatch):
    """The driver reads the rule's metric from verl's validation and ends the stage where the plain-loop link
    fed the same metrics ends it; the workers' ScheduledAdamW follows the moved end, sent with verl's loss."""
    import copy

    from cadence.regimen import Regimen

    host, record = ruled_run(tmp_path, monkeypatch, steps=6)
    optim = host.config.actor_rollout_ref.actor.optim
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))],
                          FSDPOptimizerConfig(**{k: v for k, v in dict(optim).items() if not k.startswith("_")}))
    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    link = Regimen.from_file(tmp_path / "regimen.yaml").attach(sgd, dataset={"data_source": host.arms})
    link.log({VAL_METRIC: VAL[0]})
    stages, lrs = [], []
    for t, step in enumerate(record, start=1):
        stages.append(link.stages.current.name)
        assert step["metrics"]["cadence/stage"] == link.stages.index
        assert step["prompts"] == [int(link.sampler.next_batch(1)[0]) for _ in step["prompts"]]
        loss = copy.copy(step["loss"])               # what the actor workers call before each update
        assert loss.loss_fn.func is ppo_loss                         # verl's own loss, with the actor's config
        assert loss.loss_fn.keywords["config"].clip_ratio == host.config.actor_rollout_ref.actor.clip_ratio
        loss.loss_fn = lambda: 0.0
        for _ in range(2):                           # updates_per_step=2
            loss()
            opt.param_groups[0]["params"][0].grad = torch.ones(2)
            opt.step()
            assert opt.param_groups[0]["lr"] == pytest.approx(link.scheduler.get_last_lr()[0], rel=1e-12)
        lrs.append(link.scheduler.get_last_lr()[0])
        link.step()
        link.log({VAL_METRIC: VAL[t]})
    assert stages == ["warm"] * 2 + ["main"] * 4 and link.stages.ended == {0: 2.0}
    assert [fn.ended for fn in host.actor_rollout_wg.loss_fns] == [{}, {0: 2.0}]      # sent once it moved
    main = [1e-6 * (1 + np.cos(np.pi * k / 4)) for k in range(4)]                    # "main" over steps 3-6
    assert lrs == pytest.approx([1e-6, 4e-6 / 3, *main], rel=1e-9)
    assert {a for s in record[:2] for a in s["arms"]} == {"mid"}                      # the band in "warm" only
    assert "hard" in {a for s in record[2:] for a in s["arms"]}
    assert "cadence/length_budget" in record[2]["metrics"] and "cadence/length_budget" not in record[1]["metrics"]


@pytest.mark.parametrize("saved_at, test_freq", [(2, 1), (4, 1), (1, 2)])
def test_a_rule_ended_stage_resumes_exactly_through_verls_data_pt(tmp_path, monkeypatch, saved_at, test_freq):
    """At the transition (step 2's validation, after its checkpoint, ends "warm"), after it, and before it at a
    step the run did not validate (the resumed run's first validation, at step 1, must not count: 0.9 would end
    "warm" after step 2 with step 2's 0.95, where the run ended it on its budget after step 3)."""
    host, record = ruled_run(tmp_path, monkeypatch, steps=6, save_at=saved_at, test_freq=test_freq)
    state = host.replay_buffer.regimen.state_dict()
    assert state["link"]["stages"]["ended"] == ([[0, 2.0]] if test_freq == 1 else [])
    resumed, again = ruled_run(tmp_path, monkeypatch, steps=6 - saved_at, test_freq=test_freq)
    assert resumed.global_steps == 6
    assert [p for s in again for p in s["prompts"]] == [p for s in record[saved_at:] for p in s["prompts"]]
    assert [s["loss"].ended for s in again] == [s["loss"].ended for s in record[saved_at:]]   # what the workers get
    mine = resumed.replay_buffer.regimen.state_dict()
    for s in (mine, state):                          # wall time is the one count that differs
        del s["link"]["clock"]["counts"]["seconds"]
    assert mine == state


def test_a_rule_over_a_metric_verl_never_logs_names_its_path(tmp_path, monkeypatch):
    misnamed = {**RULED, "stages": [{**RULED["stages"][0], "until": {"metric": "val-core/typo", "above": 0.8}},
                                    RULED["stages"][1]]}
    with pytest.raises(PathError, match=r"^stages\[0\]\.until\.metric: stage 'warm' ran its whole budget, "
                                           r"but its rule's metric 'val-core/typo' was never logged"):
        ruled_run(tmp_path, monkeypatch, steps=3, regimen=misnamed)
    with pytest.raises(PathError, match=r"^stages\[0\]\.until\.metric: 'val-core/data/reward/mean@1' is read "
                                           r"from verl's validation, which does not run during training"):
        ruled_run(tmp_path / "never", monkeypatch, steps=1, test_freq=-1)
    own = {**RULED, "stages": [{**RULED["stages"][0], "until": None,        # the adapter's own values count too
                                "plateau": {"metric": "cadence/total/kept", "window": 1, "delta": 100}},
                               RULED["stages"][1]]}
    host, record = ruled_run(tmp_path / "own", monkeypatch, steps=3, regimen=own)
    assert [s["metrics"]["cadence/stage"] for s in record] == [0, 0, 1]


def test_a_rules_end_and_the_in_loss_kl_knob_reach_the_workers_in_one_loss(tmp_path, monkeypatch):
    kl = {**RULED, "knobs": {**RULED["knobs"], "kl_loss_coef": "ramp(start=0.1, end=0)"}}
    store = MemoryStore()
    monkeypatch.setattr(verl_replay_buffer, "tq", store)
    monkeypatch.setattr(trainer_base, "tq", store)
    monkeypatch.setattr(Host, "validation", VAL)
    cv._active.clear()
    config = verl_config(tmp_path, ["trainer.test_freq=1", "actor_rollout_ref.actor.use_kl_loss=True",
                                    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2"],
                         cadence=staged_lines(tmp_path, kl))
    host = Host(config, store)
    host._validate()
    for _ in range(3):
        host.step()
        host._validate()
    sent = host.actor_rollout_wg.loss_fns
    assert all(isinstance(fn, cv.StagedLoss) and fn.loss_fn.func is ppo_loss for fn in sent)
    assert [fn.ended for fn in sent] == [{}, {}, {0: 2.0}]
    coefs = [0.1, 0.1 * 2 / 3, 0.1]                  # the knob on each stage's own progress; "main" from step 3
    assert [fn.loss_fn.keywords["config"].kl_loss_coef for fn in sent] == pytest.approx(coefs, rel=1e-12)


def test_the_regimen_module_stands_alone_and_the_config_paths_still_name_every_class():
    """verl_regimen never imports the module verl loads by config path; the names users import from
    ``cadence.integrations.verl`` are the regimen module's own objects, and a pickled StagedLoss (as
    Ray sends it to the workers) puts its stage ends where ScheduledAdamW reads them."""
    import pickle
    import subprocess
    import sys

    probe = ("import sys, cadence.integrations.verl_regimen; "
             "print('cadence.integrations.verl' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    for name in ("VerlRegimen", "StagedVerlRegimen", "StagedLoss", "regimen_from", "regimen_lr", "tap_validation",
                 "ITEM_KEY", "ROLLOUTS_KEY", "HINT_KEY", "MAX_TOKENS_KEY", "AGENT_LOOP"):
        assert getattr(cv, name) is getattr(verl_regimen, name)
    for name in ("CadencePrompts", "CadenceReplayBuffer", "CadenceAgentLoop", "ScheduledAdamW"):
        assert getattr(cv, name).__module__ == "cadence.integrations.verl"
    loss = pickle.loads(pickle.dumps(verl_regimen.StagedLoss(abs, {1: 4.0})))
    try:
        assert loss(-2.0) == 2.0 and cv._STAGE_ENDS == {1: 4.0}
    finally:
        verl_regimen._STAGE_ENDS.clear()
