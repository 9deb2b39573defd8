import subprocess
import sys

import pytest

from lightnets.cli import main


def test_models_table(capsys, tmp_path):
    out_json = tmp_path / "models.json"
    assert main(["models", "--family", "mobilenet_v2", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "mobilenet_v2_140" in out and "3,504,872" in out and "300.8 M" in out
    assert '"params": 3504872' in out_json.read_text()


def test_models_rejects_bad_resolution(capsys):
    try:
        main(["models", "--resolution", "0"])
    except SystemExit as exit_:
        assert exit_.code == 2
    assert "expected a positive integer, got '0'" in capsys.readouterr().err


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "lightnets", "--version"], capture_output=True,
                            text=True, check=True)
    assert result.stdout.startswith("lightnets ")


def test_profile_command(capsys, tmp_path):
    csv_path, json_path = tmp_path / "p.csv", tmp_path / "p.json"
    code = main(["profile", "shufflenet_v2_x0_5", "--resolution", "64", "--latency", "--runs", "2", "--threads", "1",
                 "--csv", str(csv_path), "--json", str(json_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "blocks.0.0.shuffle" in out and "channel shuffle" in out and "% time" in out
    assert "by kind: share of MAdds vs share of MAC vs share of time" in out
    assert csv_path.read_text().splitlines()[0].startswith("index,name,op,kind")
    assert '"by_kind"' in json_path.read_text()


def test_profile_passes_family_options(capsys):
    assert main(["profile", "shufflenet_v1", "--groups", "8", "--width-mult", "0.5", "--resolution", "32"]) == 0
    assert "grouped conv" in capsys.readouterr().out
    assert main(["profile", "mobilenet_v2", "--groups", "8"]) == 2
    assert "unknown option 'groups'" in capsys.readouterr().err


def test_zoo_command_writes_table_plot_and_json(capsys, tmp_path):
    pytest.importorskip("matplotlib")  # the plot extra; without it the test skips rather than errors
    png, js = tmp_path / "zoo.png", tmp_path / "zoo.json"
    code = main(["zoo", "--resolution", "32", "--runs", "2", "--warmup", "0", "--models",
                 "mobilenet_v3_small_050,shufflenet_v2_x0_5,mobilenet_v2,mobilenet_v2_100", "--plot", str(png),
                 "--json", str(js)])
    assert code == 0
    out = capsys.readouterr().out
    assert "median ms" in out and "MAdds/ms" in out and "32x32, batch 1" in out
    assert out.count("mobilenet_v2") == 1  # mobilenet_v2_100 is the same network, measured once
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert '"aliases": [\n        "mobilenet_v2_100"' in js.read_text()


def test_zoo_rejects_unknown_model(capsys):
    assert main(["zoo", "--models", "resnet50"]) == 2
    assert "unknown model 'resnet50'" in capsys.readouterr().err


def test_spec_command_prints_walks_and_writes_a_spec_profile_reads(capsys, tmp_path):
    import lightnets

    out_json = tmp_path / "v2.json"
    assert main(["spec", "mobilenet_v2", "--width-mult", "0.5", "--walk", "96", "--channel-groups",
                 "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    spec = lightnets.create_model("mobilenet_v2_050").spec
    assert out.startswith("\n".join(spec.lines()))
    assert "blocks.6.0  ir_k3_s1_m480_c160_nores_r6" in out and "3x3 -> 3x3" in out
    assert "blocks.2.0" in out and "channel groups" in out
    assert lightnets.NetSpec.from_json(out_json.read_text()) == spec
    assert main(["profile", str(out_json), "--resolution", "64"]) == 0
    assert "mobilenet" not in capsys.readouterr().err
    assert main(["profile", str(spec.replace_block(3, 1, mid_chs=52)), "--resolution", "64"]) == 0
    capsys.readouterr()
    assert main(["profile", "nonsense"]) == 2
    assert "unknown model 'nonsense'" in capsys.readouterr().err
    assert main(["profile", str(out_json), "--width-mult", "0.5"]) == 2
    assert "options ['width_mult'] do not apply" in capsys.readouterr().err


def test_a_missing_extra_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"\x89HDF\r\n\x1a\n")
    assert main(["convert", "keras", "MobileNetV2", str(weights), "-o", str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        'lightnets: error: reading Keras weight files needs h5py: pip install "lightnets[keras]" (or h5py)'
    ]
