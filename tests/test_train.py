import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

import lightnets
from lightnets.cli import main
from lightnets.formats import CheckpointError, Preprocessing, load_checkpoint, save_checkpoint
from lightnets.train import digits, evaluate, fit, get_recipe, image_folder
from lightnets.train.data import load_digits, stratified_split

TINY = "mobilenet_v3_small_050"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def test_digits_are_the_real_dataset():
    images, labels = load_digits()
    # scikit-learn's load_digits (the UCI optdigits test set): 1797 8x8 images, 0..16, 178 of class 0
    assert images.shape == (1797, 8, 8) and labels.shape == (1797,)
    assert int(images.max()) == 16 and labels.bincount().tolist()[0] == 178
    sklearn = pytest.importorskip("sklearn.datasets")
    reference = sklearn.load_digits()
    assert torch.equal(images.float(), torch.from_numpy(reference.images).float())
    assert torch.equal(labels.long(), torch.from_numpy(reference.target).long())


def test_digits_split_is_fixed_stratified_and_disjoint():
    _, labels = load_digits()
    train, test = stratified_split(labels)
    again_train, again_test = stratified_split(labels)
    assert torch.equal(train, again_train) and torch.equal(test, again_test)
    assert len(set(train.tolist()) & set(test.tolist())) == 0 and len(train) + len(test) == 1797
    shares = labels[test].bincount().float() / labels.bincount().float()
    assert ((shares - 0.2).abs() < 0.01).all()
    train_split, test_split = digits(resolution=28)
    batch = next(test_split.batches(8, shuffle=False))
    assert batch.images.shape == (8, 3, 28, 28) and (train_split.size, test_split.size) == (1438, 359)


def test_a_train_fraction_keeps_a_fixed_stratified_subset_and_the_same_test_split():
    full_train, full_test = digits(resolution=16, augment=False)
    train, test = digits(resolution=16, augment=False, train_fraction=0.1)
    again, _ = digits(resolution=16, augment=False, train_fraction=0.1)
    assert abs(train.size - 0.1 * full_train.size) <= 10 and test.size == full_test.size
    labels = torch.cat([b.labels for b in train.batches(512, shuffle=False)])
    assert labels.bincount().tolist() == [n - round(n * (1 - 0.1)) for n in  # the split's own rounding
                                          torch.cat([b.labels for b in full_train.batches(512, shuffle=False)])
                                          .bincount().tolist()]
    ours = next(train.batches(512, shuffle=False)).images
    assert torch.equal(ours, next(again.batches(512, shuffle=False)).images)
    with pytest.raises(ValueError, match=r"train_fraction must be in \(0, 1\]"):
        digits(train_fraction=0)


def test_a_search_can_validate_on_the_training_images_its_fraction_leaves_out():
    def images(split):
        return torch.cat([b.images for b in split.batches(2048, shuffle=False)])

    full_train, val = digits(resolution=8, augment=False)
    train, rest = digits(resolution=8, augment=False, train_fraction=0.3, val_from_train=True)
    assert rest.name == "train-rest" and train.size + rest.size == full_train.size  # every training image, once
    kept, rest_x, val_x, all_x = images(train), images(rest), images(val), images(full_train)
    as_rows = {tuple(x.flatten().tolist()) for x in all_x}
    assert all(tuple(x.flatten().tolist()) in as_rows for x in rest_x)  # drawn from the training images
    assert not {tuple(x.flatten().tolist()) for x in rest_x} & {tuple(x.flatten().tolist()) for x in kept}
    assert not {tuple(x.flatten().tolist()) for x in rest_x} & {tuple(x.flatten().tolist()) for x in val_x}
    same_train, _ = digits(resolution=8, augment=False, train_fraction=0.3)
    assert torch.equal(kept, images(same_train))  # the same training images as without it
    with pytest.raises(ValueError, match="give a train_fraction < 1"):
        digits(val_from_train=True)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "32"])
def test_resolution_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="resolution must be a positive integer"):
        digits(resolution=bad)


def test_recipe_schedules():
    small = get_recipe("small-data")
    steps, total = 10, 100
    assert small.lr_at(0, steps, total) == pytest.approx(small.lr / 20)  # warm-up over 2 epochs
    assert small.lr_at(19, steps, total) == pytest.approx(small.lr)
    assert small.lr_at(99, steps, total) < 0.01 * small.lr  # cosine to ~0
    v2 = get_recipe("mobilenet_v2")  # x0.98 per epoch
    assert v2.lr_at(30, 10, 1000) == pytest.approx(0.045 * 0.98**3)
    v3 = get_recipe("mobilenet_v3")  # x0.99 every 3 epochs
    assert v3.lr_at(59, 10, 1000) == pytest.approx(v3.lr * 0.99)
    assert v3.lr_at(60, 10, 1000) == pytest.approx(v3.lr * 0.99**2)
    shuffle = get_recipe("shufflenet")  # linear to 0
    assert shuffle.lr_at(50, 10, 100) == pytest.approx(shuffle.lr / 2)
    with pytest.raises(ValueError, match="unknown recipe 'adam'; allowed: mobilenet_v2"):
        get_recipe("adam")
    with pytest.raises(ValueError, match="unknown recipe field"):
        small.with_overrides(learning_rate=1)


def _save(path, value, step):
    save_checkpoint(str(path), {"w": torch.full((4,), float(value))}, config={"x": 1}, progress={"global_step": step})


def test_checkpoint_round_trip_and_previous(tmp_path):
    last = tmp_path / "last.safetensors"
    _save(last, 1, 1)
    _save(last, 2, 2)
    assert load_checkpoint(str(last)).model["w"][0] == 2
    assert load_checkpoint(str(tmp_path / "previous.safetensors")).progress["global_step"] == 1
    assert sorted(os.listdir(tmp_path)) == ["last.safetensors", "previous.safetensors"]  # no temp files left


def test_corrupted_and_truncated_checkpoints_are_refused_previous_still_usable(tmp_path):
    last = tmp_path / "last.safetensors"
    _save(last, 1, 1)
    _save(last, 2, 2)
    raw = bytearray(last.read_bytes())
    raw[-3] ^= 0xFF  # flip bits inside the tensor data
    last.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupted: its tensors or metadata do not match the stored SHA-256"):
        load_checkpoint(str(last))
    last.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(CheckpointError, match="truncated or corrupted and was refused"):
        load_checkpoint(str(last))
    assert load_checkpoint(str(tmp_path / "previous.safetensors")).model["w"][0] == 1
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a lightnets checkpoint"):
        load_checkpoint(str(tmp_path / "other.safetensors"))


def test_resume_from_corrupted_last_names_the_intact_previous(tmp_path):
    model = lightnets.create_model(TINY, num_classes=10)
    fit(model, "digits", run_dir=str(tmp_path), epochs=1, resolution=16, max_steps=4, checkpoint_every=2,
        show_progress=False, log=lambda m: None)
    last = tmp_path / "last.safetensors"
    last.write_bytes(last.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="previous.safetensors is intact .* --checkpoint previous"):
        fit(model, "digits", run_dir=str(tmp_path), resume=True, resolution=16, show_progress=False)
    fit(lightnets.create_model(TINY, num_classes=10), "digits", run_dir=str(tmp_path), resume=True,
        resume_checkpoint="previous", resolution=16, max_steps=5, show_progress=False, log=lambda m: None)


def test_fit_writes_metrics_and_checkpoints(tmp_path):
    model = lightnets.create_model(TINY, num_classes=10)
    result = fit(model, "digits", run_dir=str(tmp_path), epochs=1, resolution=16, max_steps=3, show_progress=False,
                 log=lambda m: None)
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert row["step"] == 3 and row["images_per_s"] > 0
    # the logged top-1 is the saved network's, on the digits' validation split
    from lightnets.formats import load_model

    saved = load_model(str(tmp_path / "last.safetensors")).model
    assert row["val_top1"] == pytest.approx(evaluate(saved, digits(16)[1]).top1, abs=1e-12)
    assert {"last.safetensors", "best.safetensors", "config.json"} <= set(os.listdir(tmp_path))
    ckpt = load_checkpoint(str(tmp_path / "best.safetensors"))
    assert ckpt.config["preprocessing"]["resolution"] == 16 and ckpt.config["classes"][3] == "3"
    assert result.epochs == 1


def _train_cmd(out, *extra):
    return [sys.executable, "-m", "lightnets", "train", TINY, "--resolution", "16", "--epochs", "2",
            "--batch-size", "32",
            "--deterministic", "--threads", "1", "--no-progress", "--out", str(out), *extra]


def test_killed_run_resumes_to_identical_weights(tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    subprocess.run(_train_cmd(reference), check=True, capture_output=True, env=ENV, timeout=300)
    proc = subprocess.Popen(_train_cmd(interrupted, "--checkpoint-every", "10"), stdout=subprocess.PIPE,
                            text=True, env=ENV)
    for line in proc.stdout:
        if line.startswith("checkpoint: step 20"):  # mid-epoch 0 (44 steps per epoch)
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (interrupted / "metrics.jsonl").exists()  # killed before the first epoch ended
    resumed = subprocess.run(_train_cmd(interrupted, "--resume", str(interrupted)), capture_output=True, text=True,
                             env=ENV, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout and "at epoch 0, step" in resumed.stdout
    ours = load_checkpoint(str(interrupted / "last.safetensors")).model
    theirs = load_checkpoint(str(reference / "last.safetensors")).model
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_torchrun_two_processes_identical_weights_rank0_writes(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "lightnets", "train", TINY, "--resolution", "16", "--epochs", "1", "--max-steps", "3", "--batch-size", "16",
           "--threads", "1", "--no-progress", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    replicas = json.loads((out / "replicas.json").read_text())
    assert replicas["world_size"] == 2 and len(replicas["fingerprints"]) == 2 and replicas["identical"]
    assert sorted(os.listdir(out)) == ["best.safetensors", "config.json", "last.safetensors", "metrics.jsonl",
                                       "replicas.json"]
    assert load_checkpoint(str(out / "last.safetensors")).config["world_size"] == 2
    assert result.stdout.count("epoch 1/1:") == 1  # only rank 0 logs


def _image_tree(root, corrupt=False, empty_class=False):
    from PIL import Image

    for split in ("train", "val"):
        for c, colour in (("cat", (200, 30, 30)), ("dog", (30, 200, 30)), ("fox", (30, 30, 200))):
            folder = root / split / c
            folder.mkdir(parents=True)
            if empty_class and c == "fox" and split == "train":
                continue
            for i in range(4):
                Image.new("RGB", (20 + i, 24), colour).save(folder / f"{i}.png")
    if corrupt:
        (root / "train" / "cat" / "broken.jpg").write_bytes(b"not an image at all")


def test_image_folder_training_and_bad_images(tmp_path, images):
    _image_tree(tmp_path, corrupt=True)
    train, val = image_folder(str(tmp_path), resolution=16, bad_images="skip")
    assert train.classes == ["cat", "dog", "fox"] and train.size == 13 and val.size == 12
    batches = list(train.batches(13, shuffle=False))
    assert batches[0].skipped == 1 and batches[0].images.shape == (12, 3, 16, 16)
    strict, _ = image_folder(str(tmp_path), resolution=16, bad_images="error")
    with pytest.raises(ValueError, match="cannot read image .*broken.jpg"):
        list(strict.batches(13, shuffle=False))
    model = lightnets.create_model(TINY, num_classes=3)
    result = fit(model, str(tmp_path), run_dir=str(tmp_path / "run"), epochs=1, batch_size=4, resolution=16,
                 show_progress=False, log=lambda m: None)
    assert result.final["skipped_images"] == 1


def test_image_folder_takes_a_checkpoints_preprocessing(tmp_path, images):
    _image_tree(tmp_path)
    keras_like = Preprocessing("imagenet", 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), resize=256)
    _, default = image_folder(str(tmp_path), resolution=16)
    _, val = image_folder(str(tmp_path), resolution=16, preprocessing=keras_like)
    assert val.preprocessing == Preprocessing("imagenet", 16, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), resize=18)
    red = 200 / 255  # the cat images are (200, 30, 30)
    assert next(val.batches(4, shuffle=False)).images[0, 0, 0, 0].item() == pytest.approx((red - 0.5) / 0.5, abs=1e-5)
    imagenet_red = (red - 0.485) / 0.229
    assert next(default.batches(4, shuffle=False)).images[0, 0, 0, 0].item() == pytest.approx(imagenet_red, abs=1e-5)
    plain, _ = image_folder(str(tmp_path), resolution=16, augment=False)  # int8 calibration: no random crops
    first, second = (next(plain.batches(12, shuffle=False)).images for _ in range(2))
    assert torch.equal(first, second)
    with pytest.raises(ValueError, match="takes 'imagenet' preprocessing"):
        image_folder(str(tmp_path), preprocessing=Preprocessing("digits", 16, (0.5,) * 3, (0.5,) * 3))


def test_image_folder_errors(tmp_path, images):  # image_folder asks for Pillow before it looks at the path
    with pytest.raises(ValueError, match="does not exist"):
        image_folder(str(tmp_path / "missing"))
    _image_tree(tmp_path, empty_class=True)
    with pytest.raises(ValueError, match="fox' contains no images"):
        image_folder(str(tmp_path))


def test_train_and_eval_commands(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", TINY, "--resolution", "16", "--epochs", "1", "--max-steps", "5", "--out", str(run),
                 "--no-progress"]) == 0
    assert not (run / "curves.png").exists()
    capsys.readouterr()
    assert main(["eval", TINY, "--checkpoint", str(run / "last.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "confusion matrix (rows: true class, columns: predicted)" in out
    assert main(["eval", "mobilenet_v2", "--checkpoint", str(run / "last.safetensors")]) == 2
    assert f"holds '{TINY}', not 'mobilenet_v2'" in capsys.readouterr().err


def test_train_and_eval_commands_plot(tmp_path, capsys, plot):
    run = tmp_path / "run"
    assert main(["train", TINY, "--resolution", "16", "--epochs", "1", "--max-steps", "2", "--out", str(run),
                 "--no-progress", "--plot"]) == 0
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    png = tmp_path / "confusion.png"
    assert main(["eval", TINY, "--checkpoint", str(run / "last.safetensors"), "--plot", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_train_rejects_bad_data_path(capsys, images):  # without Pillow the error names it first
    assert main(["train", TINY, "--data", "/nonexistent/path", "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_lr_is_finite_for_all_recipes():
    for name in ("mobilenet_v2", "mobilenet_v3", "shufflenet", "small-data"):
        recipe = get_recipe(name)
        assert all(math.isfinite(recipe.lr_at(s, 10, 1000)) for s in range(0, 1000, 97))


def _count_training_forwards(model):
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(module.training))
    return calls


def test_fit_in_memory_writes_nothing_and_stops_at_the_step_budget(tmp_path, monkeypatch):
    import builtins

    import lightnets.train.loop

    monkeypatch.chdir(tmp_path)
    written, real_open = [], builtins.open

    def spying_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            written.append(file)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spying_open)
    monkeypatch.setattr(lightnets.train.loop, "save_checkpoint", lambda *a, **k: written.append("checkpoint"))
    import dataclasses

    train, test = digits(16)
    splits = dataclasses.replace(train, size=256), dataclasses.replace(test, size=64)  # the first digits: seconds
    recipe = get_recipe("small-data").with_overrides(warmup_epochs=0.0, batch_size=32)  # 8 steps an epoch
    model = lightnets.create_model(TINY, num_classes=10)
    calls = _count_training_forwards(model)
    result = fit(model, splits, recipe, run_dir=None, max_steps=20, show_progress=False, log=lambda m: None)
    assert written == [] and list(tmp_path.iterdir()) == []
    assert sum(calls) == 20 and result.final["step"] == 20  # optimizer steps: the budget crosses two epochs
    assert result.epochs == 3 and [row["epoch"] for row in result.history] == [1, 2, 3]
    assert result.run_dir is None and result.model is model
    assert result.final["val_top1"] == pytest.approx(evaluate(model, splits[1]).top1, abs=1e-12)
    # the schedule ends with the budget: cosine near zero at its last step ...
    assert result.final["lr"] < 0.01 * recipe.lr
    capped = fit(lightnets.create_model(TINY, num_classes=10), splits, recipe, run_dir=None, epochs=15, max_steps=20,
                 show_progress=False, log=lambda m: None)
    # ... whereas with epochs it is a cap: 20 steps into a 120-step cosine, the rate has hardly moved
    assert capped.final["step"] == 20 and capped.final["lr"] > 0.9 * recipe.lr
    with pytest.raises(ValueError, match="resume and checkpoint_every need a run_dir"):
        fit(model, "digits", run_dir=None, resume=True)


def test_fit_restores_the_global_torch_state_also_when_it_raises():
    import random

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        model = lightnets.create_model(TINY, num_classes=10)
        torch.set_num_threads(3)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.manual_seed(123)
        random.seed(123)
        rng, python_rng = torch.get_rng_state(), random.getstate()

        def check():
            assert torch.get_num_threads() == 3
            assert torch.are_deterministic_algorithms_enabled()
            assert torch.is_deterministic_algorithms_warn_only_enabled()
            assert torch.equal(torch.get_rng_state(), rng) and random.getstate() == python_rng

        result = fit(model, "digits", run_dir=None, resolution=16, max_steps=2, threads=1, deterministic=True, seed=7,
                     show_progress=False, log=lambda m: None)
        assert result.final["step"] == 2
        check()
        calls = _count_training_forwards(model)
        model.register_forward_pre_hook(lambda module, args: None if len(calls) < 2 else 1 / 0)
        with pytest.raises(ZeroDivisionError):
            fit(model, "digits", run_dir=None, resolution=16, max_steps=5, threads=1, deterministic=True,
                show_progress=False, log=lambda m: None)
        assert calls[:2] == [True, True]  # it failed inside the training loop, after setting threads and seeds
        check()
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def test_resume_takes_the_network_seed_and_data_from_the_checkpoint(tmp_path):
    from lightnets.train import resume

    fit(lightnets.create_model(TINY, num_classes=10), "digits", run_dir=str(tmp_path), epochs=2, batch_size=64,
        resolution=16, max_steps=3, seed=5, model_config={"name": TINY, "options": {"num_classes": 10}},
        show_progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match=f"holds '{TINY}', not 'mobilenet_v2'"):
        resume(str(tmp_path), "mobilenet_v2")
    messages = []
    result = resume(str(tmp_path), TINY, max_steps=5, show_progress=False, log=messages.append)
    assert messages[0].startswith("data: train 1438 / val 359 images")
    assert messages[1].startswith("resumed") and "at epoch 0, step 3" in messages[1]
    assert result.final["step"] == 5
    config = load_checkpoint(str(tmp_path / "last.safetensors")).config
    assert config["seed"] == 5 and config["preprocessing"]["resolution"] == 16 and config["recipe"]["epochs"] == 2


def test_calibration_batches_are_fixed_and_unaugmented():
    from lightnets.train import calibration_batches

    first = calibration_batches("digits", 16, batches=3, batch_size=8)
    again = calibration_batches("digits", 16, batches=3, batch_size=8)
    assert [b.shape for b in first] == [(8, 3, 16, 16)] * 3
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    with pytest.raises(ValueError, match="batches must be an integer >= 1, got 0"):
        calibration_batches("digits", 16, batches=0)


def test_a_pruned_network_trains_saves_and_resumes_from_its_spec(tmp_path):
    """No registered name builds a pruned child: the checkpoint's spec does, for load_model and resume."""
    from lightnets.formats import load_model
    from lightnets.models import inherit_weights, resize_group
    from lightnets.train import resume

    parent = lightnets.create_model(TINY, num_classes=10)
    child = inherit_weights(parent, resize_group(parent.spec, "blocks.3.0.mid", 48))
    fit(child, "digits", run_dir=str(tmp_path), epochs=2, resolution=16, max_steps=3, show_progress=False,
        log=lambda m: None)
    stored = load_checkpoint(str(tmp_path / "last.safetensors")).config["model"]
    assert stored == {"spec": str(child.spec)}
    loaded = load_model(str(tmp_path / "last.safetensors"))
    assert loaded.name == "spec" and loaded.model.blocks[3][0].conv_pw.out_channels == 48
    result = resume(str(tmp_path), max_steps=5, show_progress=False, log=lambda m: None)
    assert result.final["step"] == 5


WALL_CLOCK = ("seconds", "images_per_s")


def _metrics(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in WALL_CLOCK} for row in rows]


def test_a_kill_between_checkpoint_and_metrics_line_loses_no_epoch(tmp_path):
    """The epoch's checkpoint carries its metrics row; the resumed run rewrites the missing line."""
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    subprocess.run(_train_cmd(reference), check=True, capture_output=True, env=ENV, timeout=300)
    killed = subprocess.run(_train_cmd(interrupted), capture_output=True, text=True, timeout=300, check=False,
                            env={**ENV, "LIGHTNETS_FAULT": "epoch-checkpointed"})
    assert killed.returncode == -signal.SIGKILL
    assert (interrupted / "last.safetensors").exists() and not (interrupted / "metrics.jsonl").exists()
    resumed = subprocess.run(_train_cmd(interrupted, "--resume", str(interrupted)), capture_output=True, text=True,
                             env=ENV, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert [row["epoch"] for row in _metrics(interrupted)] == [1, 2]
    assert _metrics(interrupted) == _metrics(reference)


def test_a_kill_during_the_first_checkpoint_write_restarts_the_run(tmp_path):
    run = tmp_path / "run"
    killed = subprocess.run(_train_cmd(run), capture_output=True, text=True, timeout=300, check=False,
                            env={**ENV, "LIGHTNETS_FAULT": "checkpoint-written"})
    assert killed.returncode == -signal.SIGKILL
    assert any(name.startswith("last.safetensors.tmp-") for name in os.listdir(run))
    assert not (run / "last.safetensors").exists()
    resumed = subprocess.run(_train_cmd(run, "--resume", str(run)), capture_output=True, text=True, env=ENV,
                             timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "no complete checkpoint; restarting from step 0" in resumed.stdout
    assert "removed 1 temporary file(s)" in resumed.stdout
    assert sorted(os.listdir(run)) == ["best.safetensors", "config.json", "last.safetensors", "metrics.jsonl",
                                       "previous.safetensors"]
    assert [row["epoch"] for row in _metrics(run)] == [1, 2]


def _sized_tree(root, side, mode="RGB", per_class=3):
    from PIL import Image

    for split in ("train", "val"):
        for c, value in (("a", 40), ("b", 200)):
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new(mode, (side, side + i), value if mode == "L" else (value, 255 - value, value)).save(
                    folder / f"{i}.png")
    return str(root)


@pytest.mark.parametrize(
    "side, mode, augment, flip, expected",
    [
        (20, "RGB", "auto", None, "small: whole image, random rotation up to 10 degrees, scale 0.9-1.1, shift up to "
                                  "10%, no flip; images 20 px"),
        (20, "L", "auto", None, "no flip; images 20 px (median shorter side), grayscale, replicated to 3 channels"),
        (140, "RGB", "auto", None, "imagenet: random-resized crop (8-100% of the area), random horizontal flip"),
        (140, "RGB", "auto", False, "imagenet: random-resized crop (8-100% of the area), no flip"),
        (20, "RGB", "imagenet", None, "imagenet: random-resized crop"),
        (20, "RGB", False, None, "none (evaluation transform), no flip"),
    ],
)
def test_image_folder_picks_augmentation_that_fits_the_images(tmp_path, side, mode, augment, flip, expected,
                                                               images):
    train, val = image_folder(_sized_tree(tmp_path, side, mode), resolution=16, augment=augment, flip=flip)
    assert expected in train.augmentation
    assert val.augmentation == "none"
    # Small images are resized whole for evaluation: no centre-crop margin.
    assert train.preprocessing.resize == (16 if side < 64 else round(16 / 0.875))
    batch = next(train.batches(4, shuffle=True))
    assert batch.images.shape == (4, 3, 16, 16) and torch.isfinite(batch.images).all()


def test_image_folder_and_digits_refuse_unknown_augmentation(tmp_path):
    from lightnets.train import load_data

    with pytest.raises(ValueError, match="digits take their own augmentation"):
        load_data("digits", 16, augment="imagenet")
    pytest.importorskip("PIL")  # the images extra, for the tree below
    with pytest.raises(ValueError, match="augment must be one of auto, imagenet, small, none, got 'crop'"):
        image_folder(_sized_tree(tmp_path, 20), resolution=16, augment="crop")


def test_train_logs_and_stores_the_augmentation(tmp_path, images):
    tree = _sized_tree(tmp_path / "tree", 20, "L", per_class=4)
    messages = []
    model = lightnets.create_model(TINY, num_classes=2)
    fit(model, tree, run_dir=str(tmp_path / "run"), epochs=1, batch_size=4, resolution=16, show_progress=False,
        log=messages.append)
    assert messages[0].startswith("data: train 8 / val 8 images, 2 classes; preprocessing imagenet 16x16; "
                                  "augmentation small:")
    config = load_checkpoint(str(tmp_path / "run" / "last.safetensors")).config
    assert config["augment"] == "auto" and config["augmentation"].startswith("small:")
    assert config["preprocessing"]["resize"] == 16


def test_train_command_takes_the_augmentation_flags(tmp_path, capsys, images):
    tree = _sized_tree(tmp_path / "tree", 140, per_class=4)
    run = tmp_path / "run"
    assert main(["train", TINY, "--data", tree, "--augment", "small", "--no-flip", "--epochs", "1", "--batch-size", "4",
                 "--resolution", "16", "--no-progress", "--out", str(run)]) == 0
    assert "augmentation small: whole image" in capsys.readouterr().out
    config = load_checkpoint(str(run / "last.safetensors")).config
    assert (config["augment"], config["flip"]) == ("small", False) and "no flip" in config["augmentation"]
    with pytest.raises(SystemExit):
        main(["train", TINY, "--data", tree, "--augment", "crop", "--out", str(run)])
    assert "invalid choice: 'crop'" in capsys.readouterr().err


def test_progress_bar_labels_its_eta_as_the_whole_runs(monkeypatch):
    """The bar fills over one epoch; its ETA counts every epoch left, so it must say so."""
    import io

    from lightnets.train.loop import _Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    bar = _Progress(enabled=True)
    bar.update(0, 15, 22, 22, loss=1.0, lr=0.05, ips=500.0, done=22, total=330)
    line = stream.getvalue()
    assert "epoch 1/15" in line and "22/22" in line and "run ETA " in line
