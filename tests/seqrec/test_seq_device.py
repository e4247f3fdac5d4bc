"""Every sequential method runs device-agnostic: run on the CPU with ``meta`` as the default device, any tensor a
training step, an adaptation or a scoring creates without naming a device lands on ``meta`` and the next
operation with the CPU model fails. So a run that completes there, with the numbers of a plain CPU run, makes
no tensor outside its model's device: what ``--device cuda`` needs (no GPU is used or needed here)."""

from __future__ import annotations

import pytest
import torch

from metarec import registry
from metarec.seqrec.protocol import SeqProtocolConfig, make_seq_protocol
from tests.seqrec.test_mml import char_encoder

MML = ("mml", "mml-nogen", "mml-nofusion", "mml-main", "mml-id", "ptft-mml")
TINY_MML = {"model.net.dim": 8, "model.net.fusion_hidden": 4, "train.epochs": 1, "train.meta_batch": 64,
            "model.inner.steps": 1}


@pytest.fixture(scope="module")
def seqdata():
    from tests.conftest import build_dataset, synthetic_frames

    inter, users, items = synthetic_frames()
    return make_seq_protocol(build_dataset("tiny", inter, users, items),
                             SeqProtocolConfig(n_support=5, n_query=3, max_len=20, valid_frac=0.2))


def _run(name: str, data, over: dict):
    from metarec.seqrec.command import run_method
    from metarec.seqrec.mml import run_variant

    if name in MML:
        return run_variant(name, data, 0, None, False, {**TINY_MML, **over}, text_encoder=char_encoder,
                           text_name="c", device=torch.device("cpu"))
    small = {"sml": {"model.hat_steps": 2, "model.transfer_steps": 2, "model.periods": 4, "model.pretrain_periods": 2},
             "ptft": {"model.finetune.lr_grid": "[0.01]"}}.get(name, {})
    return run_method(name, data, 0, None, False, {"train.epochs": 1, **small, **over}, {}, device="cpu")


CASES = [(n, {}) for n in registry.names("sequential")] + [
    ("mml-main", {"model.init": "pooled", "model.meta_query": 3, "pretrain.epochs": 1}),
    ("mml", {"model.fusion_select": "valid", "model.inner.first_order": False}),
    ("cbml", {"model.meta_query": 3}),
]


@pytest.mark.parametrize(("name", "over"), CASES, ids=[f"{n}{'+' if o else ''}{i}" for i, (n, o) in enumerate(CASES)])
def test_a_run_makes_no_tensor_off_its_models_device(seqdata, name, over):
    assert set(MML) <= set(registry.names("sequential"))
    plain = _run(name, seqdata, over)
    with torch.device("meta"):  # a factory call without a device now makes a meta tensor
        strict = _run(name, seqdata, over)
    assert strict["test"] == plain["test"] and strict["valid"] == plain["valid"]
