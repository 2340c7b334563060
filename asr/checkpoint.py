"""Checkpoints: atomic writes, ``weights_only`` loading, a format version.

A checkpoint is a dict of tensors and plain data only:
``{"format_version", "model": {"config", "input_dim", "vocab_size", "state_dict"},
"features": {"config", "mean", "std"}, "tokenizer": {...}, "training"?: {...}}``.
``training`` holds what resuming needs (``state``: the run's :class:`asr.train_state.TrainState`;
optimizer, scheduler, scaler, RNG states, the batch order and the run's shape); the final
``model.pt`` omits it. Older formats are brought up to date in one place, :func:`_upgrade`.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import pickle
import typing
import zipfile
from pathlib import Path
from typing import Any, TypeVar

import torch

from asr.atomic import atomic_write
from asr.errors import CheckpointError
from asr.features import FeatureConfig, FeatureExtractor
from asr.model import AcousticModel, ModelConfig
from asr.tokenizer import Tokenizer, tokenizer_from_dict

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
T = TypeVar("T")


def config_to_dict(config: Any) -> dict:
    """A (nested) config dataclass as plain data: enums become their values."""

    def plain(value: Any) -> Any:
        if isinstance(value, enum.Enum):
            return value.value
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(config)


def config_from_dict(cls: type[T], data: dict) -> T:
    """Inverse of :func:`config_to_dict` for a flat or nested config dataclass."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise CheckpointError(f"unknown {cls.__name__} field(s) in checkpoint: {sorted(unknown)}")
    for name, value in data.items():
        hint = hints[name]
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            value = hint(value)
        elif dataclasses.is_dataclass(hint):
            value = config_from_dict(hint, value)
        kwargs[name] = value
    return cls(**kwargs)


def inference_state(model: AcousticModel, extractor: FeatureExtractor, tokenizer: Tokenizer) -> dict:
    """Everything needed to transcribe, independent of the training config."""
    return {
        "format_version": FORMAT_VERSION,
        "model": {
            "config": config_to_dict(model.cfg),
            "input_dim": model.input_dim,
            "vocab_size": model.vocab_size,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        },
        "features": {
            "config": config_to_dict(extractor.cfg),
            "mean": extractor.mean.detach().cpu(),
            "std": extractor.std.detach().cpu(),
        },
        "tokenizer": tokenizer.to_dict(),
    }


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write ``state`` atomically: temporary file in the same folder, fsync, rename."""
    with atomic_write(path, "wb") as f:
        torch.save(state, f)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True``: it can never run code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise CheckpointError(f"{path}: refused to load, not a plain-data checkpoint ({reason})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{path}: not an asr checkpoint")
    version = state["format_version"]
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version} is newer than this asr supports ({FORMAT_VERSION}); upgrade asr"
        )
    return _upgrade(state)


def _upgrade(state: dict) -> dict:
    """A checkpoint of an older format in today's form."""
    training = state.get("training")
    if state["format_version"] == 1 and training is not None:
        # format 1 kept the run's counters beside the optimizer, the epoch's running sums as a list
        sums = dict(zip(("epoch_loss", "epoch_steps", "epoch_frames", "epoch_seconds", "epoch_data_wait"),
                        training.pop("epoch_totals", ())))
        names = ("step", "epoch", "batch_in_epoch", "best", "bad_epochs", "skipped_steps", "nonfinite_in_row")
        training["state"] = {name: training.pop(name) for name in names if name in training} | sums
        for group in training["optimizer"]["param_groups"]:
            group["fused"] = True  # as the optimizer is built now (set before loading: it places "step")
        training.setdefault("batch_order", 0)
        training.setdefault("world_size", 1)
        training.setdefault("grad_accum_steps", 1)
        if isinstance(training.get("cuda_rng"), list):  # every visible GPU's state
            training["cuda_rng"] = training["cuda_rng"][0] if training["cuda_rng"] else None
    state["format_version"] = FORMAT_VERSION
    return state


def build_components(state: dict, path: str | Path = "checkpoint") -> tuple[AcousticModel, FeatureExtractor, Tokenizer]:
    """Model (in eval mode), feature extractor and tokenizer from a loaded checkpoint."""
    try:
        model_state = state["model"]
        model = AcousticModel(
            config_from_dict(ModelConfig, model_state["config"]), model_state["input_dim"], model_state["vocab_size"]
        )
        model.load_state_dict(model_state["state_dict"])
        feats = state["features"]
        extractor = FeatureExtractor(config_from_dict(FeatureConfig, feats["config"]), feats["mean"], feats["std"])
        tokenizer = tokenizer_from_dict(state["tokenizer"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: incompatible checkpoint ({str(exc).splitlines()[0]})") from None
    model.eval()
    return model, extractor, tokenizer


def training_checkpoints(directory: Path) -> list[Path]:
    """A run's resumable checkpoints ``step-<step>.pt``, newest first."""
    return sorted(directory.glob("step-*.pt"), reverse=True)


def load_latest_training_checkpoint(directory: Path) -> tuple[Path, dict] | None:
    """The newest checkpoint in ``directory`` that loads; a corrupt one is skipped with a warning
    (e.g. a disk filled up or a copy was cut short). Leftover temporary files of a write that was
    killed are removed. Raises CheckpointError if checkpoints exist but none loads."""
    for leftover in directory.glob(".*.tmp"):
        log.warning("%s: removing the temporary file of an interrupted checkpoint write", leftover)
        leftover.unlink(missing_ok=True)
    candidates = training_checkpoints(directory)
    for path in candidates:
        try:
            state = load_checkpoint(path)
            if "training" not in state:
                raise CheckpointError(f"{path}: has no training state")
            return path, state
        except CheckpointError as exc:
            log.warning("%s; falling back to the previous checkpoint", exc)
    if candidates:
        raise CheckpointError(f"{directory}: none of the {len(candidates)} checkpoints loads (see the warnings above)")
    return None
