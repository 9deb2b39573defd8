"""Bad inputs of issue 18 items 5-15: model options and inputs, evaluate's arguments, command-line
numbers, unreadable and decompression-bomb images, garbage weight files, an oversized .keras member,
export output paths, requests larger than the memory, and escape sequences in names and paths.

Each probe feeds one bad input in its own scratch directory (``benchmarks/bad_inputs.py`` runs
them). Where the documented answer to a bad input is to skip it and say so (``--bad-images
skip``), the probe is ``clear`` when the command finished and reported the skip, ``silent`` when
it said nothing; escape sequences are ``clear`` when none reached the terminal.
"""

from __future__ import annotations

import math
import shutil
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

from _probes import Outcome, Probe, api, cli

TINY = "mobilenet_v3_small_050"
_CACHE: dict[str, Path] = {}


def _checkpoint() -> Path:
    """One tiny digits checkpoint (one step at 16x16), trained once and shared read-only."""
    if "digits" not in _CACHE:
        import lightnets
        from lightnets.train import fit

        run = Path(tempfile.mkdtemp(prefix="bad-inputs-")) / "run"
        fit(lightnets.create_model(TINY, num_classes=10), "digits", run_dir=str(run), epochs=1, resolution=16,
            max_steps=1, batch_size=16, show_progress=False, log=lambda m: None,
            model_config={"name": TINY, "options": {"num_classes": 10}})
        _CACHE["digits"] = run / "last.safetensors"
    return _CACHE["digits"]


def _ckpt(scratch: Path) -> str:
    path = scratch / "digits.safetensors"
    shutil.copy(_checkpoint(), path)
    return str(path)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png(path: Path, side: int = 20000) -> None:
    """A 200-byte PNG claiming side x side pixels: over Pillow's decompression-bomb limit
    (2 x 89,478,485 pixels), refused when it is opened."""
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    row = b"\0" + b"\0" * ((side + 7) // 8)
    data = zlib.compress(row * 16)  # a few rows; Pillow refuses before decoding any
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data)
                     + _png_chunk(b"IEND", b""))


def _tree(scratch: Path, bomb: bool = True, evil: str | None = None) -> Path:
    """An ImageFolder tree of two classes, 4 small PNGs each per split, a bomb in each split's first class."""
    from PIL import Image

    root = scratch / "data"
    names = [evil or "a", "b"]
    for split in ("train", "val"):
        for name, colour in zip(names, ((200, 30, 30), (30, 200, 30)), strict=True):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (20, 20 + i), colour).save(folder / f"{i}.png")
        if bomb:
            _bomb_png(root / split / names[0] / "bomb.png")
    return root


def _skip_reported(*argv: str, cwd: Path, reported: str) -> Outcome:
    """A bad image under --bad-images skip: clear when the command finished and said it skipped it."""
    code, output = _cli_all_output(*argv, cwd=cwd)
    lines = [line for line in output.splitlines() if line.strip()] or [""]
    if "Traceback (most recent call last)" in output:
        return Outcome("traceback", lines[-1])
    if code != 0:
        return Outcome("clear", lines[-1])  # refused; a skip was asked for, but refusing loses nothing
    said = [line for line in lines if reported in line]
    return Outcome("clear", said[-1]) if said else Outcome("silent", lines[-1])


def _cli_all_output(*argv: str, cwd: Path) -> tuple[int, str]:
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "lightnets", *argv], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"), timeout=600)
    return done.returncode, done.stdout + done.stderr


# ---- 5 -----------------------------------------------------------------------------------------


def _create(**options):
    def feed(scratch: Path) -> Outcome:
        import lightnets

        return api(lambda: lightnets.create_model("shufflenet_v1" if "groups" in options else "mobilenet_v2",
                                                  **options))
    return feed


def _forward(dtype_name: str):
    def feed(scratch: Path) -> Outcome:
        import torch

        import lightnets

        model = lightnets.create_model("mobilenet_v1_025").eval()
        return api(lambda: model(torch.zeros(1, 3, 32, 32, dtype=getattr(torch, dtype_name))))
    return feed


def _evaluate(batch_size: int = 64, num_classes: int = 10):
    def feed(scratch: Path) -> Outcome:
        import lightnets
        from lightnets.train import digits, evaluate

        model = lightnets.create_model("mobilenet_v1_025", num_classes=num_classes)
        return api(lambda: evaluate(model, digits(16, augment=False)[1], batch_size=batch_size))
    return feed


# ---- 7 -----------------------------------------------------------------------------------------


def _predict_unreadable(make):
    def feed(scratch: Path) -> Outcome:
        image = make(scratch)
        return cli("predict", TINY, "--checkpoint", _ckpt(scratch), str(image), cwd=scratch)
    return feed


def _good_png(scratch: Path) -> Path:
    from PIL import Image

    path = scratch / "good.png"
    Image.new("L", (40, 40), 255).save(path)
    return path


def _truncated_jpeg(scratch: Path) -> Path:
    from PIL import Image

    full = scratch / "full.jpg"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(full)
    path = scratch / "truncated.jpg"
    path.write_bytes(full.read_bytes()[:300])
    return path


def _write(name: str, data: bytes):
    def make(scratch: Path) -> Path:
        (scratch / name).write_bytes(data)
        return scratch / name
    return make


def _truncated_png(scratch: Path) -> Path:
    path = scratch / "truncated.png"
    path.write_bytes(_good_png(scratch).read_bytes()[:60])
    return path


def _directory(scratch: Path) -> Path:
    (scratch / "folder.png").mkdir()
    return scratch / "folder.png"


# ---- 8 -----------------------------------------------------------------------------------------


def _train_with_bomb(scratch: Path) -> Outcome:
    data = _tree(scratch)
    return _skip_reported("train", TINY, "--data", str(data), "--resolution", "16", "--epochs", "1",
                          "--batch-size", "4", "--bad-images", "skip", "--out", str(scratch / "run"), "--no-progress",
                          cwd=scratch, reported="unreadable images skipped")


def _train_with_bomb_writes_checkpoint(scratch: Path) -> Outcome:
    outcome = _train_with_bomb(scratch)
    if outcome.verdict == "clear" and not (scratch / "run" / "last.safetensors").exists():
        return Outcome("silent", "finished but wrote no checkpoint")
    return outcome


def _eval_with_bomb(scratch: Path) -> Outcome:
    import lightnets
    from lightnets.train import fit

    data = _tree(scratch, bomb=False)
    fit(lightnets.create_model(TINY, num_classes=2), str(data), run_dir=str(scratch / "run"), epochs=1,
        resolution=16, batch_size=4, max_steps=1, show_progress=False, log=lambda m: None,
        model_config={"name": TINY, "options": {"num_classes": 2}})
    _bomb_png(data / "val" / "a" / "bomb.png")
    return _skip_reported("eval", TINY, "--checkpoint", str(scratch / "run" / "last.safetensors"),
                          "--data", str(data), cwd=scratch, reported="unreadable images skipped")


def _calibrate_with_bomb(scratch: Path) -> Outcome:
    data = _tree(scratch)
    return _skip_reported("export", TINY, "--checkpoint", _ckpt(scratch), "--int8", "--calibration", str(data),
                          "--calibration-batches", "2", "-o", str(scratch / "m.onnx"), cwd=scratch,
                          reported="unreadable images skipped")


def _calibration_reports_bomb(scratch: Path) -> Outcome:
    """int8 calibration's skip, through the API (the CLI's export takes half a minute)."""
    from lightnets.train import calibration_batches

    data = _tree(scratch)
    said: list[str] = []
    outcome = api(lambda: calibration_batches(str(data), 16, batches=2, batch_size=4, report=said.append))
    if outcome.verdict == "silent" and said:
        return Outcome("clear", said[0])
    return outcome


# ---- 9, 10 -------------------------------------------------------------------------------------


def _read_garbage(data: bytes):
    def feed(scratch: Path) -> Outcome:
        from lightnets.convert.files import read_state_dict

        (scratch / "weights.pth").write_bytes(data)
        return api(lambda: read_state_dict(str(scratch / "weights.pth")))
    return feed


def _convert_text_pth(scratch: Path) -> Outcome:
    (scratch / "mobilenet_v2.pth").write_text("not weights\n")
    return cli("convert", "torchvision", "mobilenet_v2", "mobilenet_v2.pth", "-o", "out.safetensors", cwd=scratch)


def _keras_bomb(scratch: Path) -> Outcome:
    path = scratch / "bomb.keras"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 8)
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + 24:central + 28] = (2**31 - 1).to_bytes(4, "little")  # declares 2 GiB inflated
    path.write_bytes(bytes(data))
    return cli("convert", "keras", "MobileNetV3Small", str(path), "-o", "out.safetensors", cwd=scratch)


# ---- 13 ----------------------------------------------------------------------------------------


def _lab_huge_batch(scratch: Path) -> Outcome:
    from lightnets.lab import LabConfig, run_lab

    return api(lambda: run_lab(["g1"], LabConfig(batch=100000)))


# ---- 15 ----------------------------------------------------------------------------------------


EVIL = "cat\x1b]0;owned\x07\x1b[2J"


def _escaped(code: int, output: str) -> Outcome:
    if code != 0:
        return Outcome("traceback" if "Traceback" in output else "clear", output.strip().splitlines()[-1])
    if "\x1b" in output or "\x07" in output:
        return Outcome("silent", "an escape sequence reached the terminal")
    return Outcome("clear", "printed escaped: " + next(line for line in output.splitlines() if "\\x1b" in line))


def _eval_evil_classes(scratch: Path) -> Outcome:
    data = _tree(scratch, bomb=False, evil=EVIL)
    code, _ = _cli_all_output("train", TINY, "--data", str(data), "--resolution", "16", "--epochs", "1",
                              "--batch-size", "2", "--max-steps", "1", "--out", "run", "--no-progress", cwd=scratch)
    if code:
        return Outcome("traceback", "training the probe's checkpoint failed")
    return _escaped(*_cli_all_output("eval", TINY, "--checkpoint", "run/last.safetensors", cwd=scratch))


def _predict_evil_path(scratch: Path) -> Outcome:
    from PIL import Image

    image = scratch / "x\x1b[31m\x1b]0;owned\x07.png"
    Image.new("L", (20, 20), 0).save(image)
    return _escaped(*_cli_all_output("predict", TINY, "--checkpoint", _ckpt(scratch), str(image), cwd=scratch))


def _convert_evil_classes(scratch: Path) -> Outcome:
    """Class names from a --classes file, stored in the checkpoint, printed by predict."""
    from lightnets.formats import load_checkpoint, save_checkpoint

    source = load_checkpoint(str(_checkpoint()))
    config = {**source.config, "classes": [f"{EVIL}{i}" for i in range(10)]}
    save_checkpoint(str(scratch / "evil.safetensors"), source.model, config=config, progress={}, keep_previous=False)
    image = _good_png(scratch)
    return _escaped(*_cli_all_output("predict", TINY, "--checkpoint", "evil.safetensors", str(image), cwd=scratch))


PROBES: list[Probe] = [
    # 5: model options, input dtype, evaluate
    Probe("create_model(bn_eps=nan)", "18.5", _create(bn_eps=math.nan)),
    Probe("create_model(bn_eps=0)", "18.5", _create(bn_eps=0.0)),
    Probe("create_model(bn_eps=-1e-3)", "18.5", _create(bn_eps=-1e-3)),
    Probe("create_model(dropout='0.2')", "18.5", _create(dropout="0.2")),
    Probe("create_model(groups=3.0)", "18.5", _create(groups=3.0)),
    Probe("forward on a uint8 tensor", "18.5", _forward("uint8")),
    Probe("forward on an int64 tensor", "18.5", _forward("int64")),
    Probe("forward on a bool tensor", "18.5", _forward("bool")),
    Probe("evaluate(batch_size=-1)", "18.5", _evaluate(batch_size=-1)),
    Probe("evaluate(batch_size=0)", "18.5", _evaluate(batch_size=0)),
    Probe("evaluate a 3-class model on 10-class data", "18.5", _evaluate(num_classes=3)),
    Probe("evaluate a 30-class model on 10-class data", "18.5", _evaluate(num_classes=30)),
    # 6: command-line numbers and lists
    Probe("zoo --models ''", "18.6", lambda s: cli("zoo", "--models", "", cwd=s)),
    Probe("train --workers -1", "18.6", lambda s: cli("train", TINY, "--workers", "-1", cwd=s)),
    Probe("train --resolution 1", "18.6", lambda s: cli("train", TINY, "--resolution", "1", cwd=s)),
    Probe("train --lr nan", "18.6", lambda s: cli("train", TINY, "--lr", "nan", cwd=s)),
    Probe("train --dropout 1.5", "18.6", lambda s: cli("train", TINY, "--dropout", "1.5", cwd=s)),
    Probe("lab --seconds -1", "18.6", lambda s: cli("lab", "g1", "--seconds", "-1", cwd=s)),
    Probe("lab --seconds inf", "18.6", lambda s: cli("lab", "g1", "--seconds", "inf", cwd=s)),
    Probe("lab --seconds nan", "18.6", lambda s: cli("lab", "g1", "--seconds", "nan", cwd=s)),
    Probe("lut build --warmup -1", "18.6", lambda s: cli("lut", "build", "--warmup", "-1", "-o", "t.json", cwd=s)),
    Probe("search --train-fraction 0", "18.6", lambda s: cli("search", "--train-fraction", "0", cwd=s)),
    Probe("export --checkpoint X --width-mult 0.5", "18.6",
          lambda s: cli("export", TINY, "--checkpoint", _ckpt(s), "--width-mult", "0.5", "-o", "m.onnx", cwd=s)),
    # 7: predict on unreadable images
    Probe("predict a text file named .png", "18.7", _predict_unreadable(_write("text.png", b"plain text\n"))),
    Probe("predict a zero-byte .png", "18.7", _predict_unreadable(_write("empty.png", b""))),
    Probe("predict a truncated PNG", "18.7", _predict_unreadable(_truncated_png)),
    Probe("predict a truncated JPEG", "18.7", _predict_unreadable(_truncated_jpeg)),
    Probe("predict a directory", "18.7", _predict_unreadable(_directory)),
    # 8: decompression bombs under --bad-images skip
    Probe("train with a bomb in train/ and val/", "18.8", _train_with_bomb_writes_checkpoint),
    Probe("eval with a bomb in val/", "18.8", _eval_with_bomb),
    Probe("int8 calibration batches with a bomb", "18.8", _calibration_reports_bomb),
    Probe("export --int8 calibrated on a tree with a bomb", "18.8", _calibrate_with_bomb),
    # 9, 10: weight files
    Probe("read_state_dict on b'.' (.pth)", "18.9", _read_garbage(b".")),
    Probe("read_state_dict on a text file (.pth)", "18.9", _read_garbage(b"hello\n")),
    Probe("read_state_dict on a truncated pickle", "18.9", _read_garbage(b"\x80\x02}q\x00X")),
    Probe("convert a text file named .pth", "18.9", _convert_text_pth),
    Probe("convert a .keras zip declaring a 2 GiB member", "18.10", _keras_bomb),
    # 12: export output paths
    Probe("export onnx -o DIR", "18.12", lambda s: cli("export", "mobilenet_v1_025", "-o", str(s), cwd=s)),
    Probe("export pt2 -o DIR", "18.12",
          lambda s: cli("export", "mobilenet_v1_025", "--format", "pt2", "-o", str(s), cwd=s)),
    Probe("export pt2 into a missing folder", "18.12",
          lambda s: cli("export", "mobilenet_v1_025", "--format", "pt2", "-o", "missing/m.pt2", cwd=s)),
    Probe("export --int8 -o DIR", "18.12",
          lambda s: cli("export", "mobilenet_v1_025", "--int8", "--calibration", "digits", "-o", str(s), cwd=s)),
    # 13: requests larger than the memory
    Probe("spec mobilenet_v2 --width-mult 1e6", "18.13",
          lambda s: cli("spec", "mobilenet_v2", "--width-mult", "1e6", cwd=s)),
    Probe("profile mobilenet_v2 at 20000x20000", "18.13",
          lambda s: cli("profile", "mobilenet_v2", "--resolution", "20000", cwd=s)),
    Probe("train a 1,438-image batch at 224", "18.13",
          lambda s: cli("train", "mobilenet_v2", "--batch-size", "1438", "--resolution", "224", "--out", "run",
                        "--no-progress", cwd=s)),
    Probe("eval a 20000x20000 batch", "18.13",
          lambda s: cli("eval", TINY, "--checkpoint", _ckpt(s), "--resolution", "20000", "--batch-size", "4", cwd=s)),
    Probe("zoo mobilenet_v2 at 20000x20000", "18.13",
          lambda s: cli("zoo", "--models", "mobilenet_v2", "--resolution", "20000", cwd=s)),
    Probe("lab g1 --batch 100000", "18.13", _lab_huge_batch),
    # 15: escape sequences
    Probe("eval prints ImageFolder class names with escapes", "18.15", _eval_evil_classes),
    Probe("predict prints an image path with escapes", "18.15", _predict_evil_path),
    Probe("predict prints stored class names with escapes", "18.15", _convert_evil_classes),
]
