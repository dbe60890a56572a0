"""The compute step's typed configuration; every field is also a `prunescope compute` flag.

Torch-free: the CLI builds its parser from these fields before anything heavy loads.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field

from compute.schema import model_id_for


class InputError(ValueError):
    """Bad input the user can fix; the message is one line naming the problem and the fix."""


class StoppedShort(RuntimeError):
    """Not bad input: the command stopped before it finished (a worker killed, say); the message is
    one line saying why and what continues it. Exit 1."""


class ConfigError(InputError):
    """A bad flag value; the message names the flag, the value and what is allowed."""


def _flag(default, help: str, group: str, choices: tuple | None = None):
    return field(default=default, metadata={"help": help, "group": group, "choices": choices})


@dataclass(frozen=True)
class ComputeConfig:
    # data
    dataset: str = _flag(
        "digits", "data set (imagefolder: --data-root and --test-root; npz: --data-root)", "data",
        ("digits", "cifar10", "cifar100", "imagefolder", "npz"),
    )  # fmt: skip
    n_test: int = _flag(360, "test images to evaluate, stratified (0 = the whole test split)", "data")
    n_train: int = _flag(0, "training images, stratified (0 = all)", "data")
    split_seed: int = _flag(0, "seed of the train/test split and subsets", "data")
    data_root: str | None = _flag(
        None,
        "where the data set is: the folder holding cifar-10-batches-py or cifar-100-python, the training "
        "image folder (imagefolder) or the .npz file (npz)",
        "data",
    )
    test_root: str | None = _flag(None, "the test image folder (imagefolder)", "data")
    cifar10c: str | None = _flag(
        None,
        "folder of the released CIFAR-10-C (or, with --dataset cifar100, CIFAR-100-C) .npy files, evaluated "
        "instead of generated corruptions",
        "data",
    )
    # model and sweep
    architecture: str = _flag("small_cnn", "classifier architecture", "sweep")
    methods: tuple[str, ...] = _flag(
        ("dense", "random", "magnitude"), "pruning methods, comma-separated, or 'all'", "sweep"
    )
    sparsities: tuple[float, ...] = _flag(
        (0.5, 0.8, 0.9, 0.95), "target sparsities in [0, 1), comma-separated", "sweep"
    )
    corruptions: tuple[str, ...] = _flag(
        ("gaussian_noise", "defocus_blur", "contrast"), "corruptions, comma-separated, or 'all'", "sweep"
    )
    severities: tuple[int, ...] = _flag((1, 2, 3, 4, 5), "corruption severities 1-5, comma-separated", "sweep")
    seeds: int = _flag(1, "independent dense models (seeds 0..N-1), each pruned by every method", "sweep")
    prune_first_layer: bool = _flag(False, "let methods prune the first conv layer", "sweep")
    prune_last_layer: bool = _flag(False, "let methods prune the last linear layer", "sweep")
    allocation: str = _flag(
        "auto",
        "sparsity per layer: global, uniform or erk where a method allows it; auto = each method's own",
        "sweep",
        ("auto", "global", "uniform", "erk"),
    )
    # training
    epochs: int = _flag(20, "epochs of dense training", "training")
    finetune_epochs: int = _flag(6, "epochs of fine-tuning after one-shot pruning", "training")
    batch_size: int = _flag(128, "training batch size", "training")
    lr: float = _flag(0.1, "peak learning rate of dense training (SGD, Nesterov)", "training")
    finetune_lr: float = _flag(0.02, "peak learning rate of fine-tuning", "training")
    momentum: float = _flag(0.9, "SGD momentum", "training")
    weight_decay: float = _flag(5e-4, "weight decay", "training")
    warmup_epochs: float = _flag(1.0, "linear learning-rate warmup, in epochs", "training")
    augment: bool = _flag(True, "random 2-pixel shifts (and flips on CIFAR) while training", "training")
    # methods
    round_schedule: str = _flag(
        "restart",
        "imp / lrr retraining per round: restart (a short schedule of --round-epochs) or rewind (the dense "
        "schedule from the rewind step to its end, as open_lth; lrr replays all of it)",
        "methods",
        ("restart", "rewind"),
    )
    round_epochs: int = _flag(8, "epochs of retraining per imp / lrr round under --round-schedule restart", "methods")
    imp_rate: float = _flag(
        0.2, "fraction of the remaining weights each imp / lrr round removes (a round stops at each target)", "methods"
    )
    rewind_epochs: float = _flag(
        1.0, "imp rewinds survivors to their values after this many epochs (0 = init)", "methods"
    )
    sparse_epochs: int | None = _flag(
        None,
        "epochs of sparse training from initialisation (snip, grasp, synflow, rigl, set); none = --epochs",
        "methods",
    )
    supermask_epochs: int | None = _flag(
        None, "epochs of score training (edge_popup, biprop); none = --epochs", "methods"
    )
    supermask_lr: float = _flag(0.1, "peak learning rate of score training", "methods")
    supermask_init: str = _flag(
        "signed_constant", "edge_popup's frozen weights", "methods", ("signed_constant", "kaiming")
    )
    score_batch: int = _flag(256, "training images snip scores on (one batch)", "methods")
    grasp_samples_per_class: int = _flag(
        10, "training images per class grasp scores on (the authors' class-balanced batch)", "methods"
    )
    score_mode: str = _flag(
        "auto",
        "batch norm while snip, grasp and synflow score: train, eval, or auto (each method's authors' code: "
        "eval for snip and synflow, train for grasp)",
        "methods",
        ("auto", "train", "eval"),
    )
    grasp_temperature: float = _flag(200.0, "temperature of grasp's logits", "methods")
    synflow_rounds: int = _flag(100, "pruning rounds of synflow's exponential schedule", "methods")
    dst_update_every: int = _flag(10, "optimizer steps between rigl / set mask updates", "methods")
    dst_drop_fraction: float = _flag(0.3, "initial fraction of active weights rigl / set replace per update", "methods")
    dst_end: float = _flag(0.75, "fraction of training after which rigl / set masks stay fixed", "methods")
    # run
    corruption_seed: int = _flag(0, "seed of the corruptions (the same for every model)", "run")
    eval_batch_size: int = _flag(256, "images per forward pass in evaluation", "run")
    device: str = _flag("auto", "auto, cpu or cuda", "run", ("auto", "cpu", "cuda"))
    precision: str = _flag(
        "fp32",
        "numeric precision of training and evaluation: fp32, or bf16 autocast (channels-last on CUDA); the "
        "per-sample metrics are computed in float64 from the features either way",
        "run",
        ("fp32", "bf16"),
    )
    checkpoints: bool = _flag(False, "also save every model's weights in <out>/checkpoints/", "run")
    thumbnail_samples: int = _flag(
        0, "store every corrupted image of this many samples (half the most misclassified) for the app", "run"
    )
    metric_bits: int = _flag(
        23, "mantissa bits kept of each float metric (23 = exact float32; fewer compress far better)", "run"
    )
    # occlusion
    occlusion_samples: int = _flag(
        0,
        "patch occlusion of this many samples whose corrupted images the snapshot keeps (the first of the "
        "stratified half of --thumbnail-samples), for every model on clean and one severity (0 = none)",
        "occlusion",
    )
    occlusion_severity: int = _flag(3, "severity of the corrupted conditions occluded (with clean)", "occlusion")
    occlusion_patch: int = _flag(8, "side of the occluding square patch, in pixels", "occlusion")
    occlusion_stride: int = _flag(4, "step between patch positions, in pixels", "occlusion")
    shard: str = _flag(
        "1/1",
        "run only part K of N of the sweep's (seed, method) jobs (auto: this task of a Slurm job array); "
        "combine the parts with prunescope merge",
        "run",
    )

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def from_init_epochs(self) -> int:
        """Training epochs of the methods that train from initialisation (equal budget by default)."""
        return self.epochs if self.sparse_epochs is None else self.sparse_epochs

    @property
    def score_epochs(self) -> int:
        return self.epochs if self.supermask_epochs is None else self.supermask_epochs


FIELDS = {f.name: f for f in dataclasses.fields(ComputeConfig)}


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_list(text: str, item_type: type, flag: str) -> tuple:
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        raise ConfigError(f"{flag}: {text!r} is empty; give a comma-separated list")
    try:
        return tuple(item_type(item) for item in items)
    except ValueError as err:
        raise ConfigError(f"{flag}: {text!r} is not a list of {item_type.__name__} ({err})") from err


def flag_value(value) -> str:
    """A field's value as a user types it after its flag (parse_value reads it back): 0.5,0.9 for a list,
    none for unset, on / off for a switch (--flag / --no-flag)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def parse_value(name: str, text: str):
    """Turn one flag's text into the field's type, or raise ConfigError."""
    hint = typing.get_type_hints(ComputeConfig)[name]
    flag = flag_name(name)
    if typing.get_origin(hint) is tuple:
        return _parse_list(text, typing.get_args(hint)[0], flag)
    if text == "none" and type(None) in typing.get_args(hint):
        return None
    if hint is bool:
        if text not in ("on", "off"):
            raise ConfigError(f"{flag}: {text!r} is not allowed; choose on or off")
        return text == "on"
    base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
    try:
        return base(text)
    except ValueError as err:
        raise ConfigError(f"{flag}: {text!r} is not a valid {base.__name__}") from err


#: the fields `prunescope evaluate` takes: the data, the conditions and how to evaluate
EVALUATE_FIELDS = (
    "dataset", "n_test", "split_seed", "data_root", "test_root", "cifar10c", "corruptions", "severities",
    "corruption_seed", "eval_batch_size", "device", "precision", "thumbnail_samples", "metric_bits",
)  # fmt: skip

#: what `prunescope evaluate` starts from: every condition, the whole test split
EVALUATE_DEFAULTS = ComputeConfig(methods=("dense",), corruptions=("all",), n_test=0)


def add_config_flags(
    parser: argparse.ArgumentParser,
    only: tuple[str, ...] | None = None,
    defaults: ComputeConfig | None = None,
    label: str = "default",
) -> None:
    """One flag per field (or per field in `only`). Each help ends with "(LABEL: value)", the field's value in
    `defaults` as a user types it; argparse's defaults are SUPPRESSed so we know which flags were given."""
    defaults = ComputeConfig() if defaults is None else defaults
    groups: dict[str, argparse._ArgumentGroup] = {}
    hints = typing.get_type_hints(ComputeConfig)
    for name, f in FIELDS.items():
        if only is not None and name not in only:
            continue
        group_name = f.metadata["group"]
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(group_name)
        group = groups[group_name]
        shown = flag_value(getattr(defaults, name)).replace("%", "%%")  # argparse %-formats help
        help_text = f"{f.metadata['help']} ({label}: {shown})"
        if hints[name] is bool:
            group.add_argument(
                flag_name(name), action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
            )
        else:
            group.add_argument(flag_name(name), default=argparse.SUPPRESS, metavar=name.upper(), help=help_text)


def apply_overrides(base: ComputeConfig, given: dict[str, object]) -> ComputeConfig:
    """Replace fields of a preset by the flags given (text is parsed, typed values kept)."""
    values = {}
    for name, value in given.items():
        if name not in FIELDS:
            continue
        values[name] = parse_value(name, value) if isinstance(value, str) else value
    return dataclasses.replace(base, **values)


def slurm_shard() -> str:
    """K/N of this task of a Slurm job array (sbatch --array=A-B): K counts from 1 at A."""
    env = os.environ
    names = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX")
    if not all(name in env for name in names):
        raise ConfigError("--shard: 'auto' reads a Slurm job array's SLURM_ARRAY_TASK_* variables, which are not set; "
                          "run it under sbatch --array, or give K/N")  # fmt: skip
    try:
        task, low, high = (int(env[name]) for name in names)
        step = int(env.get("SLURM_ARRAY_TASK_STEP", "1"))
    except ValueError:
        raise ConfigError("--shard: 'auto' found SLURM_ARRAY_TASK_* variables that are not whole numbers") from None
    if step != 1:
        raise ConfigError(f"--shard: 'auto' needs an array with step 1 (--array={low}-{high}), not step {step}")
    return f"{task - low + 1}/{high - low + 1}"


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N) with 1 <= K <= N; 'auto' takes K/N from a Slurm job array."""
    if text == "auto":
        text = slurm_shard()
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard: {text!r} is not K/N; give e.g. 2/4 for the second of four parts") from None
    if not 1 <= index <= count:
        raise ConfigError(f"--shard: {text!r} is not allowed; K must be between 1 and N")
    return index, count


def shard_jobs(cfg: ComputeConfig) -> list[tuple[int, str]]:
    """The (seed, method) jobs of this shard: every N-th job of the sweep, from the K-th.

    Round robin spreads the costly methods over the shards. Each shard trains the dense
    model of every seed it prunes; only the shard holding (seed, 'dense') records it.
    """
    index, count = parse_shard(cfg.shard)
    jobs = [(seed, method) for seed in range(cfg.seeds) for method in cfg.methods]
    if count > len(jobs):
        raise ConfigError(f"--shard: {cfg.shard} leaves shards without work; this sweep has {len(jobs)} jobs")
    return jobs[index - 1 :: count]


def check_occlusion(cfg: ComputeConfig) -> None:
    """Occluded samples must be among those whose corrupted images the snapshot keeps, and
    their severity among the run's."""
    if cfg.occlusion_severity not in (1, 2, 3, 4, 5):
        raise ConfigError(f"--occlusion-severity: {cfg.occlusion_severity} is not allowed; choose from 1,2,3,4,5")
    if not cfg.occlusion_samples:
        return
    stratified = cfg.thumbnail_samples - cfg.thumbnail_samples // 2
    if cfg.occlusion_samples > stratified:
        raise ConfigError(
            f"--occlusion-samples: {cfg.occlusion_samples} is more than the {stratified} stratified samples of "
            f"--thumbnail-samples {cfg.thumbnail_samples}; raise --thumbnail-samples to at least "
            f"{2 * cfg.occlusion_samples - 1}"
        )
    if cfg.occlusion_severity not in cfg.severities:
        raise ConfigError(
            f"--occlusion-severity: {cfg.occlusion_severity} is not among --severities {flag_value(cfg.severities)}"
        )


def check_basic(cfg: ComputeConfig) -> None:
    """Checks that need no torch: ranges, choices, duplicates."""
    for name, f in FIELDS.items():
        choices = f.metadata["choices"]
        value = getattr(cfg, name)
        if choices and value not in choices:
            raise ConfigError(f"{flag_name(name)}: {value!r} is not allowed; choose one of {', '.join(choices)}")
    hints = typing.get_type_hints(ComputeConfig)
    for name in FIELDS:
        values = getattr(cfg, name)
        for value in values if isinstance(values, tuple) else (values,):
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{flag_name(name)}: {value} is not allowed; give a finite number")
        if typing.get_origin(hints[name]) is tuple and len(set(values)) != len(values):
            twice = sorted({v for v in values if values.count(v) > 1}, key=str)
            raise ConfigError(f"{flag_name(name)}: {','.join(map(str, twice))} given twice; name each value once")
    for sparsity in cfg.sparsities:
        if not 0.0 <= sparsity < 1.0:
            raise ConfigError(f"--sparsities: {sparsity} is outside [0, 1); give fractions such as 0.5,0.9")
    ids: dict[str, float] = {}
    for sparsity in cfg.sparsities:  # model ids keep 4 significant digits
        other = ids.setdefault(model_id_for("m", sparsity, 0), sparsity)
        if other != sparsity:
            raise ConfigError(
                f"--sparsities: {other} and {sparsity} name the same models (ids keep 4 significant digits); "
                "drop one or make them differ sooner"
            )
    for severity in cfg.severities:
        if severity not in (1, 2, 3, 4, 5):
            raise ConfigError(f"--severities: {severity} is not allowed; choose from 1,2,3,4,5")
    positive = (
        "epochs", "batch_size", "eval_batch_size", "seeds", "round_epochs", "sparse_epochs", "supermask_epochs",
        "score_batch", "grasp_samples_per_class", "synflow_rounds", "dst_update_every", "occlusion_patch",
        "occlusion_stride",
    )  # fmt: skip
    for name in positive:
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise ConfigError(f"{flag_name(name)}: {getattr(cfg, name)} is not allowed; it must be at least 1")
    for name in ("finetune_epochs", "n_test", "n_train", "thumbnail_samples", "occlusion_samples", "split_seed"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{flag_name(name)}: {getattr(cfg, name)} is not allowed; it must be 0 or more")
    for name in ("imp_rate", "dst_drop_fraction", "dst_end"):
        if not 0.0 < getattr(cfg, name) < 1.0:
            raise ConfigError(f"{flag_name(name)}: {getattr(cfg, name)} is not allowed; it must be between 0 and 1")
    check_occlusion(cfg)
    if not 1 <= cfg.metric_bits <= 23:
        raise ConfigError(f"--metric-bits: {cfg.metric_bits} is not allowed; choose 1 to 23 (23 keeps float32 exact)")
    if cfg.cifar10c and cfg.dataset not in ("cifar10", "cifar100"):
        raise ConfigError(
            f"--cifar10c: the released CIFAR-10-C / CIFAR-100-C files go with --dataset cifar10 or cifar100 "
            f"(got {cfg.dataset})"
        )
    if not 0 <= cfg.rewind_epochs < cfg.epochs:
        raise ConfigError(
            f"--rewind-epochs: {cfg.rewind_epochs} is not allowed; "
            f"it must be 0 or more and below --epochs ({cfg.epochs})"
        )
    for name in ("lr", "finetune_lr", "supermask_lr", "grasp_temperature"):
        if not getattr(cfg, name) > 0:
            raise ConfigError(f"{flag_name(name)}: {getattr(cfg, name)} is not allowed; it must be positive")
    for name in ("weight_decay", "warmup_epochs"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{flag_name(name)}: {getattr(cfg, name)} is not allowed; it must be 0 or more")
    if not 0 <= cfg.momentum < 1:
        raise ConfigError(f"--momentum: {cfg.momentum} is not allowed; it must be at least 0 and below 1")
    parse_shard(cfg.shard)
