"""Thin adapters that put a cadence regimen into host training frameworks.

* :mod:`cadence.integrations.hf` — Hugging Face ``Trainer`` (schedules, curriculum, checkpoints, logs).
* :mod:`cadence.integrations.trl` — TRL ``GRPOTrainer`` (prompt curricula in the repeat layout, reward feedback,
  length budgets for reward functions).
* :mod:`cadence.integrations.lightning` — a Lightning ``Callback``.
* :mod:`cadence.integrations.verl` — verl 0.9's v1 trainer (prompt dataset, replay buffer, optimizer loaded
  from verl's config; needs the ``verl`` extra, in an environment of its own).
* :mod:`cadence.integrations.verl_regimen` — the driver-side regimen those verl classes drive (draws,
  feedback, stages, the stage ends sent to the workers).
* :class:`RegimenLink` (in :mod:`cadence.regimen.link`) — the framework-free part they share.
* :mod:`cadence.integrations.jsonstate` — cadence state through JSON (for ``trainer_state.json``).

The adapters import their frameworks lazily; importing this package needs only torch.

    >>> from cadence.integrations import RegimenLink
    >>> RegimenLink(knobs={"kl": "constant(0.1)"}).values()["cadence/kl"]
    0.1
"""

from cadence.regimen.link import RegimenLink

__all__ = ["RegimenLink"]
