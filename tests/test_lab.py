
import pytest
import torch
from torch import nn

from lightnets.cli import main
from lightnets.cost import latency, profile
from lightnets.lab import Claim, ExperimentResult, LabConfig, run_lab
from lightnets.lab.experiments import GRIDS, Cell, g2_channels
from lightnets.lab.networks import MAP_SIZE, Bottleneck, depthwise_separable, g3_network, standard_conv


@pytest.mark.parametrize("name", sorted(GRIDS))
@pytest.mark.parametrize("setting", ["cpu", "gpu"])
def test_variants_of_an_experiment_have_equal_madds(name, setting):
    # ShuffleNetV2 section 2: each comparison holds FLOPs fixed; that is what makes it fair.
    grid = GRIDS[name](setting)
    for column in grid.columns:
        with torch.device("meta"):
            nets = [grid.build(v, column) for v in grid.variants]
        madds = [profile(n, (1, n.in_chs, MAP_SIZE, MAP_SIZE)).total.madds for n in nets]
        assert (max(madds) - min(madds)) / min(madds) <= 0.02, (column, madds)


def test_grids_follow_the_papers_settings():
    g1 = GRIDS["g1"]("gpu")
    assert g1.build("1:1", "x1").label == "(128, 128)"
    assert g1.build("1:12", "x1").label == "(36, 455)"  # c1 from the paper, c2 = 128^2 / 36
    assert g1.paper_value("1:6", "x2") == 489
    assert [g2_channels("gpu", g, "x1") for g in (1, 2, 4, 8)] == [128, 180, 256, 360]
    assert [g2_channels("cpu", g, "x2") for g in (1, 2, 4, 8)] == [128, 180, 256, 360]
    assert GRIDS["g3"]("cpu").columns == ["c=64", "c=128", "c=256"]
    assert GRIDS["g4"]("cpu").paper_value("ReLU no, shortcut no", "c=32") == 66.3


def test_fragment_blocks_shapes():
    x = torch.randn(1, 64, 8, 8)
    assert g3_network("4-fragment-parallel", 64)(x).shape == (1, 64, 8, 8)
    series = g3_network("2-fragment-series", 64)
    assert series.in_chs == 45 and series(torch.randn(1, 45, 8, 8)).shape == (1, 45, 8, 8)
    kinds = [r.kind for r in profile(depthwise_separable(32), (1, 32, 8, 8)).rows]
    assert kinds == ["depthwise conv", "pointwise conv"]
    assert profile(standard_conv(32), (1, 32, 8, 8)).rows[0].kind == "standard conv"


def _result(ratios: list[float]) -> ExperimentResult:
    claims = [Claim("x1", "a", "b", r) for r in ratios]
    cell = Cell("a", "x1", "", 1, 1.0, 1.0, 1.0, 1, 1.0)
    return ExperimentResult("g1", "t", "G1", "cpu", ["a"], ["x1"], [cell], claims, {})


@pytest.mark.parametrize(
    "ratios, verdict",
    [
        ([1.2, 1.1, 1.05], "holds"),
        ([1.2, 1.01, 1.05], "holds"),  # a tie does not count against
        ([1.2, 0.9, 1.05], "holds partly"),
        ([0.8, 0.9, 1.05], "does not hold"),
        ([1.0, 1.01, 0.99], "does not hold"),  # all ties: nothing supports the guideline
    ],
)
def test_verdict_comes_from_the_measured_comparisons(ratios, verdict):
    result = _result(ratios)
    assert result.verdict == verdict
    assert result.verdict_line().startswith(f"G1: {verdict.upper()} here")


def test_run_lab_small_measures_and_compares():
    config = LabConfig(map_size=8, seconds_per_network=0.001, min_runs=1, max_runs=2)
    (result,) = run_lab(["g4"], config)
    assert len(result.cells) == 12 and all(c.throughput == pytest.approx(1e3 / c.median_ms) for c in result.cells)
    assert result.normalised(result.variants[0], "c=32") == 1.0
    assert result.normalised("ReLU no, shortcut no", "c=32", "paper") == pytest.approx(66.3 / 56.7)
    # every claim is read from the measured cells: each other variant against the full unit, per column
    full = result.variants[0]
    assert [(c.column, c.faster, c.slower) for c in result.claims] == [
        (col, v, full) for col in result.columns for v in result.variants[1:]
    ]
    for claim in result.claims:
        expected = result.cell(claim.faster, claim.column).throughput / result.cell(full, claim.column).throughput
        assert claim.ratio == pytest.approx(expected)
    assert result.conditions["threads"] == 1 and result.conditions["batch"] == 1


def _injected_latency(monkeypatch, ms_of):
    """The lab's timings replaced by ``ms_of(net, input_size)`` milliseconds, the same every run."""

    def fake(prepared, runs):  # every timed pass of every round takes ms_of(...) milliseconds
        return [ms_of(prepared.runner, tuple(prepared.x.shape))] * runs

    monkeypatch.setattr(latency, "_timed", fake)


def _g4_ms(relu_ms, shortcut_ms):
    """A G4 network's time: 1 ms, plus ``relu_ms`` with ReLUs, plus ``shortcut_ms`` with the shortcut."""

    def ms_of(net, input_size):
        unit = net.blocks[0]
        assert isinstance(unit, Bottleneck)
        return 1.0 + relu_ms * isinstance(unit.act, nn.ReLU) + shortcut_ms * unit.shortcut

    return ms_of


@pytest.mark.parametrize(
    "relu_ms, shortcut_ms, verdict, counts",
    [
        # ShuffleNetV2 Table 4's finding: each element-wise op costs, so every stripped unit beats the full one
        (0.5, 0.5, "holds", "9 of 9 comparisons agree, 0 within 2%, 0 disagree"),
        # element-wise ops that save time: the full unit (0.5 ms) beats every stripped one
        (-0.25, -0.25, "does not hold", "0 of 9 comparisons agree, 0 within 2%, 9 disagree"),
        # ReLU costs, the shortcut saves: only "ReLU yes, shortcut no" (1.5 ms) loses to the full unit (1.25 ms)
        (0.5, -0.25, "holds partly", "6 of 9 comparisons agree, 0 within 2%, 3 disagree"),
        # differences within the 2% tolerance are ties, which support nothing
        (0.01, 0.0, "does not hold", "0 of 9 comparisons agree, 9 within 2%, 0 disagree"),
    ],
)
def test_run_lab_verdict_follows_injected_timings(monkeypatch, idle_machine, relu_ms, shortcut_ms, verdict, counts):
    ms_of = _g4_ms(relu_ms, shortcut_ms)
    _injected_latency(monkeypatch, ms_of)
    (result,) = run_lab(["g4"], LabConfig(map_size=8, seconds_per_network=0.001, min_runs=1, max_runs=2))
    full_ms = 1.0 + relu_ms + shortcut_ms
    variant_ms = {"ReLU yes, shortcut no": 1.0 + relu_ms, "ReLU no, shortcut yes": 1.0 + shortcut_ms,
                  "ReLU no, shortcut no": 1.0}
    assert len(result.claims) == 9
    for claim in result.claims:
        assert claim.ratio == pytest.approx(full_ms / variant_ms[claim.faster])  # throughput = 1 / time
    assert result.verdict == verdict
    guideline = "G4 (element-wise operations are non-negligible)"
    assert result.verdict_line() == f"{guideline}: {verdict.upper()} here ({counts})"


def _conv_ms(net, input_size):
    """1 ms per network plus 1 ms per GMAdd: a fixed cost (dispatch, memory) that the MAdds leave out.

    Every layer in the depthwise experiment is a bias-free stride-1 'same' convolution, so its
    MAdds are its weight count times the map's area.
    """
    area = input_size[-2] * input_size[-1]
    return 1.0 + sum(p.numel() for p in net.parameters()) * area / 1e9


def test_lab_config_rejects_bad_values():
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        LabConfig(device="tpu")
    with pytest.raises(ValueError, match="batch must be an integer >= 1"):
        LabConfig(batch=0)
    with pytest.raises(ValueError, match="unknown experiment 'g5'"):
        run_lab(["g5"], LabConfig())


def test_lab_command_prints_tables_and_verdicts(capsys, tmp_path, monkeypatch, idle_machine):
    # With a fixed cost per network, the separable layer's time ratio (the fixed cost dominating
    # both) stays far above its MAdds ratio (1/N + 1/9): all 3 sizes x 4 widths agree.
    _injected_latency(monkeypatch, _conv_ms)
    assert main(["lab", "depthwise", "--seconds", "0.001", "--json", str(tmp_path / "lab.json")]) == 0
    out = capsys.readouterr().out
    assert "MAdds ratio (1/N+1/9)" in out and "verdicts:" in out
    line = "Depthwise convolution is slower than its MAdds promise: HOLDS here (12 of 12 comparisons agree"
    assert line in out
    assert '"verdict": "holds"' in (tmp_path / "lab.json").read_text()


def test_lab_command_plots(capsys, tmp_path, monkeypatch, plot, idle_machine):
    _injected_latency(monkeypatch, _g4_ms(0.5, 0.5))
    assert main(["lab", "g4", "--seconds", "0.001", "--plot-dir", str(tmp_path)]) == 0
    assert f"wrote {tmp_path / 'lab-g4.png'}" in capsys.readouterr().out
    assert (tmp_path / "lab-g4.png").read_bytes()[:4] == b"\x89PNG"
