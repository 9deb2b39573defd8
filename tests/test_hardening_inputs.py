"""Issue 18: every bad input gets a clear error (ValueError, or the CLI's exit 2) and loses nothing.

Model options and inputs, evaluate's arguments, every numeric command-line option, unreadable
and decompression-bomb images, garbage weight files, oversized .keras members, export output
paths, requests larger than the memory, and escape sequences in class names and paths.
"""

from __future__ import annotations

import argparse
import math
import zipfile

import pytest
import torch
from torch import nn

import lightnets
from lightnets.cli import main
from lightnets.cli.main import build_parser
from lightnets.models import memory
from lightnets.train import calibration_batches, digits, evaluate, fit, image_folder

TINY = "mobilenet_v3_small_050"


# ---- 5: model options, input dtype, evaluate -------------------------------------------------


@pytest.mark.parametrize(("options", "message"), [
    ({"bn_eps": math.nan}, "bn_eps must be a number in"),
    ({"bn_eps": 0.0}, "bn_eps must be a number in"),
    ({"bn_eps": -1e-3}, "bn_eps must be a number in"),
    ({"dropout": "0.2"}, r"dropout must be in \[0, 1\)"),
    ({"dropout": math.nan}, r"dropout must be in \[0, 1\)"),
    ({"groups": 3.0}, r"groups must be one of \[1, 2, 3, 4, 8\], got 3.0"),
    ({"groups": True}, r"groups must be one of"),
])
def test_create_model_refuses_bad_options_before_building(options, message):
    family = "shufflenet_v1" if "groups" in options else "mobilenet_v2"
    with pytest.raises(ValueError, match=message):
        lightnets.create_model(family, **options)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool, torch.float64])
def test_forward_names_a_wrong_input_dtype(dtype):
    model = lightnets.create_model("mobilenet_v1_025", num_classes=3).eval()
    with pytest.raises(ValueError, match=f"expects a torch.float32 input .*got {dtype}"):
        model(torch.zeros(1, 3, 32, 32, dtype=dtype))
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed precision casts for itself
        assert model(torch.zeros(1, 3, 32, 32, dtype=torch.bfloat16)).shape == (1, 3)


@pytest.fixture(scope="module")
def val_split():
    return digits(16, augment=False)[1]


@pytest.mark.parametrize("batch_size", [-1, 0, 2.5, True])
def test_evaluate_refuses_a_bad_batch_size(val_split, batch_size):
    model = lightnets.create_model("mobilenet_v1_025", num_classes=10)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        evaluate(model, val_split, batch_size=batch_size)


def test_evaluate_refuses_a_model_with_another_class_count(val_split):
    model = lightnets.create_model("mobilenet_v1_025", num_classes=3)
    with pytest.raises(ValueError, match="the model has 3 outputs .* 10 classes"):
        evaluate(model, val_split, batch_size=64)
    unnamed = nn.Sequential(lightnets.create_model("mobilenet_v1_025", num_classes=30))  # no num_classes attribute
    with pytest.raises(ValueError, match="the model has 30 outputs .* 10 classes"):
        evaluate(unnamed, val_split, batch_size=64)


# ---- 6: command-line options --------------------------------------------------------------


def _usage_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(("argv", "option"), [
    (["zoo", "--models", ""], "--models"),
    (["zoo", "--models", " , "], "--models"),
    (["lut", "build", "--models", "", "-o", "x.json"], "--models"),
    (["train", TINY, "--workers", "-1"], "--workers"),
    (["train", TINY, "--resolution", "1"], "--resolution"),
    (["train", TINY, "--lr", "nan"], "--lr"),
    (["train", TINY, "--dropout", "1"], "--dropout"),
    (["train", TINY, "--seed", "-1"], "--seed"),
    (["train", TINY, "--width-mult", "inf"], "--width-mult"),
    (["lab", "g1", "--seconds", "-1"], "--seconds"),
    (["lab", "g1", "--seconds", "inf"], "--seconds"),
    (["lab", "g1", "--seconds", "nan"], "--seconds"),
    (["search", "--train-fraction", "0"], "--train-fraction"),
    (["search", "--widths", ""], "--widths"),
    (["netadapt", "x", "--checkpoint", "c", "--target-ratio", "1.5"], "--target-ratio"),
    (["netadapt", "x", "--checkpoint", "c", "--target-ms", "1", "--kinds", ","], "--kinds"),
    (["export", TINY, "-o", "m.onnx", "--width-mult", "-0.5"], "--width-mult"),
])
def test_bad_option_values_are_usage_errors_naming_the_option(argv, option, capsys):
    assert f"argument {option}" in _usage_error(argv, capsys)


def test_every_numeric_option_is_checked_when_parsed():
    """No option takes a bare int or float: each goes through lightnets.cli.options."""
    def actions(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from actions(sub, f"{path} {name}")
            else:
                yield path, action

    bare = [f"{path} {a.option_strings}" for path, a in actions(build_parser(), "lightnets") if a.type in (int, float)]
    assert not bare


# ---- 7, 8: unreadable images, decompression bombs -----------------------------------------


def _checkpoint(path, classes: list[str], pre) -> str:
    """An untrained checkpoint as lightnets train writes one: what predict and eval read."""
    from lightnets.formats import save_checkpoint

    model = lightnets.create_model(TINY, num_classes=len(classes))
    config = {"model": {"name": TINY, "options": {"num_classes": len(classes)}}, "classes": classes,
              "preprocessing": pre.to_dict()}
    save_checkpoint(str(path), model.state_dict(), config=config, progress={}, keep_previous=False)
    return str(path)


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    from lightnets.formats import Preprocessing
    from lightnets.formats.preprocessing import DIGITS_MEAN, DIGITS_STD

    path = tmp_path_factory.mktemp("run") / "digits.safetensors"
    return _checkpoint(path, [str(i) for i in range(10)], Preprocessing("digits", 16, DIGITS_MEAN, DIGITS_STD))


def _bad_images(folder) -> list[str]:
    from PIL import Image

    good = folder / "good.png"
    Image.new("L", (40, 40), 255).save(good)
    Image.new("RGB", (64, 64), (10, 20, 30)).save(folder / "full.jpg")
    bad = {
        "text.png": b"this is text, not a PNG\n",
        "empty.png": b"",
        "truncated.png": good.read_bytes()[:60],
        "truncated.jpg": (folder / "full.jpg").read_bytes()[:300],
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    (folder / "folder.png").mkdir()
    return [str(good), *(str(folder / name) for name in bad), str(folder / "folder.png")]


def test_predict_skips_and_reports_unreadable_images(tmp_path, digits_checkpoint, capsys):
    pytest.importorskip("PIL")
    from lightnets.export import predict

    images = _bad_images(tmp_path)
    assert main(["predict", TINY, "--checkpoint", digits_checkpoint, *images]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == images[0] and "Traceback" not in err
    skipped = [line for line in err.splitlines() if line.startswith("lightnets: skipped: cannot read image")]
    assert len(skipped) == 5 and all(repr(path) in "".join(skipped) for path in images[1:])
    assert err.splitlines()[-1] == "lightnets: error: 5 of 6 images could not be read (see above)"
    predictions = predict(TINY, digits_checkpoint, images, top=2)
    assert len(predictions[0].top) == 2 and predictions[0].error is None
    assert all(p.error and not p.top for p in predictions[1:])
    with pytest.raises(ValueError, match="cannot read image .*text.png"):
        predict(TINY, digits_checkpoint, images, bad_images="error")
    assert main(["predict", TINY, "--checkpoint", digits_checkpoint, "--bad-images", "error", *images]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "lightnets: error: cannot read image" in err


def _tree_with_a_bomb(root) -> None:
    """Two classes of small PNGs, and one larger PNG in each split that a lowered
    ``MAX_IMAGE_PIXELS`` makes a decompression bomb."""
    from PIL import Image

    for split in ("train", "val"):
        for name, colour in (("a", (200, 30, 30)), ("b", (30, 200, 30))):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (20, 20 + i), colour).save(folder / f"{i}.png")
        Image.new("RGB", (64, 64), (0, 0, 0)).save(root / split / "a" / "bomb.png")


def test_decompression_bombs_are_skipped_in_training_evaluation_and_calibration(tmp_path, monkeypatch):
    pytest.importorskip("PIL")
    from PIL import Image

    _tree_with_a_bomb(tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # an error above 2000 pixels: 64 x 64, not 20 x 23
    model = lightnets.create_model(TINY, num_classes=2)
    result = fit(model, str(tmp_path), run_dir=str(tmp_path / "run"), epochs=1, batch_size=4, resolution=16,
                 show_progress=False, log=lambda m: None)
    assert result.final["skipped_images"] == 1 and (tmp_path / "run" / "last.safetensors").exists()
    _, val = image_folder(str(tmp_path), resolution=16)
    evaluated = evaluate(model, val, batch_size=4)
    assert (evaluated.count, evaluated.skipped) == (8, 1)  # the bomb in val/a
    reported = []
    batches = calibration_batches(str(tmp_path), 16, batches=3, batch_size=3, report=reported.append)
    assert sum(len(b) for b in batches) == 8 and all(b.shape[1:] == (3, 16, 16) for b in batches)
    assert reported == ["calibration: 1 unreadable images skipped"]
    strict, _ = image_folder(str(tmp_path), resolution=16, bad_images="error")
    with pytest.raises(ValueError, match="cannot read image .*bomb.png.*decompression bomb"):
        list(strict.batches(9, shuffle=False))


# ---- 9, 10: weight files -------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"hello\n", b".", b"\x80\x02.", b"", b"\x80\x02}q\x00X", b"PK\x03\x04garbage"])
def test_garbage_weight_files_are_value_errors_naming_the_file(tmp_path, data):
    from lightnets.convert.files import read_state_dict

    path = tmp_path / "weights.pth"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="weights.pth' is not a PyTorch weight file"):
        read_state_dict(str(path))


def test_convert_refuses_a_text_file_named_pth(tmp_path, capsys):
    path = tmp_path / "mobilenet_v2.pth"
    path.write_text("not weights\n")
    out = tmp_path / "out.safetensors"
    assert main(["convert", "torchvision", "mobilenet_v2", str(path), "-o", str(out)]) == 2
    assert "is not a PyTorch weight file" in capsys.readouterr().err and not out.exists()


def _keras_zip_declaring(path, declared: int) -> None:
    """A .keras zip whose model.weights.h5 is 16 bytes but whose directory says ``declared``."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 8)
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")  # the central directory entry: uncompressed size at +24
    data[central + 24:central + 28] = declared.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("model.weights.h5").file_size == declared


def test_keras_zip_members_are_size_checked_before_inflating(tmp_path):
    pytest.importorskip("h5py")
    from lightnets.convert import from_keras, read_keras_weights
    from lightnets.convert.keras import weights_limit

    path = tmp_path / "bomb.keras"
    _keras_zip_declaring(path, 2**31 - 1)
    with pytest.raises(ValueError, match="model.weights.h5 inflates to 2,147,483,647 bytes"):
        from_keras("MobileNetV3Small", str(path))
    limit = weights_limit("mobilenet_v3_small", 1.0, {})
    assert 4 * 2_500_000 < limit < 2**31 - 1  # larger than the weights, far below the declared size
    _keras_zip_declaring(path, 1000)
    with pytest.raises(ValueError, match="more than the 100 bytes"):
        read_keras_weights(str(path), max_bytes=100)


# ---- 12: export output paths ---------------------------------------------------------------


def test_export_checks_the_output_path_before_the_work(tmp_path, monkeypatch, capsys):
    import lightnets.export.onnx
    from lightnets.export import export_onnx, export_pt2

    def never(*args, **kwargs):
        raise AssertionError("the export ran")

    monkeypatch.setattr(lightnets.export.onnx, "_export", never)
    monkeypatch.setattr(torch.export, "export", never)
    model = lightnets.create_model("mobilenet_v1_025")
    for call in (export_onnx, export_pt2):
        with pytest.raises(ValueError, match="is a directory"):
            call(model, str(tmp_path))
        with pytest.raises(ValueError, match="does not exist"):
            call(model, str(tmp_path / "missing" / "m.out"))
    for fmt in ("onnx", "pt2"):
        assert main(["export", "mobilenet_v1_025", "--format", fmt, "-o", str(tmp_path)]) == 2
        assert "is a directory; give the file to write inside it" in capsys.readouterr().err
    assert main(["export", "mobilenet_v1_025", "--format", "pt2", "-o", str(tmp_path / "no" / "m.pt2")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "no").exists()


# ---- 13: requests larger than the memory ---------------------------------------------------


@pytest.fixture
def small_memory(monkeypatch):
    """64 MiB available, whatever the machine has."""
    monkeypatch.setattr(memory, "available_memory", lambda: 64 * 2**20)


def test_the_estimate_is_a_lower_bound_of_the_parameters():
    from lightnets.cost import count_params

    for name in ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "shufflenet_v1", "shufflenet_v2"):
        model = lightnets.create_model(name)
        params = memory.estimate_memory(model.spec).params
        assert 0.6 * count_params(model) < params <= count_params(model)
    assert memory.available_memory() is None or memory.available_memory() > 0


def test_building_a_network_larger_than_the_memory_is_refused(small_memory):
    lightnets.create_model("mobilenet_v1_025")  # 0.5 M parameters fit
    with pytest.raises(ValueError, match=r"building this network needs at least .* parameters.* is available"):
        lightnets.create_model("mobilenet_v2", width_mult=4.0)


def test_huge_widths_are_refused_with_the_real_memory():
    with pytest.raises(ValueError, match="GiB is available"):
        lightnets.create_model("mobilenet_v2", width_mult=1e6)


def test_training_evaluating_and_timing_check_the_memory_first(tmp_path, small_memory):
    from lightnets.analysis import run_zoo
    from lightnets.lab import LabConfig, run_lab

    train, val = digits(224, augment=False)
    model = lightnets.create_model("mobilenet_v1_025", num_classes=10)
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="training with batches of 1438 images at 224x224 needs at least"):
        fit(model, (train, val), run_dir=str(run), batch_size=1438, epochs=1, show_progress=False,
            log=lambda m: None)
    assert not run.exists()
    with pytest.raises(ValueError, match="evaluating batches of 359 images at 224x224 needs at least"):
        evaluate(model, val, batch_size=1438)
    with pytest.raises(ValueError, match="timing mobilenet_v1_025 at 2048x2048 needs at least"):
        run_zoo(2048, models=["mobilenet_v1_025"], show_progress=False)
    with pytest.raises(ValueError, match="with batch 100000 at 56x56 needs at least .*use a smaller --batch"):
        run_lab(["g1"], LabConfig(batch=100000))


@pytest.mark.parametrize("seconds", [math.inf, math.nan, 0, -1.0])
def test_lab_config_refuses_a_non_finite_time_budget(seconds):
    from lightnets.lab import LabConfig

    with pytest.raises(ValueError, match="seconds_per_network must be a positive finite number"):
        LabConfig(seconds_per_network=seconds)


# ---- 15: escape sequences in class names and paths -----------------------------------------


def test_safe_text_escapes_control_characters():
    from lightnets.report import format_table, safe_text

    evil = "cat\x1b]0;owned\x07\x1b[2J\u202e"
    assert safe_text(evil) == "cat\\x1b]0;owned\\x07\\x1b[2J\\u202e"
    assert safe_text("chien, Katze, 猫") == "chien, Katze, 猫"
    assert safe_text("a\nb", keep="\n") == "a\nb" and safe_text("a\nb") == "a\\nb"
    table = format_table([{"class": evil}], [("class", "class")])
    assert "\x1b" not in table and "\\x1b[2J" in table


def test_class_names_and_paths_from_files_are_printed_escaped(tmp_path, capsys):
    pytest.importorskip("PIL")
    from PIL import Image

    from lightnets.formats import imagenet_preprocessing

    evil = "cat\x1b[2J\x1b]0;owned\x07"
    for split in ("train", "val"):
        for name in (evil, "dog"):
            folder = tmp_path / "data" / split / name
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (20, 20 + i), (200, 30, 30) if name == "dog" else (30, 30, 200)).save(
                    folder / f"{i}.png")
    checkpoint = _checkpoint(tmp_path / "m.safetensors", [evil, "dog"], imagenet_preprocessing(16))
    image = tmp_path / "x\x1b[31m.png"
    Image.new("RGB", (20, 20), (0, 0, 0)).save(image)
    capsys.readouterr()
    assert main(["eval", TINY, "--checkpoint", checkpoint, "--data", str(tmp_path / "data")]) == 0
    assert main(["predict", TINY, "--checkpoint", checkpoint, str(image)]) == 0
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert "cat\\x1b[2J" in out and "x\\x1b[31m.png" in out
