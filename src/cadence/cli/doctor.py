"""``cadence check REGIMEN``: the regimen doctor (:mod:`cadence.doctor`) on a YAML/JSON file.

Exit code: 0 when there are no warnings (notes may be printed), 1 when there is at least one
warning, 2 when the file cannot be read or a field is malformed (or on any other error).

    cadence check regimen.yaml
    cadence check regimen.yaml --json
"""

from __future__ import annotations

import argparse
from typing import Any


def _check(args: argparse.Namespace) -> int:
    from cadence.cli import console as cli_console
    from cadence.cli.regimen import check
    from cadence.doctor import findings_json

    findings = check(args.regimen)
    warnings = sum(f.severity == "warning" for f in findings)
    if args.json:
        print(findings_json(findings))
        return 1 if warnings else 0
    console = cli_console(highlight=False)
    for f in findings:
        style = "bold yellow" if f.severity == "warning" else "bold cyan"
        console.print(f"[{style}]{f.severity}[/] [bold]{f.code}[/]: {f.message}")
        console.print(f"  why: {f.reason}")
        console.print(f"  fix: {f.fix}")
    notes = len(findings) - warnings
    console.print(f"{args.regimen}: {warnings} warning(s), {notes} note(s)" if findings else f"{args.regimen}: no problems found")
    return 1 if warnings else 0


def register(subparsers: Any) -> None:
    """Add ``cadence check``."""
    p = subparsers.add_parser(
        "check", help="check a regimen file for documented LR / curriculum / budget conflicts",
        description="Warn about conflicts in a run's regimen (YAML/JSON; format in docs/doctor.md): full LR decay "
                    "under a quality-ascending curriculum, re-warming without replay, a cooldown longer than the "
                    "budget left, fraction-of-budget durations in an open-ended run; the stages' schedules fit their stages. "
                    "The file is a regimen file (docs/regimen.md; the doctor's older format is a subset). "
                    "Exit code 0: no warnings; "
                    "1: warnings; 2: unreadable or malformed file.")
    p.add_argument("regimen", help="the regimen file (.yaml, .yml or .json)")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(func=_check)
