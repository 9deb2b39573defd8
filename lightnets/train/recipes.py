"""Training recipes as named presets, each citing its source.

A recipe fixes the optimizer, the learning-rate schedule (a pure function of the step, so a
resumed run needs no scheduler state), regularisation and the default batch size and epochs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

OPTIMIZERS = ("sgd", "rmsprop", "adamw")
SCHEDULES = ("cosine", "linear", "step", "exponential")


# The interval each numeric field must lie in: (low, high, low allowed, high allowed). None, where a
# field may be None, means "off" (no EMA) or "the model's own" (dropout, BN momentum).
_RANGES = {
    "lr": (0, math.inf, False, False),
    "momentum": (0, 1, True, False),
    "rmsprop_decay": (0, 1, True, False),
    "rmsprop_eps": (0, math.inf, False, False),
    "weight_decay": (0, math.inf, True, False),
    "decay_rate": (0, math.inf, False, False),
    "decay_epochs": (0, math.inf, False, False),
    "warmup_epochs": (0, math.inf, True, False),
    "label_smoothing": (0, 1, True, False),
    "ema_decay": (0, 1, True, False),  # 0, like None, averages nothing
    "dropout": (0, 1, True, False),
    "bn_momentum": (0, 1, True, True),
}
_OPTIONAL = {"ema_decay", "dropout", "bn_momentum"}


def _interval(low: float, high: float, low_in: bool, high_in: bool) -> str:
    if high == math.inf:
        return f"{'>=' if low_in else '>'} {low:g}"
    return f"in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str
    optimizer: str  # "sgd", "rmsprop", "adamw"
    lr: float
    momentum: float = 0.9
    rmsprop_decay: float = 0.9  # RMSProp's squared-gradient decay (TF "decay"; torch "alpha")
    rmsprop_eps: float = 0.0316  # sqrt(1e-3): TF's epsilon sits inside the root, torch's outside
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "cosine"  # "cosine", "step", "exponential", "linear"
    decay_rate: float = 1.0  # step / exponential: multiply by this ...
    decay_epochs: float = 1.0  # ... every this many epochs
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    ema_decay: float | None = None
    dropout: float | None = None  # before the classifier; None keeps the model's default
    bn_momentum: float | None = None  # BatchNorm running-statistics momentum; None keeps the model's
    zero_init_residual: bool = False  # residual branches start at zero (blocks with zero_init_last())
    batch_size: int = 64
    epochs: int = 30
    augment: bool = True

    def __post_init__(self) -> None:
        """Refuse a hyper-parameter no training can use (``lr=nan`` once trained to NaN weights and saved
        them as the best), naming it and what is allowed."""
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; allowed: {', '.join(SCHEDULES)}")
        for name, value in (("batch_size", self.batch_size), ("epochs", self.epochs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name, (low, high, low_in, high_in) in _RANGES.items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            above = number and (low <= value if low_in else low < value)
            if not (above and (value <= high if high_in else value < high)):
                allowed = _interval(low, high, low_in, high_in) + (", or None" if name in _OPTIONAL else "")
                raise ValueError(f"recipe {self.name!r}: {name} must be a finite number {allowed}, got {value!r}")

    def lr_at(self, step: int, steps_per_epoch: int, total_steps: int) -> float:
        """The learning rate at optimizer step ``step`` (0-based)."""
        warmup = self.warmup_epochs * steps_per_epoch
        if step < warmup:
            return self.lr * (step + 1) / warmup
        epoch = step / steps_per_epoch
        if self.schedule == "cosine":
            progress = (step - warmup) / max(1.0, total_steps - warmup)
            return self.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if self.schedule == "linear":
            progress = (step - warmup) / max(1.0, total_steps - warmup)
            return self.lr * max(0.0, 1 - progress)
        if self.schedule == "step":
            return self.lr * self.decay_rate ** math.floor(epoch / self.decay_epochs)
        if self.schedule == "exponential":
            return self.lr * self.decay_rate ** (epoch / self.decay_epochs)
        raise ValueError(f"unknown schedule {self.schedule!r}; allowed: cosine, linear, step, exponential")

    def to_dict(self) -> dict:
        return asdict(self)

    def with_overrides(self, **changes: object) -> Recipe:
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = set(changes) - set(asdict(self))
        if unknown:
            raise ValueError(f"unknown recipe field(s) {sorted(unknown)}; allowed: {sorted(asdict(self))}")
        return replace(self, **changes)


RECIPES: dict[str, Recipe] = {
    "mobilenet_v2": Recipe(
        name="mobilenet_v2",
        source="MobileNetV2 section 6.1: RMSProp, decay and momentum 0.9, weight decay 4e-5, initial lr 0.045 "
        "decayed by 0.98 per epoch, batch 96 (16 workers)",
        optimizer="rmsprop", lr=0.045, weight_decay=4e-5, schedule="exponential", decay_rate=0.98,
        decay_epochs=1.0, batch_size=96, epochs=300,
    ),
    "mobilenet_v3": Recipe(
        name="mobilenet_v3",
        source="MobileNetV3 section 6.1: RMSProp with momentum 0.9, lr 0.1 for batch 4096, 'learning rate decay "
        "rate of 0.01 every 3 epochs' (read as x0.99 every 3 epochs), dropout 0.8 (TF keep probability: "
        "p = 0.2 here), weight decay 1e-5, EMA 0.9998. lr scaled linearly to batch 128.",
        optimizer="rmsprop", lr=0.1 * 128 / 4096, weight_decay=1e-5, schedule="step", decay_rate=0.99,
        decay_epochs=3.0, ema_decay=0.9998, dropout=0.2, batch_size=128, epochs=300,
    ),
    "shufflenet": Recipe(
        name="shufflenet",
        source="ShuffleNetV1 section 4 (and V2, which follows it): SGD, weight decay 4e-5, learning rate "
        "decreased linearly from 0.5 to 0, batch 1024; lr scaled linearly to batch 128",
        optimizer="sgd", lr=0.5 * 128 / 1024, weight_decay=4e-5, schedule="linear", batch_size=128, epochs=240,
    ),
    "small-data": Recipe(
        name="small-data",
        source="lightnets: trains every family from scratch on the 1,438 training digits in minutes. "
        "SGD with Nesterov momentum, 2 warm-up epochs then cosine, label smoothing 0.1, weight decay 5e-4 "
        "(not on BN or biases), light random affine augmentation. BN momentum 0.1 for every family: "
        "MobileNetV3's 0.01 (TF's 0.99 decay) suits 300 epochs of ImageNet, but over a few hundred steps "
        "its running statistics would stay near their initial values and evaluation would fail. "
        "Residual branches start at zero (Goyal et al. 2017): ShuffleNetV1's 16 additive units otherwise "
        "start with exploding activations and do not converge in 15 epochs.",
        optimizer="sgd", lr=0.05, nesterov=True, weight_decay=5e-4, schedule="cosine", warmup_epochs=2.0,
        label_smoothing=0.1, batch_size=64, epochs=15, bn_momentum=0.1, zero_init_residual=True,
    ),
    "finetune": Recipe(
        name="finetune",
        source="lightnets: a short fine-tune of a network that already holds weights, such as a pruned child "
        "(NetAdapt's short-term fine-tune, Yang et al. 2018 section 3; MobileNetV3 section 4.2: T steps per "
        "proposal). small-data's optimizer, augmentation and label smoothing at a fifth of its learning rate, "
        "cosine to zero, no warm-up, and no zero-initialised residual branches: they would erase the "
        "inherited weights.",
        optimizer="sgd", lr=0.01, nesterov=True, weight_decay=5e-4, schedule="cosine", label_smoothing=0.1,
        batch_size=64, epochs=1, bn_momentum=0.1,
    ),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; allowed: {', '.join(RECIPES)}") from None
