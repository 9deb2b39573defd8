"""Platform-aware architecture search: MnasNet's reward, candidates scored on this device, Optuna.

MnasNet (Tan et al. 2019, arXiv:1807.11626) searches for the network that maximises

    ACC(m) x [LAT(m) / TAR]^w,   w = alpha if LAT(m) <= TAR else beta        (section 3, eq. 2)

with latency measured on the target device, not counted in MAdds; alpha = beta = -0.07 is the
soft constraint, alpha = 0, beta = -1 the hard one. MobileNetV3 (Howard et al. 2019,
section 4.1) searched its blocks this way and used w = -0.15 for the Small model "to
compensate for the larger accuracy change for different latencies". Here a candidate is a
:class:`~lightnets.search.space.SearchSpace` choice vector, its latency comes from a
:class:`~lightnets.search.LatencyTable` (entries measured on demand; the final candidates are
measured whole), its accuracy from a short proxy training in memory
(:func:`~lightnets.train.fit`), and the search is an Optuna study, so that it can be stopped,
resumed and shared by several machines.
"""

from __future__ import annotations

import math
import os
import socket
import statistics
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..formats import atomic_write, fault_point
from ..models import NetSpec, build
from ..report import pyplot
from ..train import DataSplit, TrainingDiverged, fit
from .adapt import _atomic_json, measure_whole
from .lut import LatencyTable
from .space import SearchSpace

W_MNASNET = -0.07  # MnasNet section 3: alpha = beta = -0.07
W_MOBILENET_V3_SMALL = -0.15  # MobileNetV3 section 4.1
SAMPLERS = ("tpe", "random", "nsga2")
DEFAULT_STUDY = "lightnets-search"
STORAGE_FILE = "search.db"
SPREAD_TRIALS = 50  # the "first candidates" the proxy's spread is reported over (the NAS issue asks for 50)
HALF_POINT = 0.005  # candidates this close to the median cannot be ranked by a proxy whose val split is small
NEARLY_ALL = 0.8  # share of candidates within HALF_POINT of the median above which the proxy is too easy
SELECTIONS = ("budget", "reward")
#: How far a whole network's prediction may miss (the lookup-table issue's bar): finalists are picked
#: as if each were this much faster, then measured; one predicted at 101% of the target was the most
#: accurate candidate of a search here, and may well measure under it.
PREDICTION_MARGIN = 0.1


def reward(accuracy: float, latency_ms: float, target_ms: float, w: float | None = None, hard: bool = False) -> float:
    """MnasNet's reward, section 3 eq. 2: ``ACC x (LAT / TAR) ** w`` with ``w = alpha`` when
    ``LAT <= TAR`` and ``beta`` otherwise.

    Soft constraint (default): ``alpha = beta = w``, -0.07 in MnasNet, -0.15 for
    MobileNetV3-Small (section 4.1). ``hard=True``: ``alpha = 0, beta = -1`` (MnasNet: "the
    objective function is effectively a hard constraint"): accuracy alone under the target, cut
    by the overshoot above it. ``w`` and ``hard`` exclude each other.
    """
    if hard and w is not None:
        raise ValueError("give w (soft constraint) or hard=True (alpha = 0, beta = -1), not both")
    for name, value in (("accuracy", accuracy), ("latency_ms", latency_ms), ("target_ms", target_ms)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not 0 <= accuracy <= 1:
        raise ValueError(f"accuracy is a fraction in [0, 1], got {accuracy!r}")
    if latency_ms <= 0 or target_ms <= 0:
        raise ValueError(f"latency and target must be > 0 ms, got {latency_ms!r} and {target_ms!r}")
    if hard:
        alpha, beta = 0.0, -1.0
    else:
        w = W_MNASNET if w is None else w
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w > 0:
            raise ValueError(f"w must be a finite number <= 0 (a positive w would reward slower networks), got {w!r}")
        alpha = beta = float(w)
    exponent = alpha if latency_ms <= target_ms else beta
    return accuracy * (latency_ms / target_ms) ** exponent


def accuracy_error(accuracy: float, images: int) -> float:
    """The standard error of a top-1 ``accuracy`` scored on ``images`` images, sqrt(p (1 - p) / n),
    at least one image: two proxy accuracies closer than this are not told apart by the split
    that scored them (on the 1,006 digits training images a 0.3 fraction leaves out, at 97%:
    0.54 points; one network trained from three seeds spread 0.48 points there)."""
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ValueError(f"images must be an integer >= 1, got {images!r}")
    if not 0 <= accuracy <= 1:
        raise ValueError(f"accuracy is a fraction in [0, 1], got {accuracy!r}")
    return max(math.sqrt(accuracy * (1 - accuracy) / images), 1 / images)


def pareto_front(rows: list[dict], accuracy: str = "accuracy", latency: str = "latency_ms") -> list[dict]:
    """The rows no other row beats on both: higher (or equal) accuracy and lower (or equal)
    latency, one strictly. Sorted by latency."""

    def beats(o: dict, r: dict) -> bool:
        at_least = o[accuracy] >= r[accuracy] and o[latency] <= r[latency]
        return at_least and (o[accuracy] > r[accuracy] or o[latency] < r[latency])

    front = [r for r in rows if not any(beats(o, r) for o in rows)]
    return sorted(front, key=lambda r: (r[latency], -r[accuracy]))


class ProxyEvaluator:
    """Scores a network: latency from ``table`` at ``latency_size`` (default ``input_size``;
    sites missing from the table are measured now) and top-1 after ``steps`` optimizer steps of
    ``recipe`` on ``data`` at ``input_size``, in memory. Initial weights and batches follow
    ``seed``, so a network scores the same every time.

    ``latency_size`` apart from ``input_size`` is MnasNet's split (section 3): accuracy from a
    proxy task, latency of the network as it will be deployed. At 32 pixels a network's
    latency is mostly per-operator overhead; at 224 it is its convolutions."""

    def __init__(self, data: tuple[DataSplit, DataSplit], table: LatencyTable, *, input_size: int, steps: int,
                 recipe: str = "small-data", seed: int = 0, threads: int | None = None,
                 latency_size: int | None = None) -> None:
        latency_size = input_size if latency_size is None else latency_size
        for name, value in (("steps", steps), ("input_size", input_size), ("latency_size", latency_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.data, self.table, self.input_size, self.steps = data, table, input_size, steps
        self.recipe, self.seed, self.threads, self.latency_size = recipe, seed, threads, latency_size

    @property
    def num_classes(self) -> int:
        return len(self.data[0].classes)

    def latency_ms(self, spec: NetSpec) -> float:
        return self.table.predict(spec, self.latency_size).total_ms

    def accuracy(self, spec: NetSpec, seed: int | None = None) -> float:
        """Proxy top-1 of ``spec`` trained from the evaluator's seed (or ``seed``: initial weights and batches).

        A network whose proxy training diverges (non-finite loss) scores 0."""
        if spec.head.num_classes != self.num_classes:
            raise ValueError(f"the network has {spec.head.num_classes} classes, the data {self.num_classes}")
        seed = self.seed if seed is None else seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the same initial weights for the same network, run after run
            model = build(spec)
        try:
            result = fit(model, self.data, self.recipe, run_dir=None, max_steps=self.steps, seed=seed,
                         threads=self.threads, show_progress=False, log=lambda _m: None)
        except TrainingDiverged:
            return 0.0  # learned nothing usable: the lowest score, not a stop of the whole search
        return float(result.final["val_top1"])

    def seed_noise(self, spec: NetSpec, seeds: int) -> list[float]:
        """Proxy top-1 of one network trained from ``seeds`` different seeds: how much of the spread
        between candidates is the training's own noise."""
        return [self.accuracy(spec, self.seed + 1 + k) for k in range(seeds)]

    def measured_ms(self, spec: NetSpec, rounds: int = 3) -> float:
        """The network measured whole with the table's settings (what the table's prediction is checked against)."""
        shape = (self.table.batch, spec.settings.in_chans, self.latency_size, self.latency_size)
        return measure_whole(self.table, build(spec).eval(), shape, rounds)

    def measure_side_by_side(self, specs: list[NetSpec], rounds: int = 3, fresh_process: bool = False) -> list[float]:
        """Networks measured whole in the same interleaved rounds (the table's settings, its
        reference speed): ratios between them hold even while the machine's speed drifts, which
        two measurements minutes apart do not (a target measured at a search's start was 16%
        slower, normalised, beside its finalists 40 minutes later here).

        ``fresh_process``: measure in a new (spawned) process with a copy of the table, as a
        deployed network runs, away from the state a search process builds up over hundreds of
        trainings and measurements."""
        if not fresh_process:
            return _side_by_side(self.table, [str(s) for s in specs], self.latency_size, rounds)
        import tempfile

        import torch.multiprocessing as mp

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "table.json")
            self.table.save(path)
            with mp.get_context("spawn").Pool(1) as pool:
                return pool.apply(_side_by_side_from_file, (path, [str(s) for s in specs], self.latency_size, rounds))

    def named_spec(self, name: str) -> NetSpec:
        """The registered network ``name`` with the data's classes (what a width baseline or a
        latency target names)."""
        from ..models import create_model

        return create_model(name, num_classes=self.num_classes).spec

    def target_ms(self, name: str, rounds: int = 3) -> float:
        """The registered network ``name`` measured whole now: a latency target that a device,
        not a guess, sets (the NAS issue's example: ``mobilenet_v3_small_075``)."""
        return self.measured_ms(self.named_spec(name), rounds)


def _side_by_side(table: LatencyTable, specs: list[str], size: int, rounds: int) -> list[float]:
    nets = [NetSpec.parse(s) for s in specs]
    shapes = [(table.batch, n.settings.in_chans, size, size) for n in nets]
    return [r["measured_ms"] for r in table.measure_networks([build(n).eval() for n in nets], shapes, rounds)]


def _side_by_side_from_file(path: str, specs: list[str], size: int, rounds: int) -> list[float]:
    return _side_by_side(LatencyTable.load(path), specs, size, rounds)  # in a spawned process


@dataclass
class SearchResult:
    """What a search found. ``rows``: every completed trial (number, spec, latency_ms,
    accuracy, reward, choices); ``front``: their Pareto front of (accuracy, latency); ``best``:
    the row chosen (:func:`search`: the best reward or a network tied with it nearer the target;
    in Pareto mode the most accurate under the target); ``selection``: how (rule, the tie band,
    the contenders measured, the target measured beside them)."""

    best_spec: NetSpec
    best: dict
    rows: list[dict]
    front: list[dict]
    spread: dict
    settings: dict
    storage: str
    study_name: str
    retried: list[int] = field(default_factory=list)  # trials of a killed run that were asked again
    target_ms: float | None = None  # the reward's TAR (ms at the table's reference speed)
    selection: dict = field(default_factory=dict)  # how the best was chosen among its finalists

    def to_dict(self) -> dict:
        return {"settings": self.settings, "storage": self.storage, "study": self.study_name,
                "target_ms": self.target_ms, "selection": self.selection,
                "best": self.best, "front": self.front, "spread": self.spread, "retried": self.retried,
                "trials": self.rows}


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ValueError('architecture search needs optuna: pip install "lightnets[search]" (or optuna)') from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own progress line says what matters
    return optuna


def make_sampler(name: str, budget: int, seed: int | None = None):
    """The Optuna sampler ``name`` for a search of ``budget`` trials.

    ``tpe`` (default): model-based, asks few trials before it starts to model (a tenth of the
    budget, 2-10), handles the space's conditional choices (``group=True``), and is Optuna's
    multi-objective TPE in Pareto mode; every trial trains a network, so budgets are small and
    sample efficiency matters most. ``nsga2``: evolutionary, multi-objective by design; its
    population is a fifth of the budget (4-50) so that several generations fit in it.
    ``random``: the baseline with the same budget.
    """
    optuna = _optuna()
    if name == "tpe":
        startup = max(2, min(10, budget // 10))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # multivariate, group
            return optuna.samplers.TPESampler(n_startup_trials=startup, seed=seed, multivariate=True, group=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=max(4, min(50, budget // 5)), seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}; allowed: {', '.join(SAMPLERS)}")


class _LocalLock:
    """An exclusive lock on the embedded storage file, held while this process searches.

    With it, a trial the file shows as running belongs to a process that died (the kernel
    releases a killed process's lock), so it is failed and asked again at once. A second
    process on the same file is refused: several workers share a search through a server
    storage (``storage=URL``), whose heartbeats tell a dead worker's trials from a live one's.
    """

    def __init__(self, path: str) -> None:
        import fcntl

        self.handle = open(path + ".lock", "w")  # held open for the whole search: the lock lives with it
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.close()
            raise ValueError(
                f"another search is running on {path}; to search with several processes give them a shared "
                f"storage (--storage postgresql://...) and the same --study"
            ) from None

    def release(self) -> None:
        self.handle.close()


def _retry_abandoned(optuna, study, storage) -> list[int]:
    """Fail every trial left running (its process is dead: we hold the file's lock) and ask its
    parameters again, so that no sampled candidate is lost and none is run twice to completion."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback()
    study_id = storage.get_study_id_from_name(study.study_name)
    retried = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        retry(study, storage.get_trial(trial_id))
        retried.append(trial.number)
    return retried


def open_study(storage: str | None, study_name: str, run_dir: str | None, *, directions: list[str], sampler,
               stale_after: int = 60):
    """The study ``study_name`` in ``storage``, created or reopened; returns (study, url, lock, storage object).

    Default (``storage=None``): SQLite through Optuna's RDB storage, ``run_dir/search.db``, with
    a lock file. A URL (``postgresql://user:pw@host/db``, ``mysql+pymysql://...``,
    ``sqlite:///path``) is a storage several processes or machines share: heartbeats every
    ``stale_after / 3`` seconds, and a trial whose worker has been silent ``stale_after`` seconds
    is failed and asked again (Optuna's ``RetryHeartbeatStaleTrialCallback``).
    """
    optuna = _optuna()
    lock = None
    if storage is None:
        if run_dir is None:
            raise ValueError("give run_dir (the embedded storage lives there) or a storage URL")
        os.makedirs(run_dir, exist_ok=True)
        path = os.path.abspath(os.path.join(run_dir, STORAGE_FILE))
        lock = _LocalLock(path)
        url = f"sqlite:///{path}"
        rdb = optuna.storages.RDBStorage(url)
    else:
        if not isinstance(storage, str) or "://" not in storage:
            raise ValueError(f"storage must be a database URL such as postgresql://user:pw@host/db, got {storage!r}")
        if isinstance(stale_after, bool) or not isinstance(stale_after, int) or stale_after < 3:
            raise ValueError(f"stale_after must be an integer >= 3 (seconds), got {stale_after!r}")
        url = storage
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            rdb = optuna.storages.RDBStorage(
                url, heartbeat_interval=max(1, stale_after // 3), grace_period=stale_after,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(),
            )
    try:
        study = optuna.create_study(storage=rdb, study_name=study_name, directions=directions, sampler=sampler,
                                    load_if_exists=True)
    except BaseException:
        if lock:
            lock.release()
        raise
    if [d.name.lower() for d in study.directions] != directions:
        if lock:
            lock.release()
        raise ValueError(f"study {study_name!r} in {url} optimises {[d.name.lower() for d in study.directions]}, "
                         f"this search {directions}: use another --study")
    return study, url, lock, rdb


def _worker_seed(seed: int, trials_so_far: int, shared: bool) -> int:
    """The sampler's seed in this process: another stream than the one that sampled the trials
    already in the study (a resumed run would otherwise ask the same candidates again), and, on
    a shared storage, another stream per worker."""
    mixed = seed + 7919 * trials_so_far
    if shared:
        mixed += zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode())
    return mixed % 2**32


def search(
    space: SearchSpace,
    evaluator: ProxyEvaluator,
    *,
    budget: int,
    target_ms: float | None = None,
    target_spec: NetSpec | None = None,
    w: float | None = None,
    hard: bool = False,
    pareto: bool = False,
    sampler: str = "tpe",
    storage: str | None = None,
    study_name: str = DEFAULT_STUDY,
    run_dir: str | None = None,
    seed: int = 0,
    calibrate: bool = True,
    measure: bool = True,
    measure_top: int = 8,
    measure_rounds: int = 3,
    measure_fresh: bool = False,
    select: str = "budget",
    noise_seeds: int = 0,
    stale_after: int = 60,
    log: Callable[[str], None] = print,
) -> SearchResult:
    """Search ``space`` for the best network under ``target_ms`` on this device; ``budget``
    completed trials in all.

    Each trial asks the sampler for a choice vector (:meth:`SearchSpace.suggest`), builds its
    :class:`NetSpec`, predicts its latency with the evaluator's table and trains it briefly
    (:class:`ProxyEvaluator`); the trial stores the spec, latency, accuracy and reward as user
    attributes. Reward mode (default) maximises MnasNet's :func:`reward` (``w``, or ``hard``);
    ``pareto=True`` maximises accuracy and minimises latency together and keeps their Pareto
    front. The study lives in ``storage`` (default: ``run_dir/search.db``, see
    :func:`open_study`); a search started again with the same settings continues until
    ``budget`` trials are complete, asking again the trials a killed run left unfinished.
    ``calibrate`` fits the table's overhead and scale to the base network and a few random
    candidates (:data:`CALIBRATION_SAMPLES`) measured whole once per study
    (``False``: the table's current fit is the study's); every later run and worker uses the
    stored fit.

    The target TAR is ``target_ms`` (ms at the table's reference speed) or ``target_spec``, a
    network whose latency sets it (MobileNetV3-Small x0.75 in the NAS issue's example): the
    table's prediction of it during the search, so that TAR and every candidate's LAT come
    from the same entries and fit; at the end it is measured beside the finalists.

    The finalists (reward mode): the best reward and the candidates tied with it, whose reward,
    with their predicted latency taken :data:`PREDICTION_MARGIN` lower (the table's benefit of
    the doubt), is within sqrt(2) standard errors of the proxy (:func:`accuracy_error` on its val
    split: two accuracies that close are not told apart) of the best; with ``measure=True`` the
    best and ``measure_top`` of the tied are measured whole together, with the target network,
    in ``measure_rounds`` interleaved rounds, and their reward is taken again with measured LAT
    and TAR (``measured_ms``, ``measured_reward``, ``of_target``). ``measure_fresh``: in a new
    process (:meth:`ProxyEvaluator.measure_side_by_side`). ``select="budget"`` (default) keeps,
    of those still tied when measured, the slowest within the target: the proxy cannot rank
    them, and a network that spends the budget has the capacity that the full task rewards
    (MnasNet Figure 1: accuracy rises with latency on ImageNet); the tied are measured slowest
    first. ``select="reward"``: the highest measured reward, tie or not.
    Pareto mode measures the most accurate network under the target and the front's
    ``measure_top`` most accurate. ``noise_seeds`` > 0 also trains the chosen network from that
    many other seeds, so that the candidates' spread of proxy accuracy can be compared with the
    training's own noise.
    """
    optuna = _optuna()
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be an integer >= 1, got {budget!r}")
    if not isinstance(space, SearchSpace):
        raise ValueError(f"space must be a SearchSpace, got {type(space).__name__}")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    if target_ms is not None and target_spec is not None:
        raise ValueError("give target_ms or target_spec (a network whose latency is the target), not both")
    if target_spec is not None:
        if not isinstance(target_spec, NetSpec):
            raise ValueError(f"target_spec must be a NetSpec, got {type(target_spec).__name__}")
        if target_spec.head.num_classes != evaluator.num_classes:
            raise ValueError(f"the target network has {target_spec.head.num_classes} classes, the data "
                             f"{evaluator.num_classes}")
    if target_ms is None and target_spec is None and not pareto:
        raise ValueError("the reward needs a latency target: give target_ms or target_spec (or pareto=True for "
                         "the front alone)")
    reward(0.5, 1.0, 1.0 if target_ms is None else target_ms, w, hard)  # validates target, w, hard before training
    if select not in SELECTIONS:
        raise ValueError(f"unknown select {select!r}; allowed: {', '.join(SELECTIONS)}")
    for name, value, low in (("measure_top", measure_top, 0), ("measure_rounds", measure_rounds, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if space.base.head.num_classes != evaluator.num_classes:
        raise ValueError(f"the space's networks have {space.base.head.num_classes} classes, the data "
                         f"{evaluator.num_classes}: build it with SearchSpace.around(..., num_classes=...)")
    table = evaluator.table
    settings = {
        "space": space.to_dict(), "target_ms": target_ms, "w": w, "hard": hard, "pareto": pareto,
        "input_size": evaluator.input_size, "latency_size": evaluator.latency_size, "proxy_steps": evaluator.steps,
        "recipe": evaluator.recipe,
        "seed": seed, "data": evaluator.data[0].name, "train_images": evaluator.data[0].size,
        "val": evaluator.data[1].name, "val_images": evaluator.data[1].size,
        "device": {k: table.fingerprint.get(k) for k in ("cpu", "backend", "threads", "batch")},
    }
    if target_spec is not None:
        settings["target_spec"] = str(target_spec)  # only then: studies begun before it existed still resume
    directions = ["maximize", "minimize"] if pareto else ["maximize"]
    study, url, lock, rdb = open_study(storage, study_name, run_dir, directions=directions, sampler=None,
                                       stale_after=stale_after)
    try:
        stored = study.user_attrs.get("settings")
        if stored is None:
            study.set_user_attr("settings", settings)
        elif stored != settings:
            changed = sorted(k for k in settings if stored.get(k) != settings[k])
            raise ValueError(f"study {study_name!r} in {url} was started with other settings ({', '.join(changed)} "
                             f"differ); use another --study, or the same settings")
        retried = _retry_abandoned(optuna, study, rdb) if lock else []
        if retried:
            log(f"search: trial(s) {retried} of a killed run are asked again with the same parameters")
        _calibrated(study, table, space, evaluator, calibrate, log)
        if target_spec is not None:
            target_ms = _predicted_target(study, evaluator, target_spec, log)
        complete = optuna.trial.TrialState.COMPLETE
        done = len(study.get_trials(deepcopy=False, states=(complete,)))
        study.sampler = make_sampler(sampler, budget, _worker_seed(seed, len(study.trials), storage is not None))
        if done:
            log(f"search: {url} study {study_name!r} has {done} of {budget} trials complete; continuing")

        def objective(trial):
            choices = space.suggest(trial)
            spec = space.candidate(choices)
            latency = evaluator.latency_ms(spec)
            accuracy = evaluator.accuracy(spec)
            value = reward(accuracy, latency, target_ms, w, hard) if target_ms is not None else None
            for key, item in (("spec", str(spec)), ("latency_ms", latency), ("accuracy", accuracy),
                              ("reward", value), ("choices", [None if c is None else str(c) for c in choices])):
                trial.set_user_attr(key, item)
            fault_point(f"nas-trial-{trial.number}")  # tests: die with this trial evaluated, not yet told
            return (accuracy, latency) if pareto else value

        if done < budget:
            study.optimize(
                objective, n_trials=budget - done, catch=(),
                callbacks=[optuna.study.MaxTrialsCallback(budget, states=(complete,)),
                           _progress(budget, target_ms, pareto, log)],
            )
        rows = _rows(study)
    finally:
        if lock:
            lock.release()
    finals = _Finals(evaluator, target_ms, target_spec, w, hard, pareto, select,
                     measure_top if measure else None, measure_rounds, measure_fresh)
    return _finish(rows, finals, settings, url, study_name, retried, noise_seeds, log)


def _predicted_target(study, evaluator: ProxyEvaluator, target_spec: NetSpec, log) -> float:
    """TAR from ``target_spec``: the table's prediction of it, as the study first recorded it (a
    resumed or joining process whose table measured its entries again keeps the same target)."""
    stored = study.user_attrs.get("target_ms")
    if stored is None:
        stored = evaluator.latency_ms(target_spec)
        study.set_user_attr("target_ms", stored)
        log(f"search: target {stored:.3f} ms, the table's prediction of the target network at "
            f"{evaluator.latency_size}x{evaluator.latency_size}; it is measured beside the finalists at the end")
    return stored


#: Random candidates of the space (:meth:`SearchSpace.sample`) a search calibrates its table on, beside
#: the base network. The base alone, or its width multiples, predict the networks a search keeps
#: badly: fitted on MobileNetV3-Small x0.5 / 0.75 / 1 (1.53 ms + 0.80 x summed sites), a table
#: over-predicted the shallow candidates a search around it kept by 12-36% here.
CALIBRATION_SAMPLES = 7
CALIBRATION_SEED = 12345


def _calibrated(study, table, space, evaluator, calibrate, log) -> None:
    """The table's overhead and scale as the study first recorded them; a new study records the
    fit to the base network and :data:`CALIBRATION_SAMPLES` random candidates measured now at
    the latency size (``calibrate``) or the table's own (two studies that
    are to be compared share one table and so one fit)."""
    stored = study.user_attrs.get("calibration")
    if stored is not None:
        table.overhead_ms, table.scale = stored["overhead_ms"], stored["scale"]
        return
    if calibrate:
        networks = [space.base_network(), *space.sample(CALIBRATION_SAMPLES, seed=CALIBRATION_SEED)]
        table.calibrate(networks, evaluator.latency_size)
        log(f"search: latency table calibrated on the base network and {CALIBRATION_SAMPLES} random candidates "
            f"measured whole at {evaluator.latency_size}x{evaluator.latency_size}: {table.overhead_ms:.3f} ms + "
            f"{table.scale:.3f} x summed sites")
    study.set_user_attr("calibration", {"overhead_ms": table.overhead_ms, "scale": table.scale})


def _progress(budget: int, target_ms: float | None, pareto: bool, log: Callable[[str], None]):
    """An Optuna callback: one line per finished trial, with the best so far."""

    def show(study, trial) -> None:
        attrs = trial.user_attrs
        if "accuracy" not in attrs:
            return
        rows = _rows(study)
        line = (f"trial {trial.number} ({len(rows)}/{budget} done): {attrs['latency_ms']:.3f} ms, "
                f"top-1 {100 * attrs['accuracy']:.2f}%")
        if attrs.get("reward") is not None:
            best = max(r["reward"] for r in rows)
            line += f", reward {attrs['reward']:.4f}; best reward {best:.4f}"
        if pareto:
            line += f"; front {len(pareto_front(rows))} networks"
        log(f"search: {line}")

    return show


def _rows(study) -> list[dict]:
    optuna = _optuna()
    rows = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        a = trial.user_attrs
        rows.append({"number": trial.number, "spec": a["spec"], "latency_ms": a["latency_ms"],
                     "accuracy": a["accuracy"], "reward": a.get("reward"), "choices": a.get("choices"),
                     "retry_of": trial.system_attrs.get("failed_trial")})
    return rows


def proxy_spread(rows: list[dict], first: int = SPREAD_TRIALS) -> dict:
    """How far the proxy accuracy spreads over the first ``first`` completed candidates (by trial
    number): a proxy that gives every candidate the same accuracy cannot rank them."""
    accs = [r["accuracy"] for r in sorted(rows, key=lambda r: r["number"])[:first]]
    if not accs:
        return {"count": 0}
    median = statistics.median(accs)
    near = sum(abs(a - median) <= HALF_POINT + 1e-12 for a in accs) / len(accs)
    return {"count": len(accs), "min": min(accs), "max": max(accs), "median": median,
            "stdev": statistics.pstdev(accs), "distinct": len(set(accs)), "within_half_point": near}


@dataclass
class _Finals:
    """How a search's finalists are chosen and checked (see :func:`search`)."""

    evaluator: ProxyEvaluator
    target_ms: float | None
    target_spec: NetSpec | None
    w: float | None
    hard: bool
    pareto: bool
    select: str
    measure_top: int | None  # None: nothing is measured
    rounds: int
    fresh_process: bool = False


def _finalists(rows: list[dict], finals: _Finals, band: float) -> tuple[dict, list[dict]]:
    """The best reward and the candidates tied with it: within ``band`` of the best reward once
    each is given the table's benefit of the doubt (its latency taken :data:`PREDICTION_MARGIN`
    lower: a network predicted just over the target may measure under it). The tied come nearest
    the target first (``budget``: the slowest predicted within the margin) or by reward. In
    Pareto mode: the most accurate under the target and the front's most accurate."""
    if finals.pareto:
        under = [r for r in rows if finals.target_ms is None or r["latency_ms"] <= finals.target_ms]
        best = max(under or rows, key=lambda r: (r["accuracy"], -r["latency_ms"]))
        return best, [r for r in sorted(pareto_front(rows), key=lambda r: -r["accuracy"]) if r is not best]
    best = max(rows, key=lambda r: r["reward"])

    def doubted(r: dict) -> float:
        return reward(r["accuracy"], r["latency_ms"] / (1 + PREDICTION_MARGIN), finals.target_ms, finals.w, finals.hard)

    top = max(doubted(r) for r in rows)
    tied = [r for r in rows if r is not best and doubted(r) >= top - band]
    if finals.select == "budget":
        tied.sort(key=lambda r: -r["latency_ms"])
    else:
        tied.sort(key=lambda r: -doubted(r))
    return best, tied


def _choose(contenders: list[dict], finals: _Finals, band: float, measured: bool) -> dict:
    """The network a reward search returns, from its (measured, if ``measured``) contenders."""
    key_ms = "measured_ms" if measured else "latency_ms"
    key_reward = "measured_reward" if measured else "reward"
    target = contenders[0]["measured_target_ms"] if measured else finals.target_ms
    top = max(r[key_reward] for r in contenders)
    if finals.select == "reward":
        return max(contenders, key=lambda r: r[key_reward])
    tied = [r for r in contenders if r[key_reward] >= top - band]
    within = [r for r in tied if r[key_ms] <= target]
    if within:
        return max(within, key=lambda r: r[key_ms])
    return max(tied, key=lambda r: r[key_reward])


def _measure_finalists(contenders: list[dict], finals: _Finals, log) -> None:
    """Measure ``contenders`` whole, with the target network when there is one, in the same
    interleaved rounds; each row gains measured_ms, measured_target_ms, of_target and
    measured_reward."""
    ev = finals.evaluator
    specs = [NetSpec.parse(r["spec"]) for r in contenders]
    if finals.target_spec is not None:
        specs.append(finals.target_spec)
    times = ev.measure_side_by_side(specs, finals.rounds, finals.fresh_process)
    target = times[-1] if finals.target_spec is not None else finals.target_ms
    if finals.target_spec is not None:
        log(f"search: the target network measured beside the finalists: {target:.3f} ms (predicted "
            f"{finals.target_ms:.3f} ms)")
    for row, ms in zip(contenders, times, strict=False):
        row["measured_ms"], row["measured_target_ms"] = ms, target
        if target is not None:
            row["of_target"] = ms / target
        if row.get("reward") is not None:
            row["measured_reward"] = reward(row["accuracy"], ms, target, finals.w, finals.hard)
        share = f", {ms / target:.1%} of the target" if target is not None else ""
        log(f"search: trial {row['number']}: predicted {row['latency_ms']:.3f} ms, measured whole {ms:.3f} ms "
            f"({row['latency_ms'] / ms - 1:+.1%}){share}, proxy top-1 {100 * row['accuracy']:.2f}%")


def _finish(rows, finals: _Finals, settings, url, study_name, retried, noise_seeds, log):
    if not rows:
        raise ValueError(f"study {study_name!r} in {url} has no completed trial")
    evaluator = finals.evaluator
    front = pareto_front(rows)
    spread = proxy_spread(rows)
    log(f"search: proxy top-1 over the first {spread['count']} candidates: {100 * spread['min']:.2f}-"
        f"{100 * spread['max']:.2f}% (median {100 * spread['median']:.2f}%, stdev {100 * spread['stdev']:.2f} points, "
        f"{spread['distinct']} distinct values)")
    log(f"search: {100 * spread['within_half_point']:.0f}% of them within half a point of the median")
    if spread["count"] > 1 and spread["within_half_point"] >= NEARLY_ALL:
        log("search: the proxy hardly separates candidates (nearly all within half a point): make it harder "
            "(fewer proxy steps, a smaller train fraction, a lower resolution)")
    band = 0.0
    if not finals.pareto:
        # the reward is accuracy times a latency factor: its standard error is the accuracy's times that factor;
        # two accuracies on the same n images differ by sqrt(2) of one's standard error by chance alone
        top = max(rows, key=lambda r: r["reward"])
        factor = top["reward"] / top["accuracy"] if top["accuracy"] > 0 else 1.0
        band = math.sqrt(2) * factor * accuracy_error(top["accuracy"], evaluator.data[1].size)
    by_reward, tied = _finalists(rows, finals, band)
    if not finals.pareto:
        log(f"search: {len(tied)} candidate(s) tied with the best reward (trial {by_reward['number']}, "
            f"{by_reward['reward']:.4f}) within the proxy's error ({band:.4f}), latency taken "
            f"{PREDICTION_MARGIN:.0%} lower")
    contenders = [by_reward, *tied[:finals.measure_top]] if finals.measure_top is not None else [by_reward, *tied]
    measured = finals.measure_top is not None
    if measured:
        _measure_finalists(contenders, finals, log)
    if finals.pareto:
        best = by_reward
    else:
        best = _choose(contenders, finals, band, measured)
        if best is not by_reward:
            log(f"search: trial {best['number']} chosen over trial {by_reward['number']} ({finals.select}: tied "
                f"within the proxy's error, the slowest within the target)")
    selection = {"rule": "pareto" if finals.pareto else finals.select, "band": band, "best_reward": by_reward["number"],
                 "contenders": [r["number"] for r in contenders], "measured": measured,
                 "measured_target_ms": contenders[0].get("measured_target_ms") if measured else None}
    if noise_seeds:
        again = [best["accuracy"], *evaluator.seed_noise(NetSpec.parse(best["spec"]), noise_seeds)]
        spread["seed_accuracies"], spread["seed_stdev"] = again, statistics.pstdev(again)
        log(f"search: the chosen network trained from {len(again)} seeds: {100 * min(again):.2f}-"
            f"{100 * max(again):.2f}% (stdev {100 * spread['seed_stdev']:.2f} points; candidates "
            f"{100 * spread['stdev']:.2f})")
        if spread["stdev"] <= 2 * spread["seed_stdev"]:
            log("search: the candidates differ hardly more than one network does between seeds: the proxy ranks "
                "them by chance; train longer or on a harder task")
    return SearchResult(NetSpec.parse(best["spec"]), best, rows, front, spread, settings, url, study_name, retried,
                        target_ms=finals.target_ms, selection=selection)


def evaluate_widths(name: str, widths: list[float], evaluator: ProxyEvaluator) -> list[dict]:
    """The registered network ``name`` at each width multiplier, scored as the search scores its
    candidates (same table, proxy training and seed): the baseline a search must beat (MnasNet
    Figure 1 and MobileNetV3 Figure 1 compare with width-scaled networks). A named variant's
    family is scaled, keeping what the name fixes besides its width."""
    from ..models import create_model, get_entry

    entry = get_entry(name)
    fixed = {k: v for k, v in entry.fixed.items() if k != "width_mult"}
    rows = []
    for width in widths:
        spec = create_model(entry.family, **fixed, width_mult=width, num_classes=evaluator.num_classes).spec
        rows.append({"label": f"x{width:g}", "width_mult": width, "spec": str(spec),
                     "latency_ms": evaluator.latency_ms(spec), "accuracy": evaluator.accuracy(spec)})
    return rows


def measure_fronts(results: dict[str, SearchResult], baselines: dict[str, list[dict]], evaluator: ProxyEvaluator,
                   target_spec: NetSpec | None = None, rounds: int = 3, fresh_process: bool = False) -> dict:
    """Each search's front (by predicted latency) and chosen network, the ``baselines`` (name ->
    rows of :func:`evaluate_widths`) and the target network measured whole side by side, in
    ``rounds`` interleaved rounds: what :func:`plot_search` draws with ``latency="measured_ms"``
    (the NAS issue's plot: accuracy against measured latency, the searched and random fronts
    and width-scaled networks on the same axes). Returns ``fronts`` and ``baselines`` (copies
    of the rows with ``measured_ms``), ``target_ms`` (the target network measured, or None),
    ``networks`` and ``seconds``. ``fresh_process``: see :meth:`ProxyEvaluator.measure_side_by_side`."""

    fronts = {}
    for label, result in results.items():
        rows = {r["number"]: dict(r) for r in [*pareto_front(result.rows), result.best]}
        fronts[label] = sorted(rows.values(), key=lambda r: r["latency_ms"])
    copies = {name: [dict(r) for r in rows] for name, rows in baselines.items()}
    everything = [r for rows in fronts.values() for r in rows] + [r for rows in copies.values() for r in rows]
    specs = [NetSpec.parse(r["spec"]) for r in everything] + ([target_spec] if target_spec is not None else [])
    start = time.perf_counter()
    times = evaluator.measure_side_by_side(specs, rounds, fresh_process)
    for row, ms in zip(everything, times, strict=False):
        row["measured_ms"] = ms
    return {"fronts": fronts, "baselines": copies, "target_ms": times[-1] if target_spec is not None else None,
            "networks": len(specs), "seconds": time.perf_counter() - start}


def write_result(result: SearchResult, out_dir: str) -> list[str]:
    """``best_spec.txt`` (the best network, for ``lightnets train --spec``), ``best_spec.json``
    and ``search.json`` (settings, best, front, spread, every trial), written atomically."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, name) for name in ("best_spec.txt", "best_spec.json", "search.json")]
    atomic_write(paths[0], "\n".join(result.best_spec.lines()) + "\n")
    atomic_write(paths[1], result.best_spec.to_json(indent=2) + "\n")
    _atomic_json(paths[2], result.to_dict())
    return paths


def plot_search(fronts: dict[str, list[dict]], path: str, title: str, *, target_ms: float | None = None,
                baseline: list[dict] | dict[str, list[dict]] = (), latency: str = "latency_ms") -> None:
    """Proxy top-1 against latency: each labelled search's candidates (dots) and Pareto front
    (line), and ``baseline`` rows (each with a ``label``, e.g. a network at several width
    multipliers; a dict: one labelled series per network family) as squares (needs matplotlib).

    ``latency``: the rows' key on the x axis, ``latency_ms`` (predicted by the table) or
    ``measured_ms`` (measured whole; rows without it are left out, and the fronts are taken
    again on the measured values)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    for k, (label, rows) in enumerate(fronts.items()):
        rows = [r for r in rows if r.get(latency) is not None]
        color = f"C{k}"
        ax.scatter([r[latency] for r in rows], [100 * r["accuracy"] for r in rows], s=10, alpha=0.35, color=color)
        front = pareto_front(rows, latency=latency)
        counted = "measured" if latency == "measured_ms" else "candidates"
        ax.plot([r[latency] for r in front], [100 * r["accuracy"] for r in front], "o-", ms=4, color=color,
                label=f"{label}: {len(rows)} {counted}, front")
    series = baseline if isinstance(baseline, dict) else ({"width-scaled base": list(baseline)} if baseline else {})
    for k, (label, rows) in enumerate(series.items()):
        color = "grey" if len(series) == 1 else f"C{len(fronts) + k}"
        ordered = sorted((r for r in rows if r.get(latency) is not None), key=lambda r: r[latency])
        ax.plot([r[latency] for r in ordered], [100 * r["accuracy"] for r in ordered], "s--", color=color,
                label=label)
        for r in ordered:
            ax.annotate(r.get("label", ""), (r[latency], 100 * r["accuracy"]), textcoords="offset points",
                        xytext=(4, -10), fontsize=7, color=color)
    if target_ms is not None:
        ax.axvline(target_ms, color="red", lw=0.8, ls=":", label=f"target {target_ms:.3g} ms")
    xlabel = "latency measured whole (ms)" if latency == "measured_ms" else "latency predicted by the lookup table (ms)"
    ax.set(xlabel=xlabel, ylabel="proxy top-1 (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
