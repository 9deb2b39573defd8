"""``fit``, ``resume`` and ``evaluate``: the training loop the CLI calls.

Runs on one CPU or GPU, or on many processes under ``torchrun`` (DistributedDataParallel,
gloo on CPU, nccl on GPU). Only rank 0 writes logs and checkpoints. The learning rate is a
pure function of the step and every RNG is saved, so a run resumed from any checkpoint,
mid-epoch included, continues exactly as if it had not stopped. Without a run directory
nothing is written at all: the in-memory mode for the many short fine-tunes of NetAdapt and
architecture search.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..formats.checkpoint import CheckpointError, load_checkpoint, restore_rng, save_checkpoint, tensor_digest
from ..formats.files import atomic_write, fault_point, read_json, remove_stale_temporaries
from ..formats.loading import SPEC_NAME, build_stored_model, load_model, state_dict_mismatch
from ..models import NetSpec
from ..models.memory import check_request, spec_of
from .data import DataSplit, load_data
from .ema import ModelEMA
from .metrics import EvalResult, topk_correct
from .recipes import RECIPES, Recipe, get_recipe
from .tasks import get_task


@dataclass
class FitResult:
    """What a run achieved: the last epoch's metrics (``final``), the best score, and the network.

    ``metric`` names the validation score that chose the best epoch: ``top1`` for classifiers,
    ``miou`` for segmentation, ``map`` (COCO mAP@[.5:.95]) for detection; ``best_score`` is its
    best value. ``model`` is the network the metrics were measured on: the EMA copy when the
    recipe averages weights, the trained model itself otherwise. ``run_dir`` is None for an
    in-memory run.
    """

    run_dir: str | None
    epochs: int
    best_score: float
    best_epoch: int
    final: dict
    history: list[dict] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False)
    metric: str = "top1"

    @property
    def best_top1(self) -> float:
        if self.metric != "top1":
            raise AttributeError(f"this run trained a {self.metric} model; its best score is best_score")
        return self.best_score


@dataclass
class _TorchState:
    """The process-wide torch state ``fit`` changes, captured to be put back when it returns or raises.

    A library call must not leave the caller's process different: a NAS loop running hundreds
    of fits, or a test suite, would otherwise inherit one run's thread count, deterministic mode
    and seeded RNGs.
    """

    threads: int
    deterministic: bool
    deterministic_warn_only: bool
    torch_rng: torch.Tensor
    python_rng: tuple
    cuda_rng: list[torch.Tensor] | None
    cuda_device: int | None
    distributed: bool

    @classmethod
    def capture(cls) -> _TorchState:
        cuda = torch.cuda.is_initialized()
        return cls(
            threads=torch.get_num_threads(),
            deterministic=torch.are_deterministic_algorithms_enabled(),
            deterministic_warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
            torch_rng=torch.get_rng_state(),
            python_rng=random.getstate(),
            cuda_rng=torch.cuda.get_rng_state_all() if cuda else None,
            cuda_device=torch.cuda.current_device() if cuda else None,
            distributed=dist.is_available() and dist.is_initialized(),
        )

    def restore(self) -> None:
        if not self.distributed and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()  # fit started it and stopped on an error before its own teardown
        torch.set_num_threads(self.threads)
        torch.use_deterministic_algorithms(self.deterministic, warn_only=self.deterministic_warn_only)
        torch.set_rng_state(self.torch_rng)
        random.setstate(self.python_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        if self.cuda_device is not None:
            torch.cuda.set_device(self.cuda_device)


def _restores_torch_state(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        saved = _TorchState.capture()
        try:
            return fn(*args, **kwargs)
        finally:
            saved.restore()

    return wrapper


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on convolution and linear weights only, not on BN parameters or biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    groups = _param_groups(model, recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov)
    if recipe.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=recipe.lr, alpha=recipe.rmsprop_decay, eps=recipe.rmsprop_eps,
                                   momentum=recipe.momentum)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; allowed: sgd, rmsprop, adamw")


def _fingerprint(model: nn.Module) -> str:
    """SHA-256 of every weight and buffer: equal on two ranks iff the replicas are identical."""
    return tensor_digest({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})


class _Progress:
    """A one-line progress bar on a terminal; nothing otherwise.

    The bar fills over the epoch, but the ETA is the whole run's (every epoch left), so it says
    "run ETA": "22/22 ... ETA 1:13" at the end of epoch 1 read as a stalled epoch.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.start = time.perf_counter()

    def update(self, epoch: int, epochs: int, step: int, steps: int, loss: float, lr: float, ips: float, done: int,
               total: int) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / max(done, 1) * (total - done)
        bar = "#" * int(20 * step / max(steps, 1))
        sys.stderr.write(
            f"\repoch {epoch + 1}/{epochs} [{bar:<20}] {step}/{steps} loss {loss:.3f} lr {lr:.4g} "
            f"{ips:.0f} img/s, run ETA {int(eta // 60)}:{int(eta % 60):02d}   "
        )
        sys.stderr.flush()

    def end(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: DataSplit,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
    rank: int = 0,
    world: int = 1,
) -> EvalResult:
    """Top-1, top-5, loss, per-class accuracy and confusion matrix of ``model`` on ``split``.

    The model must have one output per class of the split (``model.num_classes`` when it states
    it, else its logits are checked at the first batch).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if split.task != "classification":
        raise ValueError(f"evaluate measures classifiers; the {split.name} split is a {split.task} task "
                         f"(use lightnets.train.evaluate_{split.task})")
    n_classes = len(split.classes)
    stated = getattr(model, "num_classes", None)
    if isinstance(stated, int) and stated != n_classes:
        raise ValueError(_class_mismatch(stated, split))
    spec = spec_of(model)
    if spec is not None and not str(device).startswith("cuda"):
        r, largest = split.preprocessing.resolution, min(batch_size, split.size)
        check_request(spec, f"evaluating batches of {largest} images at {r}x{r}", r, largest)
    was_training = model.training
    model.eval()
    confusion = torch.zeros(n_classes, n_classes, dtype=torch.long)
    sums = torch.zeros(5, dtype=torch.float64)  # loss sum, top-1, top-5, count, skipped
    try:
        for batch in split.batches(batch_size, shuffle=False, rank=rank, world=world):
            sums[4] += batch.skipped
            if batch.labels.numel() == 0:
                continue
            x = batch.images.to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = model(x).float().cpu()
            if logits.dim() != 2 or logits.shape[1] != n_classes:
                raise ValueError(_class_mismatch(logits.shape[-1], split))
            sums[0] += F.cross_entropy(logits, batch.labels, reduction="sum").item()
            c1, c5 = topk_correct(logits, batch.labels)
            sums[1:4] += torch.tensor([c1, c5, len(batch.labels)], dtype=torch.float64)
            pairs = batch.labels * n_classes + logits.argmax(1)  # (true, predicted) as one index
            confusion += torch.bincount(pairs, minlength=n_classes**2).view(n_classes, n_classes)
    finally:
        model.train(was_training)
    if world > 1:
        dist.all_reduce(sums)
        dist.all_reduce(confusion)
    count = max(int(sums[3]), 1)
    return EvalResult(float(sums[1] / count), float(sums[2] / count), float(sums[0] / count), int(sums[3]),
                      split.classes, confusion, skipped=int(sums[4]))


def _class_mismatch(outputs: int, split: DataSplit) -> str:
    return (
        f"the model has {outputs} outputs (classes), the data's {split.name} split {len(split.classes)} classes: "
        f"evaluate a model trained on this data, or build it with num_classes={len(split.classes)}"
    )


def _write_metrics(run_dir: str, rows: list[dict]) -> None:
    """Replace ``metrics.jsonl`` with ``rows`` (atomically): what the resumed checkpoint has seen."""
    atomic_write(os.path.join(run_dir, "metrics.jsonl"), "".join(json.dumps(row) + "\n" for row in rows))


def checkpoint_path(run_dir: str, checkpoint: str = "last") -> str:
    """The file a run's ``checkpoint`` names: ``last``, ``previous``, ``best``, or a path as it is."""
    if os.path.sep in checkpoint or checkpoint.endswith(".safetensors"):
        return checkpoint
    return os.path.join(run_dir, f"{checkpoint}.safetensors")


#: The files that make a directory a run: a new run refuses to start in a directory holding any of them.
RUN_FILES = ("config.json", "metrics.jsonl", "last.safetensors", "previous.safetensors", "best.safetensors")
#: Also removed when a new run replaces an old one (overwrite=True): they describe the old run.
_RUN_OUTPUTS = (*RUN_FILES, "replicas.json", "curves.png")


class TrainingDiverged(ValueError):
    """The loss or the weights stopped being finite: training stopped, no checkpoint was written from them."""


def _check_new_run_dir(run_dir: str, overwrite: bool) -> None:
    """Refuse to start a new run where one is (it would replace its checkpoints and mix two runs' metrics),
    unless ``overwrite``: then remove the old run's files first."""
    existing = [name for name in RUN_FILES if os.path.exists(os.path.join(run_dir, name))]
    if not existing:
        return
    if not overwrite:
        raise ValueError(
            f"{run_dir!r} already holds a run ({', '.join(existing)}): continue it with --resume {run_dir} "
            "(fit(..., resume=True)), train into another directory, or replace it with --force (overwrite=True)"
        )
    for name in _RUN_OUTPUTS:
        if os.path.exists(os.path.join(run_dir, name)):
            os.remove(os.path.join(run_dir, name))


def _describe_stored(config: dict) -> str:
    """A checkpoint's network in words: ``mobilenet_v2 with {'width_mult': 0.5, ...}`` or its spec."""
    stored = config.get("model") or {}
    if stored.get("name"):
        return f"{stored['name']} with {stored.get('options', {})}"
    return f"the network {stored['spec']}" if stored.get("spec") else "a network of unrecorded name"


def _describe_model(model: nn.Module, model_config: dict | None) -> str:
    if model_config and model_config.get("name"):
        return f"{model_config['name']} with {model_config.get('options', {})}"
    spec = getattr(model, "spec", None)
    return f"the network {spec}" if isinstance(spec, NetSpec) else type(model).__name__


def _non_finite(model: nn.Module, ema: ModelEMA | None) -> list[str]:
    """The weights and buffers that are NaN or infinite (the EMA copy's prefixed ``ema.``)."""
    states = {"": model.state_dict(), **({"ema.": ema.state_dict()} if ema is not None else {})}
    return [prefix + name for prefix, state in states.items() for name, value in state.items()
            if value.is_floating_point() and not torch.isfinite(value).all()]


@_restores_torch_state
def fit(
    model: nn.Module,
    data: str | tuple[DataSplit, DataSplit] = "digits",
    recipe: str | Recipe = "small-data",
    *,
    run_dir: str | None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    resolution: int = 32,
    resume: bool = False,
    resume_checkpoint: str = "last",
    checkpoint_every: int = 0,
    seed: int = 0,
    device: str = "cpu",
    amp: bool = False,
    channels_last: bool = False,
    sync_bn: bool = False,
    deterministic: bool = False,
    threads: int | None = None,
    max_steps: int | None = None,
    workers: int = 0,
    bad_images: str = "skip",
    augment: str = "auto",
    flip: bool | None = None,
    model_config: dict | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> FitResult:
    """Train ``model`` on ``data`` with ``recipe``; checkpoints and ``metrics.jsonl`` go to ``run_dir``.

    ``data`` is ``"digits"``, an ImageFolder path, or (train, val) splits. ``run_dir=None``
    trains in memory and writes nothing at all (no checkpoints, config, metrics or replica
    record): the mode for the many short fine-tunes of NetAdapt and architecture search, whose
    caller reads the metrics and the trained network from the returned :class:`FitResult`.
    ``run_dir`` has no default so that choosing not to keep a run is explicit.

    ``resume=True`` continues ``run_dir`` from its ``resume_checkpoint`` (``last``,
    ``previous``, ``best`` or a path); :func:`resume` does so from the checkpoint alone. A new
    run refuses a ``run_dir`` that already holds one (it would replace its checkpoints and mix
    two runs' metrics) unless ``overwrite=True``, which removes the old run's files first.
    ``checkpoint_every`` also checkpoints every N optimizer steps. ``max_steps`` without
    ``epochs`` is a step budget: the run lasts ``max_steps`` optimizer steps, over as many epochs
    as that takes, and the learning-rate schedule ends at the last of them (after the recipe's
    warm-up epochs), so a short fine-tune still anneals. With ``epochs`` it is a cap: the schedule spans the
    epochs and the run stops early, resumable to its end (smoke tests). ``model_config``
    (registry name and options) is stored with the checkpoints so that
    :func:`lightnets.formats.load_model` can rebuild the model. ``augment`` and ``flip`` choose an
    ImageFolder tree's training augmentation (see :func:`~lightnets.train.image_folder`); the
    run's first line says which is in force, and the checkpoints store it.

    Training stops with :class:`TrainingDiverged` (a ValueError) when the loss or the weights
    stop being finite, before any checkpoint is written from them (the last good one stays),
    and with a ValueError when an epoch has no readable training image or the validation split
    none: a run that learnt nothing is not saved as the best.

    The global torch state this changes (thread count, deterministic algorithms, the seeded
    torch and Python RNGs, the CUDA device, a process group it started) is restored when it
    returns or raises.
    """
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    recipe = recipe.with_overrides(epochs=epochs, batch_size=batch_size, lr=lr)
    for name, value in (("epochs", recipe.epochs), ("batch_size", recipe.batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"max_steps must be an integer >= 1 or None, got {max_steps!r}")
    if checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be >= 0, got {checkpoint_every!r}")
    in_memory = run_dir is None
    if in_memory and (resume or checkpoint_every):
        raise ValueError("resume and checkpoint_every need a run_dir; run_dir=None trains in memory and writes nothing")
    step_budget = epochs is None and max_steps is not None
    rank, world, local_rank = _distributed()
    is_main = rank == 0
    writes = is_main and not in_memory
    if writes and not resume:
        _check_new_run_dir(run_dir, overwrite)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch sees no CUDA device")
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if threads is not None:
        torch.set_num_threads(threads)
    if deterministic:
        torch.use_deterministic_algorithms(True)
    say = log if is_main else (lambda _msg: None)
    task = get_task(model, recipe.label_smoothing)
    task.check_model(model, world)

    if isinstance(data, str):
        train_split, val_split = load_data(data, resolution, bad_images, augment if recipe.augment else "none",
                                           flip=flip)
    else:
        train_split, val_split = data
    if train_split.task != task.name:
        raise ValueError(f"this data is a {train_split.task} task and {type(model).__name__} a {task.name} model; "
                         f"train a {train_split.task} model on it (lightnets.list_models(task={train_split.task!r}))"
                         if train_split.task != "classification" else
                         f"{type(model).__name__} is a {task.name} model and this data a classification task; "
                         f"train it on the built-in digit-{task.name} scenes")
    say(f"data: {train_split.name} {train_split.size} / {val_split.name} {val_split.size} images, "
        f"{len(train_split.classes)} classes; preprocessing {train_split.preprocessing.kind} "
        f"{train_split.preprocessing.resolution}x{train_split.preprocessing.resolution}; "
        f"augmentation {train_split.augmentation}")
    expected_classes = (model_config or {}).get("options", {}).get("num_classes")
    if expected_classes not in (None, len(train_split.classes)):
        raise ValueError(f"the model has {expected_classes} classes, the data {len(train_split.classes)}")
    steps_per_epoch = train_split.num_batches(recipe.batch_size, world, drop_last=True)
    if steps_per_epoch < 1:
        raise ValueError(
            f"batch size {recipe.batch_size} x {world} process(es) exceeds the {train_split.size} training images"
        )
    if step_budget:
        recipe = recipe.with_overrides(epochs=math.ceil(max_steps / steps_per_epoch))
        total_steps = max_steps
    else:
        total_steps = steps_per_epoch * recipe.epochs

    spec = spec_of(model)
    if spec is not None and not str(device).startswith("cuda"):
        r = train_split.preprocessing.resolution
        check_request(spec, f"training with batches of {recipe.batch_size} images at {r}x{r}", r, recipe.batch_size,
                      training=True, bytes_per_element=2 if amp else 4)
    if sync_bn:
        if world == 1 or not str(device).startswith("cuda"):
            raise ValueError("--sync-bn needs several GPU processes (torchrun with --device cuda)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if recipe.bn_momentum is not None:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = recipe.bn_momentum
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, recipe)
    ema = ModelEMA(model, recipe.ema_decay) if recipe.ema_decay else None
    config = {
        "model": _model_entry(model, model_config),
        "recipe": recipe.to_dict(),
        "data": data if isinstance(data, str) else "custom",
        "preprocessing": train_split.preprocessing.to_dict(),
        "classes": train_split.classes,
        "seed": seed,
        "max_steps": max_steps,
        "step_budget": step_budget,
        "world_size": world,
        "augment": augment,
        "flip": flip,
        "augmentation": train_split.augmentation,
        "torch": torch.__version__,
    }
    # "history": every finished epoch's metrics row, so that a checkpoint and the metrics lines
    # it has seen are one commit (a resumed run rewrites metrics.jsonl from it).
    progress = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_score": -1.0, "best_epoch": -1,
                "running": [0.0, 0.0, 0.0, 0.0, 0.0], "train_seconds": 0.0, "history": []}

    torch.manual_seed(seed + rank)
    if recipe.zero_init_residual and not resume:
        for module in model.modules():
            if hasattr(module, "zero_init_last"):
                module.zero_init_last()
    if resume:
        path = checkpoint_path(run_dir, resume_checkpoint)
        ckpt = load_checkpoint(path)  # its error names the intact previous checkpoint, if any
        if ckpt.optimizer is None or ckpt.rng is None:
            raise CheckpointError(f"{path!r} holds weights only and cannot resume training")
        try:
            model.load_state_dict(ckpt.model)
            if ema is not None and ckpt.ema is not None:
                ema.load_state_dict(ckpt.ema)
        except RuntimeError as err:
            raise CheckpointError(
                f"checkpoint {path!r} holds {_describe_stored(ckpt.config)}, which does not fit the model being "
                f"resumed ({_describe_model(model, model_config)}): {state_dict_mismatch(err)}"
            ) from None
        try:
            optimizer.load_state_dict(ckpt.optimizer)
        except (KeyError, ValueError) as err:
            raise CheckpointError(
                f"checkpoint {path!r}: its optimizer state does not fit the {recipe.optimizer} optimizer of the "
                f"model being resumed ({err})"
            ) from None
        progress = ckpt.progress
        if "best_top1" in progress and "best_score" not in progress:  # written before fit trained dense tasks
            progress["best_score"] = progress.pop("best_top1")
        missing = [k for k in ("epoch", "step_in_epoch", "global_step", "best_score", "best_epoch", "running",
                               "train_seconds") if k not in progress]
        if missing:
            raise CheckpointError(f"checkpoint {path!r}: its stored progress lacks {', '.join(missing)}")
        restore_rng(ckpt.rng["tensors"], ckpt.rng["python"], path)
        say(f"resumed {path} at epoch {progress['epoch']}, step {progress['global_step']}")
    if writes:
        os.makedirs(run_dir, exist_ok=True)
        removed = remove_stale_temporaries(run_dir)
        if removed:
            say(f"removed {len(removed)} temporary file(s) an interrupted checkpoint write left: {', '.join(removed)}")
        if resume and "history" in progress:
            _write_metrics(run_dir, progress["history"])
        atomic_write(os.path.join(run_dir, "config.json"), json.dumps(config, indent=2))

    net: nn.Module = model
    if world > 1:
        device_ids = [local_rank] if str(device).startswith("cuda") else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    use_amp = amp
    amp_dtype = torch.float16 if str(device).startswith("cuda") else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    bar = _Progress(show_progress and is_main)
    history: list[dict] = []

    saved: list[str] = []  # the checkpoints written, last first: named when training stops

    def diverged(what: str) -> TrainingDiverged:
        kept = (f"the last checkpoint with finite weights, {saved[0]}, was kept" if saved else
                "no checkpoint was written")
        return TrainingDiverged(
            f"training stopped in epoch {progress['epoch'] + 1} after {progress['global_step']} optimizer steps: "
            f"{what}; {kept}, none from these weights. Try a lower learning rate (this run's peak lr is "
            f"{recipe.lr:g})"
        )

    def check_finite() -> None:
        bad = _non_finite(model, ema)
        if bad:
            raise diverged(f"{len(bad)} weight tensors hold NaN or infinite values ({', '.join(bad[:3])}...)")

    def checkpoint(name: str, keep_previous: bool = True) -> None:
        check_finite()
        if writes:
            saved.insert(0, f"{name}.safetensors at step {progress['global_step']}")
            save_checkpoint(
                os.path.join(run_dir, f"{name}.safetensors"), model.state_dict(), config=config, progress=progress,
                ema=ema.state_dict() if ema else None, optimizer=optimizer.state_dict(), keep_previous=keep_previous,
            )

    stop = False
    for epoch in range(progress["epoch"], recipe.epochs):
        if max_steps is not None and progress["global_step"] >= max_steps:
            break  # resumed from a run that had already used its steps
        net.train()
        skip = progress["step_in_epoch"]
        running = torch.tensor(progress["running"], dtype=torch.float64)  # loss sum, top-1, top-5, count, skipped
        start = time.perf_counter()
        for step_in_epoch, batch in enumerate(
            train_split.batches(recipe.batch_size, shuffle=True, epoch=epoch, seed=seed, rank=rank, world=world,
                                drop_last=True, skip=skip, workers=workers),
            start=skip,
        ):
            running[4] += batch.skipped
            if len(batch.labels) == 0:
                continue
            lr_now = recipe.lr_at(progress["global_step"], steps_per_epoch, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr_now
            x, y = batch.images.to(device, non_blocking=True), task.to_device(batch.labels, device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=str(device).split(":")[0], dtype=amp_dtype, enabled=use_amp):
                loss, hits = task.loss(net, model, x, y)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise diverged(f"the next step's loss is {loss_value}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update(model)
            running[:4] += torch.tensor([loss_value * len(y), *hits, len(y)], dtype=torch.float64)
            progress["global_step"] += 1
            progress["step_in_epoch"] = step_in_epoch + 1
            progress["running"] = running.tolist()
            elapsed = progress["train_seconds"] + time.perf_counter() - start
            bar.update(epoch, recipe.epochs, step_in_epoch + 1, steps_per_epoch, running[0].item() / running[3].item(),
                       lr_now, running[3].item() * world / max(time.perf_counter() - start, 1e-9),
                       progress["global_step"], total_steps)
            if checkpoint_every and progress["global_step"] % checkpoint_every == 0:
                progress["train_seconds"] = elapsed
                checkpoint("last")
                say(f"checkpoint: step {progress['global_step']} "
                    f"(epoch {epoch + 1}, step {step_in_epoch + 1}/{steps_per_epoch})")
                start = time.perf_counter()
                progress["train_seconds"] = 0.0
            if max_steps is not None and progress["global_step"] >= max_steps:
                stop = True
                break
        bar.end()
        seconds = progress["train_seconds"] + time.perf_counter() - start
        if world > 1:
            dist.all_reduce(running)
            # DDP keeps parameters equal through the gradient all-reduce, but each rank's last
            # forward updated its own BN statistics; make every replica rank 0's before they
            # are evaluated and saved.
            for buffer in model.buffers():
                dist.broadcast(buffer, 0)
        if running[3].item() == 0:
            unreadable = int(running[4].item())
            raise ValueError(
                f"epoch {epoch + 1} trained on no image: "
                + (f"all {unreadable} images it drew from {train_split.name} were unreadable and skipped"
                   if unreadable else f"{train_split.name} yielded none")
                + "; nothing was learnt in it and no checkpoint was written for it (check the images, or "
                "--bad-images error to stop at the first unreadable one)"
            )
        check_finite()  # before evaluating: NaN weights once scored a chance accuracy and were kept as the best
        evaluated = task.evaluate(ema.module if ema else model, val_split, device=device,
                                  channels_last=channels_last, rank=rank, world=world)
        if evaluated["count"] == 0:
            raise ValueError(f"the validation split {val_split.name} has no readable image; epoch {epoch + 1} cannot "
                             "be evaluated and no checkpoint was written for it")
        count = max(running[3].item(), 1.0)
        row = {
            "epoch": epoch + 1,
            "step": progress["global_step"],
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": running[0].item() / count,
            **({"train_top1": running[1].item() / count, "train_top5": running[2].item() / count}
               if task.metric == "top1" else {}),
            # the scores only: per-class figures and confusion matrices stay out of the metrics lines
            **{f"val_{key}": value for key, value in evaluated.items() if isinstance(value, float)},
            "images_per_s": running[3].item() / max(seconds, 1e-9),
            "seconds": seconds,
            "skipped_images": int(running[4].item()),
            "val_skipped_images": evaluated.get("skipped", 0),
            "evaluated": "ema" if ema else "model",
        }
        history.append(row)
        progress.setdefault("history", []).append(row)
        score = evaluated[task.metric]
        improved = score > progress["best_score"]
        if improved:
            progress["best_score"], progress["best_epoch"] = score, epoch + 1
        if not stop:
            progress.update(epoch=epoch + 1, step_in_epoch=0, running=[0.0] * 5, train_seconds=0.0)
        checkpoint("last")
        if improved:
            checkpoint("best", keep_previous=False)
        if writes:
            fault_point("epoch-checkpointed")
            with open(os.path.join(run_dir, "metrics.jsonl"), "a") as fh:
                fh.write(json.dumps(row) + "\n")
        say(
            f"epoch {epoch + 1}/{recipe.epochs}: loss {row['train_loss']:.4f}, {task.describe(row)}, "
            f"lr {row['lr']:.4g}, "
            f"{row['images_per_s']:.0f} img/s"
            + (f", {row['skipped_images']} unreadable images skipped" if row["skipped_images"] else "")
            + (f", {row['val_skipped_images']} unreadable {val_split.name} images skipped"
               if row["val_skipped_images"] else "")
        )
        if stop:
            break

    if world > 1:
        prints = [None] * world
        dist.all_gather_object(prints, _fingerprint(model))
        if writes:
            replicas = {"world_size": world, "fingerprints": prints, "identical": len(set(prints)) == 1}
            atomic_write(os.path.join(run_dir, "replicas.json"), json.dumps(replicas, indent=2))
        dist.barrier()
        dist.destroy_process_group()
    final = history[-1] if history else {}
    return FitResult(run_dir, len(history), progress["best_score"], progress["best_epoch"], final, history,
                     model=ema.module if ema else model, metric=task.metric)


def _stored_recipe(stored: dict) -> Recipe:
    """The recipe a run stored, exactly: its named preset with every stored field put back.

    Starting from the preset keeps a checkpoint written before a field existed readable (the
    field takes the preset's value); a recipe that is not a preset is rebuilt from its fields.
    """
    fields = {f.name for f in dataclasses.fields(Recipe)}
    known = {k: v for k, v in stored.items() if k in fields}
    base = RECIPES.get(stored.get("name", ""))
    return dataclasses.replace(base, **known) if base is not None else Recipe(**known)


def _model_entry(model: nn.Module, model_config: dict | None) -> dict:
    """What a checkpoint stores about its network: the registered name and options it was made
    with (``model_config``), and, for a lightnets network, its spec, which rebuilds it even when
    no name does (a pruned or searched network)."""
    entry = dict(model_config or {})
    spec = getattr(model, "spec", None)
    if isinstance(spec, NetSpec):
        entry["spec"] = str(spec)
    return entry


#: What :func:`resume` compares with the run's stored configuration: ``expect``'s keys, where each is
#: stored, and the ``lightnets train`` option that sets it.
RUN_SETTINGS = {
    "recipe": (("recipe", "name"), "--recipe"), "lr": (("recipe", "lr"), "--lr"),
    "batch_size": (("recipe", "batch_size"), "--batch-size"),
    "resolution": (("preprocessing", "resolution"), "--resolution"), "seed": (("seed",), "--seed"),
    "data": (("data",), "--data"), "augment": (("augment",), "--augment"), "flip": (("flip",), "--no-flip"),
}


def _stored_setting(config: dict, key: str) -> object:
    value: object = config
    for part in RUN_SETTINGS[key][0]:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _run_config(config_path: str) -> dict:
    """A run's ``config.json``, read for a run killed before its first checkpoint; errors name the file."""
    config = read_json(config_path)
    missing = [k for k in ("classes", "preprocessing", "recipe") if not isinstance(config, dict) or k not in config]
    if missing:
        raise ValueError(f"{config_path}: the run's configuration lacks {', '.join(missing)}")
    if not isinstance(config["preprocessing"], dict) or "resolution" not in config["preprocessing"]:
        raise ValueError(f"{config_path}: the run's configuration stores no preprocessing resolution")
    return config


def resume(
    run_dir: str,
    name: str | None = None,
    *,
    checkpoint: str = "last",
    epochs: int | None = None,
    expect: dict | None = None,
    device: str = "cpu",
    amp: bool = False,
    channels_last: bool = False,
    sync_bn: bool = False,
    deterministic: bool = False,
    threads: int | None = None,
    max_steps: int | None = None,
    checkpoint_every: int = 0,
    workers: int = 0,
    bad_images: str = "skip",
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> FitResult:
    """Continue the run in ``run_dir`` exactly where its ``checkpoint`` stopped (last, previous, best, or a path).

    Everything that decides the result comes from the checkpoint: the network (its stored name
    and options, through :func:`~lightnets.formats.load_model`), the recipe with its overrides,
    the data, the resolution, the seed (another seed would draw other batches: a different run,
    not the same one continued) and a step budget. ``name``, when given, is the network the caller
    expects; a run of another raises. The arguments are the ones that decide only how the run
    executes (device, threads, precision, workers) or where it may stop early (``max_steps``,
    not allowed when the run itself is a step budget).

    ``epochs`` is the one setting a resume may change: the run continues to that epoch (more
    than it had: extended; fewer, but no fewer than it has completed: ended sooner), its
    learning-rate schedule now spanning the new number, and the log says so. ``expect`` holds
    settings the caller states (a command line's ``--lr``): the keys of :data:`RUN_SETTINGS` and
    the model's options (``width_mult``, ``groups``, ``minimal``, ``dropout``); one that differs
    from the run's raises a ValueError naming it and the stored value, rather than being ignored.

    A run killed before its first checkpoint was complete (its ``config.json`` written, no
    ``last`` or ``previous`` checkpoint) starts again from step 0 with the stored configuration,
    and says so.
    """
    expect = dict(expect or {})
    settings = {k: expect.pop(k) for k in list(expect) if k in RUN_SETTINGS}
    path = checkpoint_path(run_dir, checkpoint)
    config_path = os.path.join(run_dir, "config.json")
    started_only = checkpoint == "last" and not any(
        os.path.exists(os.path.join(run_dir, f"{n}.safetensors")) for n in ("last", "previous")
    )
    if started_only and os.path.exists(config_path):
        config = _run_config(config_path)
        stored_name, options, model = build_stored_model(config.get("model") or {}, name, expect, config["classes"],
                                                         config_path)
        log(f"{run_dir}: no complete checkpoint; restarting from step 0 with the configuration in {config_path}")
        resolution, done = config["preprocessing"]["resolution"], 0
    else:
        loaded = load_model(path, name, options=expect, prefer_ema=False)  # fit loads the raw weights, EMA, optimizer
        config, model, resolution = loaded.config, loaded.model, loaded.preprocessing.resolution
        stored_name, options, done = loaded.name, loaded.options, loaded.progress.get("epoch", 0)
    for key, given in settings.items():
        stored = _stored_setting(config, key)
        if given != stored:
            raise ValueError(
                f"run {run_dir!r} was trained with {key} {stored!r}; a resumed run keeps it, so {key} {given!r} "
                f"({RUN_SETTINGS[key][1]}) cannot apply: leave it out to continue the run, or start a new run in "
                "another directory"
            )
    if config.get("data") in (None, "custom"):
        raise ValueError(f"run {run_dir!r} was trained on in-memory splits; resume it with fit(..., resume=True)")
    recipe = _stored_recipe(config["recipe"])
    if config.get("step_budget"):
        if max_steps is not None:
            raise ValueError(f"run {run_dir!r} is a budget of {config['max_steps']} steps; max_steps cannot change it")
        if epochs is not None:
            raise ValueError(f"run {run_dir!r} is a budget of {config['max_steps']} steps, not of epochs; "
                             "epochs cannot change it")
        epochs, max_steps = None, config["max_steps"]
    elif epochs is None or epochs == recipe.epochs:
        epochs = recipe.epochs
        if done >= epochs:
            log(f"{run_dir}: the run has completed all its {epochs} epochs; nothing to train (give more epochs "
                "to extend it)")
    else:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < max(done, 1):
            raise ValueError(f"run {run_dir!r} has completed {done} of its {recipe.epochs} epochs; epochs must be an "
                             f"integer >= {max(done, 1)} to continue it, got {epochs!r}")
        log(f"{run_dir}: {'extending' if epochs > recipe.epochs else 'shortening'} the run from {recipe.epochs} to "
            f"{epochs} epochs ({done} completed); its learning-rate schedule now spans {epochs} epochs, so from here "
            "on it differs from the schedule the run started with")
    return fit(
        model, config["data"], recipe, run_dir=run_dir, epochs=epochs,
        resolution=resolution, resume=not started_only, resume_checkpoint=path,
        checkpoint_every=checkpoint_every, seed=config.get("seed", 0), device=device, amp=amp,
        channels_last=channels_last, sync_bn=sync_bn, deterministic=deterministic, threads=threads, max_steps=max_steps,
        workers=workers, bad_images=bad_images, augment=config.get("augment", "auto"), flip=config.get("flip"),
        model_config=None if stored_name == SPEC_NAME else {"name": stored_name, "options": options},
        overwrite=started_only, show_progress=show_progress, log=log,
    )
