"""A separate Python process that runs forecast fits, so a fit never holds the training process's GIL.

:class:`FitWorker` starts ``python -m cadence.forecast.worker`` on first use and sends it calls of
:func:`~cadence.forecast.live.forecast_final` as pickled plain data over its stdin; the answer comes
back over its stdout. A fresh interpreter (not ``multiprocessing``'s fork or spawn) is used on
purpose: it never re-runs the user's training script, which ``spawn`` would import again as
``__main__`` (a script without an ``if __name__ == "__main__":`` guard would train twice), and it
inherits no torch threads. It runs at a lower CPU priority (:data:`NICE` more than the training
process) and in its own session: a Ctrl-C in the terminal reaches the training process alone (no
second traceback). Where Linux shares CPU time between sessions (autogroup scheduling; a nice value
then orders processes only inside their session), the worker's session competes like any other:
on a machine without a free core the fit takes one session's share of the CPU, not the training
session's. (Giving the session the lowest priority too was tried and rejected: on an
oversubscribed machine the fit then did not finish in minutes.) The worker ends when its stdin
closes (:meth:`FitWorker.close`, the worker's garbage collection, or the parent's exit).

    >>> import numpy as np
    >>> from cadence.forecast import AnnealingLaw, lr_per_step
    >>> truth = AnnealingLaw(L0=1.2, A=0.6, alpha=0.4, C=0.5, lam=0.95, lr_ref=1e-3, steps_ref=600)
    >>> lr = lr_per_step("warmup(cosine(peak=1e-3, floor=0.1), 30 steps)", 600)
    >>> seen = np.arange(10, 301, 10)
    >>> worker = FitWorker()
    >>> f = worker.forecast(seen, truth.predict(lr, seen), lr, lams=(0.95,))
    >>> bool(abs(f.final_loss / truth.predict(lr)[-1] - 1) < 1e-3), worker.pid != os.getpid()
    (True, True)
    >>> worker.close()
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import weakref
from typing import Any

from cadence.errors import CadenceError

__all__ = ["FitWorker", "NICE"]

NICE = 10
"""How much lower the worker's CPU priority is than the training process's (``os.nice`` increment)."""


class FitWorker:
    """A lazily started worker process for forecast fits; one call at a time (not thread-safe)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._finalizer: Any = None

    @property
    def pid(self) -> int | None:
        """The worker process's id (``None`` before the first call)."""
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if isinstance(p, str) and p))
            self._proc = subprocess.Popen([sys.executable, "-m", "cadence.forecast.worker"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, env=env, start_new_session=True)
            self._finalizer = weakref.finalize(self, _stop, self._proc)
        return self._proc

    def forecast(self, *args: Any, **kwargs: Any) -> Any:
        """:func:`~cadence.forecast.live.forecast_final` ``(*args, **kwargs)``, run in the worker.
        Raises what it raises (:class:`CadenceError` for a log it cannot forecast from), and
        :class:`CadenceError` when the worker process has died (the next call starts a new one)."""
        proc = self._start()
        try:
            pickle.dump((args, kwargs), proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            proc.stdin.flush()
            ok, value = pickle.load(proc.stdout)
        except (OSError, EOFError, pickle.UnpicklingError) as e:
            self.close()
            raise CadenceError(f"the forecast worker process ended unexpectedly ({type(e).__name__})") from None
        if ok:
            return value
        raise value

    def close(self) -> None:
        """End the worker process (a later call starts a new one)."""
        if self._finalizer is not None:
            self._finalizer()
        self._proc = None


def _stop(proc: subprocess.Popen) -> None:
    try:
        proc.stdin.close()  # the worker ends at the end of its input
        proc.wait(timeout=5)
    except Exception:  # already gone, or a fit still running at exit: do not wait for it
        proc.kill()


def main() -> None:
    """The worker's loop: read ``(args, kwargs)``, answer ``(True, forecast)`` or ``(False, error)``."""
    try:
        os.nice(NICE)
    except (AttributeError, OSError):  # no nice on this platform: run at the training's priority
        pass
    source = sys.stdin.buffer
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints go to stderr, not into the answers
    from cadence.forecast.live import forecast_final

    while True:
        try:
            args, kwargs = pickle.load(source)
        except EOFError:
            return
        try:
            answer = (True, forecast_final(*args, **kwargs))
        except CadenceError as e:
            answer = (False, e)
        except Exception as e:  # an unexpected failure reaches the caller as a clear error
            answer = (False, CadenceError(f"the forecast fit failed: {type(e).__name__}: {e}"))
        pickle.dump(answer, answers, protocol=pickle.HIGHEST_PROTOCOL)
        answers.flush()


if __name__ == "__main__":
    main()
