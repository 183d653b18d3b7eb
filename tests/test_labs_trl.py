"""The TRL lab: the lab's tasks as a TRL workload, TRL's GRPOTrainer alone vs with cadence, ``cadence bench trl``."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict

import numpy as np
import pytest

pytest.importorskip("trl")

from cadence.cli import main  # noqa: E402
from cadence.labs.rl.bench import interval  # noqa: E402
from cadence.labs.rl.tasks import TaskSuite  # noqa: E402
from cadence.labs.trl import bench  # noqa: E402
from cadence.labs.trl.experiment import SIZES, train_policy  # noqa: E402
from cadence.labs.rl.families import HELD_OUT  # noqa: E402
from cadence.labs.trl.warmstart import warm_start_hf  # noqa: E402
from cadence.labs.trl.workload import correctness_reward, suite_tokenizer, train_dataset  # noqa: E402

TINY = SIZES["tiny"]


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CADENCE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def warm():
    return warm_start_hf(TINY.suite, TINY.warm, TINY.warm_lr, seed=0, cache=False)


def test_tokenizer_round_trips_every_character_with_the_lab_ids():
    suite = TaskSuite(families=("add", *HELD_OUT), levels=(1,), items_per_arm=4, eval_per_arm=2)
    tokenizer, lab = suite_tokenizer(suite), suite.tokenizer
    rng = np.random.default_rng(0)
    texts = [suite.alphabet] + ["".join(rng.choice(list(suite.alphabet), size=int(rng.integers(1, 20))))
                                for _ in range(200)]
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        assert ids == lab.encode(text).tolist()
        assert tokenizer.decode(ids) == text
    assert tokenizer.pad_token_id == len(suite.alphabet) and tokenizer.eos_token_id == lab.eos_id


def test_reward_function_scores_as_the_suite():
    suite = TINY.suite
    tok = suite.tokenizer
    rng = np.random.default_rng(1)
    items = rng.integers(0, len(suite.prompts), size=300)
    answers = suite.answers[items]
    responses = []
    for k, a in enumerate(answers):   # right answers, with filler, wrong, random characters, and junk after the end
        kind = k % 4
        text = [a, "." + a + ".", a + "1", "".join(rng.choice(list("0123456789.ab"), size=3))][kind]
        responses.append(text)
    ids = [tok.encode(r).tolist() + [tok.eos_id] + tok.encode("77").tolist() for r in responses]
    ids[0] = tok.encode(responses[0]).tolist()           # cut off before its end token
    counter: list[int] = []
    got = correctness_reward(suite, counter)(completions=[""] * len(ids), completion_ids=ids, answer=list(answers))
    np.testing.assert_array_equal(got, suite.score(np.array(responses), answers))
    assert 0 < np.mean(got) < 1 and counter == [len(ids)]
    rows = train_dataset(suite)
    assert len(rows) == len(suite.prompts) and {len(p) for p in rows["prompt"]} == {suite.prompt_len}


def test_uniform_through_cadence_draws_what_trl_alone_draws_and_runs_repeat(warm):
    alone = train_policy("trl", warm, TINY, 0)
    uniform = train_policy("uniform", warm, TINY, 0)
    per_step = TINY.grpo.prompts_per_step * TINY.grpo.group
    assert alone.history.step_rollouts == uniform.history.step_rollouts == [per_step] * TINY.grpo.steps
    assert alone.history.eval_accuracy[0] == uniform.history.eval_accuracy[0]     # same warm start, same eval
    assert len(alone.step_seconds) == TINY.grpo.steps and all(s == 0 for s in uniform.refill_seconds)
    assert alone.cadence_seconds == [0.0] * TINY.grpo.steps                        # no cadence, no hook time
    assert len(uniform.cadence_seconds) == TINY.grpo.steps and min(uniform.cadence_seconds) > 0
    assert 0 < bench.hook_share(uniform) < 0.5          # TRL's generation and loss inside the wrappers are not counted
    again = train_policy("trl", warm, TINY, 0)
    assert again.history == alone.history                                          # same seed, same run
    dynamic = train_policy("dynamic", warm, TINY, 0)
    assert sum(dynamic.history.step_rollouts) >= sum(alone.history.step_rollouts)  # refills are counted
    assert dynamic.history.step_groups == [TINY.grpo.prompts_per_step] * TINY.grpo.steps


def test_trl_trains_under_bf16_autocast_by_default_and_in_float32_with_bf16_off(warm):
    from dataclasses import replace

    import torch

    from cadence.labs.trl.workload import build_model, evaluate_hf

    model = build_model(TINY.suite, TINY.warm, 0)
    model.load_state_dict(warm)
    with torch.no_grad():
        plain = evaluate_hf(model, TINY.suite, TINY.warm.max_new_tokens(TINY.suite), TINY.grpo.temperature)
    default = train_policy("trl", warm, TINY, 0).history
    fp32 = train_policy("trl", warm, replace(TINY, bf16=False), 0).history
    assert fp32.eval_accuracy[0] == plain.pass_at_1.tolist()      # the warm weights evaluated in float32, as the lab
    assert default.eval_accuracy[0] != plain.pass_at_1.tolist()   # the same weights under TRL's bfloat16 autocast
    assert default.step_rollouts == fp32.step_rollouts


def test_hinted_prompts_are_scored_with_the_given_answer_characters():
    from cadence.labs.trl.workload import answer_prefix_guidance, padded_prompt

    suite, tok = TINY.suite, TINY.suite.tokenizer
    guide = answer_prefix_guidance(suite)
    items = [i for i in range(len(suite.prompts)) if len(str(suite.answers[i])) >= 2][:20]
    rows = [{"prompt": padded_prompt(suite, str(suite.prompts[i])), "answer": str(suite.answers[i])} for i in items]
    hinted = [guide(row, 3) for row in rows]
    assert all(h.startswith(r["prompt"]) and len(r["prompt"]) < len(h) < len(r["prompt"]) + len(r["answer"])
               for h, r in zip(hinted, rows))
    rest = [r["answer"][len(h) - len(r["prompt"]):] for h, r in zip(hinted, rows)]     # what the model must write
    ids = [tok.encode(t).tolist() + [tok.eos_id] for t in rest]
    reward = correctness_reward(suite)
    answers = [r["answer"] for r in rows]
    assert reward(completions=[""] * len(ids), completion_ids=ids, answer=answers, prompts=hinted) == [1.0] * len(ids)
    unhinted = reward(completions=[""] * len(ids), completion_ids=ids, answer=answers, prompts=[r["prompt"] for r in rows])
    assert unhinted == [0.0] * len(ids)                  # the rest alone is not the answer


def test_pcl_hints_and_replay_run_in_trl_and_lab_only_policies_are_refused(warm):
    from dataclasses import replace

    from cadence.errors import CadenceError

    uniform = train_policy("uniform", warm, TINY, 0)
    pcl = train_policy("pcl", warm, TINY, 0)
    per_step = TINY.grpo.prompts_per_step * TINY.grpo.group
    assert pcl.history.step_rollouts == [per_step] * TINY.grpo.steps                 # PCL spends uniform's rollouts
    assert pcl.history != uniform.history                                             # on other prompts
    hints = train_policy("hints", warm, TINY, 0)
    assert sum(hints.history.step_rollouts) > TINY.grpo.steps * per_step             # all-wrong groups re-rolled
    assert sum(hints.history.step_informative) > sum(uniform.history.step_informative)
    counts = hints.history.step_source[-1]                                            # the selector's run totals
    assert counts["hints/hint_rollouts"] == sum(hints.history.step_rollouts) - TINY.grpo.steps * per_step
    assert counts["hints/plateaued"] > 0 and 0 < counts["hints/learnable_share"] <= 1
    dynamic = train_policy("dynamic", warm, TINY, 0)
    replay = train_policy("replay", warm, TINY, 0)                                   # dynamic sampling + replay
    assert sum(replay.history.step_rollouts) < sum(dynamic.history.step_rollouts)   # replayed, not regenerated
    assert sum(replay.history.step_informative) >= sum(dynamic.history.step_informative)
    counts = replay.history.step_source[-1]
    assert counts["replay/saved"] == TINY.grpo.group * counts["replay/replayed"] > 0  # whole groups not regenerated
    assert len(replay.history.step_source) == TINY.grpo.steps                         # one per step
    for name in ("gvm", "d3s"):
        with pytest.raises(CadenceError, match="lab only"):
            replace(TINY, policies=("trl", name))


def test_d3s_token_level_masks_trl_loss_and_d3s_stays_refused(warm, monkeypatch):
    """``d3s_token``: D³S's token level through attach(downsample=) in TRL's loss (fewer response tokens
    than TRL's mask holds, the lab's share on the clock); the lab's ``d3s`` stays refused, naming it."""
    from dataclasses import replace

    from cadence.errors import CadenceError
    from cadence.rl import DualDownsampling

    calls = []
    keep_tokens = DualDownsampling.keep_tokens

    def counted(self, advantages, entropy, mask, clock):
        kept = keep_tokens(self, advantages, entropy, mask, clock)
        calls.append((int(mask.sum()), int(kept.sum()), self.ratios(clock)))
        return kept

    monkeypatch.setattr(DualDownsampling, "keep_tokens", counted)
    assert replace(TINY, policies=("trl", "d3s_token")).policies == ("trl", "d3s_token")
    run = train_policy("d3s_token", warm, TINY, 0)
    per_step = TINY.grpo.prompts_per_step * TINY.grpo.group
    assert run.history.step_rollouts == [per_step] * TINY.grpo.steps              # the lab's d3s prompts: uniform
    assert calls, "TRL's loss never asked for D3S's token mask"
    for total, kept, (sample_share, token_share) in calls:
        assert sample_share == 1.0 and token_share < 1.0                            # rollout level off
        assert 0 < kept < total and abs(kept - token_share * total) <= 1 + 0.05 * total
    with pytest.raises(CadenceError, match="lab only.*d3s_token"):
        replace(TINY, policies=("trl", "d3s"))


def test_separate_processes_with_other_hash_seeds_give_the_same_records(tmp_path):
    """torch seeds every new process differently and Python salts string hashes per process: neither may
    reach the bench (warm start, TRL alone, a cadence policy), each process building its own warm start."""
    import os
    import subprocess
    import sys

    runs = {}
    for hash_seed in ("1", "2"):                    # both at once
        out = tmp_path / hash_seed / "trl.png"
        out.parent.mkdir()
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "CADENCE_CACHE": str(out.parent / "cache")}
        runs[out] = subprocess.Popen([sys.executable, "-m", "cadence", "bench", "trl", "--size", "tiny", "--seeds", "1",
                                      "--steps", "2", "--policies", "trl,dump", "-o", str(out)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    got = []
    for out, run in runs.items():
        _, err = run.communicate(timeout=280)
        assert run.returncode == 0, err[-2000:]
        records = json.loads(out.with_suffix(".json").read_text())["records"]
        got.append([{k: v for k, v in r.items() if not k.endswith("seconds")} for r in records])
    assert got[0] == got[1] and len(got[0]) == 2


def test_warm_start_is_cached_per_seed(warm):
    first = warm_start_hf(TINY.suite, TINY.warm, TINY.warm_lr, seed=0)
    cached = warm_start_hf(TINY.suite, TINY.warm, TINY.warm_lr, seed=0)
    assert all((first[k] == warm[k]).all() and (cached[k] == warm[k]).all() for k in warm)


def test_bench_trl_tiny_end_to_end_summary_matches_its_records(tmp_path, capsys):
    out = tmp_path / "trl.png"
    assert main(["bench", "trl", "--size", "tiny", "--seeds", "2", "--steps", "2", "--policies",
                 "trl,uniform,dynamic", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "TRL alone" in printed and "overhead" in printed and out.exists()
    data = json.loads(out.with_suffix(".json").read_text())
    records = data["records"]
    assert {r["seed"] for r in records} == {0, 1}
    for row in data["rows"]:                   # the summary, recomputed by hand from the per-seed records
        ratios = []
        for seed in (0, 1):
            mine, base = ([r for r in records if r["seed"] == seed and r["policy"] == p][0]
                          for p in (row["policy"], "trl"))
            reach = lambda r: r["rollouts_to_target"] if r["rollouts_to_target"] is not None else r["rollouts"]  # noqa: E731
            ratios.append(max(reach(mine), 1) / max(reach(base), 1))
        np.testing.assert_allclose(row["rollouts_ratio"], interval(np.array(ratios)))
        assert row["reached"] == sum(r["rollouts_to_target"] is not None for r in records if r["policy"] == row["policy"])
        np.testing.assert_allclose(row["final_accuracy"],
                                   np.mean([r["final_pass@1"] for r in records if r["policy"] == row["policy"]]))
    base = [r for r in records if r["policy"] == "trl"]
    assert all(r["rollouts_to_target"] is not None and r["target"] == max(r["eval_pass@1"]) for r in base)
    again = [json.loads(json.dumps(asdict(r))) for r in bench.rows_of(bench.read_records(out.with_suffix(".json")))]
    assert again == data["rows"]                # the saved records give back the printed summary
    later = tmp_path / "later.png"             # seed 1 alone, merged with seed 0's records: the same records
    assert main(["bench", "trl", "--size", "tiny", "--first-seed", "1", "--seeds", "1", "--steps", "2", "--policies",
                 "trl,uniform,dynamic", "-o", str(later)]) == 0
    (tmp_path / "first.json").write_text(json.dumps({"records": [r for r in records if r["seed"] == 0]}))
    merged = bench.read_records(tmp_path / "first.json", later.with_suffix(".json"))
    drop = lambda rs: [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rs]  # noqa: E731
    assert drop(merged) == drop(records) and merged[0]["seed"] == 0


def _record(seed, policy, target, reached, rollouts, final, curve):
    """A per-seed record as ``bench trl -o`` writes it (10 steps of 16 prompts × 8)."""
    return {"seed": seed, "policy": policy, "target": target, "steps_to_target": reached and reached // 128,
            "rollouts_to_target": reached, "steps": 10, "rollouts": rollouts, "final_pass@1": final,
            "informative_groups": 80, "groups": 160, "step_seconds": [0.5] * 10, "refill_seconds": [0.0] * 10,
            "eval_steps": [0, 5, 10], "eval_rollouts": [0, rollouts // 2, rollouts], "eval_pass@1": curve}


def test_from_records_prints_the_table_and_draws_the_plot_without_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "compare", lambda *a, **k: pytest.fail("trained from saved records"))
    saved = lambda groups, rollouts: {"replay/replayed": groups, "replay/saved": rollouts}  # noqa: E731
    records = [_record(0, "trl", 0.3, 1280, 1280, 0.3, [0.2, 0.25, 0.3]),
               dict(_record(0, "replay", 0.3, 640, 1280, 0.4, [0.2, 0.3, 0.4]), source=saved(2, 16)),
               _record(1, "trl", 0.5, 1024, 1280, 0.5, [0.4, 0.45, 0.5]),
               dict(_record(1, "replay", 0.5, None, 1280, 0.2, [0.4, 0.3, 0.2]), source=saved(4, 32))]  # unreached
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"records": records}))
    rows = {r.policy: r for r in bench.rows_of(bench.read_records(path))}
    np.testing.assert_allclose(rows["replay"].rollouts_ratio[0], np.sqrt(640 / 1280 * 1280 / 1024))   # by hand: 0.79
    np.testing.assert_allclose(rows["replay"].steps_ratio[0], np.sqrt(5 / 10 * 10 / 8))
    assert (rows["replay"].reached, rows["trl"].reached, rows["replay"].final_accuracy) == (1, 2, pytest.approx(0.3))
    plot = tmp_path / "plot.png"
    assert main(["bench", "trl", "--from-records", str(path), "-o", str(plot)]) == 0
    printed = capsys.readouterr().out
    assert "TRL + dynamic sampling + replay" in printed and "0.79 [" in printed and "1/2" in printed
    assert "0.300" in printed and "3 groups replayed, 24 rollouts saved (2%) per run" in printed   # means of 2 runs
    assert plot.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png", "run.json"]    # no records written over


@pytest.mark.parametrize("content, message", [
    ("not json", "JSONDecodeError"),
    ('{"rows": []}', "no 'records' list"),
    ('{"records": [{"seed": 0, "policy": "trl"}]}', "records lack"),
])
def test_unreadable_records_are_one_line_errors(tmp_path, capsys, content, message):
    saved = tmp_path / "run.json"
    saved.write_text(content)
    assert main(["bench", "trl", "--from-records", str(saved)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_records_without_trl_alone_or_a_seed_short_of_a_policy_are_refused(tmp_path):
    from cadence.errors import CadenceError

    curve = [0.1, 0.2, 0.3]
    run = [_record(seed, policy, 0.3, 128, 1280, 0.3, curve) for seed, policy in [(0, "trl"), (0, "dump"), (1, "trl")]]
    for records, message in [(run[1:2], "no 'trl'"), (run, "seed 1 does not hold")]:
        saved = tmp_path / "run.json"
        saved.write_text(json.dumps({"records": records}))
        with pytest.raises(CadenceError, match=message):
            bench.read_records(saved)
    first, second, longer = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    first.write_text(json.dumps({"records": run[:2]}))
    second.write_text(json.dumps({"records": [dict(r, seed=1) for r in run[:2]]}))
    longer.write_text(json.dumps({"records": [dict(r, seed=2, steps=20) for r in run[:2]]}))
    assert [(r["seed"], r["policy"]) for r in bench.read_records(first, second)] == [
        (0, "trl"), (0, "dump"), (1, "trl"), (1, "dump")]                           # two runs' seeds merged
    with pytest.raises(CadenceError, match="seed 0 does not hold"):
        bench.read_records(first, first)                                              # the same seed twice
    with pytest.raises(CadenceError, match="different numbers of steps"):
        bench.read_records(first, longer)


def test_compare_lab_runs_the_lab_on_the_same_suite_and_seeds_and_prints_both_tables(tmp_path, capsys, monkeypatch):
    import cadence.labs.rl.bench as lab_bench

    seen: dict[str, list] = {"trl": [], "lab": []}

    def spy(kind, real):
        def wrapped(lab, seed, **kwargs):
            seen[kind].append((lab.with_seed(seed).suite, lab.grpo, seed))
            return real(lab, seed, **kwargs)
        return wrapped

    monkeypatch.setattr(bench, "compare", spy("trl", bench.compare))
    monkeypatch.setattr(lab_bench, "compare", spy("lab", lab_bench.compare))
    out = tmp_path / "trl.png"
    assert main(["bench", "trl", "--size", "tiny", "--seeds", "2", "--steps", "2", "--policies", "trl,uniform,dump",
                 "--compare-lab", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "TRL GRPOTrainer" in printed and "the lab's GRPO" in printed
    assert printed.index("TRL + DUMP") < printed.index("the lab's GRPO")            # TRL's table, then the lab's
    assert len(seen["lab"]) == len(seen["trl"]) == 2
    for (trl_suite, trl_grpo, trl_seed), (lab_suite, lab_grpo, lab_seed) in zip(seen["trl"], seen["lab"]):
        assert trl_seed == lab_seed and trl_suite == lab_suite and trl_grpo == lab_grpo
        np.testing.assert_array_equal(trl_suite.prompts, lab_suite.prompts)
    data = json.loads(out.with_suffix(".json").read_text())
    lab_records = data["lab"]["records"]
    assert {(r["seed"], r["policy"]) for r in lab_records} == {(s, p) for s in (0, 1) for p in ("uniform", "dump")}
    assert {r["seed"] for r in data["records"]} == {r["seed"] for r in lab_records}
    assert [r["policy"] for r in data["lab"]["rows"]] == ["uniform", "dump"]
    for row in data["lab"]["rows"]:          # the lab's summary is against its uniform, from its own records
        assert row["reached"] == sum(r["rollouts_to_target"] is not None for r in lab_records
                                     if r["policy"] == row["policy"])
    assert all(r["target"] == max(r["eval_pass@1"]) for r in lab_records if r["policy"] == "uniform")


@pytest.mark.parametrize("argv, message", [
    (["--policies", "trl,bogus"], "unknown or repeated policies"),
    (["--families", "add,nope"], "unknown task family 'nope'"),
    (["--seeds", "0"], "argument --seeds: needs a whole number >= 1"),
    (["--steps", "-3"], "argument --steps: needs a whole number >= 1"),
    (["--workers", "0"], "argument --workers: needs a whole number >= 1"),
    (["-o", "/no/such/folder/plot.png"], "does not exist"),
    (["--policies", "trl,dump", "--compare-lab"], "include 'uniform'"),
    (["--first-seed", "-1"], "argument --first-seed: needs a whole number >= 0"),
    (["--first-seed", "3", "--policies", "trl,uniform", "--compare-lab"], "--first-seed applies to the policies"),
    (["--from-records", "/no/such/run.json"], "no such file"),
    (["--from-records", "run.json", "--policies", "trl,dump"], "--from-records trains nothing: drop --policies"),
    (["--from-records", "run.json", "--experiment", "overhead"], "drop --experiment overhead"),
])
def test_bad_input_is_one_line_before_any_training(monkeypatch, capsys, argv, message):
    monkeypatch.setattr(bench, "compare", lambda *a, **k: pytest.fail("trained despite bad input"))
    assert main(["bench", "trl", "--size", "tiny", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_missing_extra_names_the_install(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a))
    assert main(["bench", "trl", "--size", "tiny"]) == 2
    assert 'pip install "cadence[trl]"' in capsys.readouterr().err


def test_overhead_alternates_trl_alone_and_uniform(warm):
    from dataclasses import replace

    lab = replace(TINY, grpo=replace(TINY.grpo, steps=2))
    order: list[str] = []
    result = bench.measure_overhead(lab, 0, repeats=2, on_step=order.append)
    assert order == ["trl"] * 2 + ["uniform"] * 2 + ["uniform"] * 2 + ["trl"] * 2     # AB, then BA
    assert all(len(v) == 2 and min(v) > 0 for v in result["median_step_seconds"].values())
    mean, low, high = result["overhead"]
    assert 0 < low <= mean <= high and len(result["ratios"]) == 2
    assert len(result["hook_share"]) == 2 and all(0 < share < 0.5 for share in result["hook_share"])
