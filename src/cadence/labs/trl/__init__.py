"""The RL lab inside TRL: the lab's task suites as a Hugging Face workload (a ``datasets.Dataset`` of
prompts, a reward function scoring as ``TaskSuite.score``, a fast character tokenizer, a small Llama),
warm-started with HF's ``Trainer`` and trained with TRL's own ``GRPOTrainer``, alone and with
:func:`cadence.integrations.trl.attach` under each of the lab's prompt-selection policies.
``cadence bench trl`` runs it.

Modules: :mod:`~cadence.labs.trl.workload`, :mod:`~cadence.labs.trl.warmstart`,
:mod:`~cadence.labs.trl.experiment`, :mod:`~cadence.labs.trl.bench`. Importing this package needs
only the core; the modules import ``transformers``, ``trl`` and ``datasets`` when they run
(:func:`require_trl` checks they are installed).

    >>> EXTRAS[0]
    'trl'
"""

from __future__ import annotations

import importlib.util

from cadence.errors import CadenceError

EXTRAS = ("trl", "transformers", "datasets", "tokenizers")


def require_trl() -> None:
    """Raise a one-line :class:`CadenceError` naming the extra to install if TRL's stack is missing."""
    missing = [m for m in EXTRAS if importlib.util.find_spec(m) is None]
    if missing:
        raise CadenceError(f"the TRL lab needs {', '.join(missing)}: pip install \"cadence[trl]\"")
