"""`cadence demo` and `cadence bench rl` at the tiny size (CI runs the main job end to end)."""

import argparse
import json

import numpy as np
import pytest

from cadence.cli import build_parser, main
from cadence.cli import bench_subcommands
from cadence.labs.rl.bench import interval, ratio_rows
from cadence.labs.rl.experiment import SIZES, compare, first_reach
from cadence.labs.rl.grpo import History


def test_quick_demo_writes_its_report(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["demo", "--quick", "-o", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    for name in ("uniform", "DUMP", "SEC", "pass-rate filter", "steps to target", "rollouts to target", "add/1"):
        assert name in printed
    out = tmp_path / "out"
    report = (out / "report.md").read_text()
    assert "![accuracy](accuracy.png)" in report and "| sort/2 |" in report
    for png in ("accuracy.png", "arm_probabilities.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    data = json.loads((out / "results.json").read_text())
    lab = SIZES["tiny"]
    assert set(data["histories"]) == set(lab.policies)
    for h in data["histories"].values():
        assert len(h["step_rollouts"]) == lab.grpo.steps
        assert h["eval_steps"][0] == 0 and h["eval_steps"][-1] == lab.grpo.steps
        # every policy trains on the same number of prompts per step, from the same start
        assert h["eval_accuracy"][0] == data["warm_accuracy"]
    uniform = data["histories"]["uniform"]
    assert sum(uniform["step_rollouts"]) == lab.grpo.steps * lab.grpo.prompts_per_step * lab.grpo.group


def test_bench_prints_ratios_with_intervals(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["bench", "rl", "--quick", "--seeds", "2", "--steps", "2", "--target", "0.01"]) == 0
    printed = capsys.readouterr().out
    assert "steps ratio" in printed and "2 seeds" in printed
    assert printed.count("/2") >= 4        # "reached target" column, one per policy


def test_bench_rejects_bad_arguments(capsys):
    assert main(["bench", "rl", "--quick", "--seeds", "0"]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(["demo", "--quick", "--target", "1.5"]) == 2


def test_first_reach_and_ratio_intervals():
    h = History(eval_steps=[0, 5, 10], eval_rollouts=[0, 80, 160], eval_accuracy=[[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])
    assert first_reach(h, 0.35) == (5, 80)
    assert first_reach(h, 0.9) == (None, None)
    mean, low, high = interval(np.array([0.5, 0.6, 0.4, 0.55]))
    assert low < mean < high and 0.4 < mean < 0.6
    assert interval(np.array([2.0])) == (2.0, 2.0, 2.0)


def test_ratio_rows_are_relative_to_uniform_on_the_same_seed():
    lab = SIZES["tiny"]
    c = compare(lab.__class__(suite=lab.suite, warm=lab.warm, grpo=lab.grpo.__class__(steps=2, prompts_per_step=2,
                                                                                      group=2, eval_every=1),
                              policies=("uniform", "dump"), target=0.0), seed=0)
    rows = ratio_rows([c])
    assert [r.policy for r in rows] == ["uniform", "dump"]
    assert rows[0].steps_ratio == (1.0, 1.0, 1.0) and rows[0].reached == 1


def test_bench_group_is_shared_with_other_modules():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    other = bench_subcommands(sub).add_parser("forecast")
    other.set_defaults(func=lambda a: "forecast")
    from cadence.cli import rl

    rl.register(sub)
    assert bench_subcommands(sub) is bench_subcommands(sub)
    assert parser.parse_args(["bench", "forecast"]).func(None) == "forecast"
    assert parser.parse_args(["bench", "rl", "--seeds", "4"]).seeds == 4
    assert "demo" in build_parser().format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "nope"])


def test_policies_trained_in_worker_processes_give_the_same_result():
    lab = SIZES["tiny"]
    small = lab.__class__(suite=lab.suite, warm=lab.warm, grpo=lab.grpo.__class__(steps=1, prompts_per_step=2, group=2,
                                                                                 eval_every=1),
                          policies=("uniform", "pass_rate"))
    ticks = []
    one, two = compare(small, seed=1), compare(small, seed=1, workers=2, on_step=ticks.append)
    assert one.histories == two.histories
    assert sorted(ticks) == ["pass_rate", "uniform"]


def test_default_target_is_uniforms_best_and_needs_uniform():
    from cadence.errors import CadenceError
    from cadence.labs.rl.experiment import LabConfig

    lab = SIZES["tiny"]
    small = lab.grpo.__class__(steps=3, prompts_per_step=2, group=2, eval_every=1)
    c = compare(LabConfig(suite=lab.suite, warm=lab.warm, grpo=small, policies=("uniform", "sec")), seed=0)
    best = max(np.mean(a) for a in c.histories["uniform"].eval_accuracy)
    assert c.target == best
    steps, _ = c.reach("uniform")
    assert steps is not None and np.mean(c.histories["uniform"].eval_accuracy[c.histories["uniform"].eval_steps.index(steps)]) == best
    with pytest.raises(CadenceError, match="uniform"):
        LabConfig(policies=("dump", "sec"))
    assert LabConfig(policies=("dump",), target=0.5).target == 0.5


def test_quick_demo_says_it_is_a_smoke_test_and_defines_its_columns(tmp_path, capsys, monkeypatch):
    from cadence.labs.rl.report import SMOKE_NOTE

    monkeypatch.setenv("COLUMNS", "200")
    assert main(["demo", "--quick", "-o", str(tmp_path)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert " ".join(SMOKE_NOTE.split()) in printed
    report = (tmp_path / "report.md").read_text()
    assert SMOKE_NOTE in report and "*informative groups* is the share" in report
    assert "parallel workers, so these add up to more than the wall time" in report
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["smoke_test"] is True
    if data["target"] <= sum(data["warm_accuracy"]) / len(data["warm_accuracy"]):
        assert data["target_meaningful"] is False and "not meaningful (n/a)" in report


def test_arm_colours_share_a_hue_per_family():
    from cadence.labs.rl.report import arm_colors

    arms = ["add/1", "add/2", "add/3", "mul/1", "mul/2"]
    colours = arm_colors(arms)
    assert len({tuple(c) for c in colours}) == len(arms)
    hue = lambda c: __import__("colorsys").rgb_to_hsv(*c[:3])[0]  # noqa: E731
    assert abs(hue(colours[0]) - hue(colours[2])) < 0.05 and abs(hue(colours[0]) - hue(colours[3])) > 0.1


def test_the_filter_panel_shows_what_the_filter_kept(tmp_path):
    from cadence.labs.rl.report import kept_share

    share = kept_share([[2, 0], [0, 2], [0, 0], [1, 1]], window=2)
    np.testing.assert_allclose(share, [[1, 0], [0.5, 0.5], [0, 1], [0.5, 0.5]])
    c = compare(SIZES["tiny"])
    h = c.histories["pass_rate"]
    assert [sum(g) for g in h.step_arm_groups] == h.step_groups  # every trained group counted under its arm
    uniform = c.histories["uniform"]
    assert len(uniform.step_arm_groups) == len(uniform.step_groups)


def _fake_comparison():
    """A Comparison of the six default policies, no training: uniform reaches the target at 1,000 rollouts."""
    from cadence.labs.rl.experiment import Comparison, LabConfig
    from cadence.labs.rl.grpo import History
    from cadence.labs.rl.policy import Evaluation

    lab = LabConfig()
    arms = ["add/1", "add/2", "sort/1", "sort/2"]
    reach = {"uniform": 1000, "dump": 600, "sec": None, "pass_rate": 1500, "predictive": 800, "predictive_dump": 700}
    histories = {}
    for name, at in reach.items():
        h = History()
        for step in range(0, 31, 10):
            h.eval_steps.append(step)
            h.eval_rollouts.append(step * 50 if at is None else step * at // 20)
            h.eval_accuracy.append([0.5 if at is not None and step >= 20 else 0.2] * 4)
            h.eval_greedy.append([0.3] * 4)
        for _ in range(30):
            h.step_rollouts.append(50)
            h.step_groups.append(4)
            h.step_informative.append(2)
            h.step_probabilities.append([0.25] * 4)
            h.step_arm_groups.append([1, 1, 1, 1])
        histories[name] = h
    return Comparison(lab, 0, arms, Evaluation(np.full(4, 0.2), np.full(4, 0.2), 5.0), 0.5, histories,
                      {n: 1.0 for n in histories})


def test_the_report_states_ratios_to_uniform_and_the_evaluation_resolution(tmp_path):
    from cadence.labs.rl.report import markdown

    text = markdown(_fake_comparison())
    assert "relative to uniform (1,000 rollouts)" in text
    assert "DUMP 0.60× (600 rollouts)" in text and "SEC did not reach it" in text
    assert "every 10 steps" in text


def test_report_plots_are_readable_at_page_width_and_legends_cover_no_curve(tmp_path, monkeypatch):
    import matplotlib.image

    from cadence.labs.rl import report

    figures = []
    monkeypatch.setattr(report.plt, "close", figures.append)
    c = _fake_comparison()
    report.plot_probabilities(c, tmp_path / "arms.png")
    report.plot_accuracy(c, tmp_path / "acc.png")
    height, width = matplotlib.image.imread(tmp_path / "arms.png").shape[:2]
    assert width / height < 3  # a grid of panels, not a 6-panel strip (2772×440)
    for fig in figures:
        assert all(ax.get_legend() is None for ax in fig.axes)  # the legends sit outside the panels
        assert fig.legends


def test_without_replacement_every_prompt_comes_once_before_any_repeats():
    from dataclasses import replace

    from cadence.labs.rl.experiment import make_source, train_policy
    from cadence.labs.rl.warmstart import warm_start

    lab = SIZES["tiny"]
    pool = len(lab.suite.prompts)
    epochs = make_source("uniform", lab.suite, lab.grpo, 0, replacement=False).selector
    drawn = np.concatenate([epochs.draw(8) for _ in range(2 * pool // 8)])
    assert sorted(drawn[:pool].tolist()) == list(range(pool)) == sorted(drawn[pool:].tolist())   # two epochs
    stream = make_source("uniform", lab.suite, lab.grpo, 0).selector
    assert len(set(np.concatenate([stream.draw(8) for _ in range(pool // 8)]).tolist())) < pool   # the lab's default
    once = replace(lab, replacement=False, policies=("uniform",), grpo=replace(lab.grpo, steps=pool // lab.grpo.prompts_per_step))
    history = train_policy("uniform", warm_start(once.suite, once.warm, seed=0), once, 0)
    trained = [item for step in history.step_samples for item, _ in step]
    assert sorted(trained) == list(range(pool))                   # the training run covers the pool once
