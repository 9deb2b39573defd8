"""Platform-aware architecture search: the space, the reward, the Optuna study and its resumption.

Latencies are injected (a site costs 0.1 ms plus 1 ms per million parameters, a whole network
its sites plus 0.5 ms) wherever a test runs in this process; proxy trainings are 1-2 steps at
16 pixels, so the accuracies are near chance and only their bookkeeping is checked.
"""

import json
import math
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

import lightnets
import lightnets.search.lut as lut
from lightnets.cli import main
from lightnets.layers import make_divisible
from lightnets.models import ConvNet, NetSpec, build, walk
from lightnets.search import (
    W_MNASNET,
    W_MOBILENET_V3_SMALL,
    LatencyTable,
    ProxyEvaluator,
    SearchSpace,
    StageChoice,
    StageOptions,
    pareto_front,
    reward,
    search,
    table_of,
)


@pytest.fixture
def fake_timing(monkeypatch):
    """Injected timings; a test may set ``drift_ms``: each whole-network measurement then comes
    out that much slower than the one before, so two calibrations differ."""
    state = SimpleNamespace(drift_ms=0.0, whole=0)

    def site_ms(module):
        return 0.1 + sum(p.numel() for p in module.parameters()) / 1e6

    def fake(module, input_size, *, threads=None, runs=50, warmup=10, backend="eager", **_):
        if isinstance(module, ConvNet):
            sites = walk(module.spec, input_size[-1])
            ms = sum(site_ms(lut.build_site(s, module.spec.settings)) for s in sites) + 0.5
            ms += state.drift_ms * state.whole
            state.whole += 1
        else:
            ms = site_ms(module)
        return SimpleNamespace(median_ms=ms, p10_ms=ms, p90_ms=ms, runs=runs, times_ms=[ms] * runs)

    monkeypatch.setattr(lut, "measure_latency", fake)
    return state


# ---- the reward ---------------------------------------------------------------------------


def test_the_reward_is_mnasnet_equation_2():
    acc, target = 0.8, 10.0
    # soft constraint: ACC x (LAT / TAR)^w on both sides of the target, with w = alpha = beta
    for w in (W_MNASNET, W_MOBILENET_V3_SMALL):
        for lat in (5.0, 10.0, 12.5, 40.0):
            assert reward(acc, lat, target, w) == pytest.approx(acc * math.exp(w * math.log(lat / target)))
        # MnasNet section 3: doubling the latency costs a factor 2^w of reward (-0.07: about 4.7%)
        assert reward(acc, 2 * target, target, w) / reward(acc, target, target, w) == pytest.approx(2 ** w)
    assert reward(acc, 20.0, target) == reward(acc, 20.0, target, W_MNASNET)  # -0.07 is the default
    assert 1 - 2 ** W_MNASNET == pytest.approx(0.0474, abs=1e-4)
    # hard constraint: alpha = 0 (accuracy alone under the target), beta = -1 (cut by TAR / LAT above)
    assert reward(acc, 3.0, target, hard=True) == acc
    assert reward(acc, target, target, hard=True) == acc
    assert reward(acc, 25.0, target, hard=True) == pytest.approx(acc * target / 25.0)
    # the soft reward prefers a faster network at equal accuracy; the hard one does not under the target
    assert reward(acc, 5.0, target) > reward(acc, 8.0, target)
    assert reward(acc, 5.0, target, hard=True) == reward(acc, 8.0, target, hard=True)


@pytest.mark.parametrize("kwargs, match", [
    ({"w": -0.07, "hard": True}, "not both"),
    ({"w": 0.1}, "w must be a finite number <= 0"),
    ({"w": float("nan")}, "w must be a finite number <= 0"),
    ({"accuracy": 1.5}, r"accuracy is a fraction in \[0, 1\]"),
    ({"latency_ms": 0.0}, "must be > 0 ms"),
    ({"target_ms": -1.0}, "must be > 0 ms"),
    ({"latency_ms": "5"}, "latency_ms must be a finite number"),
])
def test_the_reward_refuses_bad_input(kwargs, match):
    args = {"accuracy": 0.5, "latency_ms": 5.0, "target_ms": 10.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        reward(**args)


def test_the_pareto_front_keeps_only_undominated_networks():
    rows = [{"accuracy": a, "latency_ms": t, "id": i}
            for i, (a, t) in enumerate([(0.9, 10), (0.8, 5), (0.85, 12), (0.7, 5), (0.95, 20), (0.9, 11)])]
    front = pareto_front(rows)
    assert [r["id"] for r in front] == [1, 0, 4]
    for row in rows:
        beaten = any(o["accuracy"] >= row["accuracy"] and o["latency_ms"] <= row["latency_ms"] and o is not row
                     and (o["accuracy"], o["latency_ms"]) != (row["accuracy"], row["latency_ms"]) for o in rows)
        assert (row in front) != beaten


# ---- the space ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mobilenet_v3_large"])
def test_mobilenet_v3_itself_is_in_its_space(name):
    spec = lightnets.create_model(name, num_classes=10).spec
    space = SearchSpace.around(name, num_classes=10)
    choices = space.choices_of(spec)
    assert space.candidate(choices) == spec
    searched = [c for c in choices if c is not None]
    assert len(searched) == len(spec.stages) - 1  # every stage but the last 1x1 conv
    assert all(c.width == 1 and c.repeats == 0 and c.expansion in ("base", None) for c in searched)
    assert choices == space.base_choices()


def test_the_space_size_counts_each_stage_s_distinct_choices():
    space = SearchSpace.around("mobilenet_v3_small")
    depths = [len(s) for s in table_of(space.base).stages[:-1]]
    assert depths == [1, 2, 3, 2, 3]  # MobileNetV3-Small Table 2, stages as timm groups them

    def stage_count(depth):
        kernels, expansions, se, acts, widths = 3, 4, 2, 2, 3
        repeats = 2 if depth == 1 else 3  # a one-block stage cannot lose its block
        ir = kernels * expansions * se * acts * repeats * widths
        ds = kernels * se * acts * repeats * widths  # no expansion
        skip = kernels * expansions * se * acts * widths if depth > 1 else 0  # first block kept (ir): no repeats
        return ir + ds + skip

    assert space.size() == math.prod(stage_count(d) for d in depths)
    narrow = SearchSpace.around("mobilenet_v3_small", StageOptions(kinds=("ir",), kernels=(3,), expansions=(6,),
                                                                    se=(True,), acts=("hs",), repeats=(0,),
                                                                    widths=(1.0,)))
    assert narrow.size() == 1
    text = space.describe()
    assert "78,800,125,224,960 choice vectors" in text and "stage 5: kept: cn_k1_s1_c576_hs" in text
    assert SearchSpace.from_json(space.to_json()) == space


def _check_stage(space, choices, spec):
    """Every searched stage of ``spec`` is what its choice says, against the base table."""
    table = table_of(space.base)
    for i, choice in enumerate(choices):
        if choice is None:
            assert [b.kind for b in spec.stages[i]] == [b.kind for b in table.stages[i]]
            continue
        blocks, base = spec.stages[i], table.stages[i]
        depth = 1 if choice.kind == "skip" else len(base) + choice.repeats
        assert len(blocks) == depth
        for j, block in enumerate(blocks):
            source = base[min(j, len(base) - 1)]
            assert block.kernel == choice.kernel and block.se == choice.se and block.act == choice.act
            assert block.stride == (source.stride if j < len(base) else 1)
            expected = source.out_chs if choice.width == 1 else make_divisible(source.out_chs * choice.width, 8)
            assert block.out_chs == expected
            if choice.kind == "ds":
                assert block.kind == "ds"
            elif block.kind == "ir" and choice.expansion not in ("base", None):
                in_chs = spec.stem.conv.out_chs if (i, j) == (0, 0) else _input_width(spec, i, j)
                assert block.mid_chs == make_divisible(in_chs * choice.expansion, 8)


def _input_width(spec, i, j):
    flat = [b for stage in spec.stages for b in stage]
    index = sum(len(s) for s in spec.stages[:i]) + j
    return flat[index - 1].out_chs


def test_every_sampled_candidate_builds_runs_and_matches_the_space(optuna):
    space = SearchSpace.around("mobilenet_v3_small_050", num_classes=10)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    kinds = set()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a busy machine: see _evaluator
    try:
        _sample_and_check(space, study, kinds)
    finally:
        torch.set_num_threads(threads)
    assert kinds == {"ir", "ds", "skip"}


def _sample_and_check(space, study, kinds):
    for _ in range(12):
        trial = study.ask()
        choices = space.suggest(trial)
        assert space.from_params(trial.params) == choices and space.params(choices) == trial.params
        spec = space.candidate(choices)
        _check_stage(space, choices, spec)
        model = build(spec).eval()
        with torch.no_grad():
            assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        assert space.candidate(space.choices_of(spec)) == spec  # the space reaches what it sampled
        assert NetSpec.parse(str(spec)) == spec
        kinds.update(c.kind for c in choices if c is not None)
        study.tell(trial, 0.0)


@pytest.mark.parametrize("make, match", [
    (lambda: StageOptions(kernels=(4,)), "kernels must be odd"),
    (lambda: StageOptions(kinds=("conv",)), "unknown block kinds"),
    (lambda: StageOptions(acts=("gelu",)), "unknown activations"),
    (lambda: StageOptions(widths=()), "non-empty tuple"),
    (lambda: StageOptions(expansions=(0.5,)), "ratios >= 1"),
    (lambda: StageOptions(repeats=(0, 0)), "lists a choice twice"),
    (lambda: SearchSpace.around("mobilenet_v9"), "unknown base network"),
    (lambda: SearchSpace.around("mobilenet_v3_small").candidate(()), "tuple of 6 stage choices"),
    (lambda: SearchSpace.around("mobilenet_v3_small").candidate(
        (StageChoice("ir", 9, "base", True, "re", 0, 1.0),) + (None,) * 5), "kernel 9 is not in the space"),
    (lambda: SearchSpace.around("mobilenet_v3_small").candidate(
        (StageChoice("ds", 3, 6, True, "re", 0, 1.0),) + (None,) * 5), r"expansion 6 is not allowed"),
    (lambda: SearchSpace.around("mobilenet_v3_small").candidate(
        (StageChoice("ir", 3, "base", True, "re", -1, 1.0),) + (None,) * 5), "repeats -1 not allowed"),
    (lambda: SearchSpace.around("mobilenet_v3_small").choices_of(lightnets.create_model("mobilenet_v3_large").spec),
     "7 stages, the space 6"),
    (lambda: SearchSpace.around("mobilenet_v2").choices_of(lightnets.create_model("mobilenet_v2").spec),
     r"stage 0 \(ds_k3_s1_c16_nores_r6\) is not reachable"),  # ReLU6 is not among the default activations
    (lambda: SearchSpace(lightnets.create_model("shufflenet_v2").spec, (StageOptions(),) * 3),
     "only ir / ds stages can be searched"),
    (lambda: SearchSpace.from_json("{}"), "exactly the keys"),
])
def test_the_space_refuses_bad_input(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_a_base_with_no_searchable_stage_is_a_space_of_one():
    spec = lightnets.create_model("shufflenet_v2", num_classes=10).spec
    space = SearchSpace.around("shufflenet_v2", num_classes=10)
    assert space.stages == (None, None, None) and space.size() == 1
    assert space.candidate(space.base_choices()) == spec


# ---- the search ---------------------------------------------------------------------------


def _evaluator(steps=1):
    from lightnets.train import digits

    data = digits(resolution=16, train_fraction=0.3)
    # one thread: on a busy machine a multi-threaded step waits for cores far longer than it computes
    return ProxyEvaluator(data, LatencyTable.new(threads=1, runs=1), input_size=16, steps=steps, threads=1)


def test_a_search_scores_trials_with_the_reward_and_continues_to_a_larger_budget(fake_timing, tmp_path, optuna):
    space = SearchSpace.around("mobilenet_v3_small_050", num_classes=10)
    evaluator = _evaluator()
    messages = []
    first = search(space, evaluator, budget=3, target_ms=2.0, w=W_MOBILENET_V3_SMALL, run_dir=str(tmp_path),
                   noise_seeds=1, log=messages.append)
    assert [r["number"] for r in first.rows] == [0, 1, 2]
    for row in first.rows:
        spec = NetSpec.parse(row["spec"])
        assert row["latency_ms"] == pytest.approx(evaluator.latency_ms(spec))
        assert row["reward"] == pytest.approx(reward(row["accuracy"], row["latency_ms"], 2.0, W_MOBILENET_V3_SMALL))
    assert first.best["reward"] == max(r["reward"] for r in first.rows) and first.best_spec == NetSpec.parse(
        first.best["spec"])
    assert first.best["measured_ms"] == pytest.approx(first.best["latency_ms"])  # calibrated on the base
    assert any("best reward" in m for m in messages) and any("proxy top-1 over the first 3" in m for m in messages)
    # the proxy is deterministic: the best network trained again scores the same; another seed is the noise check
    assert evaluator.accuracy(first.best_spec) == first.best["accuracy"]
    assert first.spread["seed_accuracies"] == [first.best["accuracy"], evaluator.accuracy(first.best_spec, seed=1)]
    assert any("trained from 2 seeds" in m for m in messages)
    messages.clear()
    more = search(space, evaluator, budget=4, target_ms=2.0, w=W_MOBILENET_V3_SMALL, run_dir=str(tmp_path),
                  log=messages.append)
    assert any("has 3 of 4 trials complete; continuing" in m for m in messages)
    assert [r["number"] for r in more.rows] == [0, 1, 2, 3]
    assert [r["spec"] for r in more.rows[:3]] == [r["spec"] for r in first.rows]
    with pytest.raises(ValueError, match="other settings .*target_ms"):
        search(space, evaluator, budget=4, target_ms=3.0, w=W_MOBILENET_V3_SMALL, run_dir=str(tmp_path))


def test_a_pareto_search_keeps_the_front(fake_timing, tmp_path, optuna):
    space = SearchSpace.around("mobilenet_v3_small_050", num_classes=10)
    result = search(space, _evaluator(), budget=3, pareto=True, sampler="nsga2", run_dir=str(tmp_path),
                    measure=False, log=lambda m: None)
    assert result.front == pareto_front(result.rows) and result.front
    assert all(r["reward"] is None for r in result.rows)
    assert result.best["accuracy"] == max(r["accuracy"] for r in result.rows)


def test_search_refuses_bad_input(tmp_path, optuna):
    space = SearchSpace.around("mobilenet_v3_small_050", num_classes=10)
    evaluator = _evaluator()
    common = {"run_dir": str(tmp_path), "log": lambda m: None}
    with pytest.raises(ValueError, match="budget must be an integer >= 1"):
        search(space, evaluator, budget=0, target_ms=1.0, **common)
    with pytest.raises(ValueError, match="unknown sampler 'grid'"):
        search(space, evaluator, budget=1, target_ms=1.0, sampler="grid", **common)
    with pytest.raises(ValueError, match="needs a latency target"):
        search(space, evaluator, budget=1, **common)
    with pytest.raises(ValueError, match="not both"):
        search(space, evaluator, budget=1, target_ms=1.0, w=-0.1, hard=True, **common)
    with pytest.raises(ValueError, match="1000 classes, the data 10"):
        search(SearchSpace.around("mobilenet_v3_small_050"), evaluator, budget=1, target_ms=1.0, **common)
    with pytest.raises(ValueError, match="storage must be a database URL"):
        search(space, evaluator, budget=1, target_ms=1.0, storage="search.db", log=lambda m: None)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        ProxyEvaluator(evaluator.data, evaluator.table, input_size=16, steps=0)


def test_a_second_process_on_the_same_local_storage_is_refused(tmp_path):
    from lightnets.search.nas import _LocalLock

    held = _LocalLock(str(tmp_path / "search.db"))
    try:
        with pytest.raises(ValueError, match="another search is running"):
            _LocalLock(str(tmp_path / "search.db"))
    finally:
        held.release()
    _LocalLock(str(tmp_path / "search.db")).release()  # free again once released


def test_without_optuna_the_command_says_which_extra_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    assert main(["search", "--target-ms", "2", "--budget", "1", "--resolution", "16", "--out", "unused"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        'lightnets: error: architecture search needs optuna: pip install "lightnets[search]" (or optuna)'
    ]


def test_the_command_prints_the_space(capsys):
    assert main(["search", "--base", "mobilenet_v3_large", "--print-space"]) == 0
    out = capsys.readouterr().out
    assert f"{SearchSpace.around('mobilenet_v3_large').size():,} choice vectors" in out and "stage 6: kept" in out
    with pytest.raises(SystemExit, match="give --target-ms"):
        main(["search", "--budget", "1"])


def test_a_killed_search_resumes_with_no_trial_lost_or_repeated(tmp_path, optuna):
    """SIGKILL while trial 1 is evaluated but not yet told: the rerun fails it, asks its parameters
    again, and completes the budget; trial 0 is not run again. Then the best spec trains."""
    out = tmp_path / "search"
    cmd = [sys.executable, "-m", "lightnets", "search", "--base", "mobilenet_v3_small_050", "--target-ms", "5",
           "--budget", "3", "--proxy-steps", "1", "--resolution", "16", "--train-fraction", "0.3", "--runs", "1",
           "--threads", "1", "--measure-top", "0", "--noise-seeds", "0", "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    killed = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False,
                            env={**env, "LIGHTNETS_FAULT": "nas-trial-1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    url = f"sqlite:///{out / 'search.db'}"
    before = optuna.load_study(study_name="lightnets-search", storage=url).trials
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"]
    assert "accuracy" in before[1].user_attrs  # evaluated, never told
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "trial(s) [1] of a killed run are asked again" in resumed.stdout
    trials = optuna.load_study(study_name="lightnets-search", storage=url).trials
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 3 and trials[1].state.name == "FAIL"
    assert complete[0].number == 0 and complete[0].user_attrs == before[0].user_attrs  # not run again
    retries = [t for t in complete if t.system_attrs.get("failed_trial") is not None]
    assert [(t.system_attrs["failed_trial"], t.params) for t in retries] == [(1, before[1].params)]  # asked again
    assert retries[0].user_attrs["spec"] == before[1].user_attrs["spec"]
    result = json.loads((out / "search.json").read_text())
    assert sorted(r["number"] for r in result["trials"]) == [t.number for t in complete]
    best = NetSpec.parse((out / "best_spec.txt").read_text())
    assert best == NetSpec.parse(result["best"]["spec"])
    # the searched network trains from its spec file, and its checkpoint rebuilds it
    from lightnets.formats import load_model

    run = tmp_path / "train"
    assert main(["train", "--spec", str(out / "best_spec.txt"), "--epochs", "1", "--max-steps", "1",
                 "--resolution", "16", "--no-progress", "--out", str(run)]) == 0
    assert load_model(str(run / "last.safetensors"), "spec").model.spec == best
    with pytest.raises(SystemExit, match="not both"):
        main(["train", "mobilenet_v2", "--spec", str(out / "best_spec.txt")])


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_shared_storage_asks_again_the_trials_of_a_silent_worker(fake_timing, tmp_path, optuna):
    """The multi-machine path with SQLite standing in for PostgreSQL: a worker that stopped
    sending heartbeats leaves a running trial; the next worker fails it and runs its parameters."""
    import time

    from lightnets.search import open_study

    space = SearchSpace.around("mobilenet_v3_small_050", num_classes=10)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    study, _, lock, storage = open_study(url, "shared", None, directions=["maximize"], sampler=None, stale_after=3)
    assert lock is None  # a shared storage is not locked: other workers join it
    dead = study.ask()
    choices = space.suggest(dead)
    study_id = storage.get_study_id_from_name("shared")
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, dead.number))
    time.sleep(4)  # longer than stale_after: the worker is gone
    result = search(space, _evaluator(), budget=1, target_ms=2.0, storage=url, study_name="shared", stale_after=3,
                    calibrate=False, measure=False, log=lambda m: None)
    trials = optuna.load_study(study_name="shared", storage=url).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].system_attrs["failed_trial"] == 0 and trials[1].params == dead.params
    assert result.rows[0]["spec"] == str(space.candidate(choices))


def test_the_command_compares_with_random_search_on_one_latency_scale(fake_timing, tmp_path, capsys, optuna):
    pytest.importorskip("matplotlib")
    fake_timing.drift_ms = 0.01  # a second calibration would give another overhead
    out, plot, measured = tmp_path / "search", tmp_path / "front.png", tmp_path / "measured.png"
    assert main(["search", "--base", "mobilenet_v3_small_050", "--target-ms", "2", "--budget", "1", "--hard",
                 "--proxy-steps", "1", "--resolution", "16", "--train-fraction", "0.3", "--runs", "1", "--threads", "1",
                 "--train-threads", "1", "--compare-random", "--plot", str(plot), "--widths", "0.5", "--out",
                 str(out), "--plot-measured", str(measured), "--families", "shufflenet_v2:0.5", "--measure-rounds",
                 "1"]) == 0
    printed = capsys.readouterr().out
    assert "train it: lightnets train --spec" in printed and plot.stat().st_size > 10_000
    # the fronts of both searches (one trial each), the base at x0.5, ShuffleNetV2 x0.5: four networks
    assert f"wrote {measured} (4 networks measured side by side" in printed and measured.stat().st_size > 10_000
    url = f"sqlite:///{out / 'search.db'}"
    searched, random = (optuna.load_study(study_name=name, storage=url)
                        for name in ("lightnets-search", "lightnets-search-random"))
    assert len(searched.trials) == len(random.trials) == 1
    assert searched.user_attrs["calibration"] == random.user_attrs["calibration"]
    saved = json.loads((out / "search.json").read_text())
    assert saved["settings"]["hard"] and saved["best"]["reward"] == pytest.approx(
        reward(saved["best"]["accuracy"], saved["best"]["latency_ms"], 2.0, hard=True))
    with pytest.raises(SystemExit, match="--widths draws on the --plot"):
        main(["search", "--target-ms", "2", "--widths", "0.5"])
    with pytest.raises(SystemExit, match="--families draws on the measured plot"):
        main(["search", "--target-ms", "2", "--families", "mobilenet_v2:0.5"])
    with pytest.raises(SystemExit):  # argparse: not NAME:WIDTHS
        main(["search", "--target-ms", "2", "--plot-measured", "m.png", "--families", "mobilenet_v2"])


def test_a_candidate_whose_proxy_training_diverges_scores_zero_instead_of_stopping_the_search(monkeypatch):
    from lightnets.search import nas
    from lightnets.train import TrainingDiverged

    def diverging(*args, **kwargs):
        raise TrainingDiverged("the loss stopped being finite")

    monkeypatch.setattr(nas, "fit", diverging)
    data = (SimpleNamespace(classes=list(range(10))), None)  # never read: fit is replaced
    evaluator = nas.ProxyEvaluator(data, None, input_size=32, steps=1)
    spec = lightnets.create_model("mobilenet_v3_small_050", num_classes=10).spec
    assert evaluator.accuracy(spec) == 0.0


def test_the_proxy_spread_counts_the_candidates_within_half_a_point():
    from lightnets.search import proxy_spread

    rows = [{"number": n, "accuracy": a} for n, a in enumerate([0.900, 0.902, 0.904, 0.950, 0.500])]
    spread = proxy_spread(rows, first=4)  # the fifth candidate is not among the first four
    assert spread["count"] == 4 and spread["median"] == pytest.approx(0.903)
    assert spread["within_half_point"] == pytest.approx(3 / 4)  # 0.950 is 4.7 points off the median
    assert proxy_spread(rows[:3])["within_half_point"] == 1.0


def test_latency_is_predicted_and_measured_at_the_latency_size_and_accuracy_at_the_input_size(monkeypatch):
    from lightnets.search import nas

    seen = []
    table = SimpleNamespace(batch=1, predict=lambda spec, size: seen.append(("predict", size))
                            or SimpleNamespace(total_ms=1.0))
    monkeypatch.setattr(nas, "measure_whole", lambda table, model, shape, rounds: seen.append(("whole", shape))
                        or 2.0)
    monkeypatch.setattr(nas, "fit", lambda model, data, *a, **k: seen.append(("fit", data))
                        or SimpleNamespace(final={"val_top1": 0.5}))
    data = (SimpleNamespace(classes=list(range(10))), None)
    evaluator = nas.ProxyEvaluator(data, table, input_size=16, steps=1, latency_size=224)
    spec = lightnets.create_model("mobilenet_v3_small_050", num_classes=10).spec
    assert evaluator.latency_ms(spec) == 1.0 and evaluator.measured_ms(spec) == 2.0
    assert evaluator.accuracy(spec) == 0.5
    assert seen[:2] == [("predict", 224), ("whole", (1, 3, 224, 224))]
    # a registered network as the target: measured whole, with the data's classes
    assert evaluator.target_ms("mobilenet_v3_small_075") == 2.0 and seen[-1] == ("whole", (1, 3, 224, 224))
    assert evaluator.named_spec("mobilenet_v3_small_075").head.num_classes == 10
    assert nas.ProxyEvaluator(data, table, input_size=16, steps=1).latency_size == 16  # default: one size
    with pytest.raises(ValueError, match="latency_size must be an integer >= 1"):
        nas.ProxyEvaluator(data, table, input_size=16, steps=1, latency_size=0)
    with pytest.raises(ValueError, match="unknown model|not a registered|no model"):
        evaluator.target_ms("mobilenet_v9")


def test_the_command_takes_its_target_from_a_measured_network(fake_timing, tmp_path, capsys, optuna):
    out = tmp_path / "search"
    assert main(["search", "--base", "mobilenet_v3_small_050", "--target-model", "mobilenet_v3_small_050",
                 "--budget", "1", "--proxy-steps", "1", "--resolution", "16", "--latency-resolution", "24",
                 "--train-fraction", "0.3", "--val-from-train", "--runs", "1", "--threads", "1",
                 "--train-threads", "1", "--measure-top", "0", "--noise-seeds", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "the target is mobilenet_v3_small_050: its predicted latency during the search (24x24" in printed
    written = json.loads((out / "search.json").read_text())
    saved = written["settings"]
    assert saved["latency_size"] == 24 and saved["input_size"] == 16
    # the proxy scored on the training images the fraction left out, not on the val split
    assert saved["val"] == "train-rest" and saved["val_images"] + saved["train_images"] == 1438
    with pytest.raises(SystemExit, match="apply to the built-in digits"):
        main(["search", "--target-ms", "2", "--data", str(tmp_path), "--val-from-train"])
    # the fake measures a whole network as its sites plus 0.5 ms, so the calibrated table predicts
    # exactly that: the base network's prediction is the target, and it is measured beside the best
    base = lightnets.create_model("mobilenet_v3_small_050", num_classes=10)
    sites = sum(0.1 + sum(p.numel() for p in lut.build_site(s, base.spec.settings).parameters()) / 1e6
                for s in walk(base.spec, 24))
    assert saved["target_ms"] is None and saved["target_spec"] == str(base.spec)
    assert written["target_ms"] == pytest.approx(sites + 0.5)
    assert written["selection"]["measured_target_ms"] == pytest.approx(sites + 0.5)
    assert written["best"]["of_target"] == pytest.approx(written["best"]["measured_ms"] / (sites + 0.5))
    with pytest.raises(SystemExit):
        main(["search", "--target-ms", "2", "--target-model", "mobilenet_v3_small_075"])


def test_the_command_searches_on_an_image_folder_tree(fake_timing, tmp_path, capsys, optuna):
    """--data PATH: the proxy trains and scores on the user's ImageFolder tree (its train / val),
    and every candidate ends in a classifier of the tree's classes."""
    pytest.importorskip("PIL")
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c, channel in (("ant", 0), ("bee", 1), ("cow", 2)):
            folder = tmp_path / "tree" / split / c
            folder.mkdir(parents=True)
            for i in range(24 if split == "train" else 4):  # the recipe's batch is 64 images
                pixels = (torch.rand(20, 20, 3, generator=generator) * 60).to(torch.uint8)
                pixels[..., channel] += 180  # each class its own colour: something to learn
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    out = tmp_path / "search"
    assert main(["search", "--base", "mobilenet_v3_small_050", "--target-ms", "2", "--budget", "2",
                 "--data", str(tmp_path / "tree"), "--proxy-steps", "1", "--resolution", "16", "--runs", "1",
                 "--threads", "1", "--train-threads", "1", "--measure-top", "0", "--noise-seeds", "0",
                 "--out", str(out)]) == 0
    saved = json.loads((out / "search.json").read_text())
    assert saved["settings"]["train_images"] == 72 and saved["settings"]["val_images"] == 12
    assert saved["settings"]["input_size"] == 16
    assert len(saved["trials"]) == 2
    assert saved["settings"]["data"] != "digits"
    best = NetSpec.parse(saved["best"]["spec"])
    assert best.head.num_classes == 3
    with torch.no_grad():
        assert build(best).eval()(torch.randn(1, 3, 16, 16)).shape == (1, 3)


def test_random_candidates_of_the_space_are_reproducible_and_in_the_space():
    space = SearchSpace.around("mobilenet_v3_small", num_classes=10)
    drawn = space.sample(5, seed=3)
    assert [str(s) for s in drawn] == [str(s) for s in space.sample(5, seed=3)]
    assert len({str(s) for s in drawn}) == 5 and str(space.sample(1, seed=4)[0]) != str(drawn[0])
    for spec in drawn:
        assert space.candidate(space.choices_of(spec)) == spec  # every draw is a network of the space
    assert space.sample(0) == []
    with pytest.raises(ValueError, match="count must be an integer >= 0"):
        space.sample(-1)


def test_a_search_calibrates_its_table_on_the_base_and_random_candidates_at_the_latency_size(monkeypatch, tmp_path,
                                                                                              optuna):
    from lightnets.search import CALIBRATION_SAMPLES, nas

    space = SearchSpace.around("mobilenet_v3_small_050", num_classes=10)
    evaluator = _evaluator()
    evaluator.latency_size = 24  # accuracy at 16 px, latency at 24
    seen = []

    def calibrate(networks, input_size, rounds=3):
        seen.append(([str(n) for n in networks], input_size))
        return evaluator.table.overhead_ms, evaluator.table.scale

    monkeypatch.setattr(evaluator.table, "calibrate", calibrate)
    monkeypatch.setattr(evaluator.table, "predict", lambda spec, size: SimpleNamespace(total_ms=1.0))
    monkeypatch.setattr(evaluator, "accuracy", lambda spec, seed=None: 0.5)
    search(space, evaluator, budget=1, target_ms=2.0, run_dir=str(tmp_path), measure=False, log=lambda m: None)
    (networks, size), = seen
    assert size == 24  # the size latency is predicted at, not the proxy's
    expected = [space.base_network(), *space.sample(CALIBRATION_SAMPLES, seed=nas.CALIBRATION_SEED)]
    assert networks == [str(n) for n in expected]


def test_the_accuracy_error_is_the_binomial_standard_error_of_the_split():
    from lightnets.search import accuracy_error

    assert accuracy_error(0.97, 1006) == pytest.approx(math.sqrt(0.97 * 0.03 / 1006))  # 0.54 points
    assert accuracy_error(1.0, 200) == pytest.approx(1 / 200)  # never below one image
    with pytest.raises(ValueError, match="images must be an integer >= 1"):
        accuracy_error(0.5, 0)
    with pytest.raises(ValueError, match="fraction in"):
        accuracy_error(1.5, 10)


@pytest.mark.parametrize("select", ["budget", "reward"])
def test_finalists_tied_within_the_proxy_error_are_measured_and_budget_keeps_the_slowest_within_target(
        fake_timing, tmp_path, optuna, monkeypatch, select):
    """Every candidate scores the same proxy top-1, so all are tied; with the fake, measured equals
    predicted, so ``budget`` must return the slowest network within the target and ``reward`` the
    first best reward."""
    space = SearchSpace.around("mobilenet_v3_small_050", num_classes=10)
    evaluator = _evaluator()
    monkeypatch.setattr(evaluator, "accuracy", lambda spec, seed=None: 0.9)
    result = search(space, evaluator, budget=6, target_spec=space.base_network(), hard=True, run_dir=str(tmp_path),
                    measure_top=10, measure_rounds=1, select=select, log=lambda m: None)
    base_ms = evaluator.latency_ms(space.base_network())  # with the calibration the search fitted
    assert result.target_ms == pytest.approx(base_ms)  # the target network's prediction
    sel = result.selection
    # two accuracies on n images: sqrt(2) standard errors of one apart by chance
    assert sel["rule"] == select and sel["band"] == pytest.approx(math.sqrt(2 * 0.9 * 0.1 / evaluator.data[1].size))
    measured = [r for r in result.rows if "measured_ms" in r]
    assert sorted(r["number"] for r in measured) == sorted(sel["contenders"])
    assert sel["measured_target_ms"] == pytest.approx(base_ms)  # measured beside them: exact under the fake
    for row in measured:
        assert row["measured_ms"] == pytest.approx(row["latency_ms"])
        assert row["of_target"] == pytest.approx(row["measured_ms"] / sel["measured_target_ms"])
        assert row["measured_reward"] == pytest.approx(reward(0.9, row["measured_ms"], sel["measured_target_ms"],
                                                              hard=True))
    within = [r for r in result.rows if r["latency_ms"] <= base_ms]
    if select == "budget" and within:
        assert result.best["number"] == max(within, key=lambda r: r["latency_ms"])["number"]
    else:
        assert result.best["number"] == sel["best_reward"] == max(result.rows, key=lambda r: r["reward"])["number"]


def test_a_network_predicted_just_over_the_target_is_measured_and_kept_when_it_measures_under(
        fake_timing, tmp_path, optuna, monkeypatch):
    """The table's benefit of the doubt: candidates predicted up to 10% over the target are
    finalists; here every network measures 10% faster than predicted (the target as predicted),
    so the slowest predicted within 110% of the target is within it when measured."""
    from lightnets.search import nas

    space = SearchSpace.around("mobilenet_v3_small_050", num_classes=10)
    evaluator = _evaluator()
    monkeypatch.setattr(evaluator, "accuracy", lambda spec, seed=None: 0.9)
    base = space.base_network()

    def faster(specs, rounds=3, fresh_process=False):
        return [evaluator.latency_ms(s) * (1.0 if s == base else 0.9) for s in specs]

    monkeypatch.setattr(evaluator, "measure_side_by_side", faster)
    result = search(space, evaluator, budget=8, target_spec=base, hard=True, run_dir=str(tmp_path), measure_top=20,
                    seed=3, log=lambda m: None)
    target = result.target_ms
    near = [r for r in result.rows if r["latency_ms"] <= (1 + nas.PREDICTION_MARGIN) * target]
    assert {r["number"] for r in near} <= set(result.selection["contenders"])
    assert result.best["number"] == max(near, key=lambda r: r["latency_ms"])["number"]
    assert result.best["measured_ms"] <= target


def test_a_clearly_better_network_wins_over_slower_ones_that_are_not_tied(fake_timing, tmp_path, optuna,
                                                                          monkeypatch):
    space = SearchSpace.around("mobilenet_v3_small_050", num_classes=10)
    evaluator = _evaluator()
    scores = iter([0.5, 0.9, 0.5, 0.5, 0.5])  # trial 1 is 40 points ahead, far beyond the proxy's error
    monkeypatch.setattr(evaluator, "accuracy", lambda spec, seed=None: next(scores))
    result = search(space, evaluator, budget=5, target_ms=1000.0, hard=True, run_dir=str(tmp_path),
                    measure_top=10, measure_rounds=1, log=lambda m: None)
    assert result.best["number"] == 1 and result.selection["contenders"] == [1]
    assert result.best["of_target"] == pytest.approx(result.best["measured_ms"] / 1000.0)


def test_search_refuses_a_bad_target_or_selection(tmp_path, optuna):
    space = SearchSpace.around("mobilenet_v3_small_050", num_classes=10)
    evaluator = _evaluator()
    common = {"run_dir": str(tmp_path), "log": lambda m: None, "budget": 1}
    with pytest.raises(ValueError, match="not both"):
        search(space, evaluator, target_ms=1.0, target_spec=space.base_network(), **common)
    with pytest.raises(ValueError, match="target_spec must be a NetSpec"):
        search(space, evaluator, target_spec="mobilenet_v3_small", **common)
    with pytest.raises(ValueError, match="the target network has 1000 classes"):
        search(space, evaluator, target_spec=lightnets.create_model("mobilenet_v3_small").spec, **common)
    with pytest.raises(ValueError, match="unknown select 'fastest'; allowed: budget, reward"):
        search(space, evaluator, target_ms=1.0, select="fastest", **common)
    with pytest.raises(ValueError, match="measure_rounds must be an integer >= 1"):
        search(space, evaluator, target_ms=1.0, measure_rounds=0, **common)


def test_networks_can_be_measured_side_by_side_in_a_new_process():
    """The child loads a copy of the table (its settings and reference speed) and times real
    networks; a tiny input keeps it short."""
    table = LatencyTable.new(threads=1, runs=5, warmup=2)
    evaluator = ProxyEvaluator((SimpleNamespace(classes=list(range(10))), None), table, input_size=32, steps=1)
    small = lightnets.create_model("mobilenet_v3_small_050", num_classes=10).spec
    large = lightnets.create_model("mobilenet_v3_large", num_classes=10).spec
    times = evaluator.measure_side_by_side([small, large], rounds=1, fresh_process=True)
    assert len(times) == 2 and all(t > 0 and math.isfinite(t) for t in times)
    assert times[1] > times[0]  # MobileNetV3-Large at full width against Small at half: far more work
