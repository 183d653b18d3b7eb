"""Bad command lines: one line on stderr, exit 2, before any work starts (issue 22, "Done when").

Every command's expensive entry point is replaced by a recorder: a bad command line must be refused
before it is reached, and print nothing on stdout.
"""

import re

import numpy as np
import pytest

from cadence.cli import main

WORK = [  # (module, attribute): where each command's work starts
    ("cadence.labs.rl.demo", "run_with_progress"),
    ("cadence.labs.rl.bench", "bench_curricula"),
    ("cadence.labs.rl.bench", "bench_length"),
    ("cadence.labs.rl.bench", "bench_allocation"),
    ("cadence.labs.pretrain.bench", "forecast_benchmark"),
    ("cadence.forecast.published", "published_benchmark"),
    ("cadence.forecast", "fit_law"),
    ("cadence.forecast.refine", "refine_schedule"),
    ("cadence.labs.pretrain.tree_bench", "run_tree_benchmark"),
    ("cadence.labs.pretrain.tree_bench", "run_codesign"),
    ("cadence.labs.pretrain.pbt_bench", "run_pbt_benchmark"),
    ("cadence.doctor", "diagnose"),
    ("cadence.curricula.plot", "plot_curriculum"),
    ("cadence.plotting", "plot_schedules"),
    ("cadence.plotting", "gallery"),
]

M = "/missing/dir"
FIT = ["forecast", "--fit", "run.csv"]
REFINE = ["forecast", "--refine", "run.csv", "--peak", "1e-3"]
BAD = [
    # output locations (checked before the work, one wording)
    (["demo", "-o", "afile"], "is a file, not a folder"),
    (["demo", "--quick", "-o", "afile/sub"], "is a file, not a folder"),
    (["bench", "forecast", "-o", f"{M}/x.png"], "does not exist"),
    (["bench", "forecast", "--size", "tiny", "-o", "adir"], "is a folder, not a file"),
    (["bench", "forecast", "-o", "x.xyz"], "unsupported format"),
    (["bench", "forecast", "--curves", "multipower-25m", "-o", f"{M}/x.png"], "does not exist"),
    (["bench", "forecast", "--log-dir", "afile"], "is a file, not a folder"),
    ([*FIT, "-o", f"{M}/x.png"], "does not exist"),
    ([*FIT, "-o", "afile/x.png"], "is a file, not a folder"),
    ([*FIT, "--save", f"{M}/law.json"], "does not exist"),
    ([*FIT, "--save", "adir"], "is a folder, not a file"),
    ([*REFINE, "-o", f"{M}/x.png"], "does not exist"),
    (["bench", "tree", "-o", f"{M}/x.png"], "does not exist"),
    (["bench", "tree", "--output", "x.xyz"], "unsupported format"),
    (["bench", "tree", "--lineage", f"{M}/x.json"], "does not exist"),
    (["bench", "pbt", "-o", f"{M}/x.png"], "does not exist"),
    (["bench", "pbt", "--output", "adir"], "is a folder, not a file"),
    (["plot", "cosine(peak=1)", "-o", "adir"], "is a folder, not a file"),
    (["plot", "cosine(peak=1)", "-o", f"{M}/x.png"], "does not exist"),
    (["gallery", "-o", "x.xyz"], "unsupported format"),
    (["plot-curriculum", "log.jsonl", "-o", f"{M}/a.png"], "does not exist"),
    # arguments
    (["demo", "--seed", "-1"], "--seed"),
    (["demo", "--seed", "abc"], "--seed"),
    (["demo", "--steps", "-5"], "--steps"),
    (["demo", "--steps", "0"], "--steps"),
    (["demo", "--workers", "0"], "--workers"),
    (["demo", "--target", "1.5"], "--target"),
    (["demo", "--target", "0"], "--target"),
    (["demo", "--target", "nan"], "--target"),
    (["demo", "--levels", "0"], "--levels"),
    (["demo", "--families", ","], "--families"),
    (["demo", "--policies", "uniform,nope"], "nope"),
    (["demo", "--size", "huge"], "--size"),
    (["bench", "rl", "--seeds", "0"], "--seeds"),
    (["bench", "rl", "--steps", "-5"], "--steps"),
    (["bench", "rl", "--workers", "0"], "--workers"),
    (["bench", "rl", "--experiment", "nope"], "--experiment"),
    (["bench", "rl", "--quick", "--policies", ""], "--policies"),
    (["bench", "rl", "-o", f"{M}/rl.png"], "does not exist"),
    (["bench", "rl", "-o", "rl.xyz"], "unsupported format"),
    (["bench", "rl", "--first-seed", "-1"], "--first-seed"),
    (["bench", "rl", "--experiment", "length", "-o", "rl.png"], "-o apply to --experiment curricula alone, not length"),
    (["bench", "rl", "--experiment", "hpt", "--first-seed", "2"], "curricula alone, not hpt"),
    (["bench", "rl", "--experiment", "limr", "--from-records", "a.json"], "curricula alone, not limr"),
    (["bench", "rl", "--from-records", "/no/such/run.json"], "no such file"),
    (["bench", "rl", "--from-records", "afile"], "cannot read bench rl records"),
    (["bench", "rl", "--from-records", "a.json", "--policies", "uniform,dump"], "trains nothing: drop --policies"),
    (["bench", "rl", "--from-records", "a.json", "--first-seed", "1"], "trains nothing: drop --first-seed"),
    (["bench", "rl", "--from-records", "a.json", "--quick"], "trains nothing: drop --size"),
    (["bench", "tree", "--seed", "-1"], "--seed"),
    (["bench", "tree", "--base", "0"], "--base"),
    (["bench", "tree", "--decay", "1.5"], "--decay"),
    (["bench", "tree", "--decay", "0"], "--decay"),
    (["bench", "tree", "--peak", "0"], "--peak"),
    (["bench", "tree", "--warmup", "-1"], "--warmup"),
    (["bench", "tree", "--cosine-floor", "-0.1"], "--cosine-floor"),
    (["bench", "tree", "--size", "huge"], "--size"),
    (["bench", "codesign", "--seeds", "0"], "--seeds"),
    (["bench", "codesign", "--steps", "0"], "--steps"),
    (["bench", "codesign", "--tail", "0"], "--tail"),
    (["bench", "codesign", "--tail-span", "2"], "--tail-span"),
    (["bench", "codesign", "--moderate-floor", "-1"], "--moderate-floor"),
    (["bench", "codesign", "--peak", "-1"], "--peak"),
    (["bench", "pbt", "--seeds", "0"], "--seeds"),
    (["bench", "pbt", "--steps", "0"], "--steps"),
    (["bench", "pbt", "--peak", "-1"], "--peak"),
    (["bench", "pbt", "--glide", "two"], "--glide"),
    (["bench", "forecast", "--seed", "-1"], "--seed"),
    (["bench", "forecast", "--threads", "0"], "--threads"),
    (["bench", "forecast", "--steps", "0"], "--steps"),
    (["bench", "forecast", "--peak", "0"], "--peak"),
    (["bench", "forecast", "--warmup", "-1"], "--warmup"),
    (["bench", "forecast", "--eval-every", "0"], "--eval-every"),
    (["bench", "forecast", "--skip", "1.5"], "--skip"),
    (["bench", "forecast", "--lam", "2"], "--lam"),
    (["bench", "forecast", "--val-quality", "2"], "--val-quality"),
    (["bench", "forecast", "--curves", "no-such-set"], "no-such-set"),
    (["bench", "forecast", "--law", "nope"], "--law"),
    ([*FIT, "--steps", "0"], "--steps"),
    ([*FIT, "--steps", "1000000000000"], "--steps"),
    ([*FIT, "--skip", "-0.1"], "--skip"),
    ([*FIT, "--delta", "0"], "--delta"),
    ([*FIT, "--lam", "2"], "--lam"),
    ([*FIT, "--schedule", "cosine(peak="], "expected"),
    ([*FIT, "--optimize-wsd", "--warmup", "200%"], "warmup"),
    (["forecast", "--fit", "missing.csv"], "missing.csv"),
    (["forecast", "--refine", "run.csv"], "--peak"),
    (["forecast", "--refine", "run.csv", "--peak", "-1"], "--peak"),
    ([*REFINE, "--width", "0"], "--width"),
    ([*REFINE, "--points", "1"], "--points"),
    (["show", "wsd(peak=1, decay=20%)", "--tokens-per-step", "-4096"], "--tokens-per-step"),
    (["show", "wsd(peak=1, decay=20%)", "--tokens-per-step", "0"], "--tokens-per-step"),
    (["show", "wsd(peak=1, decay=20%)", "--samples-per-step", "-1"], "--samples-per-step"),
    (["show", "cosine(peak=1)", "--points", "100000000"], "--points"),
    (["show", "cosine(peak=1", ], "expected"),
    (["show", "cosine(peak=1)", "--budget", "0"], "budget"),
    (["plot"], "SPEC"),
    (["check", "empty.yaml"], "empty"),
    (["check", "some.csv"], ".yaml"),
]


@pytest.fixture
def workplace(tmp_path, monkeypatch):
    """A folder with a file, a folder and valid inputs; every command's work replaced by a recorder."""
    import importlib

    from cadence.forecast import RunLog

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    steps = np.arange(1, 201)
    RunLog(steps, np.full(200, 1e-3), loss=3.0 / np.sqrt(steps), grad_norm=np.ones(200)).write("run.csv")
    (tmp_path / "log.jsonl").write_text("")
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "some.csv").write_text("a,b\n1,2\n")
    started = []
    for module, name in WORK:
        def record(*args, _name=f"{module}.{name}", **kwargs):
            started.append(_name)
            raise RuntimeError(f"work started: {_name}")
        monkeypatch.setattr(importlib.import_module(module), name, record)
    return started


@pytest.mark.parametrize("argv, fragment", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_command_line_is_one_line_and_exit_2_before_any_work(argv, fragment, workplace, capsys, tmp_path):
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(argv)
    out, err = capsys.readouterr()
    assert workplace == [], f"work started before the command line was refused: {workplace}"
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 or (len(lines) == 3 and lines[2].strip() == "^"), err  # a spec error shows where
    assert "internal error" not in err and "Traceback" not in err
    assert fragment in err, err
    assert out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_help_exits_0_in_process(capsys):
    assert main(["bench", "tree", "--help"]) == 0
    assert "usage:" in capsys.readouterr().out


def _commands():
    import argparse

    from cadence.cli import build_parser

    def walk(parser, name):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield name, parser
        for action in subs:
            for sub, p in action.choices.items():
                yield from walk(p, f"{name} {sub}")
    return list(walk(build_parser(), "cadence"))


def test_every_command_follows_the_help_conventions():
    """A description in plain text (no reStructuredText), ``--size {tiny,default}``, ``-o`` = ``--output``."""
    commands = _commands()
    assert len(commands) >= 12
    for name, parser in commands:
        assert parser.description, f"{name} has no description"
        text = parser.format_help()
        assert "``" not in text and "**" not in text and ":class:" not in text, f"{name}: reStructuredText in --help"
        for action in parser._actions:
            if "--size" in action.option_strings:
                assert tuple(action.choices) == ("tiny", "default"), name
            if "-o" in action.option_strings:
                assert action.option_strings == ["-o", "--output"], name


def test_the_old_size_name_small_still_means_default():
    from cadence.cli import build_parser

    assert build_parser().parse_args(["bench", "tree", "--size", "small"]).size == "default"


def test_a_one_seed_interval_prints_n_a():
    """``bench pbt --seeds 1`` printed ``[0.8820, 0.8820]``, an interval one seed cannot give."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from cadence.cli.pbt import print_pbt_benchmark
    from cadence.labs.pretrain.pbt_bench import METHODS

    def bench(seeds):
        losses = {m: np.linspace(3.0, 3.1, seeds) * (1 + 0.01 * i) for i, m in enumerate(METHODS)}
        return SimpleNamespace(specs=["s"] * seeds, forecast_specs=["w"] * seeds, size="tiny", steps=16,
                               losses=losses, seconds=1.0,
                               ratios=lambda m: (0.99, 0.97, 1.01))
    for seeds, shown in ((1, "(interval n/a: 1 seed)"), (2, "[0.9700, 1.0100]")):
        out = io.StringIO()
        print_pbt_benchmark(bench(seeds), Console(file=out, width=300))
        assert out.getvalue().count(shown) == len(METHODS)


def test_timing_claims_are_measured_figures_with_the_machine():
    """The README said 'about 2 minutes' for a suite measured at 7 on 2 busy cores; each timing claim
    now names what was measured and on which machine."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = " ".join((root / "README.md").read_text().split())
    assert "about 2 minutes" not in readme and "5.5 minutes of CPU time" not in readme
    suite_claim = re.search(r"Run the whole test suite \(measured (\w+ \d{4}) after the install, on this "
                            r"project's 2-core machine: ([\d.]+)–([\d.]+) minutes of wall time", readme)
    assert suite_claim, "the README's suite timing must name when, on which machine, and a range of minutes"
    assert 0 < float(suite_claim.group(2)) < float(suite_claim.group(3)) <= 15, suite_claim.group(0)
    assert "5.3 minutes of CPU time, user + sys, on 2 cores shared with other jobs at a load average of 13" in readme
    forecast = " ".join((root / "docs" / "forecast.md").read_text().split())
    assert "~15 s" not in forecast and "8–9 s of CPU time (two runs" in forecast and "17 s at a load of 6" in forecast
    ray = " ".join((root / "docs" / "integrations" / "ray-tune.md").read_text().split())
    assert "about a minute" not in ray and "106 s of wall time on 2 cores shared with other jobs" in ray
