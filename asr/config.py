"""Training configuration: dataclass schemas in hydra's ConfigStore, composition, validation.

The YAML files in ``conf/`` fill these schemas group by group (features, augment, tokenizer,
model, optim, data, trainer); OmegaConf rejects unknown keys and wrong types, and
:func:`validate` rejects impossible values, always naming the field.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Optional, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from asr.decoding import DecodingOptions
from asr.errors import ConfigError, DecodingError
from asr.augment import AugmentConfig
from asr.features import FeatureConfig
from asr.model import ModelConfig
from asr.tokenizer import TokenizerConfig

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


class OptimizerKind(str, Enum):
    adamw = "adamw"
    sgd = "sgd"  # with momentum


class DecayKind(str, Enum):
    cosine = "cosine"
    exponential = "exponential"
    none = "none"


class Precision(str, Enum):
    auto = "auto"  # bf16 autocast on CUDA when supported, fp32 on CPU
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"  # CUDA only, with a gradient scaler


@dataclass
class OptimConfig:
    name: OptimizerKind = OptimizerKind.adamw
    lr: float = 0.002
    weight_decay: float = 1e-2
    momentum: float = 0.9  # sgd only
    warmup_steps: int = 200
    decay: DecayKind = DecayKind.cosine
    min_lr_ratio: float = 0.05  # the decayed learning rate never goes below lr * this
    clip_grad_norm: float = 5.0


@dataclass
class DataConfig:
    train_manifest: str = MISSING
    dev_manifest: str = MISSING
    max_frames_per_batch: int = 20000  # padded feature frames (10 ms each) per batch
    num_buckets: int = 10
    # each epoch a bucket's utterances are ordered by length x (1 ± length_jitter) before being cut
    # into batches: 0 gives the least padding but the same batches every epoch, which trains worse;
    # larger values give more varied batches and more padding
    length_jitter: float = 0.2
    # loader worker processes; -1 (auto): one beside a GPU, none on a CPU of 4 cores or fewer, where a
    # worker takes a core from the training step's threads (docs/PERFORMANCE.md), else one
    num_workers: int = -1
    # decoded training audio kept in memory, up to this many MB (2**20 bytes; 0: read the files every
    # time), by a training process that loads its own batches (no loader workers, which start afresh
    # each epoch); the default corpus's 2.5 hours take about 560 MB (docs/PERFORMANCE.md)
    audio_cache_mb: float = 1024.0
    max_duration: float = 30.0  # longer training utterances are dropped with a warning
    stats_utterances: int = 2000  # utterances used for the global normalization statistics
    # a bad manifest line or unreadable audio file is skipped with a warning and counted, instead of
    # stopping the run
    skip_bad: bool = True


@dataclass
class TrainerConfig:
    output_dir: Optional[str] = None  # default: exp/train-<timestamp>
    epochs: int = 20
    patience: int = 5  # epochs without dev WER improvement before stopping; 0 disables
    seed: int = 1234
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Precision = Precision.auto
    num_threads: int = 0  # torch intra-op threads on CPU; 0 leaves torch's default
    log_every: int = 20  # steps between TensorBoard scalars
    resume: bool = False  # continue from the newest usable <output_dir>/checkpoints/step-*.pt
    # start from another model's weights (fine-tuning): its tokenizer and feature settings come with it,
    # the model config must describe the same shapes; optimizer and schedule start fresh
    init_from: Optional[str] = None
    keep_checkpoints: int = 2  # checkpoints kept (older ones are deleted)
    checkpoint_every_steps: int = 0  # also checkpoint every N optimizer steps within epochs; 0: epoch ends only
    max_steps: int = 0  # stop after this many optimizer steps (smoke tests of a recipe); 0: no limit
    max_nonfinite_steps: int = 20  # non-finite losses/gradients in a row before training stops
    # micro-batches whose gradients are summed into one optimizer step (on every process, with torchrun)
    grad_accum_steps: int = 1
    # torch.compile the non-recurrent parts (subsampling, between-layer blocks, classifier): meant for
    # GPUs (no gain on CPUs); the first steps of each new batch shape run slower while graphs
    # compile (needs a C++ compiler on CPUs)
    compile: bool = False


@dataclass
class TrainConfig:
    features: FeatureConfig = field(default_factory=FeatureConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    decode: DecodingOptions = field(default_factory=DecodingOptions)  # how dev sets are decoded for validation


def register_configs() -> None:
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


def load_train_config(
    overrides: Sequence[str] = (),
    config_name: str = "config",
    config_dir: str | Path | None = None,
) -> TrainConfig:
    """Compose ``conf/<config_name>.yaml`` with hydra ``overrides`` into a validated config."""
    register_configs()
    directory = Path(config_dir) if config_dir else CONF_DIR
    if not (directory / f"{config_name}.yaml").is_file():
        raise ConfigError(f"config '{config_name}' not found in {directory}")
    try:
        with initialize_config_dir(config_dir=str(directory.resolve()), version_base="1.3"):
            composed = compose(config_name=config_name, overrides=list(overrides))
        _check_keys(composed, TrainConfig)
        cfg = OmegaConf.to_object(composed)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_one_line(exc)) from None
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(f"config '{config_name}' does not use the train_schema defaults")
    validate(cfg)
    return cfg


def to_yaml(cfg: TrainConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def validate(cfg: TrainConfig) -> None:
    """Reject impossible values with the field's full name."""
    checks = _front_end_checks(cfg) + _training_checks(cfg)
    for name, ok, rule in checks:
        if not ok:
            raise ConfigError(f"{name}={_value(cfg, name)!r}: {rule}")
    try:
        cfg.decode.validate()
    except DecodingError as exc:
        raise ConfigError(f"decode.{exc}") from None
    max_frames_needed = cfg.features.num_frames(int(cfg.data.max_duration * cfg.features.sample_rate))
    if cfg.data.max_frames_per_batch < max_frames_needed:
        raise ConfigError(
            f"data.max_frames_per_batch={cfg.data.max_frames_per_batch!r}: smaller than one utterance of "
            f"data.max_duration={cfg.data.max_duration}s ({max_frames_needed} frames)"
        )


def _front_end_checks(cfg: TrainConfig) -> list[tuple[str, bool, str]]:
    """(field, value is possible, rule) for the features and the augmentation."""
    return [
        ("features.sample_rate", 1000 <= cfg.features.sample_rate <= 1_000_000, "must be in [1000, 1000000] Hz"),
        ("features.n_mels", cfg.features.n_mels > 0, "must be > 0"),
        ("features.hop_ms", math.isfinite(cfg.features.hop_ms) and cfg.features.hop_length >= 1,
         "must be finite and at least one sample long"),
        ("features.win_ms", math.isfinite(cfg.features.win_ms) and cfg.features.win_ms >= cfg.features.hop_ms,
         "must be >= features.hop_ms"),
        ("augment.speed_factors", all(0.5 <= f <= 2.0 for f in cfg.augment.speed_factors), "each in [0.5, 2]"),
        *[(f"augment.{name}", 0 <= getattr(cfg.augment, name) <= 1, "must be in [0, 1]") for name in
          ("pitch_prob", "vtlp_prob", "trim_prob", "join_prob", "edge_silence_prob", "reverb_prob", "noise_prob", "babble_share", "band_prob", "eq_prob", "gain_prob")],
        ("augment.pitch_range", 0 <= cfg.augment.pitch_range <= 0.5, "must be in [0, 0.5]"),
        ("augment.vtlp_range", 0 <= cfg.augment.vtlp_range <= 0.3, "must be in [0, 0.3]"),
        ("augment.rt60_range", _is_range(cfg.augment.rt60_range, 0.01, 5.0), "must be [low, high] within [0.01, 5] s"),
        ("augment.snr_range", _is_range(cfg.augment.snr_range, -20.0, 100.0), "must be [low, high] within [-20, 100] dB"),
        ("augment.eq_db", 0 <= cfg.augment.eq_db <= 30, "must be in [0, 30]"),
        ("augment.trim_db_range", _is_range(cfg.augment.trim_db_range, 1.0, 120.0), "must be [low, high] within [1, 120] dB"),
        ("augment.edge_silence", 0 <= cfg.augment.edge_silence <= 5, "must be in [0, 5] s"),
        ("augment.join_pause", _is_range(cfg.augment.join_pause, 0.0, 5.0), "must be [low, high] within [0, 5] s"),
        ("augment.join_partner_seconds", 0 < cfg.augment.join_partner_seconds <= 30, "must be in (0, 30] s"),
        ("augment.warmup_epochs", cfg.augment.warmup_epochs >= 0, "must be >= 0"),
        ("augment.gain_db", 0 <= cfg.augment.gain_db <= 40, "must be in [0, 40]"),
        ("augment.time_mask_max_ratio", 0 <= cfg.augment.time_mask_max_ratio < 1, "must be in [0, 1)"),
        ("augment.freq_mask_width", 0 <= cfg.augment.freq_mask_width <= cfg.features.n_mels, "must be in [0, n_mels]"),
    ]


def _training_checks(cfg: TrainConfig) -> list[tuple[str, bool, str]]:
    """(field, value is possible, rule) for the tokenizer, model, optimizer, data and trainer."""
    return [
        ("tokenizer.vocab_size", cfg.tokenizer.vocab_size > 1, "must be > 1"),
        ("model.num_layers", cfg.model.num_layers > 0, "must be > 0"),
        ("model.hidden_size", cfg.model.hidden_size > 0, "must be > 0"),
        ("model.projection_size", cfg.model.projection_size >= 0, "must be >= 0"),
        ("model.dropout", 0 <= cfg.model.dropout < 1, "must be in [0, 1)"),
        ("model.subsampling_factor", cfg.model.subsampling_factor >= 1, "must be >= 1"),
        ("model.conv_channels", cfg.model.conv_channels > 0, "must be > 0"),
        ("model.train_chunk_frames", cfg.model.train_chunk_frames >= 0, "must be >= 0"),
        ("model.train_right_context_frames", cfg.model.train_right_context_frames >= 0, "must be >= 0"),
        ("optim.lr", cfg.optim.lr > 0 and math.isfinite(cfg.optim.lr), "must be a positive number"),
        ("optim.weight_decay", cfg.optim.weight_decay >= 0, "must be >= 0"),
        ("optim.momentum", 0 <= cfg.optim.momentum < 1, "must be in [0, 1)"),
        ("optim.warmup_steps", cfg.optim.warmup_steps >= 0, "must be >= 0"),
        ("optim.min_lr_ratio", 0 <= cfg.optim.min_lr_ratio <= 1, "must be in [0, 1]"),
        ("optim.clip_grad_norm", cfg.optim.clip_grad_norm > 0, "must be > 0"),
        ("data.max_frames_per_batch", cfg.data.max_frames_per_batch > 0, "must be > 0"),
        ("data.num_buckets", cfg.data.num_buckets > 0, "must be > 0"),
        ("data.length_jitter", 0 <= cfg.data.length_jitter < 1, "must be in [0, 1)"),
        ("data.num_workers", cfg.data.num_workers >= -1, "must be >= 0, or -1 (auto)"),
        ("data.audio_cache_mb", cfg.data.audio_cache_mb >= 0, "must be >= 0 (0: no cache)"),
        ("data.max_duration", 0 < cfg.data.max_duration < 86400, "must be in (0, 86400) seconds"),
        ("data.stats_utterances", cfg.data.stats_utterances > 0, "must be > 0"),
        ("trainer.epochs", cfg.trainer.epochs > 0, "must be > 0"),
        ("trainer.patience", cfg.trainer.patience >= 0, "must be >= 0"),
        ("trainer.num_threads", cfg.trainer.num_threads >= 0, "must be >= 0"),
        ("trainer.log_every", cfg.trainer.log_every > 0, "must be > 0"),
        ("trainer.keep_checkpoints", cfg.trainer.keep_checkpoints > 0, "must be > 0"),
        ("trainer.max_steps", cfg.trainer.max_steps >= 0, "must be >= 0"),
        ("trainer.checkpoint_every_steps", cfg.trainer.checkpoint_every_steps >= 0, "must be >= 0"),
        ("trainer.max_nonfinite_steps", cfg.trainer.max_nonfinite_steps > 0, "must be > 0"),
        ("trainer.grad_accum_steps", cfg.trainer.grad_accum_steps > 0, "must be > 0"),
    ]


def _is_range(values: Sequence[float], low: float, high: float) -> bool:
    return len(values) == 2 and low <= values[0] <= values[1] <= high


def _value(cfg: TrainConfig, dotted: str):
    value = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _one_line(exc: BaseException) -> str:
    """The most specific message in the exception chain, as ``<field>: <problem>``."""
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for item in chain:
        text = str(item)
        if "full_key:" in text:
            key = text.split("full_key:", 1)[1].split()[0]
            return f"{key}: {text.strip().splitlines()[0]}"
    text = str(chain[0]).strip().split("Config search path")[0]
    head, _, options = text.partition("Available options in")
    lines = [line.strip() for line in head.splitlines() if line.strip()]
    message = " ".join(lines) or type(chain[0]).__name__
    if options:
        group, *choices = [line.strip() for line in options.splitlines() if line.strip()]
        message += f" (available in {group.rstrip(':')}: {', '.join(choices)})"
    return message


def _check_keys(node, schema: type, prefix: str = "") -> None:
    """Reject keys the schema does not have (``+key=value`` overrides slip past OmegaConf)."""
    fields = {f.name: f.type for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    for key in node:
        name = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{name}: unknown key (not in {schema.__name__})")
        if dataclasses.is_dataclass(hints[key]):
            _check_keys(node[key], hints[key], f"{name}.")
