"""The framework versions each adapter is tested with, and the checks its ``attach`` runs.

:data:`TESTED` holds, per framework, the oldest and newest release CI runs the adapters with (the
``pyproject.toml`` extras carry the same bounds). An adapter calls :func:`check_version` when it is
attached: an installed version outside the range warns once per framework and process
(:class:`UntestedVersionWarning`, naming the range). Adapters that wrap a framework's private methods
call :func:`check_methods` first: a method that is missing or takes other parameters is a
:class:`~cadence.errors.CadenceError` naming the method and the tested versions, before anything
is wrapped. Framework-free: versions are read from the installed distributions' metadata.

    >>> in_range("1.16.2", TESTED["trl"]), in_range("1.17.0", TESTED["trl"]), in_range("1.2.0", TESTED["trl"])
    (True, False, False)
    >>> class Host:
    ...     def step(self, batch): ...
    >>> check_methods(Host(), "trl", {"step": ("batch",)})          # as expected: nothing happens
    >>> check_methods(Host(), "trl", {"step": ("batch", "device")})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    cadence.errors.CadenceError: Host.step takes (batch), cadence's trl adapter wraps it as (batch, device); the adapter supports ...
"""

from __future__ import annotations

import importlib.metadata
import inspect
import re
import warnings
from typing import Any, Mapping, Sequence

from cadence.errors import CadenceError

TESTED: dict[str, tuple[str, str]] = {
    "transformers": ("5.17.0", "5.25"),
    "accelerate": ("1.4.0", "1.16"),
    "trl": ("1.3.0", "1.16"),
    "lightning": ("2.4.0", "2.6"),
    "ray": ("2.53.0", "2.60"),
    "verl": ("0.9.1", "0.9"),
}
"""``{framework: (oldest release tested, newest minor series tested)}``: a version is in range when it is
at least the oldest and its ``major.minor`` is at most the newest's (patch releases of the newest series
count as tested)."""

_warned: set[str] = set()


class UntestedVersionWarning(UserWarning):
    """An installed framework version outside the range cadence's adapters are tested with."""


def release(version: str) -> tuple[int, ...]:
    """The numeric release part of a version string (``"1.16.0rc1"`` → ``(1, 16, 0)``).

        >>> release("2.6.1.post0"), release("5.25.0.dev0")
        ((2, 6, 1), (5, 25, 0))
    """
    found = re.match(r"\s*v?(\d+(?:\.\d+)*)", str(version))
    if found is None:
        raise CadenceError(f"cannot read a release number from version {version!r}")
    return tuple(int(part) for part in found.group(1).split("."))


def in_range(version: str, tested: tuple[str, str]) -> bool:
    """Whether ``version`` lies in a :data:`TESTED` range."""
    oldest, newest = release(tested[0]), release(tested[1])
    got = release(version)
    return _padded(got, len(oldest)) >= oldest and got[:len(newest)] <= newest


def _padded(parts: tuple[int, ...], n: int) -> tuple[int, ...]:
    return parts + (0,) * max(0, n - len(parts))


def describe(framework: str) -> str:
    """The tested range in words, e.g. ``'trl 1.3.0 to 1.16.x'``."""
    oldest, newest = TESTED[framework]
    return f"{framework} {oldest} to {newest}.x"


def installed(framework: str) -> str | None:
    """The installed distribution's version, or ``None`` when it is not installed."""
    try:
        return importlib.metadata.version(framework)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_version(framework: str, version: str | None = None) -> bool:
    """Warn once (per framework and process) when ``framework``'s installed version (or ``version``)
    lies outside its tested range; returns whether it lies inside (an unknown version counts as inside)."""
    if framework not in TESTED:
        raise CadenceError(f"no tested range for {framework!r}; known: {sorted(TESTED)}")
    version = installed(framework) if version is None else version
    if version is None or in_range(version, TESTED[framework]):
        return True
    if framework not in _warned:
        _warned.add(framework)
        warnings.warn(f"{framework} {version} is outside the versions cadence's adapter is tested with "
                      f"({describe(framework)}); it may work, but a changed framework can break the adapter. "
                      f"Install a tested version to be safe", UntestedVersionWarning, stacklevel=3)
    return False


def check_methods(host: Any, framework: str, expected: Mapping[str, Sequence[str] | None]) -> None:
    """Check that ``host`` has each method an adapter wraps, with the parameters it calls it with.

    ``expected`` maps a method name to its parameter names after ``self`` (``None``: any parameters,
    the method is replaced rather than called). Raises :class:`~cadence.errors.CadenceError` naming
    the method, what was found and the tested versions, before the adapter changes anything.
    """
    owner = type(host).__name__
    supported = describe(framework) if framework in TESTED else framework
    version = installed(framework)
    here = f"installed: {framework} {version}" if version else f"{framework} is not installed as a distribution"
    for name, params in expected.items():
        method = getattr(host, name, None)
        if not callable(method):
            raise CadenceError(f"{owner} has no method {name}, which cadence's {framework} adapter wraps; the adapter "
                               f"supports {supported} ({here})")
        if params is None:
            continue
        try:
            found = tuple(inspect.signature(method).parameters)
        except (TypeError, ValueError):  # a builtin without a signature: nothing to compare
            continue
        if found != tuple(params):
            raise CadenceError(f"{owner}.{name} takes ({', '.join(found)}), cadence's {framework} adapter wraps it as "
                               f"({', '.join(params)}); the adapter supports {supported} ({here})")
