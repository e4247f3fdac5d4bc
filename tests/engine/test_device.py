"""``--device``: the device names, the model's device, the batch moves of the outer loop."""

from __future__ import annotations

import pytest
import torch

from metarec.engine.device import module_device, resolve_device, to_device
from metarec.errors import MetarecError
from metarec.tasks import TaskBatch


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(None) == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu0", "tpu", "cuda:x", "meta"):
        with pytest.raises(MetarecError, match="choose cpu, cuda, cuda:N or auto"):
            resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message of a machine without CUDA")
def test_cuda_without_cuda_is_one_line():
    for name in ("cuda", "cuda:1"):
        with pytest.raises(MetarecError, match=r"^--device cuda(:1)?: .*; use --device cpu \(or auto\)$"):
            resolve_device(name)


def test_module_device_and_batch_moves():
    assert module_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert module_device(torch.nn.ReLU()) == torch.device("cpu")  # no tensors: the CPU
    m = torch.nn.Linear(2, 2).to("meta")
    assert module_device(m) == torch.device("meta")
    b = TaskBatch(**{k: torch.zeros(1, 2) for k in TaskBatch.__dataclass_fields__})
    assert to_device(b, torch.device("cpu")) is b  # no copy on the CPU
    moved = to_device(b, torch.device("meta"))
    assert all(v.device.type == "meta" for v in moved.__dict__.values())
    assert to_device(None, torch.device("meta")) is None and to_device([1], torch.device("meta")) == [1]


def test_rating_family_refuses_another_device_in_one_line(capsys):
    from metarec.cli import main

    assert main(["train", "--device", "cuda", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["metarec: error: --device cuda: only the sequential methods run on another device than the CPU "
                   "(--protocol sequential)"]
