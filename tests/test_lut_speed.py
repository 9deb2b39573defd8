"""The latency table's speed reference: where it is read, how times are divided by it, and how
tables with and without it are compared and stored. Timings are injected by a fake machine
whose speed the tests set (no real timing)."""

import json
from types import SimpleNamespace

import pytest
import torch

import lightnets
import lightnets.search.lut as lut
from lightnets.cli import main
from lightnets.cost import REFERENCE_ID, RoundTimes, SpeedReference, reference_module, round_order, round_schedule
from lightnets.models import ConvNet, walk
from lightnets.search import LatencyTable, raw_view, refit, summarize, validate

REFERENCE_MS = 0.2  # the fake machine's reference at speed 1
WHOLE_EXTRA_MS = 0.5


def _site_ms(module):
    return 0.1 + sum(p.numel() for p in module.parameters()) / 1e6


@pytest.fixture
def machine(monkeypatch, fake_exports):
    """A fake machine: every module takes its base time (a site 0.1 ms plus 1 ms per million
    parameters, a whole network its sites plus WHOLE_EXTRA_MS, the reference REFERENCE_MS)
    times ``slowness(call)``, ``call`` counting every timing so far; both backends' timing
    functions are replaced."""
    state = SimpleNamespace(slowness=lambda call: 1.0, calls=0)

    def base_ms(module, input_size):
        if isinstance(module, SpeedReference):
            return REFERENCE_MS
        if isinstance(module, ConvNet):
            sites = walk(module.spec, input_size[-1])
            return sum(_site_ms(lut.build_site(s, module.spec.settings)) for s in sites) + WHOLE_EXTRA_MS
        return _site_ms(module)

    def fake(module, input_size, *, runs=50, **_):
        ms = base_ms(module, input_size) * state.slowness(state.calls)
        state.calls += 1
        return SimpleNamespace(median_ms=ms, times_ms=[ms] * runs)

    def fake_onnxruntime(modules, shapes, *, threads, runs=30, warmup=10, int8=False, rounds=3, part=False,
                         reference=False, reference_every=4, on_step=None):
        every = reference_every if reference else None
        timed, readings = [[] for _ in modules], []
        for r in range(rounds):
            readings.append([])
            for i in round_schedule(len(modules), r, every):
                if i is None:
                    readings[r].append(fake(reference_module(), (1, 32, 56, 56), runs=1).median_ms)
                else:
                    timed[i].append(fake(modules[i], shapes[i], runs=-(-runs // rounds)).times_ms)
        return RoundTimes(timed, readings if reference else None, every)

    monkeypatch.setattr(lut, "measure_latency", fake)
    monkeypatch.setattr(lut, "onnxruntime_rounds", fake_onnxruntime)
    monkeypatch.setattr(lut, "TimingExports", fake_exports(fake_onnxruntime, 0.0))
    return state


def test_the_reference_is_read_at_each_rounds_start_every_k_modules_and_at_its_end():
    assert round_schedule(10, 0, 4) == [None, 0, 1, 2, 3, None, 4, 5, 6, 7, None, 8, 9, None]
    shuffled = round_order(10, 1)
    assert round_schedule(10, 1, 4) == [None, *shuffled[:4], None, *shuffled[4:8], None, *shuffled[8:], None]
    assert round_schedule(8, 0, 4) == [None, 0, 1, 2, 3, None, 4, 5, 6, 7, None]  # the end's reading is not doubled
    assert round_schedule(3, 2, None) == round_order(3, 2)  # no reference: the order alone
    assert round_schedule(0, 0, 4) == [None]  # nothing to time: one reading (speed_now)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="reference_every must be an integer >= 1"):
            round_schedule(3, 0, bad)


def test_each_module_is_divided_by_the_reference_interpolated_where_it_was_timed(machine):
    # every = 1: the schedule is R m R m R m R, positions 0-6; the machine slows linearly along it,
    # the first module (position 1) at 1x, the last (position 5) at 2x
    machine.slowness = lambda call: 1 + (call - 1) / 4
    table = LatencyTable.new(threads=1, runs=2, reference_every=1)
    modules = [torch.nn.Conv2d(8, 8, 1) for _ in range(3)]  # alike: each takes the same base time
    timed = table.time_rounds(modules, [(1, 8, 4, 4)] * 3, 1, part=True, label="t", show_progress=False)
    assert timed.reference_ms == [[REFERENCE_MS * (1 + (p - 1) / 4) for p in (0, 2, 4, 6)]]
    raw = [per_round[0][0] for per_round in timed.times_ms]
    assert raw[2] == pytest.approx(2 * raw[0])  # as measured: the machine's slowing
    times, factors = table.normalise(timed)
    nominal = table.reference_ms
    assert nominal == pytest.approx(REFERENCE_MS * (1 + (3 - 1) / 4))  # the median reading sets the nominal time
    assert [f[0] for f in factors] == pytest.approx([REFERENCE_MS * s / nominal for s in (1, 1.5, 2)])
    normalised = [per_round[0][0] for per_round in times]
    assert normalised == pytest.approx([normalised[0]] * 3)  # at one speed: alike
    assert normalised[0] == pytest.approx(raw[0] * nominal / REFERENCE_MS)
    with pytest.raises(ValueError, match="nominal reference time must be > 0 ms"):
        timed.normalised(0.0)
    with pytest.raises(ValueError, match="without a speed reference"):
        RoundTimes(timed.times_ms).reference_at()


@pytest.mark.parametrize("backend", ["eager", "onnxruntime"])
def test_validation_compares_at_the_tables_nominal_speed(machine, backend):
    names = ["mobilenet_v3_small_050", "shufflenet_v2_x0_5", "mobilenet_v2_035"]
    specs = {n: lightnets.create_model(n).spec for n in names}
    table = LatencyTable.new(backend, threads=1, runs=2)
    table.measure_sites(specs.values(), 32, show_progress=False)
    assert table.calibrate(list(specs.values())[::2], 32) == pytest.approx((WHOLE_EXTRA_MS, 1.0))
    assert (table.raw_overhead_ms, table.raw_scale) == pytest.approx((WHOLE_EXTRA_MS, 1.0))  # one speed so far
    entry = next(iter(table.entries.values()))
    assert entry.raw_median_ms == pytest.approx(entry.median_ms)
    machine.slowness = lambda call: 2.0  # the machine at half its speed since the build
    rows = validate(table, specs, 32, show_progress=False)
    for row in rows:
        assert row["error"] == pytest.approx(0, abs=1e-9)  # both at the table's speed
        assert row["raw_error"] == pytest.approx(-0.5)  # as measured: predicted at the build's speed
        assert row["raw_measured_ms"] == pytest.approx(2 * row["measured_ms"])
        assert row["speed"] == row["speed_min"] == row["speed_max"] == pytest.approx(2.0)
    raw = raw_view(rows)
    assert [r["error"] for r in raw] == [r["raw_error"] for r in rows] and "raw_error" not in raw[0]
    assert summarize(raw)["all"]["within_10"] == 0 and summarize(rows)["all"]["within_10"] == len(rows)
    refitted, _, scale = refit(raw, 2)  # the refit on raw rows takes the speed into its scale
    assert scale == pytest.approx(2.0)
    prediction = table.predict(specs[names[0]], 32)
    assert table.speed_now(readings=3) == pytest.approx(2.0)
    assert prediction.at_speed(2.0) == pytest.approx(rows[0]["raw_measured_ms"])
    with pytest.raises(ValueError, match="factor must be a positive finite number"):
        prediction.at_speed(0)
    with pytest.raises(ValueError, match="readings must be an integer >= 1"):
        table.speed_now(readings=0)


def test_without_a_reference_times_are_as_measured(machine):
    spec = lightnets.create_model("mobilenet_v3_small_050").spec
    table = LatencyTable.new(threads=1, runs=2, reference=False)
    table.measure_sites([spec], 32, show_progress=False)
    table.calibrate([spec], 32)
    machine.slowness = lambda call: 2.0
    (row,) = validate(table, {"n": spec}, 32, show_progress=False)
    assert row["error"] == row["raw_error"] == pytest.approx(-0.5) and row["speed"] is None
    assert all(e.raw_median_ms is None and e.raw_ms == e.median_ms for e in table.entries.values())
    with pytest.raises(ValueError, match="no speed reference"):
        table.speed_now()
    with pytest.raises(ValueError, match="has measured nothing yet"):
        LatencyTable.new(threads=1).speed_now()


def test_tables_keep_their_reference_and_format_1_tables_still_load(machine, tmp_path):
    spec = lightnets.create_model("mobilenet_v3_small_050").spec
    table = LatencyTable.new(threads=1, runs=2, reference_every=3)
    table.measure_sites([spec], 32, show_progress=False)
    path = tmp_path / "t.json"
    table.save(str(path))
    again = LatencyTable.load(str(path))
    assert (again.reference, again.reference_every, again.reference_ms) == (True, 3, table.reference_ms)
    assert again.entries == table.entries
    # format 1, as written before the reference: no reference, no raw medians, no raw fit
    data = json.loads(path.read_text())
    old = {k: v for k, v in data.items() if k not in ("reference", "raw_overhead_ms", "raw_scale")}
    old["format"] = "lightnets-latency-table/1"
    fields = ("median_ms", "p10_ms", "p90_ms", "runs")
    old["entries"] = {k: {f: v[f] for f in fields} for k, v in data["entries"].items()}
    old["overhead_ms"], old["scale"] = 0.25, 1.5
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = LatencyTable.load(str(tmp_path / "old.json"))
    assert not loaded.reference and loaded.reference_ms is None
    assert (loaded.raw_overhead_ms, loaded.raw_scale) == (0.25, 1.5)
    prediction = loaded.predict(spec, 32, measure=False)
    assert prediction.raw_total_ms == prediction.total_ms  # as measured, both
    for bad, message in (({**data, "format": "lightnets-latency-table/9"}, r"format 'lightnets-latency-table/9'; "
                                                                           r"readable: lightnets-latency-table/1, "),
                         ({**data, "reference": {"ms": -1.0}}, "is malformed: .*speed reference must hold"),
                         ({**data, "reference": {**data["reference"], "every": 0}}, "reference_every must be"),
                         ({**data, "entries": {"k": {"median_ms": 1.0}}}, "is malformed")):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=message):
            LatencyTable.load(str(tmp_path / "bad.json"))
    other = LatencyTable.load(str(path))
    other.reference_id = "another block"
    with pytest.raises(ValueError, match=f"reference .*another block.* is not this version's .*{REFERENCE_ID[:5]}"):
        other.measure_sites([spec.replace_block(3, 0, mid_chs=40)], 32, show_progress=False)


def test_bad_reference_arguments_are_refused(machine, tmp_path, capsys):
    with pytest.raises(ValueError, match="reference_every must be an integer >= 1"):
        LatencyTable.new(reference_every=0)
    with pytest.raises(ValueError, match="reference must be True or False"):
        LatencyTable.new(reference="yes")
    path = str(tmp_path / "t.json")
    common = ["--models", "mobilenet_v3_small_050", "--resolution", "32", "--runs", "2", "--no-progress",
              "--calibrate-every", "0", "-o", path]
    assert main(["lut", "build", *common]) == 0
    assert "speed reference" in capsys.readouterr().out
    assert main(["lut", "build", "--no-reference", *common]) == 2
    assert "has a speed reference: extend it with one" in capsys.readouterr().err
    assert main(["lut", "build", "--no-reference", *common[:-1], str(tmp_path / "plain.json")]) == 0
    assert "no speed reference" in capsys.readouterr().out
    assert not LatencyTable.load(str(tmp_path / "plain.json")).reference
