"""Loss forecasting: fit a loss law on logged runs — the annealing law ``L = L0 + A·S1^(−α) − C·S2``
(default) or the multi-power law, whose credit for an LR drop saturates — predict the loss curve
of any schedule, and choose WSD parameters for a budget.

    >>> from cadence.forecast import AnnealingLaw
    >>> law = AnnealingLaw(L0=1.0, A=0.5, alpha=0.5, C=3.0, lam=0.95, lr_ref=1e-3, steps_ref=1000)
    >>> law.final_loss("wsd(peak=1e-3, decay=20%)", 1000) < law.final_loss("constant(1e-3)", 1000)
    True
"""

from cadence.forecast.fit import DEFAULT_LAMS, FitResult, FitTarget, fit_law
from cadence.forecast.law import AnnealingLaw, annealing_area, forward_area, lr_per_step, warmup_end
from cadence.forecast.laws import DEFAULT_LAW, LAWS, Law, law_from_dict
from cadence.forecast.multipower import MultiPowerLaw, loss_drop
from cadence.forecast.optimize import WSDChoice, optimize_wsd
from cadence.forecast.regime import ForecastWarning, Regime
from cadence.forecast.refine import refine_schedule
from cadence.forecast.runlog import COLUMNS, RunLog, RunLogError

__all__ = [
    "AnnealingLaw", "annealing_area", "forward_area", "lr_per_step", "warmup_end",
    "MultiPowerLaw", "loss_drop", "DEFAULT_LAW", "LAWS", "Law", "law_from_dict",
    "DEFAULT_LAMS", "FitResult", "FitTarget", "fit_law", "WSDChoice", "optimize_wsd",
    "COLUMNS", "RunLog", "RunLogError", "refine_schedule", "ForecastWarning", "Regime",
]
