"""The schedule commands: plot, show, gallery, and their errors."""

import subprocess
import sys

import pytest

from cadence.cli import main


def _png(path):
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_plot_draws_several_specs(tmp_path):
    out = tmp_path / "lr.png"
    assert main(["plot", "cosine(peak=3e-4)", "wsd(peak=3e-4, warmup=1%, decay=20%)", "--budget", "10000",
                 "-o", str(out)]) == 0
    assert _png(out)


def test_show_prints_values_at_chosen_points(capsys):
    assert main(["show", "wsd(peak=3e-4, warmup=1%, decay=20%, shape=1-sqrt, floor=0.1)", "--budget", "10000",
                 "--at", "0", "50%", "9000 steps", "100%"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "│" in line]
    values = [row.split("│")[3].strip() for row in rows]
    assert values == ["3e-05", "0.0003", "0.000109081", "3e-05"]


def test_show_in_tokens_uses_the_nominal_rate(capsys):
    assert main(["show", "wsd(peak=1, warmup=100 steps, decay=10%)", "--budget", "1M tokens",
                 "--tokens-per-step", "1000", "--at", "50K tokens"]) == 0
    assert "0.5" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["show", "cosine(peak=1"], "expected ','"),
        (["show", "wsd(warmup=60%, decay=50%)"], "longer than the budget"),
        (["show", "wsd(warmup=100 steps)", "--budget", "1M tokens"], "tokens_per_step"),
        (["plot", "cosine()", "--budget", "-4"], "budget"),
    ],
)
def test_errors_are_reported_without_a_traceback(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("cadence: error:") and fragment in err and "Traceback" not in err


def test_gallery_renders_every_shape(tmp_path, capsys):
    from cadence.plotting import GALLERY

    out = tmp_path / "gallery.png"
    assert main(["gallery", "-o", str(out)]) == 0
    assert _png(out)
    printed = capsys.readouterr().out
    assert all(title.split(" (")[0] in printed for title, _ in GALLERY)


def test_console_script_help():
    done = subprocess.run([sys.executable, "-m", "cadence", "--help"], capture_output=True, text=True, check=True)
    assert "plot" in done.stdout and "show" in done.stdout and "gallery" in done.stdout


def _walk(parser, name="cadence"):
    import argparse

    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                yield from _walk(p, f"{name} {sub}")


def test_help_examples_can_be_copied_no_escaped_percent():
    from cadence.cli import build_parser

    bad = {name: [line for line in p.format_help().splitlines() if "%%" in line] for name, p in _walk(build_parser())}
    assert {k: v for k, v in bad.items() if v} == {}


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["plot", "cosine(peak=1)", "-o", "/missing/dir/x.png"], "does not exist"),
        (["plot", "cosine(peak=1)", "-o", "x.xyz"], "unsupported format 'xyz'"),
        (["plot", "cosine(peak=1)", "-o", "noextension"], "no file extension"),
        (["plot", "cosine(peak=1)", "linear(peak=1)", "--label", "only-one"], "once per SPEC"),
        (["show", "cosine(peak=1)", "--points", "0"], "--points"),
        (["show", "cosine(peak=1)", "--points", "1"], "--points"),
        (["gallery", "-o", "/missing/dir/g.png"], "does not exist"),
        (["plot-curriculum", "log.jsonl", "-o", "arms.xyz"], "unsupported format"),
    ],
)
def test_bad_outputs_and_arguments_are_one_line_errors(argv, fragment, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("cadence") and ": error:" in err and fragment in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_check_on_a_binary_file_exits_2_not_1(tmp_path, capsys):
    png = tmp_path / "some.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00binary")
    assert main(["check", str(png)]) == 2
    assert "not a text file" in capsys.readouterr().err


def test_any_crash_is_one_line_and_exit_2(monkeypatch, capsys):
    import cadence.cli.schedules as schedules

    def boom(_):
        raise RuntimeError("unexpected")
    monkeypatch.setattr(schedules, "parse", boom)
    assert main(["show", "cosine(peak=1)"]) == 2
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: unexpected" in err and "Traceback" not in err
    monkeypatch.setenv("CADENCE_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["show", "cosine(peak=1)"])


def test_os_errors_are_one_line(monkeypatch, capsys):
    import cadence.cli.schedules as schedules

    def denied(_):
        raise PermissionError(13, "Permission denied", "/x/lr.png")
    monkeypatch.setattr(schedules, "parse", denied)
    assert main(["show", "cosine(peak=1)"]) == 2
    assert capsys.readouterr().err.strip() == "cadence: error: cannot access '/x/lr.png': Permission denied"


@pytest.mark.parametrize("budget, steps", [("100", 100), ("2.5", 2.5), ("1e4", 10_000), ("250 steps", 250)])
def test_a_bare_budget_is_a_number_of_steps(budget, steps, capsys):
    assert main(["show", "linear(peak=1)", "--budget", budget, "--at", "100%"]) == 0
    assert f"{steps:,.6g}" in capsys.readouterr().out


@pytest.mark.parametrize("budget", ["-100", "0", "nan", "inf", "-100 steps", "50%"])
def test_bad_budgets_state_the_one_rule(budget, capsys):
    from cadence.clock import BUDGET_RULE

    assert main(["show", "linear(peak=1)", f"--budget={budget}"]) == 2
    err = capsys.readouterr().err
    assert BUDGET_RULE in err and "fraction of the budget" not in err


def test_budget_help_states_the_same_rule():
    from cadence.cli import build_parser
    from cadence.clock import BUDGET_RULE

    helps = dict(_walk(build_parser()))
    for cmd in ("cadence show", "cadence plot"):
        assert " ".join(BUDGET_RULE.split()) in " ".join(helps[cmd].format_help().split())


def test_a_duration_error_never_suggests_an_invalid_fix():
    from cadence.clock import Duration
    from cadence.errors import BudgetError

    with pytest.raises(BudgetError) as e:
        Duration.parse(-100)
    assert "-100 steps" not in str(e.value)
    with pytest.raises(BudgetError, match="'5 steps'"):
        Duration.parse(5.0)


def test_show_echoes_the_full_spec_with_defaults(capsys):
    assert main(["show", "wsd(peak=3e-4, warmup=1%)", "--points", "2"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "wsd(peak=0.0003, warmup=1%, decay=20%, shape=1-sqrt, floor=0, warmup_shape=linear)"


def test_full_specs_parse_back_to_the_same_schedule():
    from cadence.plotting import GALLERY
    from cadence.spec import parse, to_spec

    for _, spec in GALLERY:
        s = parse(spec)
        assert parse(to_spec(s, defaults=True)) == s
        assert len(to_spec(s, defaults=True)) >= len(to_spec(s))


def test_gallery_prints_the_spec_behind_each_panel(tmp_path, capsys):
    from cadence.plotting import GALLERY

    assert main(["gallery", "-o", str(tmp_path / "g.png")]) == 0
    printed = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert all(spec.split("(")[0] + "(" in printed for _, spec in GALLERY)
    assert "multistep(peak=1, at=[50%, 75%], gamma=0.3)" in printed


def test_help_imports_no_heavy_module():
    code = ("import sys; from cadence.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'numpy', 'scipy', 'matplotlib', 'cadence.labs', 'yaml') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_forecast_command_names_the_laws_it_can_fit():
    from cadence.cli.forecast import LAW_NAMES
    from cadence.forecast import DEFAULT_LAW, LAWS

    assert LAW_NAMES == tuple(sorted(LAWS)) and LAW_NAMES[0] == DEFAULT_LAW
    from cadence.cli.forecast import CURVE_SETS, FIT_CHOICES
    from cadence.forecast.fit import CHOICES
    from cadence.forecast.published import SHIPPED
    assert FIT_CHOICES == CHOICES and CURVE_SETS == tuple(SHIPPED)
