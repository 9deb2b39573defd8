import pytest
import torch

from lightnets.cli import main
from lightnets.cost import profile
from lightnets.lab import Claim, ExperimentResult, LabConfig, run_lab
from lightnets.lab.experiments import GRIDS, Cell, g2_channels
from lightnets.lab.networks import MAP_SIZE, depthwise_separable, g3_network, standard_conv


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
    assert len(result.cells) == 12 and all(c.throughput > 0 for c in result.cells)
    assert result.normalised(result.variants[0], "c=32") == 1.0
    assert result.normalised("ReLU no, shortcut no", "c=32", "paper") == pytest.approx(66.3 / 56.7)
    assert result.verdict in ("holds", "holds partly", "does not hold")
    assert result.conditions["threads"] == 1 and result.conditions["batch"] == 1


def test_lab_config_rejects_bad_values():
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        LabConfig(device="tpu")
    with pytest.raises(ValueError, match="batch must be an integer >= 1"):
        LabConfig(batch=0)
    with pytest.raises(ValueError, match="unknown experiment 'g5'"):
        run_lab(["g5"], LabConfig())


def test_lab_command_prints_tables_verdicts_and_plots(capsys, tmp_path):
    pytest.importorskip("matplotlib")  # the plot extra; without it the test skips rather than errors
    code = main(["lab", "depthwise", "--seconds", "0.001", "--plot-dir", str(tmp_path), "--json",
                 str(tmp_path / "lab.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "MAdds ratio (1/N+1/9)" in out and "verdicts:" in out
    assert (tmp_path / "lab-depthwise.png").read_bytes()[:4] == b"\x89PNG"
    assert '"verdict"' in (tmp_path / "lab.json").read_text()
