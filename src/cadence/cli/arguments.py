"""Checks every command applies to its arguments before any work: numbers in range, output paths.

Each check is an ``argparse`` type, so a bad value ends in one line (``cadence demo: error: argument
--seed: ...``) and exit code 2 while the command line is read, before anything runs. The output-path
checks are also plain functions raising :class:`CadenceError` with one wording everywhere:

* ``cannot write to 'x.png': the folder 'out' does not exist``
* ``cannot write to 'out': 'out' is a folder, not a file`` / ``... is a file, not a folder``

    >>> import argparse
    >>> p = argparse.ArgumentParser()
    >>> _ = p.add_argument("--seed", type=whole(0), default=0)
    >>> p.parse_args(["--seed", "3"]).seed
    3
    >>> output_file("/no/such/folder/x.png")
    Traceback (most recent call last):
    cadence.errors.CadenceError: cannot write to '/no/such/folder/x.png': the folder '/no/such/folder' does not exist
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any, Callable

from cadence.errors import CadenceError

__all__ = ["whole", "number", "duration", "output_file", "output_image", "output_folder", "file_arg", "image_arg",
           "folder_arg", "add_size_option", "SIZES", "MAX_POINTS", "MAX_STEPS"]

SIZES = ("tiny", "default")
"""``--size`` of every benchmark and lab command: ``tiny`` (seconds, a smoke test) or ``default``."""
MAX_POINTS = 10_000
"""The most rows ``cadence show --points`` prints."""
MAX_STEPS = 10_000_000
"""The longest run (in steps) a forecast predicts: longer runs take minutes per prediction."""


def whole(minimum: int = 0, maximum: int | None = None) -> Callable[[str], int]:
    """An ``argparse`` type: a whole number ``>= minimum`` (and ``<= maximum``)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"needs a whole number, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum:,}"
            raise argparse.ArgumentTypeError(f"needs a whole number {bound}, got {text}")
        return value
    parse.__name__ = "whole number"
    return parse


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False) -> Callable[[str], float]:
    """An ``argparse`` type: a finite number in ``[low, high]`` (``low_open``/``high_open``: excluded)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"needs a number, got {text!r}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if not math.isfinite(value) or too_low or too_high:
            raise argparse.ArgumentTypeError(f"needs a finite number {_range(low, high, low_open, high_open)}, "
                                             f"got {text}")
        return value
    parse.__name__ = "number"
    return parse


def duration(text: str) -> str:
    """An ``argparse`` type: a duration such as ``'2%'`` or ``'50 steps'`` (kept as text)."""
    from cadence.clock import Duration

    try:
        Duration.parse(text)
    except CadenceError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _range(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if high is None:
        return f"{'>' if low_open else '>='} {low:g}" if low is not None else ""
    if low is None:
        return f"{'<' if high_open else '<='} {high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def _writable_folder(path: Path, target: Path) -> None:
    """The nearest existing folder at or above ``path`` is a writable folder (else a CadenceError)."""
    here = path
    while not here.exists():
        if here.parent == here:
            break
        here = here.parent
    if here.exists() and not here.is_dir():
        raise CadenceError(f"cannot write to {str(target)!r}: {str(here)!r} is a file, not a folder")
    if not os.access(here, os.W_OK | os.X_OK):
        raise CadenceError(f"cannot write to {str(target)!r}: the folder {str(here)!r} is not writable")


def output_file(path: str | Path) -> Path:
    """A file the command will write: not a folder, in a folder that exists and is writable."""
    out = Path(path)
    if out.is_dir():
        raise CadenceError(f"cannot write to {str(out)!r}: {str(out)!r} is a folder, not a file")
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise CadenceError(f"cannot write to {str(out)!r}: {str(parent)!r} is a file, not a folder")
    if not parent.is_dir():
        raise CadenceError(f"cannot write to {str(out)!r}: the folder {str(parent)!r} does not exist")
    if (out.exists() and not os.access(out, os.W_OK)) or not os.access(parent, os.W_OK | os.X_OK):
        raise CadenceError(f"cannot write to {str(out)!r}: permission denied")
    return out


def output_image(path: str | Path) -> Path:
    """:func:`output_file`, in a format matplotlib writes (named by the extension)."""
    from matplotlib.backend_bases import FigureCanvasBase

    out = Path(path)
    if out.is_dir():
        return output_file(out)  # the folder message
    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = out.suffix.lower().lstrip(".")
    if suffix not in formats:
        raise CadenceError(f"cannot write an image to {str(out)!r}: " + (f"unsupported format {suffix!r}" if suffix
                           else "no file extension") + f"; use one of {', '.join(sorted(formats))}")
    return output_file(out)


def output_folder(path: str | Path) -> Path:
    """A folder the command will create (with its parents) or write into: not a file, creatable."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise CadenceError(f"cannot write to {str(out)!r}: {str(out)!r} is a file, not a folder")
    _writable_folder(out, out)
    return out


def _as_type(check: Callable[[str], Path], name: str) -> Callable[[str], Path]:
    def parse(text: str) -> Path:
        try:
            return check(text)
        except CadenceError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = name
    return parse


file_arg = _as_type(output_file, "output file")
"""``argparse`` type of an output file (:func:`output_file`)."""
image_arg = _as_type(output_image, "output image")
"""``argparse`` type of an output image (:func:`output_image`)."""
folder_arg = _as_type(output_folder, "output folder")
"""``argparse`` type of an output folder (:func:`output_folder`)."""


def _size(text: str) -> str:
    return "default" if text == "small" else text  # 'small': the old name of 'default', still accepted


def add_size_option(parser: argparse.ArgumentParser, help: str, **kwargs: Any) -> None:
    """``--size {tiny,default}`` (default ``default``; ``small`` is read as ``default``)."""
    parser.add_argument("--size", type=_size, choices=SIZES, default="default", help=help, **kwargs)
