import importlib
import itertools
import math
import statistics
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import lightnets
import lightnets.cost.latency as latency_module
from lightnets.cost import count_madds, count_params, measure_latency, profile
from lightnets.cost.latency import flushing_denormals

# the module, not the function lightnets.cost exports under the same name
profile_module = importlib.import_module("lightnets.cost.profile")


def meta_model(name, **options):
    with torch.device("meta"):
        return lightnets.create_model(name, **options)


@pytest.mark.parametrize("name", lightnets.list_models())
def test_profile_totals_match_flop_counter_and_param_count(name):
    model = meta_model(name)
    prof = profile(model, (1, 3, 224, 224))
    assert prof.total.madds == count_madds(model, (1, 3, 224, 224))  # FlopCounterMode FLOPs / 2
    assert prof.total.params == count_params(model)


@pytest.mark.parametrize(
    "name, madds",
    [
        ("mobilenet_v1", 569e6),  # MobileNetV1 Table 6
        ("mobilenet_v2", 300e6),  # MobileNetV2 Table 4
        ("mobilenet_v3_large", 217e6),  # MobileNetV3 Table 3
        ("mobilenet_v3_small", 56e6),  # MobileNetV3 Table 3
        ("shufflenet_v2_x1_0", 145e6),  # torchvision's published figure (paper: 146 M with Megvii's unit)
    ],
)
def test_profile_totals_match_papers(name, madds):
    assert profile(meta_model(name)).total.madds == pytest.approx(madds, rel=0.01)


@pytest.mark.parametrize("kernel, out_chs", [(3, 32), (3, 256), (5, 64), (7, 128)])
def test_depthwise_separable_costs_one_over_n_plus_one_over_k_squared(kernel, out_chs):
    # MobileNet article, equation 4: (HWCK^2 + HWCC') / (HWCC'K^2) = 1/C' + 1/K^2
    in_chs, pad = 48, kernel // 2
    separable = nn.Sequential(
        nn.Conv2d(in_chs, in_chs, kernel, padding=pad, groups=in_chs, bias=False),
        nn.BatchNorm2d(in_chs),
        nn.ReLU(),
        nn.Conv2d(in_chs, out_chs, 1, bias=False),
    )
    standard = nn.Conv2d(in_chs, out_chs, kernel, padding=pad, bias=False)
    size = (1, in_chs, 20, 20)
    ratio = profile(separable, size).total.madds / profile(standard, size).total.madds
    assert ratio == pytest.approx(1 / out_chs + 1 / kernel**2, rel=1e-12)
    kinds = [r.kind for r in profile(separable, size).rows]
    assert kinds == ["depthwise conv", "batchnorm", "activation", "pointwise conv"]


def test_g1_equal_width_minimises_mac_and_bound_holds():
    # ShuffleNetV2 section 2, G1: for a 1x1 conv with B = hw*c1*c2 fixed,
    # MAC = hw(c1 + c2) + c1*c2 >= 2*sqrt(hw*B) + B/hw, with equality iff c1 = c2.
    h = w = 28
    pairs = [(96, 96), (64, 144), (48, 192), (32, 288), (16, 576), (8, 1152)]
    macs, bounds = [], []
    for c1, c2 in pairs:
        prof = profile(nn.Conv2d(c1, c2, 1, bias=False), (1, c1, h, w))
        madds = prof.total.madds
        assert madds == h * w * 96 * 96  # equal MAdds across the pairs
        bound = 2 * math.sqrt(h * w * madds) + madds / (h * w)
        assert prof.total.mac >= bound - 1e-6
        macs.append(prof.total.mac)
        bounds.append(bound)
    assert macs[0] == min(macs)
    assert macs[0] == pytest.approx(bounds[0])  # the bound is reached at c1 = c2
    assert macs == sorted(macs)


def test_functional_ops_are_seen():
    kinds = {r.kind for r in profile(meta_model("shufflenet_v2_x0_5"), (1, 3, 64, 64)).rows}
    assert {"split", "concat", "channel shuffle", "pool", "depthwise conv", "pointwise conv"} <= kinds
    v3 = profile(meta_model("mobilenet_v3_small"), (1, 3, 64, 64)).rows
    se_rows = [r for r in v3 if r.name == "blocks.0.0.se"]
    assert [r.kind for r in se_rows] == ["pool", "multiply"]
    assert any(r.kind == "add" for r in v3)
    grouped = {r.kind for r in profile(meta_model("shufflenet_v1", groups=3), (1, 3, 64, 64)).rows}
    assert "grouped conv" in grouped


def test_mac_counts_inputs_outputs_and_weights():
    conv = nn.Conv2d(8, 16, 3, padding=1, bias=True)
    row = profile(conv, (2, 8, 10, 10)).rows[0]
    assert row.mac == 2 * 8 * 100 + 2 * 16 * 100 + 16 * 8 * 9 + 16
    assert row.mac_bytes == 4 * row.mac
    assert row.madds == 2 * 16 * 100 * 8 * 9
    assert row.intensity == pytest.approx(2 * row.madds / row.mac_bytes)
    assert row.params == 16 * 8 * 9 + 16


def test_profile_leaves_model_untouched():
    model = lightnets.create_model("mobilenet_v3_small").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    profile(model, (1, 3, 32, 32))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_profile_with_latency_times_every_row(monkeypatch):
    # Injected kernel timer: every reading is 1 ms after the previous one, so each kernel, timed
    # between two readings, takes exactly 1 ms. (The end-to-end latency keeps the real clock.)
    ticks = itertools.count()
    monkeypatch.setattr(profile_module, "time", SimpleNamespace(perf_counter=lambda: next(ticks) * 1e-3))
    model = lightnets.create_model("mobilenet_v3_small")
    prof = profile(model, (1, 3, 64, 64), latency=True, runs=3, warmup=1, threads=1)
    n = len(prof.rows)
    assert n > 100 and all(r.time_ms == pytest.approx(1.0) for r in prof.rows)
    assert prof.total.time_ms == pytest.approx(n)
    for kind in prof.by_kind():  # equal kernel times: a kind's time share is its share of the kernels
        assert kind["time_ms"] == pytest.approx(kind["count"])
        assert kind["time_share"] == pytest.approx(kind["count"] / n)
    # unequal times by construction: pointwise convolutions 3 ms each, everything else 1 ms
    for row in prof.rows:
        row.time_ms = 3.0 if row.kind == "pointwise conv" else 1.0
    shares = {k["kind"]: k["time_share"] for k in prof.by_kind()}
    pointwise = sum(r.kind == "pointwise conv" for r in prof.rows)
    assert shares["pointwise conv"] == pytest.approx(3 * pointwise / (3 * pointwise + n - pointwise))
    assert prof.latency is not None and prof.latency.threads == 1
    assert "end-to-end median" in prof.notes[0] and f"sum to {n:.2f} ms" in prof.notes[0]


def test_profile_rejects_bad_input_size():
    with pytest.raises(ValueError, match="input_size must be a tuple of positive integers"):
        profile(nn.Conv2d(3, 3, 1), (1, 3, 0, 4))


class _DenormalProbe(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.flushing = []

    def forward(self, x):
        self.flushing.append(flushing_denormals())
        return self.conv(x)


def test_measure_latency_reports_and_restores_conditions():
    probe = _DenormalProbe().train()
    threads_before = torch.get_num_threads()
    flushing_before = flushing_denormals()
    result = measure_latency(probe, (1, 3, 16, 16), threads=1, runs=7, warmup=2)
    assert result.runs == 7 and len(result.times_ms) == 7
    assert result.threads == 1 and result.torch_version == torch.__version__
    assert result.denormals_flushed and all(probe.flushing)  # every timed pass ran flushed
    assert len(probe.flushing) == 9
    assert torch.get_num_threads() == threads_before
    assert flushing_denormals() == flushing_before
    assert probe.training
    assert "denormals flushed" in str(result) and "1 thread" in str(result)


def test_measure_latency_statistics_of_injected_timings(monkeypatch):
    # The clock moves only while the model runs, by a chosen duration per pass: two warm-up
    # passes, then the seven timed ones.
    durations_ms = [4.0, 1.0, 3.0, 10.0, 2.0, 5.0, 7.0]
    passes = iter([50.0, 50.0, *durations_ms])
    clock = SimpleNamespace(now=0.0)

    class Timed(nn.Module):
        def forward(self, x):
            clock.now += next(passes) / 1e3
            return x

    monkeypatch.setattr(latency_module, "time", SimpleNamespace(perf_counter=lambda: clock.now))
    result = measure_latency(Timed(), (1, 3, 4, 4), runs=7, warmup=2, threads=1)
    assert result.times_ms == pytest.approx(durations_ms)  # the warm-up passes are not timed
    # sorted 1 2 3 4 5 7 10: the median is the 4th; p10 sits at rank 0.1 * 6 = 0.6, between 1 and 2,
    # p90 at rank 5.4, between 7 and 10 (linear interpolation between order statistics)
    assert result.median_ms == pytest.approx(4.0)
    assert result.p10_ms == pytest.approx(1 + 0.6 * (2 - 1))
    assert result.p90_ms == pytest.approx(7 + 0.4 * (10 - 7))
    deciles = statistics.quantiles(durations_ms, n=10, method="inclusive")  # the same rule, Python's own
    assert (result.p10_ms, result.p90_ms) == pytest.approx((deciles[0], deciles[8]))
    assert result.spread == pytest.approx((8.2 - 1.6) / 4.0)


def test_measure_latency_channels_last_does_not_touch_model():
    model = lightnets.create_model("mobilenet_v2_035")
    result = measure_latency(model, (1, 3, 32, 32), runs=2, warmup=0, channels_last=True)
    assert result.channels_last
    assert model.conv_stem.weight.is_contiguous()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"backend": "tensorrt"}, "unknown backend 'tensorrt'; allowed: eager, compile"),
        ({"runs": 0}, "runs must be an integer >= 1"),
        ({"warmup": -1}, "warmup must be an integer >= 0"),
        ({"threads": 0}, "threads must be an integer >= 1"),
    ],
)
def test_measure_latency_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        measure_latency(nn.Conv2d(3, 3, 1), (1, 3, 8, 8), **kwargs)


def test_measure_latency_rejects_meta_model():
    with pytest.raises(ValueError, match="meta"):
        measure_latency(meta_model("mobilenet_v3_small"), (1, 3, 32, 32))


def test_measure_latency_compile_backend(monkeypatch):
    compiled_passes = []
    real_compile = torch.compile

    def recording_compile(model, *args, **kwargs):
        compiled = real_compile(model, *args, **kwargs)

        def run(x):
            compiled_passes.append(tuple(x.shape))
            return compiled(x)

        return run

    monkeypatch.setattr(torch, "compile", recording_compile)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    result = measure_latency(model, (1, 3, 16, 16), runs=3, warmup=0, backend="compile")
    assert result.backend == "compile" and result.runs == 3 and len(result.times_ms) == 3
    assert result.warmup == 1  # compiling happens in an untimed pass, so there is always one
    assert compiled_passes == [(1, 3, 16, 16)] * 4  # the warm-up and the 3 timed passes all ran compiled
    assert result.median_ms == statistics.median(result.times_ms)
