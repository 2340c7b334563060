import pytest

from asr.config import CONF_DIR, load_train_config, to_yaml
from asr.errors import ConfigError
from asr.model import CellType
from asr.tokenizer import TokenizerKind

REQUIRED = ["data.train_manifest=t.jsonl", "data.dev_manifest=d.jsonl"]


def test_default_config_composes_from_the_groups():
    cfg = load_train_config(REQUIRED)
    assert cfg.model.cell is CellType.lstm and cfg.model.bidirectional
    assert cfg.features.n_mels == 80 and cfg.features.hop_ms == 10.0 and cfg.features.win_ms == 25.0
    assert cfg.tokenizer.kind is TokenizerKind.char
    assert "hidden_size" in to_yaml(cfg)


def test_overrides_and_group_choices():
    cfg = load_train_config(REQUIRED + ["model=ds2_5x1024", "tokenizer=bpe", "model.cell=gru", "optim=sgd"])
    assert (cfg.model.num_layers, cfg.model.hidden_size, cfg.model.cell) == (5, 1024, CellType.gru)
    assert cfg.tokenizer.kind is TokenizerKind.bpe and cfg.optim.name.value == "sgd"


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.hiden=3", "model.hiden: Key 'hiden' not in 'ModelConfig'"),
        ("+model.hiden=3", "model.hiden: unknown key"),
        ("model.hidden_size=abc", "model.hidden_size: Value 'abc'"),
        ("model.cell=lsmt", "model.cell: Invalid value 'lsmt', expected one of [lstm, gru, rnn]"),
        ("model.hidden_size=0", "model.hidden_size=0: must be > 0"),
        ("optim.lr=-0.1", "optim.lr=-0.1: must be a positive number"),
        ("model.dropout=1.5", "model.dropout=1.5"),
        ("data.max_frames_per_batch=100", "data.max_frames_per_batch=100: smaller than one utterance"),
        ("model=nosuch", "Could not find 'model/nosuch' (available in 'model': bilstm_small, ds2_5x1024)"),
        ("decode.beam_size=0", "decode.beam_size=0: must be at least 1"),
        ("data.num_workers=-2", "data.num_workers=-2: must be >= 0, or -1 (auto)"),
        ("data.audio_cache_mb=-1", "data.audio_cache_mb=-1.0: must be >= 0 (0: no cache)"),
        ("decode.method=fast", "decode.method: Invalid value 'fast', expected one of [greedy, beam]"),
        ("decode.lm=/nonexistent/lm.arpa", "decode.lm=/nonexistent/lm.arpa: file not found"),
    ],
)
def test_bad_config_values_name_the_field(override, message):
    with pytest.raises(ConfigError) as err:
        load_train_config(REQUIRED + [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_manifest_is_named():
    with pytest.raises(ConfigError, match="data.train_manifest: .*missing mandatory value"):
        load_train_config([])


def test_unknown_config_name():
    with pytest.raises(ConfigError, match="config 'nope' not found"):
        load_train_config(REQUIRED, config_name="nope")


GROUP_SCHEMAS = {"features": "asr.features.FeatureConfig", "augment": "asr.augment.AugmentConfig",
                 "tokenizer": "asr.tokenizer.TokenizerConfig", "model": "asr.model.ModelConfig",
                 "optim": "asr.config.OptimConfig", "data": "asr.config.DataConfig",
                 "trainer": "asr.config.TrainerConfig", "decode": "asr.decoding.DecodingOptions"}


def _schema(group: str):
    import importlib

    module, name = GROUP_SCHEMAS[group].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("path", sorted(CONF_DIR.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_group_states_only_fields_of_its_dataclass_that_differ_from_the_default(path):
    """Defaults live in the dataclasses: a group file that restates one (or names a field the
    dataclass lacks) would let the two drift apart."""
    import dataclasses

    from omegaconf import OmegaConf

    from asr.checkpoint import config_to_dict

    schema = _schema(path.parent.name)
    defaults = config_to_dict(schema(**{f.name: "x" for f in dataclasses.fields(schema)
                                        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}))
    stated = OmegaConf.to_container(OmegaConf.load(path)) or {}
    for key, value in stated.items():
        assert key in defaults, f"{path}: {key} is not a field of {schema.__name__}"
        assert value != defaults[key], f"{path}: {key}={value!r} restates the {schema.__name__} default"


def test_the_default_config_is_the_dataclass_defaults():
    from asr.config import DataConfig, TrainConfig

    composed = load_train_config(["data.train_manifest=t.jsonl", "data.dev_manifest=d.jsonl"])
    assert composed == TrainConfig(data=DataConfig(train_manifest="t.jsonl", dev_manifest="d.jsonl"))
