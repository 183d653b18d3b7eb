"""cadence on Ray Tune: PBT and PB2 copy the whole regimen with the weights, change schedules without a
jump, record every change, hand back replayable specs, and resume an interrupted experiment.

One local Ray session (2 CPUs) serves the module; the experiments are tiny (a linear model, 30 steps)."""

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402
from ray.tune.schedulers import PopulationBasedTraining  # noqa: E402

from cadence import Clock  # noqa: E402
from cadence.curricula import Arms  # noqa: E402
from cadence.curricula.policies.bandits import DUMP  # noqa: E402
from cadence.errors import CadenceError, StateError  # noqa: E402
from cadence.integrations.jsonstate import decode  # noqa: E402
from cadence.integrations.ray_tune import (  # noqa: E402
    TIME_ATTRS, RegimenTrial, load_record, read_files, search_space,
)
from cadence.optim import ScheduledLR  # noqa: E402

BUDGET = 30
EVERY = 10


class StepLog:
    """Per-step LRs and knob values of a trial's lineage (saved with it, so exploits carry it)."""

    def __init__(self):
        self.lr, self.temp = [], []

    def state_dict(self):
        return {"lr": list(self.lr), "temp": list(self.temp)}

    def load_state_dict(self, state):
        self.lr, self.temp = list(state["lr"]), list(state["temp"])


def trainable(config):
    """A linear regression under the searched regimen, with a DUMP curriculum over 3 arms whose
    temperature is a searched plain parameter; writes what it restored to ``config["events"]``."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    log = StepLog()
    policy = DUMP(Arms([i % 3 for i in range(12)]), temperature=config["temperature"], seed=1)
    trial = RegimenTrial(config, opt, clock=Clock(budget=BUDGET), policy=policy, glide="5 steps",
                         save={"model": model, "optimizer": opt, "log": log})
    ckpt = tune.get_checkpoint()
    event = {"trial": tune.get_context().get_trial_id(), "steps": trial.clock.steps,
             "checkpoint": None if ckpt is None else ckpt.path, "lr": opt.param_groups[0]["lr"],
             "link": trial.link.state_dict(), "model": [p.tolist() for p in model.state_dict().values()],
             "temperature": policy.temperature, "flag": os.path.exists(config["crash_flag"])}
    with open(config["events"], "a") as f:
        f.write(json.dumps(event, default=lambda a: a.tolist()) + "\n")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 3.0, 0.5])
    while not trial.clock.done:
        loss = ((model(x).squeeze(-1) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        log.lr.append(opt.param_groups[0]["lr"])
        log.temp.append(trial.knob("temp"))
        opt.step()
        ids = policy.sample(4)
        policy.observe(ids, advantage=np.linspace(-1, 1, 4))
        trial.step(samples=64)
        if trial.clock.steps == config["crash_at"] and os.path.exists(config["crash_flag"]):
            raise RuntimeError("interrupted")
        if trial.clock.steps % EVERY == 0:
            trial.report({"loss": loss.item()})


@pytest.fixture(scope="module")
def ray_session():
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", RAY_DEDUP_LOGS="0",
                      RAY_AIR_NEW_OUTPUT="0")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def space():
    return search_space("wsd(peak={peak}, warmup=5 steps, decay=40%)", knobs={"temp": "ramp(start={t0}, end=0.1)"},
                        peak=tune.loguniform(0.005, 0.05), t0=tune.uniform(0.5, 1.0),
                        temperature=tune.uniform(0.05, 0.5))


def run_config(path, name):
    return tune.RunConfig(storage_path=str(path), name=name, verbose=0, stop={TIME_ATTRS["steps"]: BUDGET})


def read_events(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def pbt_run(ray_session, tmp_path_factory):
    """Two trials under synchronous PBT, perturbed at steps 10 and 20 by a factor 2 (so the bottom
    trial always clones the top one and every searched value doubles)."""
    root = tmp_path_factory.mktemp("pbt")
    s = space()
    pbt = PopulationBasedTraining(time_attr=TIME_ATTRS["steps"], perturbation_interval=EVERY,
                                  hyperparam_mutations=s.mutations, quantile_fraction=0.5, resample_probability=0.0,
                                  perturbation_factors=(2.0, 2.0), synch=True, custom_explore_fn=s.clip)
    config = {**s.param_space, "peak": tune.grid_search([0.004, 0.008]),  # known starts: doubled twice, still in range
              "events": str(root / "events.jsonl"), "crash_at": 0, "crash_flag": str(root / "no")}
    tuner = tune.Tuner(trainable, param_space=config,
                       tune_config=tune.TuneConfig(scheduler=pbt, metric="loss", mode="min", reuse_actors=True),
                       run_config=run_config(root, "pbt"))
    results = tuner.fit()
    assert not results.errors
    return results, read_events(root / "events.jsonl"), s


def exploits(events):
    return [e for e in events if e["checkpoint"] and load_record(e["checkpoint"])["trial_id"] != e["trial"]]


def test_exploit_copies_the_regimen_state_and_weights_exactly(pbt_run):
    _, events, _ = pbt_run
    copied = exploits(events)
    assert copied, "PBT made no exploit"
    for e in copied:
        state, objects = read_files(e["checkpoint"])
        saved = decode(state["link"])
        restored = e["link"]
        assert restored["clock"]["counts"] == saved["clock"]["counts"] and e["steps"] in (10.0, 20.0)
        assert restored["policy"] == json.loads(json.dumps(saved["policy"], default=lambda a: a.tolist()))  # RNG too
        for key in ("last_epoch", "step_count"):
            assert restored["scheduler"][key] == saved["scheduler"][key]
        assert e["model"] == [p.tolist() for p in objects["model"].values()]
        assert e["temperature"] == pytest.approx(min(2 * state["params"]["temperature"], 0.5))  # the new value


def test_perturbation_causes_no_lr_jump_and_is_recorded(pbt_run):
    results, events, _ = pbt_run
    for e in exploits(events):
        donor = read_files(e["checkpoint"])[0]["specs"]["lr"]
        assert e["lr"] == json_lr_at(donor, e["steps"])  # the first LR after the exploit: the donor's, exactly
    checked = 0
    for result in results:
        record = load_record(result.checkpoint)
        lrs = read_files(result.checkpoint.path)[1]["log"]["lr"]
        for c in (c for c in record["changes"] if c["from_trial"]):
            assert c["position"] in (10.0, 20.0) and c["unit"] == "steps"
            assert set(c["params"]) <= {"peak", "t0", "temperature"}  # what changed: doubled, clipped to the domain
            for name, (old, new) in c["params"].items():
                assert new == pytest.approx(min(2 * old, {"peak": 0.05, "t0": 1.0, "temperature": 0.5}[name]))
            assert set(c["schedules"]) == {"lr"} | ({"temp"} if "t0" in c["params"] else set())
            p, new_spec = int(c["position"]), c["schedules"]["lr"][1]
            target = json_lr_at(new_spec, p)
            assert abs(target - lrs[p - 1]) > 0.3 * lrs[p - 1]  # switching at once would have jumped ...
            steps = np.diff(lrs[p - 1:p + 6])
            assert np.all(np.abs(steps) <= abs(target - lrs[p - 1]) / 5 * 1.5)  # ... the glide spreads it over 5 steps
            assert lrs[p + 5] == json_lr_at(new_spec, p + 5)  # then the new schedule's own values
            checked += 1
    assert checked


def json_lr_at(spec, t):
    """The LR a plain ScheduledLR run with ``spec`` on the same budget uses in step ``t + 1``."""
    from cadence.forecast.law import lr_per_step

    return float(lr_per_step(spec, BUDGET)[int(t)])


def test_replay_spec_reproduces_every_trials_per_step_values_exactly(pbt_run):
    results, _, _ = pbt_run
    joined = 0
    for result in results:
        record = load_record(result.checkpoint)
        log = read_files(result.checkpoint.path)[1]["log"]
        assert result.metrics["cadence/spec/lr"] == record["specs"]["lr"]
        joined += record["specs"]["lr"].startswith("join(")
        model = torch.nn.Linear(1, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        clock = Clock(budget=BUDGET)
        sched = ScheduledLR(opt, lr=record["specs"]["lr"], clock=clock)
        temp = record["specs"]["temp"]
        replay_lr, replay_temp = [], []
        from cadence.schedules import as_schedule

        knob = as_schedule(temp)
        for _ in range(BUDGET):
            replay_lr.append(opt.param_groups[0]["lr"])
            replay_temp.append(knob(clock))
            opt.step()
            sched.step()
        assert replay_lr == log["lr"] and replay_temp == log["temp"]  # bit for bit
    assert joined, "no trial changed its schedule"


@pytest.mark.parametrize("scheduler", ["pb2"])
def test_interrupted_experiment_resumes_every_trials_clock(ray_session, tmp_path, scheduler):
    """PB2 drives the search; every trial crashes at step 20 and Tuner.restore continues it from its
    step-20 checkpoint, clock and all."""
    pytest.importorskip("sklearn")
    from ray.tune.schedulers.pb2 import PB2

    s = space()
    flag = tmp_path / "crash"
    flag.touch()
    config = {**s.param_space, "events": str(tmp_path / "events.jsonl"), "crash_at": 2 * EVERY + 1,
              "crash_flag": str(flag)}
    pb2 = PB2(time_attr=TIME_ATTRS["steps"], perturbation_interval=EVERY, hyperparam_bounds=s.bounds,
              quantile_fraction=0.5, synch=True)
    tuner = tune.Tuner(trainable, param_space=config,
                       tune_config=tune.TuneConfig(scheduler=pb2, metric="loss", mode="min", num_samples=2,
                                                   reuse_actors=True),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="pb2", verbose=0,
                                                 stop={TIME_ATTRS["steps"]: BUDGET},
                                                 failure_config=tune.FailureConfig(max_failures=0)))
    first = tuner.fit()
    assert len(first.errors) == 2
    flag.unlink()
    restored = tune.Tuner.restore(str(tmp_path / "pb2"), trainable, resume_errored=True)
    results = restored.fit()
    assert not results.errors
    events = read_events(tmp_path / "events.jsonl")
    after = [e for e in events if not e["flag"]]  # the starts after the interruption
    assert {e["trial"] for e in after} == {r.metrics["trial_id"] for r in results}
    assert all(e["steps"] == 2 * EVERY and e["checkpoint"] for e in after)  # each continued at step 20
    for result in results:
        record = load_record(result.checkpoint)
        assert record["clock"]["steps"] == BUDGET and record["clock"]["samples"] == 64 * BUDGET
        assert result.metrics[TIME_ATTRS["steps"]] == BUDGET
        log = read_files(result.checkpoint.path)[1]["log"]
        assert log["lr"] == [json_lr_at(record["specs"]["lr"], t) for t in range(BUDGET)]


def test_trial_outside_tune_checks_its_config_and_checkpoint(tmp_path):
    """The regimen part runs without a Ray session: a checkpoint directory continues in a plain run,
    a changed spec glides, and bad input is refused with a CadenceError."""
    s = search_space("constant({peak})", peak=tune.uniform(0.1, 1.0))
    config = {**s.param_space, "peak": 0.2}
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)
    trial = RegimenTrial(config, opt, clock=Clock(budget=100), glide="10 steps", trial_id="a", save={"opt": opt})
    for _ in range(40):
        opt.step()
        trial.step()
    trial.write(tmp_path)
    opt2 = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)
    again = RegimenTrial({**config, "peak": 0.4}, opt2, clock=Clock(budget=100), glide="10 steps", trial_id="a",
                         save={"opt": opt2}, checkpoint=tmp_path)
    assert again.clock.steps == 40 and opt2.param_groups[0]["lr"] == 0.2
    assert again.changes == [{"position": 40.0, "unit": "steps", "steps": 40.0, "tokens": 0.0, "from_trial": None,
                              "params": {"peak": [0.2, 0.4]},
                              "schedules": {"lr": ["constant(level=0.2)", "constant(level=0.4)"]}}]
    assert again.specs()["lr"] == ("join(shift(constant(level=0.2), total=100 steps), glide(shift(constant(level=0.4), "
                                   "by=40 steps, total=100 steps), start=0.2, over=10 steps), at=[40 steps])")
    with pytest.raises(CadenceError, match="needs \\['peak'\\]"):
        RegimenTrial({"cadence": config["cadence"]}, opt, clock=Clock(budget=100))
    with pytest.raises(CadenceError, match="no 'cadence' entry"):
        RegimenTrial({"peak": 0.1}, opt)
    with pytest.raises(CadenceError, match="open-ended"):
        RegimenTrial(config, opt, clock=Clock())
    with pytest.raises(StateError, match="saved objects"):
        RegimenTrial(config, opt2, clock=Clock(budget=100), trial_id="a", checkpoint=tmp_path)
    with pytest.raises(CadenceError, match="needs"):
        search_space("wsd(peak={peak})", top=1.0)
    with pytest.raises(CadenceError):  # the upper end of decay's range is not a fraction
        search_space("wsd(decay={d})", d=tune.uniform(0.1, 1.5))
    assert math.isclose(s.clip({"peak": 3.0})["peak"], 1.0)
    assert s.bounds == {"peak": [0.1, 1.0]}


def test_docs_example_runs(ray_session, tmp_path, monkeypatch, capsys):
    """docs/integrations/ray-tune.md's example (marked no-run there: it needs Ray) runs as written."""
    import re

    page = (Path(__file__).resolve().parents[1] / "docs" / "integrations" / "ray-tune.md").read_text()
    code = re.search(r"^```python no-run\n(.*?)^```", page, re.S | re.M).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "ray-tune.md", "exec"), {"__name__": "__docs__"})
    printed = capsys.readouterr().out
    assert printed.count("wsd(peak=") >= 2 and "join(shift(" in printed  # each trial's spec; the copied one joined


@pytest.mark.slow
def test_bench_pbt_tiny_prints_the_comparison(ray_session, capsys):
    from cadence.cli import main

    assert main(["bench", "pbt", "--size", "tiny", "--steps", "16", "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    for method in ("cosine", "forecast WSD", "PBT (best trial)", "PBT replayed"):
        assert method in out
    assert "PBT-found" in out


def test_quiet_local_ray_starts_ray_silent_and_restores_the_loggers(monkeypatch):
    """``bench pbt`` and the docs example printed ~50 lines of Ray INFO logs and a token notice."""
    import logging

    from cadence.integrations.ray_tune import quiet_local_ray

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(("init", {**kw, "level": logging.getLogger("ray").level,
                                                                         "air": os.environ.get("RAY_AIR_NEW_OUTPUT")})))
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append(("shutdown", {})))
    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED", raising=False)
    before = logging.getLogger("ray.tune").level
    with quiet_local_ray(num_cpus=2) as started:
        assert started and logging.getLogger("ray.tune").level == logging.ERROR
    assert logging.getLogger("ray.tune").level == before
    (name, kw), (last, _) = calls
    assert name == "init" and last == "shutdown"
    assert kw["logging_level"] == logging.ERROR and kw["log_to_driver"] is False and kw["include_dashboard"] is False
    assert kw["level"] == logging.ERROR  # already while Ray starts: its token-authentication notice is a warning
    assert kw["air"] == "0" and "RAY_AIR_NEW_OUTPUT" not in os.environ  # Tune's console output off, then restored
