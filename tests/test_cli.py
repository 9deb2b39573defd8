import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lightnets.cli import main
from lightnets.cli.main import build_parser, passive_openmp_waits

ROOT = str(Path(__file__).resolve().parents[1])  # this checkout's lightnets, whatever the subprocess's cwd


def _python(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` on this checkout, without the caller's OpenMP settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    base["PYTHONPATH"] = ROOT
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env={**base, **(env or {})},
                          cwd=ROOT, **kwargs)


def test_models_table(capsys, tmp_path):
    out_json = tmp_path / "models.json"
    assert main(["models", "--family", "mobilenet_v2", "--counts", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    # mobilenet_v2: 3,504,872 parameters and 0.30 GFLOPs (MAdds) in torchvision's weights metadata
    # (MobileNet_V2_Weights.IMAGENET1K_V1: num_params, _ops); MobileNetV2 Table 4: 3.4 M, 300 M.
    assert "mobilenet_v2_140" in out and "3,504,872" in out and "300.8 M" in out
    assert '"params": 3504872' in out_json.read_text()


def test_models_lists_names_families_and_papers_without_counting(capsys):
    assert main(["models", "--family", "shufflenet_v1"]) == 0
    out = capsys.readouterr().out
    assert "shufflenet_v1_g8_x0_5" in out and "groups=8, width_mult=0.5" in out
    assert "shufflenet_v1: ShuffleNet (Zhang et al., 2018), arXiv:1707.01083" in out
    assert "MAdds@" not in out and "--counts" in out and "mobilenet" not in out
    assert "34 models" in out  # 1 family name, 5 groups x 5 scales, 2 x 4 official


def test_help_and_listing_do_not_import_torch():
    """Both ways in (the console script imports lightnets.cli; python -m runs lightnets/__main__.py)."""
    script = (
        "import sys\n"
        "from lightnets.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('after --help:', 'torch' in sys.modules)\n"
        "main(['models'])\n"
        "print('after models:', 'torch' in sys.modules)\n"
        "main(['models', '--family', 'mobilenet_v1', '--counts'])\n"
        "print('after --counts:', 'torch' in sys.modules)\n"
    )
    out = _python("-c", script, check=True).stdout
    assert "after --help: False" in out and "after models: False" in out
    assert "after --counts: True" in out  # the check can see torch
    imported = _python("-X", "importtime", "-m", "lightnets", "models", check=True).stderr
    modules = [line.rsplit("|", 1)[-1].strip() for line in imported.splitlines() if line.startswith("import time:")]
    assert "lightnets.cli.main" in modules and "torch" not in modules


def test_commands_run_openmp_with_passive_waits():
    """libgomp reads OMP_WAIT_POLICY once, when torch loads it: the CLI must set it before."""
    # libgomp displays OMP_WAIT_POLICY as 'PASSIVE' when it is unset too; what differs is the spin
    # count: 300000 by default (spin, then sleep), 0 with PASSIVE
    result = _python("-m", "lightnets", "spec", "mobilenet_v1_025", env={"OMP_DISPLAY_ENV": "VERBOSE"}, check=True)
    if "GOMP_SPINCOUNT" not in result.stderr:
        pytest.skip("this torch's OpenMP runtime does not display its spin count")
    assert re.search(r"GOMP_SPINCOUNT = '0'", result.stderr), result.stderr


def test_passive_waits_respect_the_users_choice(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert passive_openmp_waits("train") == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert passive_openmp_waits("train") == "PASSIVE" and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_commands_that_time_networks_keep_openmps_own_wait_policy(monkeypatch):
    for command in ("zoo", "lab", "profile", "lut", "netadapt", "search"):
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        passive_openmp_waits(command)
        assert "OMP_WAIT_POLICY" not in os.environ, command
    result = _python("-m", "lightnets", "profile", "mobilenet_v1_025", "--resolution", "32",
                     env={"OMP_DISPLAY_ENV": "VERBOSE"}, check=True)
    if "GOMP_SPINCOUNT" not in result.stderr:
        pytest.skip("this torch's OpenMP runtime does not display its spin count")
    spin = re.search(r"GOMP_SPINCOUNT = '(\d+)'", result.stderr)
    assert spin and int(spin.group(1)) > 0, result.stderr


def _actions(parser: argparse.ArgumentParser, path: str = "lightnets"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield path, action


def _mentions(text: str, value) -> bool:
    forms = {str(value)} | ({f"{value:g}"} if isinstance(value, float) else set())
    return "default" in text and any(form in text for form in forms)


def test_every_argument_says_what_it_does_and_its_default():
    actions = list(_actions(build_parser()))
    assert len(actions) > 100  # the walk reaches every subcommand
    silent = [f"{path} {a.dest}" for path, a in actions if not (a.help or "").strip()]
    assert not silent, f"arguments without help: {silent}"
    flags = (argparse._StoreTrueAction, argparse._StoreFalseAction)  # off unless given: the help says what on does
    undefaulted = [
        f"{path} {a.option_strings[0]} (default {a.default!r}): {a.help}" for path, a in actions
        if a.option_strings and a.default not in (None, argparse.SUPPRESS) and not isinstance(a, flags)
        and not _mentions(a.help, a.default)
    ]
    assert not undefaulted, "\n".join(undefaulted)
    assert not _mentions("input size (default 32)", 224)  # the check can fail


def _recipe_figures(help_text: str) -> dict[str, int]:
    """'(default: the recipe's: a 15, b and c 300)' -> {'a': 15, 'b': 300, 'c': 300}."""
    figures = {}
    for part in help_text.split("the recipe's: ")[1].rstrip(")").split(", "):
        *names, value = part.split(" ")
        figures.update({name: int(value) for name in names if name != "and"})
    return figures


def test_train_help_states_each_recipes_epochs_and_batch_size():
    from lightnets.train.recipes import RECIPES

    train = {a.dest: a.help for path, a in _actions(build_parser()) if path == "lightnets train"}
    assert _recipe_figures(train["epochs"]) == {name: r.epochs for name, r in RECIPES.items()}
    assert _recipe_figures(train["batch_size"]) == {name: r.batch_size for name, r in RECIPES.items()}


def test_models_rejects_bad_resolution(capsys):
    try:
        main(["models", "--resolution", "0"])
    except SystemExit as exit_:
        assert exit_.code == 2
    assert "argument --resolution: expected an input size in pixels, an integer >= 8" in capsys.readouterr().err


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
    out = capsys.readouterr().out
    assert "grouped conv" in out and out.startswith("shufflenet_v1 (g=8, width 0.5) at 32x32, batch 1\n")
    assert main(["profile", "shufflenet_v1_g8_x0_5", "--resolution", "32"]) == 0  # what the name fixes
    assert capsys.readouterr().out.startswith("shufflenet_v1_g8_x0_5 (g=8, width 0.5) at 32x32")
    assert main(["profile", "mobilenet_v3_small", "--minimal", "--resolution", "32"]) == 0  # the family's defaults
    assert capsys.readouterr().out.startswith("mobilenet_v3_small (width 1, minimal) at 32x32")
    assert main(["profile", "mobilenet_v2", "--groups", "8"]) == 2
    assert "unknown option 'groups'" in capsys.readouterr().err


def test_zoo_command_writes_table_and_json(capsys, tmp_path):
    js = tmp_path / "zoo.json"
    code = main(["zoo", "--resolution", "32", "--runs", "2", "--warmup", "0", "--models",
                 "mobilenet_v3_small_050,shufflenet_v2_x0_5,mobilenet_v2,mobilenet_v2_100", "--json", str(js)])
    assert code == 0
    out = capsys.readouterr().out
    assert "median ms" in out and "MAdds/ms" in out and "32x32, batch 1" in out
    rows = [line.split()[0] for line in out.splitlines() if line.startswith("mobilenet_v2")]
    assert rows == ["mobilenet_v2"]  # mobilenet_v2_100 is the same network, measured once (one table row)
    assert '"aliases": [\n        "mobilenet_v2_100"' in js.read_text()


def test_zoo_command_writes_a_plot(capsys, tmp_path, plot):
    png = tmp_path / "zoo.png"
    code = main(["zoo", "--resolution", "32", "--runs", "2", "--warmup", "0", "--models",
                 "mobilenet_v3_small_050,shufflenet_v2_x0_5", "--plot", str(png)])
    assert code == 0 and "median ms" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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


def test_missing_extras_are_one_line_each_naming_the_extra(tmp_path):
    """h5py, onnx/onnxscript and matplotlib made absent (None in sys.modules makes their import fail)."""
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"\x89HDF\r\n\x1a\n")
    commands = [
        ["convert", "keras", "MobileNetV2", str(weights), "-o", str(tmp_path / "out.safetensors")],
        ["export", "mobilenet_v1_025", "--resolution", "32", "-o", str(tmp_path / "m.onnx")],
        ["zoo", "--models", "mobilenet_v1_025", "--plot", str(tmp_path / "zoo.png")],
    ]
    script = (
        "import sys\n"
        "for name in ('h5py', 'onnx', 'onnxscript', 'matplotlib'):\n    sys.modules[name] = None\n"
        "from lightnets.cli import main\n"
        f"codes = [main(command) for command in {commands!r}]\n"
        "print(codes)\n"
    )
    result = _python("-c", script)
    assert result.returncode == 0 and result.stdout.strip() == "[2, 2, 2]", result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        'lightnets: error: reading Keras weight files needs h5py: pip install "lightnets[keras]" (or h5py)',
        'lightnets: error: this needs onnx: pip install "lightnets[deploy]"',
        'lightnets: error: plotting needs matplotlib: pip install "lightnets[plot]"',
    ]
    assert not (tmp_path / "m.onnx").exists()


def test_a_missing_module_deep_inside_a_command_names_its_extra(monkeypatch, capsys):
    """Any ModuleNotFoundError of an optional module, however deep, is one line; other import errors stay loud."""
    import lightnets.export

    def export_onnx(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'onnxscript'", name="onnxscript")

    monkeypatch.setattr(lightnets.export, "export_onnx", export_onnx)
    assert main(["export", "mobilenet_v1_025", "--resolution", "32", "-o", "unused.onnx"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        'lightnets: error: this needs onnxscript, which is not installed: pip install "lightnets[deploy]"'
    ]

    def broken(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'lightnets_typo'", name="lightnets_typo")

    monkeypatch.setattr(lightnets.export, "export_onnx", broken)
    with pytest.raises(ModuleNotFoundError, match="lightnets_typo"):
        main(["export", "mobilenet_v1_025", "--resolution", "32", "-o", "unused.onnx"])


def test_import_lightnets_is_lazy_and_the_first_use_loads_everything():
    script = (
        "import sys\n"
        "import lightnets\n"
        "print('torch after import:', 'torch' in sys.modules)\n"
        "net = lightnets.create_model('mobilenet_v1_025')\n"
        "from lightnets.cost.latency import BACKENDS, _REGISTERED\n"
        "print('registered:', sorted(_REGISTERED))\n"
        "print('cost:', lightnets.cost.count_params(net))\n"
    )
    out = _python("-c", script, check=True).stdout
    assert "torch after import: False" in out
    assert "registered: ['onnxruntime', 'onnxruntime-int8']" in out  # the exporter's backends, as before
    import lightnets  # in this process, the same count the fresh interpreter printed

    assert f"cost: {lightnets.cost.count_params(lightnets.create_model('mobilenet_v1_025'))}" in out
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        import lightnets

        lightnets.nonsense  # noqa: B018


def test_readme_counts_are_the_codes():
    """The README states how many models the listing and the zoo show; those numbers come from the registry."""
    from lightnets.analysis import distinct_models
    from lightnets.catalog import model_names

    readme = (Path(ROOT) / "README.md").read_text(encoding="utf8")
    assert f"`lightnets models` lists all {len(model_names())} names" in readme
    assert f"`lightnets zoo` now measures {len(distinct_models())} distinct networks" in readme
