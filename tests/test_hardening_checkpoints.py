"""Issue 18, checkpoints and runs: damaged files and bad settings get a clear error and lose nothing.

One tiny run is trained once for the module (3 steps of the digits at 16x16, a checkpoint every
2 steps, so that ``last``, ``previous`` and ``best`` exist); each test damages its own copy.
"""

import errno
import json
import math
import os
import shutil
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import lightnets
from lightnets.cli import main
from lightnets.formats import (
    CheckpointError,
    UnverifiedMetadataWarning,
    atomic_write,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from lightnets.formats.checkpoint import FORMAT_TENSORS_ONLY, checkpoint_digest, tensor_digest
from lightnets.train import TrainingDiverged, fit, get_recipe, resume

TINY = "mobilenet_v3_small_050"
QUIET = {"show_progress": False, "log": lambda _m: None}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("tiny") / "run"
    fit(lightnets.create_model(TINY, num_classes=10), "digits", run_dir=str(run), epochs=1, batch_size=16,
        resolution=16, max_steps=3, checkpoint_every=2, model_config={"name": TINY, "options": {"num_classes": 10}},
        **QUIET)
    return run


@pytest.fixture
def run(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def _tensors_and_meta(path):
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    return load_file(str(path)), meta


def _edit_metadata(path, entry, edit, resign=False):
    """Rewrite one JSON metadata entry with ``edit``; ``resign``: store a digest that matches again (an intact
    file whose contents are wrong, as a buggy writer would make)."""
    tensors, meta = _tensors_and_meta(path)
    value = json.loads(meta[entry])
    meta[entry] = json.dumps(edit(value))
    if resign:
        meta["sha256"] = checkpoint_digest(tensors, meta)
    save_file(tensors, str(path), metadata=meta)


def _image(tmp_path):
    Image = pytest.importorskip("PIL.Image")  # the images extra; without it the test skips

    path = tmp_path / "digit.png"
    Image.new("L", (20, 20), 0).save(path)
    return str(path)


# -- 1: the digest covers the metadata ------------------------------------------------------------------------------


def test_one_flipped_bit_in_the_stored_resolution_is_refused_by_eval_predict_export_and_resume(run, tmp_path, capsys):
    last = run / "last.safetensors"
    raw = bytearray(last.read_bytes())
    at = raw.index(b'\\"resolution\\": 16') + len(b'\\"resolution\\": ')
    raw[at] ^= 0x02  # '1' -> '3': the stored resolution reads 36
    last.write_bytes(bytes(raw))
    intact = f"{run / 'previous.safetensors'} is intact (epoch 0, step 2)"
    for argv in (["eval", TINY, "--checkpoint", str(last)],
                 ["predict", TINY, "--checkpoint", str(last), _image(tmp_path)],
                 ["export", TINY, "--checkpoint", str(last), "-o", str(tmp_path / "m.onnx")],
                 ["train", "--resume", str(run), "--no-progress"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "tensors or metadata do not match the stored SHA-256" in err and intact in err, argv
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("entry, edit", [
    ("config", lambda c: {**c, "preprocessing": {**c["preprocessing"], "mean": [0.4, 0.5, 0.5]}}),
    ("config", lambda c: {**c, "classes": c["classes"][::-1]}),
    ("progress", lambda p: {**p, "global_step": p["global_step"] + 1000}),
    ("optimizer", lambda o: {**o, "param_groups": [{**g, "momentum": 0.5} for g in o["param_groups"]]}),
], ids=["mean", "classes", "global-step", "momentum"])
def test_an_edited_metadata_entry_is_refused(run, entry, edit):
    _edit_metadata(run / "last.safetensors", entry, edit)
    with pytest.raises(CheckpointError, match="tensors or metadata do not match.*previous.safetensors is intact"):
        load_checkpoint(str(run / "last.safetensors"))


def test_a_checkpoint_of_the_older_format_has_its_tensors_verified_and_says_its_metadata_is_not(run):
    """The decision for checkpoints written before the digest covered the metadata: read, tensors verified, warned."""
    last = run / "last.safetensors"
    tensors, meta = _tensors_and_meta(last)
    meta.update(format=FORMAT_TENSORS_ONLY, sha256=tensor_digest(tensors))
    save_file(tensors, str(last), metadata=meta)
    with pytest.warns(UnverifiedMetadataWarning, match="its tensors were verified, its configuration"):
        assert load_checkpoint(str(last)).progress["global_step"] == 3
    tensors["model.classifier.bias"] = tensors["model.classifier.bias"] + 1
    save_file(tensors, str(last), metadata=meta)
    with pytest.raises(CheckpointError, match="its tensors do not match the stored SHA-256"):
        load_checkpoint(str(last))


# -- 2: nothing is overwritten without being asked ------------------------------------------------------------------


def test_train_into_an_existing_run_is_refused_and_force_replaces_it(run, capsys):
    before = {name: (run / name).read_bytes() for name in os.listdir(run)}
    assert main(["train", TINY, "--resolution", "16", "--max-steps", "1", "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and f"--resume {run}" in err and "--force" in err
    assert {name: (run / name).read_bytes() for name in os.listdir(run)} == before
    fit(lightnets.create_model(TINY, num_classes=10), "digits", run_dir=str(run), epochs=1, resolution=16,
        max_steps=1, overwrite=True, **QUIET)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1  # the old run's line is gone, not mixed in
    assert not (run / "previous.safetensors").exists()


def test_convert_and_export_refuse_an_existing_output_without_force(run, tmp_path, capsys):
    last = run / "last.safetensors"
    before = last.read_bytes()
    assert main(["convert", "torchvision", "mobilenet_v2", str(tmp_path / "unread.pth"), "-o", str(last)]) == 2
    assert "already exists; give another -o FILE, or --force" in capsys.readouterr().err
    assert main(["export", TINY, "--checkpoint", str(last), "--format", "pt2", "-o", str(last)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert last.read_bytes() == before
    out = tmp_path / "m.pt2"
    out.write_bytes(b"an older export")
    assert main(["export", TINY, "--checkpoint", str(last), "--format", "pt2", "-o", str(out), "--force"]) == 0
    assert out.read_bytes() != b"an older export"


# -- 3: options given with --resume ---------------------------------------------------------------------------------


def test_resume_refuses_a_changed_setting_naming_it_and_the_stored_value(run, capsys):
    assert main(["train", "--resume", str(run), "--epochs", "4", "--lr", "0.5", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "was trained with lr 0.05" in err and "lr 0.5 (--lr) cannot apply" in err
    assert main(["train", "--resume", str(run), "--width-mult", "0.75", "--no-progress"]) == 2
    assert "width_mult=None, not 0.75" in capsys.readouterr().err
    with pytest.raises(ValueError, match="trained with seed 0; a resumed run keeps it, so seed 3"):
        resume(str(run), expect={"seed": 3, "lr": 0.05})
    with pytest.raises(ValueError, match="has completed 0 of its 1 epochs; epochs must be an integer >= 1"):
        resume(str(run), epochs=0)


def test_resume_with_more_epochs_extends_the_run_and_says_so(run):
    messages = []
    result = resume(str(run), epochs=3, max_steps=5, expect={"lr": 0.05, "resolution": 16}, show_progress=False,
                    log=messages.append)
    assert any("extending the run from 1 to 3 epochs" in m for m in messages)
    assert result.final["step"] == 5
    assert load_checkpoint(str(run / "last.safetensors")).config["recipe"]["epochs"] == 3


# -- 4: non-finite hyper-parameters, a diverging loss, no readable image ---------------------------------------------


@pytest.mark.parametrize("field, value", [("lr", math.nan), ("lr", math.inf), ("weight_decay", math.nan),
                                          ("momentum", math.inf), ("label_smoothing", math.nan),
                                          ("warmup_epochs", -math.inf), ("ema_decay", math.nan)])
def test_non_finite_hyper_parameters_are_refused_up_front(field, value):
    with pytest.raises(ValueError, match=f"{field} must be a finite number"):
        get_recipe("small-data").with_overrides(**{field: value})


def test_fit_and_train_refuse_a_non_finite_lr_before_training(tmp_path, capsys):
    with pytest.raises(ValueError, match="lr must be a finite number > 0, got inf"):
        fit(lightnets.create_model(TINY, num_classes=10), "digits", run_dir=None, lr=math.inf, **QUIET)
    with pytest.raises(SystemExit) as stopped:  # argparse's usage error: the option is checked as it is parsed
        main(["train", TINY, "--lr", "nan", "--out", str(tmp_path / "run"), "--no-progress"])
    assert stopped.value.code == 2
    assert "argument --lr: expected a finite number > 0, got 'nan'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_diverging_run_stops_and_saves_nothing_from_non_finite_weights(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="training stopped .* after .* optimizer steps: .*Try a lower"):
        fit(lightnets.create_model(TINY, num_classes=10), "digits", run_dir=str(run), epochs=1, batch_size=16,
            resolution=16, lr=1e30, max_steps=12, checkpoint_every=1, **QUIET)
    assert not (run / "best.safetensors").exists()
    for name in ("last.safetensors", "previous.safetensors"):
        if (run / name).exists():
            assert all(torch.isfinite(v).all() for v in load_checkpoint(str(run / name)).model.values()
                       if v.is_floating_point())


def test_training_where_no_image_is_readable_is_an_error_and_saves_nothing(tmp_path, images):
    from PIL import Image  # the images fixture has checked it is there

    for split in ("train", "val"):
        for label in ("a", "b"):
            (tmp_path / "data" / split / label).mkdir(parents=True)
            for i in range(4):
                path = tmp_path / "data" / split / label / f"{i}.png"
                Image.new("RGB", (20, 20), (40 * i, 90, 200)).save(path)
                if split == "train":  # the header stays readable, the pixels are cut off
                    path.write_bytes(path.read_bytes()[:60])
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="trained on no image: all 8 images .* were unreadable"):
        fit(lightnets.create_model(TINY, num_classes=2), str(tmp_path / "data"), run_dir=str(run), epochs=1,
            batch_size=4, resolution=16, augment="small", **QUIET)
    assert not (run / "best.safetensors").exists() and not (run / "last.safetensors").exists()


# -- 11: checkpoints of another network, missing entries, damaged state ---------------------------------------------


def test_resuming_with_another_width_names_both_networks_and_the_shapes(run):
    other = lightnets.create_model("mobilenet_v3_small_075", num_classes=10)
    with pytest.raises(CheckpointError, match=r"holds mobilenet_v3_small_050 with .* does not fit the model being "
                                              r"resumed \(mobilenet_v3_small_075 .*size mismatch for conv_stem"):
        fit(other, "digits", run_dir=str(run), resume=True, resolution=16,
            model_config={"name": "mobilenet_v3_small_075", "options": {"num_classes": 10}}, **QUIET)


def test_weights_of_another_width_under_a_stored_name_are_refused_by_export(tmp_path, capsys):
    weights = lightnets.create_model("mobilenet_v3_small_075", num_classes=10).state_dict()
    path = str(tmp_path / "m.safetensors")
    config = {"model": {"name": TINY, "options": {"num_classes": 10}}, "classes": [str(i) for i in range(10)],
              "preprocessing": {"kind": "digits", "resolution": 16, "mean": [0.5] * 3, "std": [0.5] * 3}}
    save_checkpoint(path, weights, config=config, progress={}, keep_previous=False)
    assert main(["export", TINY, "--checkpoint", path, "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "its weights do not fit mobilenet_v3_small_050" in err and "size mismatch for conv_stem.weight" in err
    assert len(err.splitlines()) == 1


def test_missing_or_malformed_preprocessing_is_a_clear_error_in_eval_and_predict(run, tmp_path, capsys):
    last = run / "last.safetensors"
    _edit_metadata(last, "config", lambda c: {**c, "preprocessing": {"kind": "digits"}}, resign=True)
    with pytest.raises(CheckpointError, match="its stored preprocessing lacks resolution, mean, std"):
        load_model(str(last))
    for argv in (["eval", TINY, "--checkpoint", str(last)],
                 ["predict", TINY, "--checkpoint", str(last), _image(tmp_path)]):
        assert main(argv) == 2
        assert "its stored preprocessing lacks resolution" in capsys.readouterr().err
    _edit_metadata(last, "config", lambda c: {k: v for k, v in c.items() if k != "preprocessing"}, resign=True)
    assert main(["predict", TINY, "--checkpoint", str(last), _image(tmp_path)]) == 2
    assert "stores no preprocessing" in capsys.readouterr().err


def test_invalid_json_in_a_runs_config_names_the_file_and_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{\n  "model": {"name": "x"},\n  "classes": [1, 2\n}\n')
    with pytest.raises(ValueError, match=r"config.json: invalid JSON at line 4, column 1"):
        resume(str(run), **QUIET)


def test_a_damaged_rng_state_names_the_checkpoint(run):
    last = run / "last.safetensors"
    tensors, meta = _tensors_and_meta(last)
    tensors["rng.torch"] = tensors["rng.torch"][:100].clone()
    meta["sha256"] = checkpoint_digest(tensors, meta)
    save_file(tensors, str(last), metadata=meta)
    with pytest.raises(CheckpointError, match=f"checkpoint '{last}': its saved random-number-generator state is "
                                              "damaged.*previous.safetensors is intact"):
        resume(str(run), **QUIET)


# -- 14: a failed write leaves no temporary file --------------------------------------------------------------------


def _disk_full(monkeypatch):
    import lightnets.formats.files as files

    def write(fh, data):
        fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "_write", write)


def test_a_full_disk_leaves_the_checkpoint_and_no_temporary_file(run, monkeypatch):
    last = run / "last.safetensors"
    before = {name: (run / name).read_bytes() for name in os.listdir(run)}
    _disk_full(monkeypatch)
    with pytest.raises(OSError, match=f"cannot write '{last}': No space left on device; it was left as it was"):
        save_checkpoint(str(last), {"w": torch.ones(3)}, config={}, progress={})
    with pytest.raises(OSError, match="No space left"):
        atomic_write(str(run / "metrics.jsonl"), "{}\n")
    assert {name: (run / name).read_bytes() for name in os.listdir(run)} == before  # no *.tmp-PID either


def test_the_cli_reports_a_full_disk_in_one_line_and_leaves_no_temporary_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIGHTNETS_FAULT", "disk-full")
    run = tmp_path / "run"
    assert main(["train", TINY, "--resolution", "16", "--max-steps", "1", "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lightnets: error: [Errno 28] cannot write") and len(err.splitlines()) == 1
    assert os.listdir(run) == []


def test_every_atomic_writer_uses_the_shared_helper():
    """A temporary file renamed into place anywhere else would not be removed on a failed write."""
    root = os.path.dirname(lightnets.__file__)
    offenders = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".py") and not path.endswith(os.path.join("formats", "files.py")):
                with open(path, encoding="utf8") as fh:
                    source = fh.read()
                if "os.replace(" in source or "os.rename(" in source or "mkstemp(" in source:
                    offenders.append(os.path.relpath(path, root))
    assert offenders == []


def test_a_checkpoint_round_trips_without_warnings(tmp_path):
    path = str(tmp_path / "c.safetensors")
    save_checkpoint(path, {"w": torch.arange(4.0)}, config={"a": [1, 2]}, progress={"global_step": 7})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ckpt = load_checkpoint(path)
    assert ckpt.config == {"a": [1, 2]} and ckpt.progress == {"global_step": 7} and ckpt.model["w"][3] == 3


def test_a_failed_onnx_export_leaves_the_existing_file_and_no_temporary(tmp_path, monkeypatch, deploy):
    from lightnets.export import onnx as onnx_export

    target = tmp_path / "model.onnx"
    target.write_bytes(b"the earlier export")

    def failing(net, x, path, *args):
        open(path, "wb").write(b"half a graph")
        raise RuntimeError("the exporter failed")

    monkeypatch.setattr(onnx_export, "_export", failing)
    with pytest.raises(RuntimeError, match="the exporter failed"):
        onnx_export.export_onnx(lightnets.create_model(TINY, num_classes=10), str(target), resolution=32)
    assert target.read_bytes() == b"the earlier export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
