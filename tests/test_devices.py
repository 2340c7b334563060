import pytest
import torch

from asr.devices import resolve_device, resolve_precision
from asr.errors import ConfigError


def test_precision_refuses_what_the_device_cannot_run():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == torch.float32 and resolve_precision("fp32", cpu) == torch.float32
    with pytest.raises(ConfigError, match="trainer.precision='fp16': needs a CUDA device"):
        resolve_precision("fp16", cpu)
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert resolve_precision("bf16", cpu) == torch.bfloat16
    else:  # this development machine (Zen 3): oneDNN could not build its LSTM
        with pytest.raises(ConfigError, match="trainer.precision='bf16': this CPU has no bfloat16 instructions"):
            resolve_precision("bf16", cpu)


def test_a_numbered_gpu_is_refused_under_torchrun():
    with pytest.raises(ConfigError, match="trainer.device='cuda:1': with several processes each takes the GPU of its LOCAL_RANK"):
        resolve_device("cuda:1", local_rank=0, world_size=2)
    assert resolve_device("cpu", local_rank=1, world_size=2).type == "cpu"


def test_an_impossible_device_is_one_error_naming_the_field():
    with pytest.raises(ConfigError, match="^device='gpu': not a device"):
        resolve_device("gpu", field="device")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="^device='cuda:7': CUDA is not available"):
            resolve_device("cuda:7", field="device")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
