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
