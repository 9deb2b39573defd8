"""Measurement that survives load (issue 15): interleaved rounds, spread flags, the machine's
load, and denormals flushed in every worker thread. Timings are injected: no assertion here
depends on how fast this machine is."""

from __future__ import annotations

import statistics
import subprocess
import sys
import textwrap
from collections import deque

import pytest
from torch import nn

from lightnets.analysis.zoo import ZooRow, ZooRun
from lightnets.cli import main
from lightnets.cli.reports import zoo_report
from lightnets.cost import latency, load
from lightnets.cost.latency import LatencyResult, measure_latencies, measure_latency, percentile
from lightnets.cost.load import BUSY_CORES, LoadWatch, MachineLoad


class _Scripted:
    """Stands in for ``latency._timed``: hands out scripted times per network, records the order."""

    def __init__(self, script: dict[str, list[list[float]]]) -> None:
        self.script = {name: deque(chunks) for name, chunks in script.items()}
        self.order: list[str] = []
        self.by_runner: dict[int, str] = {}

    def __call__(self, prepared, runs: int) -> list[float]:
        name = self.by_runner[id(prepared.runner)]
        self.order.append(name)
        chunk = self.script[name].popleft()
        assert len(chunk) == runs, f"{name}: scripted {len(chunk)} times, asked for {runs}"
        return list(chunk)


def _scripted(monkeypatch, models: dict[str, nn.Module], script: dict[str, list[list[float]]]) -> _Scripted:
    monkeypatch.setattr(latency, "LoadWatch", _Loads([0.0] * 10).watch)  # an idle machine
    fake = _Scripted(script)
    fake.by_runner = {id(m): name for name, m in models.items()}
    monkeypatch.setattr(latency, "_timed", fake)
    return fake


class _Loads:
    """Stands in for ``latency.LoadWatch``: each attempt reads the next of ``cores`` (other
    processes' CPU use) over ``seconds``."""

    def __init__(self, cores: list[float], seconds: float = 1.0) -> None:
        self.cores, self.seconds = deque(cores), seconds

    def watch(self):
        loads = self

        class Watch:
            def start(self):
                return self

            def reading(self):
                return MachineLoad(loads.cores.popleft(), 2, loads.seconds, "/proc/stat")

        return Watch()


def _nets(*names: str) -> dict[str, nn.Module]:
    return {name: nn.Conv2d(1, 1, 1) for name in names}


def test_rounds_interleave_networks_and_take_the_median_of_round_medians(monkeypatch):
    nets = _nets("a", "b")
    a = [[1.0, 9.0], [2.0, 2.0], [3.0, 3.5]]
    b = [[5.0, 5.0], [5.5, 5.0], [4.0, 6.0]]
    fake = _scripted(monkeypatch, nets, {"a": a, "b": b})
    results = measure_latencies({k: (m, (1, 1, 4, 4)) for k, m in nets.items()}, runs=6, rounds=3, warmup=0)
    assert fake.order == ["a", "b"] * 3  # every network once per round, not one network's runs together
    res = results["a"]
    assert res.round_medians_ms == [5.0, 2.0, 3.25]
    assert res.median_ms == 3.25  # the median of the per-round medians, not of the pooled runs (3.0)
    pooled = sorted(t for chunk in a for t in chunk)
    assert (res.p10_ms, res.p90_ms) == (percentile(pooled, 0.1), percentile(pooled, 0.9))
    assert res.rounds == 3 and res.runs == 6 and res.attempts == 1
    assert results["b"].median_ms == statistics.median([5.0, 5.25, 5.0])


def test_a_wide_row_is_measured_again_and_flagged_only_if_it_stays_wide(monkeypatch):
    nets = _nets("steady", "noisy", "settles")
    steady = [[10.0, 10.2]] * 2
    noisy = [[10.0, 40.0], [9.0, 30.0]] * 3          # spread about 2.3 every attempt
    settles = [[10.0, 40.0], [9.0, 30.0], [10.0, 10.4], [10.2, 10.1]]  # wide, then steady
    fake = _scripted(monkeypatch, nets, {"steady": steady, "noisy": noisy, "settles": settles})
    results = measure_latencies({k: (m, (1, 1, 4, 4)) for k, m in nets.items()}, runs=4, rounds=2, warmup=0,
                                spread_limit=0.5, retries=2)
    assert not results["steady"].unstable and results["steady"].attempts == 1
    assert results["settles"].attempts == 2 and not results["settles"].unstable
    assert results["settles"].median_ms == pytest.approx(statistics.median([10.2, 10.15]))
    assert results["noisy"].attempts == 3 and results["noisy"].unstable
    assert results["noisy"].spread > 0.5
    # the retries interleave only the rows still over the limit
    assert fake.order == ["steady", "noisy", "settles"] * 2 + ["noisy", "settles"] * 2 + ["noisy"] * 2
    assert "UNSTABLE" in str(results["noisy"]) and "UNSTABLE" not in str(results["steady"])
    assert results["noisy"].to_dict()["unstable"] is True


def test_without_a_limit_nothing_is_flagged_or_repeated(monkeypatch):
    nets = _nets("a")
    fake = _scripted(monkeypatch, nets, {"a": [[1.0, 50.0, 1.0]]})
    result = measure_latency(nets["a"], (1, 1, 4, 4), runs=3, warmup=0)
    assert result.spread > 10 and not result.unstable and result.attempts == 1 and fake.order == ["a"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rounds": 0}, "rounds must be an integer >= 1"),
    ({"runs": 2, "rounds": 3}, r"runs \(2\) must be at least rounds \(3\)"),
    ({"spread_limit": 0.0}, "spread_limit must be a positive finite number"),
    ({"spread_limit": float("nan")}, "spread_limit must be a positive finite number"),
    ({"retries": -1}, "retries must be an integer >= 0"),
    ({"runs": {"other": 3}}, "runs names"),
])
def test_measure_latencies_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        measure_latencies({"a": (nn.Conv2d(1, 1, 1), (1, 1, 4, 4))}, **kwargs)


def test_nothing_to_measure_is_an_error():
    with pytest.raises(ValueError, match="nothing to measure"):
        measure_latencies({})


def test_worker_threads_flush_denormals_only_when_the_measurement_makes_them():
    """The defect: a worker team created before the flush keeps computing denormals. A fresh
    process (the team's creation is process state) shows the main thread's team unflushed and
    the measuring thread's team flushed."""
    script = textwrap.dedent("""
        import torch
        from lightnets.cost.latency import flushing_in_every_thread, on_measuring_thread
        torch.set_num_threads(2)
        torch.ones(1 << 22) * 2.0                 # the worker team is made here, not flushing
        torch.set_flush_denormal(True)
        print(flushing_in_every_thread(), on_measuring_thread(flushing_in_every_thread, threads=2))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]


def test_measure_latency_reports_flushing_in_every_thread():
    result = measure_latency(nn.Conv2d(1, 1, 1), (1, 1, 4, 4), runs=1, warmup=0, threads=2)
    assert result.denormals_flushed and result.threads == 2


def test_errors_on_the_measuring_thread_reach_the_caller():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("broken forward")

    with pytest.raises(RuntimeError, match="broken forward"):
        measure_latency(Broken(), (1, 1, 4, 4), runs=1, warmup=0)


def _fake_clock(monkeypatch, *, jiffies, own, wall):
    """Two readings of (busy jiffies, cpus), own CPU seconds and wall time, in order."""
    readings = {"jiffies": deque(jiffies), "own": deque(own), "wall": deque(wall)}
    monkeypatch.setattr(load, "_cpu_jiffies", lambda: readings["jiffies"].popleft())
    monkeypatch.setattr(load, "_own_cpu_seconds", lambda: readings["own"].popleft())
    monkeypatch.setattr(load.time, "monotonic", lambda: readings["wall"].popleft())
    monkeypatch.setattr(load.os, "sysconf", lambda name: 100)


def test_load_is_other_processes_cpu_time_over_wall_time(monkeypatch):
    # 2 s of wall time; all CPUs together busy 300 jiffies = 3 s, of which this process 0.5 s
    _fake_clock(monkeypatch, jiffies=[(1000, 2), (1300, 2)], own=[4.0, 4.5], wall=[10.0, 12.0])
    reading = LoadWatch().start().reading()
    assert reading.other_cores == pytest.approx((3.0 - 0.5) / 2.0) and reading.cores == 2
    assert reading.busy and reading.describe().startswith("BUSY MACHINE: other processes used 1.25 of 2 cores")


def test_an_idle_machine_is_not_called_busy(monkeypatch):
    # 1 s; 30 jiffies busy, 0.2 s of them ours: others used 0.1 cores, under the threshold
    _fake_clock(monkeypatch, jiffies=[(0, 2), (30, 2)], own=[0.0, 0.2], wall=[0.0, 1.0])
    reading = LoadWatch().start().reading()
    assert reading.other_cores == pytest.approx(0.1) and reading.other_cores < BUSY_CORES
    assert not reading.busy and "idle enough" in reading.describe()


def test_without_proc_stat_the_load_average_stands_in_and_says_so(monkeypatch):
    _fake_clock(monkeypatch, jiffies=[None, None], own=[0.0, 0.0], wall=[0.0, 1.0])
    monkeypatch.setattr(load.os, "getloadavg", lambda: (1.5, 1.0, 1.0))
    reading = LoadWatch().start().reading()
    assert reading.source == "loadavg" and reading.other_cores == 1.5
    assert "load average" in reading.describe() and "includes this process" in reading.describe()


def test_machine_load_rejects_a_bad_interval():
    with pytest.raises(ValueError, match=r"seconds must be a number in \(0, 60\]"):
        load.machine_load(0)


def _row(name: str, median: float, p10: float, p90: float, limit: float = 0.5) -> ZooRow:
    lat = LatencyResult("eager", (1, 3, 32, 32), median, p10, p90, 10, 1, 2, "cpu", False, True, "x",
                        rounds=5, attempts=3 if (p90 - p10) / median > limit else 1, spread_limit=limit)
    return ZooRow(name, "mobilenet_v2", [], 1000, 2_000_000, 10, 40, lat)


def _run(rows: list[ZooRow], busy: bool = False) -> ZooRun:
    reading = MachineLoad(1.2 if busy else 0.0, 2, 0.5, "/proc/stat")
    return ZooRun(rows, 32, "eager", 2, 5, 10, 0.5, 2, reading, reading)


def test_the_zoo_report_keeps_unstable_rows_apart_and_counts_them():
    # the unstable row is the fastest figure: it must not lead the ranking
    run = _run([_row("steady_b", 3.0, 2.9, 3.2), _row("steady_a", 2.0, 1.9, 2.1), _row("wild", 1.0, 0.5, 9.0)])
    text = zoo_report(run, "title")
    lines = text.splitlines()
    unstable_header = next(i for i, line in enumerate(lines) if line.startswith("UNSTABLE rows"))
    wild = next(i for i, line in enumerate(lines) if line.startswith("wild"))
    assert all(lines.index(line) < unstable_header for line in lines if line.startswith("steady"))
    assert wild > unstable_header and "UNSTABLE: spread" in lines[wild]
    assert lines[-1].startswith("1 of 3 rows UNSTABLE") and lines[-1].endswith("wild")
    assert "5 interleaved rounds" in text
    assert [r.name for r in run.unstable] == ["wild"]


def test_a_busy_machine_is_said_in_the_header():
    busy, idle = _run([_row("a", 1.0, 0.9, 1.1)], busy=True), _run([_row("a", 1.0, 0.9, 1.1)])
    assert any("BUSY MACHINE" in line for line in busy.header())
    assert any("other work was running" in line for line in busy.header())
    assert not any("BUSY" in line for line in idle.header())
    assert idle.summary() == "all 1 rows stable (spread within 50%)"


def test_the_zoo_plot_draws_unstable_rows_hollow(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from lightnets.analysis import plots

    drawn = []
    real = plots.pyplot

    def spying():
        plt = real()
        original = plt.Axes.errorbar

        def errorbar(self, *args, **kwargs):
            drawn.append((kwargs.get("label"), kwargs.get("mfc")))
            return original(self, *args, **kwargs)

        monkeypatch.setattr(plt.Axes, "errorbar", errorbar)
        return plt

    monkeypatch.setattr(plots, "pyplot", spying)
    plots.plot_zoo([_row("steady", 2.0, 1.9, 2.1), _row("wild", 1.0, 0.5, 9.0)], str(tmp_path / "z.png"), "t")
    assert ("mobilenet_v2", plots.FAMILY_COLOURS["mobilenet_v2"]) in drawn
    assert ("mobilenet_v2 (UNSTABLE)", "none") in drawn


def test_zoo_command_states_rounds_load_and_stability(capsys):
    assert main(["zoo", "--resolution", "32", "--runs", "4", "--rounds", "2", "--warmup", "0",
                 "--models", "mobilenet_v3_small_050"]) == 0
    out = capsys.readouterr().out
    assert "measured in 2 interleaved rounds" in out
    assert "before: " in out and "during: " in out
    last = out.strip().splitlines()[-1]
    assert last.startswith(("all 1 rows stable", "1 of 1 rows UNSTABLE"))


def test_zoo_rejects_an_empty_model_list(capsys):
    with pytest.raises(SystemExit) as exit_:  # argparse's usage error (lightnets.cli.options.nonempty_list)
        main(["zoo", "--models", ""])
    assert exit_.value.code == 2 and "argument --models" in capsys.readouterr().err


def test_cli_spread_limit_default_is_the_library_default():
    from lightnets.cli.main import build_parser

    args = build_parser().parse_args(["zoo"])
    assert args.spread_limit == latency.SPREAD_LIMIT


def test_lab_marks_comparisons_resting_on_unstable_networks(monkeypatch, idle_machine):
    from lightnets.lab import LabConfig, run_lab

    def timed(prepared, runs):  # the g=8 network (width 192 at x1) is erratic, the rest steady
        erratic = prepared.x.shape[1] == 192
        return [1.0 if i % 2 else 5.0 for i in range(runs)] if erratic else [1.0] * runs

    monkeypatch.setattr(latency, "_timed", timed)
    config = LabConfig(map_size=4, seconds_per_network=0.001, min_runs=4, max_runs=4, rounds=2)
    (result,) = run_lab(["g2"], config)
    flagged = [(c.variant, c.column) for c in result.cells if c.unstable]
    assert flagged == [("g=8", "x1")]
    shaky = [(c.faster, c.slower, c.column) for c in result.claims if c.unstable]
    assert shaky == [("g=4", "g=8", "x1")]
    assert "1 comparison rests on UNSTABLE measurements" in result.verdict_line()


def test_a_row_timed_while_others_used_the_cpu_is_flagged_even_with_a_narrow_spread(monkeypatch):
    """The case the spread cannot catch: uniformly slow runs (2,066 ms at a 1% spread under a hog)."""
    nets = _nets("a", "b")
    _scripted(monkeypatch, nets, {"a": [[100.0, 101.0]] * 3, "b": [[100.0, 101.0]] * 3})
    # attempt 1 busy (1.9 cores), attempt 2 idle for "a"... but both rows are retried together
    monkeypatch.setattr(latency, "LoadWatch", _Loads([1.9, 1.2, 1.5]).watch)
    results = measure_latencies({k: (m, (1, 1, 4, 4)) for k, m in nets.items()}, runs=2, rounds=1, warmup=0,
                                spread_limit=0.5, retries=2)
    for result in results.values():
        assert result.spread < 0.5 and result.unstable and result.attempts == 3
        assert result.other_cores == 1.2  # the least busy attempt is kept
        assert result.flag_reason == "other processes used 1.20 cores while it was timed"


def test_a_busy_attempt_followed_by_a_quiet_one_is_not_flagged(monkeypatch):
    nets = _nets("a")
    _scripted(monkeypatch, nets, {"a": [[10.0, 10.1]] * 2})
    monkeypatch.setattr(latency, "LoadWatch", _Loads([1.5, 0.0]).watch)
    result = measure_latency(nets["a"], (1, 1, 4, 4), runs=2, warmup=0, spread_limit=0.5, retries=2)
    assert not result.unstable and result.attempts == 2 and result.other_cores == 0.0


def test_a_reading_over_too_short_a_time_is_not_used(monkeypatch):
    nets = _nets("a")
    _scripted(monkeypatch, nets, {"a": [[10.0, 10.1]]})
    monkeypatch.setattr(latency, "LoadWatch", _Loads([1.5], seconds=0.1).watch)
    result = measure_latency(nets["a"], (1, 1, 4, 4), runs=2, warmup=0, spread_limit=0.5)
    assert result.other_cores is None and not result.unstable


def test_drift_between_rounds_is_taken_out_of_the_spread_that_flags(monkeypatch):
    """The whole machine twice as slow in round 2 (a host slowing down): every run steady
    within its round, so the row is stable, and the drift is reported, not hidden."""
    nets = _nets("a")
    _scripted(monkeypatch, nets, {"a": [[10.0, 10.2, 9.9], [20.0, 20.4, 19.8], [10.1, 10.0, 10.2]]})
    result = measure_latency(nets["a"], (1, 1, 4, 4), runs=9, rounds=3, warmup=0, spread_limit=0.5)
    assert result.spread > 0.9  # over all runs: p10 about 9.98, p90 about 20.08
    relative = sorted(t / m for chunk, m in (([10.0, 10.2, 9.9], 10.0), ([20.0, 20.4, 19.8], 20.0),
                                             ([10.1, 10.0, 10.2], 10.1)) for t in chunk)
    assert result.round_spread == pytest.approx(percentile(relative, 0.9) - percentile(relative, 0.1))
    assert result.stability_spread == result.round_spread < 0.05 and not result.unstable
    assert result.drift == pytest.approx((20.0 - 10.0) / 10.1)
