"""The GRPO loop of the RL lab: groups of sampled answers, group-normalised advantages, a
clipped policy-gradient step, optional KL to the warm-start model, every knob on one clock.

One :meth:`GRPOTrainer.step`:

1. the prompt source (a curriculum, optionally with a predictive filter and dynamic sampling) picks prompt ids and the
   rollout allocator decides how many answers each gets (``group`` each by default);
2. answers are sampled, scored (correct or not) and turned into rewards (correctness, or a
   length-aware reward from a :class:`cadence.rl.LengthBudget`);
3. advantages are normalised within each prompt's group, ``A = (r − mean) / (std + ε)``;
4. the loss ``−min(ρA, clip(ρ, 1−ε_c, 1+ε_c)A) + β·KL`` (``ρ`` to the policy before the step, or for a
   replayed group to the one that generated it when its log-probs were stored; token mean, k3 estimator of the KL
   to the warm-start model) takes one AdamW step; LR and β are cadence schedules on the clock; with
   an HPT gate (:class:`cadence.rl.HybridGate`) the groups it routes to SFT leave the RL loss and
   their prompts' demonstrations (the suite's answers) add ``sft_coef × token NLL``;
5. rewards, advantages and correctness flow back to the source's curriculum.

``state_dict()`` holds model, optimizer, LR binding + clock, source, allocator, sampling RNG and
history, so a run stopped and resumed ends bit-identical to an uninterrupted one (CPU).

    >>> from cadence.curricula import make_policy
    >>> from cadence.labs.rl.tasks import TaskSuite
    >>> from cadence.labs.rl.warmstart import WarmStartConfig, warm_start
    >>> suite = TaskSuite(families=("add",), levels=(1, 2), items_per_arm=8, eval_per_arm=2)
    >>> warm = WarmStartConfig(steps=2, batch=4, d_model=16, n_layer=1, n_head=2)
    >>> model = warm_start(suite, warm, seed=0)
    >>> from cadence.labs.rl.sources import SelectorSource
    >>> from cadence.rl import PromptSelector
    >>> source = SelectorSource(PromptSelector(make_policy("uniform", suite_arms(suite), seed=0)))
    >>> trainer = GRPOTrainer(model, suite, source, GRPOConfig(steps=2, prompts_per_step=2, group=2,
    ...                       eval_every=1), max_new_tokens=warm.max_new_tokens(suite))
    >>> history = trainer.run()
    >>> trainer.clock.steps, history.eval_steps
    (2.0, [0, 1, 2])
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from cadence.clock import Clock
from cadence.curricula import Arms
from cadence.errors import CadenceError, StateError
from cadence.gradnorm import grad_norms
from cadence.labs.rl.gradients import head_grad_norms
from cadence.labs.rl.groups import Groups, group_advantages
from cadence.labs.rl.guidance import hinted_groups
from cadence.labs.rl.policy import Evaluation, answer_batch, evaluate, response_texts, sample, token_logprobs
from cadence.labs.rl.sources import PromptSource
from cadence.labs.rl.tasks import TaskSuite
from cadence.labs.tinygpt import TinyGPT
from cadence.optim import ScheduledLR
from cadence.rl import DualDownsampling, FixedAllocation, HierarchicalBudget, HybridGate, LengthBudget
from cadence.rl.hpt import RL, SFT
from cadence.schedules import as_schedule
from cadence.state import plain

def suite_arms(suite: TaskSuite) -> Arms:
    """The curriculum arms of a suite's train pool, in the suite's own arm order."""
    return Arms.from_codes(suite.arm_of, suite.arm_names)


Reward = Callable[[np.ndarray, np.ndarray, Clock], np.ndarray]


def correctness_reward(correct: np.ndarray, lengths: np.ndarray, clock: Clock) -> np.ndarray:
    """The plain verifiable reward: 1 for a correct answer, 0 otherwise."""
    return correct.astype(np.float64)


def length_reward(budget: LengthBudget) -> Reward:
    """The length-aware reward of ``budget`` at the trainer's clock (``λ_c·correct + λ_ℓ·R_len``)."""
    return lambda correct, lengths, clock: budget.reward(correct, lengths, budget(clock))


@dataclass(frozen=True)
class GRPOConfig:
    """Knobs of the GRPO loop; ``lr`` and ``kl`` are cadence schedule specs on a step budget."""

    steps: int = 150
    prompts_per_step: int = 32
    group: int = 8
    lr: str = "warmup(constant(3e-4), 5%)"
    kl: str = "constant(0)"
    clip: float = 0.2
    epochs: int = 1
    temperature: float = 1.0
    eval_every: int = 10

    def __post_init__(self) -> None:
        for name in ("steps", "prompts_per_step", "group", "epochs", "eval_every"):
            if getattr(self, name) < 1:
                raise CadenceError(f"GRPOConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.clip < 1 or self.temperature <= 0:
            raise CadenceError(f"GRPOConfig needs 0 < clip < 1 and temperature > 0, got {self.clip}, {self.temperature}")


@dataclass
class History:
    """What a run logs: one row per step, one per evaluation (per arm: ``eval_accuracy`` is pass@1
    at the sampling temperature, ``eval_greedy`` the greedy accuracy; ``eval_length`` is the mean
    greedy response length)."""

    step_rollouts: list[int] = field(default_factory=list)
    step_groups: list[int] = field(default_factory=list)
    step_informative: list[int] = field(default_factory=list)
    step_useful_rollouts: list[int] = field(default_factory=list)
    step_reward: list[float | None] = field(default_factory=list)  # None: no group was trained on
    step_length: list[float | None] = field(default_factory=list)
    step_probabilities: list[list[float]] = field(default_factory=list)
    step_grad_norm: list[float | None] = field(default_factory=list)  # ℓ2, mean over the step's updates
    step_arm_groups: list[list[int]] = field(default_factory=list)  # groups trained on per arm (what a filter kept)
    step_sft_tokens: list[int] = field(default_factory=list)  # demonstration tokens trained with SFT (HPT gate)
    step_samples: list[list[list[float]]] = field(default_factory=list)  # [prompt id, mean reward] per group (LIMR)
    step_trained_tokens: list[int] = field(default_factory=list)  # response tokens in the loss (D3S masks some)
    step_source: list[dict[str, float]] = field(default_factory=list)  # the source's logged values (run totals)
    eval_steps: list[int] = field(default_factory=list)
    eval_rollouts: list[int] = field(default_factory=list)
    eval_accuracy: list[list[float]] = field(default_factory=list)
    eval_greedy: list[list[float]] = field(default_factory=list)
    eval_length: list[float] = field(default_factory=list)

    @property
    def rollouts(self) -> int:
        return int(sum(self.step_rollouts))


class GRPOTrainer:
    """GRPO on a :class:`TaskSuite` with prompts from a :class:`PromptSource`.

    Args:
        model: the warm-started policy (trained in place; pass a copy to keep the original).
        suite, source, config: the tasks, the prompt chooser, the loop's knobs.
        max_new_tokens: longest response to sample (at least the suite's longest answer + 1).
        reward: ``(correct, lengths, clock) -> rewards``; default: correctness.
        allocator: answers per prompt; default ``FixedAllocation(config.group)``.
        seed: seed of the private sampling generator.
        gate: HPT's per-prompt gate; its SFT route trains the suite's answer as the demonstration
            (its off-policy route is not run here: ``off_policy_gate`` must equal ``sft_gate``).
        downsample: D³S (:class:`cadence.rl.DualDownsampling`): train on each group's max-variance
            subset and the top tokens by ``|A|·H``, both shares on the clock.
        budgets: HBPO (:class:`cadence.rl.HierarchicalBudget`): each group split into budget
            subgroups, the budget's index stated by one token after the prompt (so
            ``max_new_tokens`` must leave the model one position for it), HBPO's reward and
            advantage in place of ``reward`` and GRPO's.
    """

    def __init__(self, model: TinyGPT, suite: TaskSuite, source: PromptSource, config: GRPOConfig, *,
                 max_new_tokens: int, reward: Reward = correctness_reward, allocator: Any = None,
                 seed: int = 0, gate: HybridGate | None = None, downsample: DualDownsampling | None = None,
                 budgets: HierarchicalBudget | None = None) -> None:
        if gate is not None and gate.off_policy_gate != gate.sft_gate:
            raise CadenceError("the RL lab runs HPT's SFT and RL routes only: give off_policy_gate equal to sft_gate, "
                               f"got {gate.sft_gate} and {gate.off_policy_gate}")
        self.gate = gate
        self.model, self.suite, self.source, self.config = model, suite, source, config
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens <= suite.answer_len:
            raise CadenceError(f"max_new_tokens must be an integer above the suite's longest answer ({suite.answer_len}), "
                               f"got {max_new_tokens!r}")
        self.tokenizer = suite.tokenizer
        self.max_new_tokens = max_new_tokens
        self.reward = reward
        self.downsample, self.budgets = downsample, budgets
        self._trained_tokens = 0
        if budgets is not None and suite.prompt_len + 1 + max_new_tokens > model.cfg.context:
            raise CadenceError(f"HBPO states the budget in one token after the prompt: max_new_tokens must be at most "
                               f"{model.cfg.context - suite.prompt_len - 1} for this model, got {max_new_tokens}")
        self.allocator = allocator if allocator is not None else FixedAllocation(config.group)
        self.kl = as_schedule(config.kl)
        self.reference = copy.deepcopy(model).eval().requires_grad_(False) if self.kl.bounds()[1] > 0 else None
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=0.0)
        self.clock = Clock(budget=config.steps)
        self.scheduler = ScheduledLR(self.optimizer, lr=config.lr, clock=self.clock)
        self.clock.check([self.kl])
        self.generator = torch.Generator().manual_seed(seed)
        self.history = History()
        self._prompts = torch.from_numpy(self.tokenizer.prompts(suite.prompts, suite.prompt_len))

    # ------------------------------------------------------------------ rollouts
    def rollout(self, items: np.ndarray) -> Groups:
        """Sample, score and reward answers for ``items`` (sizes from the allocator)."""
        items = np.asarray(items, dtype=np.int64)
        sizes = self.allocator.sizes(items)
        keep = sizes > 0
        items, sizes = items[keep], sizes[keep]
        if self.budgets is not None:
            return self._budget_rollout(items, sizes)
        rollouts = sample(self.model, self._prompts[torch.from_numpy(items)], group=torch.from_numpy(sizes),
                          max_new_tokens=self.max_new_tokens, eos_id=self.tokenizer.eos_id,
                          generator=self.generator, temperature=self.config.temperature)
        texts = response_texts(rollouts, self.tokenizer.response_text)
        correct = self.suite.score(texts, np.repeat(self.suite.answers[items], sizes))
        lengths = rollouts.lengths.numpy().astype(np.float64)
        rewards = np.asarray(self.reward(correct, lengths, self.clock), dtype=np.float64)
        if not np.all(np.isfinite(rewards)):
            raise CadenceError("the reward function returned NaN or inf")
        groups = Groups(items, sizes, rollouts, correct, rewards, group_advantages(rewards, sizes), lengths)
        if getattr(self.allocator, "needs_grad_norms", False):   # GVM-RAFT: per-rollout gradient norms
            self.allocator.observe(groups.row_items, groups.correct, grad_norm=head_grad_norms(self.model, rollouts))
        else:
            self.allocator.observe(groups.row_items, groups.correct)
        return groups

    def _budget_rollout(self, items: np.ndarray, sizes: np.ndarray) -> Groups:
        """HBPO: each prompt's group in budget subgroups, the subgroup's budget index as a token
        after the prompt; HBPO's reward and advantages."""
        per_row = [self.budgets.subgroup_budgets(int(n)) for n in sizes]
        k = len(self.budgets.budgets)
        marks = torch.from_numpy(np.concatenate([self.tokenizer.encode(str(j % 10)) for j in range(k)]))
        prompts = self._prompts[torch.from_numpy(np.repeat(items, k))]
        prompts = torch.cat([prompts, marks.repeat(len(items))[:, None]], dim=1)
        rollouts = sample(self.model, prompts, group=torch.from_numpy(np.repeat(sizes // k, k)),
                          max_new_tokens=self.max_new_tokens, eos_id=self.tokenizer.eos_id,
                          generator=self.generator, temperature=self.config.temperature)
        texts = response_texts(rollouts, self.tokenizer.response_text)
        correct = self.suite.score(texts, np.repeat(self.suite.answers[items], sizes))
        lengths = rollouts.lengths.numpy().astype(np.float64)
        budgets = np.concatenate(per_row)
        rewards = self.budgets.reward(correct, lengths, budgets)
        groups = Groups(items, sizes, rollouts, correct, rewards, self.budgets.advantages(rewards, sizes, budgets),
                        lengths)
        self.allocator.observe(groups.row_items, groups.correct)
        return groups

    def hinted_rollout(self, items: np.ndarray, levels: np.ndarray) -> Groups:
        """``group`` answers per prompt with the beginning of its answer given at each tier (GHPO)."""
        return hinted_groups(self, items, levels)

    # ------------------------------------------------------------------ training
    def loss(self, groups: Groups, old_logp: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, token log-probs)``: clipped policy gradient (+ β·KL), token mean."""
        r = groups.rollouts
        mask = r.mask
        if self.downsample is None:
            logp = token_logprobs(self.model, r)
        else:  # D3S: the top tokens by |A|·H
            logp, entropy = token_logprobs(self.model, r, entropy=True)
            adv = torch.from_numpy(groups.advantages).float()
            mask = mask * self.downsample.keep_tokens(adv, entropy, r.mask, self.clock).float()
        old = logp.detach() if old_logp is None else old_logp
        if groups.behaviour_logp is not None:   # replayed rows: the ratio to the policy that generated them
            old = torch.where(torch.isnan(groups.behaviour_logp), old, groups.behaviour_logp)
        ratio = torch.exp(logp - old)
        adv = torch.from_numpy(groups.advantages).float()[:, None]
        eps = self.config.clip
        per_token = -torch.minimum(ratio * adv, torch.clamp(ratio, 1 - eps, 1 + eps) * adv)
        beta = self.kl(self.clock)
        if beta > 0 and self.reference is not None:
            with torch.no_grad():
                ref = token_logprobs(self.reference, r)
            d = ref - logp
            per_token = per_token + beta * (torch.exp(d) - d - 1)
        self._trained_tokens = int(mask.sum())
        return (per_token * mask).sum() / mask.sum().clamp_min(1.0), logp.detach()

    def sft_loss(self, items: np.ndarray) -> tuple[torch.Tensor, int]:
        """``(token-mean NLL of the demonstrations of items, their token count)``: the suite's answers."""
        tokens, mask = answer_batch(self.suite.prompts[items], self.suite.answers[items], self.tokenizer,
                                    np.zeros(len(items), dtype=np.int64), self.max_new_tokens,
                                    width=self.suite.prompt_len)
        logits = self.model(tokens[:, :-1])
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")
        return (nll * mask[:, 1:]).sum() / mask[:, 1:].sum(), int(mask.sum())

    def _gated(self, groups: Groups) -> tuple[Groups, np.ndarray]:
        """``(groups for the RL loss, prompt ids for SFT)``: all groups and none without a gate."""
        if self.gate is None or not len(groups.items):
            return groups, np.zeros(0, dtype=np.int64)
        routes = self.gate.route(groups.correct, groups.sizes)
        return groups.select(routes == RL), groups.items[routes == SFT]

    def step(self) -> None:
        """One GRPO step: choose prompts, roll out, update, log; evaluates every ``eval_every``."""
        if not self.history.eval_steps:
            self.record_eval()
        self.model.train()
        groups, spent = self.source.next_batch(self.rollout, self.config.prompts_per_step, hinted=self.hinted_rollout,
                                               logprobs=lambda rollouts: token_logprobs(self.model, rollouts))
        rl_groups, demos = self._gated(groups)
        train = rl_groups if self.downsample is None else rl_groups.keep_rows(
            self.downsample.keep_rollouts(rl_groups.advantages, rl_groups.sizes, self.clock))
        old, norms, sft_tokens = None, [], 0
        self._trained_tokens = 0
        for _ in range(self.config.epochs if len(train.items) or len(demos) else 1):
            self.optimizer.zero_grad(set_to_none=True)
            if len(train.items) or len(demos):  # an empty batch (nothing passed a filter) steps with no gradient
                loss = torch.zeros(())
                if len(train.items):
                    loss, logp = self.loss(train, old)
                    old = logp if old is None else old
                if len(demos):
                    sft, sft_tokens = self.sft_loss(demos)
                    loss = loss + self.gate.sft_coef * sft
                loss.backward()
                norms.append(grad_norms(self.model.parameters())[0])
            self.optimizer.step()
        self.history.step_grad_norm.append(sum(norms) / len(norms) if norms else None)
        self.history.step_sft_tokens.append(sft_tokens)
        self.clock.report(samples=spent, tokens=float(groups.lengths.sum()) + sft_tokens)
        self.scheduler.step()
        self._log(rl_groups, spent)
        step = int(self.clock.steps)
        if step % self.config.eval_every == 0 or step >= self.config.steps:
            self.record_eval()

    def _log(self, groups: Groups, spent: int) -> None:
        h, info = self.history, groups.informative
        h.step_rollouts.append(spent)
        h.step_groups.append(len(groups.items))
        h.step_informative.append(int(info.sum()))
        h.step_useful_rollouts.append(int(groups.sizes[info].sum()))
        h.step_reward.append(float(groups.rewards.mean()) if len(groups.rewards) else None)
        h.step_length.append(float(groups.lengths.mean()) if len(groups.lengths) else None)
        h.step_probabilities.append(self.source.policy.probabilities().tolist())
        h.step_source.append(dict(getattr(self.source, "values", dict)()))
        h.step_arm_groups.append(np.bincount(self.suite.arm_of[groups.items], minlength=len(self.suite.arm_names)).tolist())
        means = np.bincount(np.repeat(np.arange(len(groups.items)), groups.sizes), weights=groups.rewards,
                            minlength=len(groups.items)) / np.maximum(groups.sizes, 1)
        h.step_samples.append([[int(i), float(m)] for i, m in zip(groups.items, means)])
        h.step_trained_tokens.append(self._trained_tokens)

    def record_eval(self) -> Evaluation:
        """Evaluate on the eval set (pass@1 at the sampling temperature, greedy accuracy, length)
        and log it at the current step."""
        result = evaluate(self.model, self.suite, self.tokenizer, self.max_new_tokens, self.config.temperature)
        h = self.history
        h.eval_steps.append(int(self.clock.steps))
        h.eval_rollouts.append(h.rollouts)
        h.eval_accuracy.append(result.pass_at_1.tolist())
        h.eval_greedy.append(result.greedy.tolist())
        h.eval_length.append(result.length)
        return result

    def run(self, steps: int | None = None, on_step: Callable[[], None] | None = None,
            max_rollouts: int | None = None) -> History:
        """Run ``steps`` more steps (default: to the end of the budget).

        ``max_rollouts``: also stop once the run has generated that many rollouts (the equal-rollout
        comparison). A policy's pass@1 within that budget is its last evaluation there, so a step that
        may be the last one within it (the most rollouts a step has used so far would cross it) is
        evaluated too; evaluation draws nothing from the sampling generator, so the run is the same
        prefix as without the cap."""
        if max_rollouts is not None and (isinstance(max_rollouts, bool) or not isinstance(max_rollouts, int)
                                         or max_rollouts < 1):
            raise CadenceError(f"max_rollouts must be a positive integer, got {max_rollouts!r}")
        remaining = self.config.steps - int(self.clock.steps)
        h = self.history
        for _ in range(remaining if steps is None else min(steps, remaining)):
            self.step()
            if on_step is not None:
                on_step()
            if max_rollouts is None:
                continue
            near = h.rollouts + max(h.step_rollouts) > max_rollouts
            if h.rollouts <= max_rollouts and (near or h.rollouts == max_rollouts) \
                    and h.eval_steps[-1] != int(self.clock.steps):
                self.record_eval()
            if h.rollouts >= max_rollouts:
                break
        return self.history

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: model, optimizer, LR binding and clock, source,
        allocator, sampling RNG, history."""
        return {
            "kind": "cadence.rl.GRPOTrainer",
            "config": asdict(self.config),
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict(),
            "source": self.source.state_dict(),
            "allocator": self.allocator.state_dict(),
            "generator": self.generator.get_state(),
            "history": plain(asdict(self.history)),
            "gate": None if self.gate is None else self.gate.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; rejects state of another config, changing nothing."""
        if not isinstance(state, dict) or state.get("kind") != "cadence.rl.GRPOTrainer":
            raise StateError("not a GRPOTrainer state_dict (kind='cadence.rl.GRPOTrainer')")
        if state["config"] != asdict(self.config):
            raise StateError(f"state was saved for GRPOConfig {state['config']}, this trainer has {asdict(self.config)}")
        backup = self.state_dict()
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.source.load_state_dict(state["source"])
            self.allocator.load_state_dict(state["allocator"])
            self.generator.set_state(torch.as_tensor(np.asarray(state["generator"], dtype=np.uint8)))
            self.history = History(**copy.deepcopy(state["history"]))
            if self.gate is not None:
                self.gate.load_state_dict(state.get("gate"))
        except Exception:
            self._restore(backup)
            raise

    def _restore(self, backup: dict[str, Any]) -> None:
        self.model.load_state_dict(backup["model"])
        self.optimizer.load_state_dict(backup["optimizer"])
        self.scheduler.load_state_dict(backup["scheduler"])
        self.source.load_state_dict(backup["source"])
        self.allocator.load_state_dict(backup["allocator"])
        self.generator.set_state(backup["generator"])
        self.history = History(**backup["history"])
        if self.gate is not None:
            self.gate.load_state_dict(backup["gate"])
