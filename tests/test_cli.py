import subprocess
import sys

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
    result = subprocess.run([sys.executable, "-m", "lightnets", "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("lightnets ")
