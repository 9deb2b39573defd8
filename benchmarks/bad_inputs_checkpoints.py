"""Bad inputs of issue 18 about checkpoints and runs (items 1-4, 11 and 14): every one must be ``clear``.

Damaged checkpoint metadata (1), outputs that already exist (2), settings a resume cannot change
(3), non-finite hyper-parameters, a diverging loss and unreadable images (4), checkpoints of
another network or with missing or damaged entries (11), and a full disk (14). One tiny run is
trained once per process (:func:`tiny_run`); each probe damages its own copy in its scratch
directory. Run through ``benchmarks/bad_inputs.py``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from _probes import Outcome, Probe, api, cli

TINY = "mobilenet_v3_small_050"
QUIET = {"show_progress": False, "log": lambda _m: None}


@functools.cache
def tiny_run() -> Path:
    """Three steps of the digits at 16x16, a checkpoint every 2 steps: ``last``, ``previous`` and ``best`` exist."""
    root = Path(tempfile.mkdtemp(prefix="lightnets-probes-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    run = root / "run"
    trained = cli("train", TINY, "--resolution", "16", "--epochs", "1", "--max-steps", "3", "--batch-size", "16",
                  "--checkpoint-every", "2", "--threads", "1", "--no-progress", "--out", str(run))
    if trained.verdict != "silent":
        raise RuntimeError(f"the tiny run the probes damage did not train: {trained.message}")
    return run


@functools.cache
def torchvision_weights() -> Path:
    """An untrained torchvision MobileNetV2's state dict, a file ``lightnets convert`` accepts."""
    import torch
    import torchvision

    path = tiny_run().parent / "mobilenet_v2.pth"
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), path)
    return path


def _run(scratch: Path) -> Path:
    copy = scratch / "run"
    shutil.copytree(tiny_run(), copy)
    return copy


def _image(scratch: Path) -> str:
    from PIL import Image

    path = scratch / "digit.png"
    Image.new("L", (20, 20), 0).save(path)
    return str(path)


def _edit(path: Path, entry: str, edit: Callable[[object], object], resign: bool = False) -> None:
    """Rewrite one JSON metadata entry of a checkpoint; ``resign``: store a digest that matches it again (an intact
    file with wrong contents, as a buggy writer would make), else keep the old one (a damaged file)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    tensors = load_file(str(path))
    if entry.startswith("tensor:"):
        name = entry.removeprefix("tensor:")
        tensors[name] = edit(tensors[name])
    else:
        meta[entry] = json.dumps(edit(json.loads(meta[entry])))
    if resign:
        from lightnets.formats.checkpoint import checkpoint_digest

        meta["sha256"] = checkpoint_digest(tensors, meta)
    save_file(tensors, str(path), metadata=meta)


def _leftovers(outcome: Outcome, *folders: Path) -> Outcome:
    """A refusal that left a ``*.tmp-PID`` file behind lost the fight: judged ``silent``."""
    left = [p.name for folder in folders if folder.is_dir() for p in folder.iterdir() if ".tmp-" in p.name]
    return Outcome("silent", f"left {', '.join(left)} ({outcome.message})") if left else outcome


@contextlib.contextmanager
def _environment(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# -- 18.1: the digest covers the metadata ----------------------------------------------------------------------------


def _flip_resolution(run: Path) -> Path:
    last = run / "last.safetensors"
    raw = bytearray(last.read_bytes())
    raw[raw.index(b'\\"resolution\\": 16') + len(b'\\"resolution\\": ')] ^= 0x02  # '1' -> '3': 16 reads 36
    last.write_bytes(bytes(raw))
    return last


def flipped_resolution_eval(scratch: Path) -> Outcome:
    return cli("eval", TINY, "--checkpoint", str(_flip_resolution(_run(scratch))))


def flipped_resolution_export(scratch: Path) -> Outcome:
    return cli("export", TINY, "--checkpoint", str(_flip_resolution(_run(scratch))), "-o", str(scratch / "m.onnx"))


def edited_mean_predict(scratch: Path) -> Outcome:
    last = _run(scratch) / "last.safetensors"
    _edit(last, "config", lambda c: {**c, "preprocessing": {**c["preprocessing"], "mean": [0.4, 0.5, 0.5]}})
    return cli("predict", TINY, "--checkpoint", str(last), _image(scratch))


def reversed_classes_predict(scratch: Path) -> Outcome:
    last = _run(scratch) / "last.safetensors"
    _edit(last, "config", lambda c: {**c, "classes": c["classes"][::-1]})
    return cli("predict", TINY, "--checkpoint", str(last), _image(scratch))


def global_step_resume(scratch: Path) -> Outcome:
    run = _run(scratch)
    _edit(run / "last.safetensors", "progress", lambda p: {**p, "global_step": p["global_step"] + 1000})
    return cli("train", "--resume", str(run), "--no-progress")


def optimizer_settings_resume(scratch: Path) -> Outcome:
    run = _run(scratch)
    _edit(run / "last.safetensors", "optimizer",
          lambda o: {**o, "param_groups": [{**g, "momentum": 0.5, "weight_decay": 0.1} for g in o["param_groups"]]})
    return cli("train", "--resume", str(run), "--no-progress")


# -- 18.2: nothing is overwritten without --force ---------------------------------------------------------------------


def train_into_existing_run(scratch: Path) -> Outcome:
    return cli("train", TINY, "--resolution", "16", "--max-steps", "1", "--out", str(_run(scratch)), "--no-progress")


def convert_over_last(scratch: Path) -> Outcome:
    return cli("convert", "torchvision", "mobilenet_v2", str(torchvision_weights()), "-o",
               str(_run(scratch) / "last.safetensors"))


def export_over_best(scratch: Path) -> Outcome:
    run = _run(scratch)
    return cli("export", TINY, "--checkpoint", str(run / "last.safetensors"), "--format", "pt2", "-o",
               str(run / "best.safetensors"))


# -- 18.3: options given with --resume -------------------------------------------------------------------------------


def _resume_with(*options: str) -> Callable[[Path], Outcome]:
    def feed(scratch: Path) -> Outcome:
        return cli("train", "--resume", str(_run(scratch)), *options, "--no-progress")

    return feed


# -- 18.4: non-finite hyper-parameters, a diverging loss, no readable image ------------------------------------------


def _recipe_with(**changes: float) -> Callable[[Path], Outcome]:
    def feed(_scratch: Path) -> Outcome:
        from lightnets.train import get_recipe

        return api(lambda: get_recipe("small-data").with_overrides(**changes))

    return feed


def train_lr_nan(scratch: Path) -> Outcome:
    return cli("train", TINY, "--lr", "nan", "--resolution", "16", "--max-steps", "2", "--out", str(scratch / "run"),
               "--no-progress")


def fit_lr_inf(_scratch: Path) -> Outcome:
    import lightnets
    from lightnets.train import fit

    return api(lambda: fit(lightnets.create_model(TINY, num_classes=10), "digits", run_dir=None, resolution=16,
                           lr=math.inf, max_steps=2, **QUIET))


def diverging_loss(scratch: Path) -> Outcome:
    """A finite but absurd learning rate: the loss turns NaN within a few steps. No ``best`` may be saved."""
    import lightnets
    from lightnets.train import fit

    run = scratch / "run"
    outcome = api(lambda: fit(lightnets.create_model(TINY, num_classes=10), "digits", run_dir=str(run), epochs=1,
                              batch_size=16, resolution=16, lr=1e30, max_steps=12, checkpoint_every=1, **QUIET))
    if (run / "best.safetensors").exists():
        return Outcome("silent", f"saved best.safetensors ({outcome.message})")
    return outcome


def unreadable_training_images(scratch: Path) -> Outcome:
    from PIL import Image

    for split in ("train", "val"):
        for label in ("a", "b"):
            folder = scratch / "data" / split / label
            folder.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (20, 20), (40 * i, 90, 200)).save(folder / f"{i}.png")
                if split == "train":  # the header stays readable, the pixels are cut off
                    (folder / f"{i}.png").write_bytes((folder / f"{i}.png").read_bytes()[:60])
    run = scratch / "run"
    outcome = cli("train", TINY, "--data", str(scratch / "data"), "--resolution", "16", "--batch-size", "4",
                  "--epochs", "1", "--augment", "small", "--out", str(run), "--no-progress")
    if (run / "best.safetensors").exists():
        return Outcome("silent", f"saved best.safetensors ({outcome.message})")
    return outcome


# -- 18.11: checkpoints of another network, missing entries, damaged state ------------------------------------------


def resume_another_width(scratch: Path) -> Outcome:
    import lightnets
    from lightnets.train import fit

    run = _run(scratch)
    other = {"name": "mobilenet_v3_small_075", "options": {"num_classes": 10}}
    return api(lambda: fit(lightnets.create_model(other["name"], num_classes=10), "digits", run_dir=str(run),
                           resume=True, resolution=16, model_config=other, **QUIET))


def export_weights_of_another_width(scratch: Path) -> Outcome:
    import lightnets
    from lightnets.formats import save_checkpoint

    path = scratch / "m.safetensors"
    config = {"model": {"name": TINY, "options": {"num_classes": 10}}, "classes": [str(i) for i in range(10)],
              "preprocessing": {"kind": "digits", "resolution": 16, "mean": [0.5] * 3, "std": [0.5] * 3}}
    weights = lightnets.create_model("mobilenet_v3_small_075", num_classes=10).state_dict()
    save_checkpoint(str(path), weights, config=config, progress={}, keep_previous=False)
    return cli("export", TINY, "--checkpoint", str(path), "-o", str(scratch / "m.onnx"))


def eval_preprocessing_without_resolution(scratch: Path) -> Outcome:
    last = _run(scratch) / "last.safetensors"
    _edit(last, "config", lambda c: {**c, "preprocessing": {"kind": "digits"}}, resign=True)
    return cli("eval", TINY, "--checkpoint", str(last))


def predict_without_preprocessing(scratch: Path) -> Outcome:
    last = _run(scratch) / "last.safetensors"
    _edit(last, "config", lambda c: {k: v for k, v in c.items() if k != "preprocessing"}, resign=True)
    return cli("predict", TINY, "--checkpoint", str(last), _image(scratch))


def invalid_config_json(scratch: Path) -> Outcome:
    run = scratch / "run"
    run.mkdir()
    (run / "config.json").write_text('{\n  "model": {"name": "x"},\n  "classes": [1, 2\n}\n')
    return cli("train", "--resume", str(run), "--no-progress")


def damaged_rng_state(scratch: Path) -> Outcome:
    run = _run(scratch)
    _edit(run / "last.safetensors", "tensor:rng.torch", lambda t: t[:100].clone(), resign=True)
    return cli("train", "--resume", str(run), "--no-progress")


# -- 18.14: a full disk ------------------------------------------------------------------------------------------------


def full_disk_new_run(scratch: Path) -> Outcome:
    run = scratch / "run"
    with _environment(LIGHTNETS_FAULT="disk-full"):
        outcome = cli("train", TINY, "--resolution", "16", "--max-steps", "1", "--out", str(run), "--no-progress")
    return _leftovers(outcome, run)


def full_disk_convert(scratch: Path) -> Outcome:
    with _environment(LIGHTNETS_FAULT="disk-full"):
        outcome = cli("convert", "torchvision", "mobilenet_v2", str(torchvision_weights()), "-o",
                      str(scratch / "out.safetensors"))
    if (scratch / "out.safetensors").exists():
        return Outcome("silent", f"wrote out.safetensors ({outcome.message})")
    return _leftovers(outcome, scratch)


PROBES: list[Probe] = [
    Probe("eval: one flipped bit turns the stored resolution 16 into 36", "18.1", flipped_resolution_eval),
    Probe("export: one flipped bit turns the stored resolution 16 into 36", "18.1", flipped_resolution_export),
    Probe("predict: an edited preprocessing mean", "18.1", edited_mean_predict),
    Probe("predict: the stored class list reversed", "18.1", reversed_classes_predict),
    Probe("train --resume: the stored global_step + 1000", "18.1", global_step_resume),
    Probe("train --resume: edited optimizer hyper-parameters", "18.1", optimizer_settings_resume),
    Probe("train --out: a directory holding a run", "18.2", train_into_existing_run),
    Probe("convert -o: a run's last.safetensors", "18.2", convert_over_last),
    Probe("export -o: a run's best.safetensors", "18.2", export_over_best),
    Probe("train --resume --epochs 4 --lr 0.5", "18.3", _resume_with("--epochs", "4", "--lr", "0.5")),
    Probe("train --resume --batch-size 8", "18.3", _resume_with("--batch-size", "8")),
    Probe("train --resume --width-mult 0.75", "18.3", _resume_with("--width-mult", "0.75")),
    Probe("train --resume --seed 3", "18.3", _resume_with("--seed", "3")),
    Probe("train --resume --recipe shufflenet", "18.3", _resume_with("--recipe", "shufflenet")),
    Probe("train --lr nan", "18.4", train_lr_nan),
    Probe("fit(lr=inf)", "18.4", fit_lr_inf),
    Probe("recipe weight_decay=nan", "18.4", _recipe_with(weight_decay=math.nan)),
    Probe("recipe momentum=inf", "18.4", _recipe_with(momentum=math.inf)),
    Probe("recipe label_smoothing=nan", "18.4", _recipe_with(label_smoothing=math.nan)),
    Probe("fit(lr=1e30): the loss stops being finite", "18.4", diverging_loss),
    Probe("train: every training image unreadable", "18.4", unreadable_training_images),
    Probe("fit(resume=True) with a model of another width", "18.11", resume_another_width),
    Probe("export: a checkpoint whose weights are another width's", "18.11", export_weights_of_another_width),
    Probe("eval: stored preprocessing without resolution, mean, std", "18.11", eval_preprocessing_without_resolution),
    Probe("predict: a checkpoint with no preprocessing", "18.11", predict_without_preprocessing),
    Probe("train --resume: invalid JSON in the run's config.json", "18.11", invalid_config_json),
    Probe("train --resume: a damaged RNG state", "18.11", damaged_rng_state),
    Probe("train: the disk fills while writing the run's config", "18.14", full_disk_new_run),
    Probe("convert: the disk fills while writing the checkpoint", "18.14", full_disk_convert),
]
