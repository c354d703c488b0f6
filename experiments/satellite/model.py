"""Models of the satellite study: DINO pretraining on multi-band tiles (the shared :mod:`experiments.ssl.dino`
module, ``in_chans`` = number of bands) and a DPT-like dense height decoder trained on the frozen backbone.

Tolan et al. (2023) put a DPT decoder on a frozen DINOv2-style backbone and regress canopy height per pixel; we
keep that shape at CPU scale: multi-scale feature maps of the frozen teacher backbone (timm
``forward_intermediates``: any CNN stage or ViT block), per-scale 1x1 "reassemble" projections, coarse-to-fine
fusion with residual conv units, upsampling to the tile resolution (where the input bands may join through a
skip connection), a softplus output in metres.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import DictConfig

from experiments.ssl.dino import DINO
from experiments.ssl.pretrain import ArrayItems, pretrain as ssl_pretrain

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ pretraining
def pretrain(images: np.ndarray, model: DictConfig, trainer: DictConfig, seed: int, out: Path, name: str,
             progress: bool = False, max_steps: int | None = None) -> DINO:
    """DINO on ``images`` (n, C, t, t) for exactly ``max_steps`` (default ``trainer.max_steps``) steps of
    ``trainer.batch_size`` tiles (:func:`experiments.ssl.pretrain.pretrain`: the same budget for every variant)."""
    return ssl_pretrain(ArrayItems(images, dtype=np.float32), model, trainer, seed, out, name,
                        in_chans=images.shape[1], progress=progress, max_steps=max_steps, unit="tiles")


def _batches(images: np.ndarray, batch_size: int):
    for s in range(0, len(images), batch_size):
        yield torch.from_numpy(np.asarray(images[s:s + batch_size], dtype=np.float32))


@torch.no_grad()
def pooled_features(module: DINO, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Global (pooled) teacher features: (n, C, t, t) -> (n, D) float32 (the curation embeddings)."""
    module.eval()
    return torch.cat([module.embed(b) for b in _batches(images, batch_size)]).numpy().astype(np.float32)


@torch.no_grad()
def feature_maps(module: DINO, images: np.ndarray, indices: list[int], batch_size: int = 256) -> list[torch.Tensor]:
    """Frozen multi-scale teacher feature maps: list over ``indices`` of (n, C_i, H_i, W_i) float32."""
    module.eval()
    bb = module.teacher_backbone
    outs: list[list[torch.Tensor]] = []
    for b in _batches(images, batch_size):
        maps = bb.forward_intermediates(module.normalize(b), indices=list(indices), intermediates_only=True)
        outs.append([m.float() for m in maps])
    return [torch.cat([o[i] for o in outs]) for i in range(len(indices))]


# ---------------------------------------------------------------------------------------------- dense head
class ResidualConvUnit(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class DenseHeightHead(nn.Module):
    """DPT-like decoder: feature maps (fine to coarse) -> (B, out, out) canopy height in metres (>= 0).

    image_channels: > 0 feeds the normalised input bands to the output block at full resolution (a skip
    connection). The finest backbone map of a 32 px tile is 8 x 8, so without it every pixel's own colour reaches
    the output only through stride-4 features, and the head fell below boosted trees on a pixel's colour alone.
    activation: of the output block. With "relu" its narrow units could all die, leaving a constant (zero-height)
    output that no later step recovers from (seen as R² of about -0.4 on one in several fits); "gelu" keeps a
    gradient everywhere."""

    def __init__(self, in_channels: list[int], out_size: int, dim: int = 64, height_scale: float = 10.0,
                 activation: str = "gelu", image_channels: int = 0):
        super().__init__()
        if activation not in ("relu", "gelu"):
            from sslcurate import CurationInputError
            raise CurationInputError(f"head.activation must be 'relu' or 'gelu', not {activation!r}")
        self.out_size = out_size
        self.height_scale = height_scale
        self.image_channels = image_channels
        self.reassemble = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in in_channels)
        self.fusion = nn.ModuleList(ResidualConvUnit(dim) for _ in in_channels)
        act = nn.GELU if activation == "gelu" else nn.ReLU
        if image_channels:  # per-pixel colour meets the upsampled context: one more layer to combine them
            self.out = nn.Sequential(nn.Conv2d(dim + image_channels, dim // 2, 3, padding=1), act(),
                                     nn.Conv2d(dim // 2, dim // 4, 3, padding=1), act(), nn.Conv2d(dim // 4, 1, 1))
        else:
            self.out = nn.Sequential(nn.Conv2d(dim, dim // 4, 3, padding=1), act(), nn.Conv2d(dim // 4, 1, 1))

    def forward(self, feats: list[torch.Tensor], image: torch.Tensor | None = None) -> torch.Tensor:
        y = None
        for f, proj, fuse in reversed(list(zip(feats, self.reassemble, self.fusion))):  # coarse to fine
            f = proj(f)
            y = f if y is None else f + F.interpolate(y, size=f.shape[-2:], mode="bilinear", align_corners=False)
            y = fuse(y)
        size = (self.out_size, self.out_size)
        if self.image_channels:
            if image is None or image.shape[1] != self.image_channels:
                raise ValueError(f"this head takes the {self.image_channels}-band image beside the features")
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            y = self.out(torch.cat([y, F.interpolate(image, size=size, mode="bilinear", align_corners=False)], 1))
        else:
            # DPT-style: the output convolution runs at twice the finest fused scale, the last step is bilinear
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
            y = F.interpolate(self.out(y), size=size, mode="bilinear", align_corners=False)
        return F.softplus(y).squeeze(1) * self.height_scale


class FeatureNorm:
    """Per-channel centring and one scale per feature level (robust for small labelled sets and 1 x 1 maps),
    fitted on the labelled set's feature maps."""

    def __init__(self, feats: list[torch.Tensor]):
        self.stats = []
        for f in feats:
            mean = f.mean(dim=(0, 2, 3), keepdim=True)
            self.stats.append((mean, (f - mean).std() + 1e-5))

    def __call__(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [(f - m) / s for f, (m, s) in zip(feats, self.stats)]


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 symmetries of the square (k < 4: rotation by k x 90 degrees; k >= 4: then a mirror) on
    the last two axes."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return x.flip(-1) if k >= 4 else x


@dataclass
class HeadInputs:
    """What the head reads for a set of tiles, under V views (the 8 dihedral symmetries, or only the identity).

    feats: per backbone level (V, n, C, h, w) frozen teacher maps; image: (V, n, bands, t, t) normalised input
    (None without the skip); chm: (V, n, t, t) metres, NaN unknown (None for unlabelled tiles)."""

    feats: list[torch.Tensor]
    image: torch.Tensor | None
    chm: torch.Tensor | None

    def view(self, v: torch.Tensor, idx: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        return [f[v, idx] for f in self.feats], None if self.image is None else self.image[v, idx]


@torch.no_grad()
def head_inputs(module: DINO, images: np.ndarray, indices: list[int], chm: np.ndarray | None = None,
                symmetries: bool = False, image_skip: bool = False) -> HeadInputs:
    """Frozen features (and the normalised bands and heights) of ``images`` (n, C, t, t), under all 8 dihedral
    views when ``symmetries``: overhead imagery has no "up", and the sun of an evaluation region may shine from
    another side than the labelled region's, so a head that only ever saw one shadow direction reads height from
    the wrong side of the crown (without the symmetries every pretrained variant scored far below a pixel's colour
    alone on the one southern-hemisphere region of the generated arm)."""
    x = torch.from_numpy(np.asarray(images, np.float32))
    views = range(8) if symmetries else range(1)
    maps = [feature_maps(module, dihedral(x, k).contiguous().numpy(), indices) for k in views]
    feats = [torch.stack(level) for level in zip(*maps)]
    image = torch.stack([module.normalize(dihedral(x, k)) for k in views]) if image_skip else None
    y = None if chm is None else torch.stack([dihedral(torch.from_numpy(np.asarray(chm, np.float32)), k)
                                              for k in views])
    return HeadInputs(feats, image, y)


class FittedHeads:
    """``n_fits`` heads trained on the same inputs with different seeds; their predictions are averaged, which
    removes much of the fit-to-fit noise of a head trained on a small labelled set."""

    def __init__(self, heads: list[DenseHeightHead], norm: "FeatureNorm"):
        self.heads, self.norm = heads, norm

    @torch.no_grad()
    def predict(self, inputs: HeadInputs, batch_size: int = 256) -> np.ndarray:
        """(n, t, t) float32 heights (m) of the identity view of ``inputs``."""
        n = inputs.feats[0].shape[1]
        out = torch.zeros(n, self.heads[0].out_size, self.heads[0].out_size)
        for head in self.heads:
            head.eval()
            for s in range(0, n, batch_size):
                idx = torch.arange(s, min(s + batch_size, n))
                feats, image = inputs.view(torch.zeros_like(idx), idx)
                out[s:s + len(idx)] += head(self.norm(feats), image)
        return (out / len(self.heads)).numpy().astype(np.float32)


def train_head(lab: HeadInputs, head_cfg: DictConfig, seed: int, tile: int) -> tuple[FittedHeads, float]:
    """Fit ``head_cfg.n_fits`` heads (seeds derived from ``seed``) on the labelled inputs and average them.
    Returns (the heads, the averaged prediction's loss on the labelled tiles: no evaluation data is read)."""
    if lab.chm is None:
        raise ValueError("train_head needs the labelled heights (HeadInputs.chm)")
    norm = FeatureNorm([f[0] for f in lab.feats])
    heads = [_fit_head(lab, norm, head_cfg, seed * 1000 + i, tile) for i in range(int(head_cfg.get("n_fits", 1)))]
    fitted = FittedHeads(heads, norm)
    pred = torch.from_numpy(fitted.predict(lab))
    y, valid = lab.chm[0], torch.isfinite(lab.chm[0])
    scale = heads[0].height_scale
    loss = float(F.smooth_l1_loss(pred[valid] / scale, y[valid] / scale, beta=1.0 / scale))
    return fitted, loss


def _fit_head(lab: HeadInputs, norm: "FeatureNorm", head_cfg: DictConfig, seed: int, tile: int) -> DenseHeightHead:
    """One dense head on the frozen features of the labelled tiles, each step a batch of random (view, tile)
    pairs. Masked Huber loss (delta 1 m after scaling) with AdamW and a cosine schedule."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x = HeadInputs(norm(lab.feats), lab.image, lab.chm)
    valid = torch.isfinite(lab.chm)
    y = torch.nan_to_num(lab.chm, nan=0.0)
    bands = 0 if lab.image is None else lab.image.shape[2]
    head = DenseHeightHead([f.shape[2] for f in x.feats], tile, int(head_cfg.dim), float(head_cfg.height_scale),
                           str(head_cfg.get("activation", "gelu")), image_channels=bands)
    opt = torch.optim.AdamW(head.parameters(), lr=float(head_cfg.lr), weight_decay=float(head_cfg.weight_decay))
    steps, bs = int(head_cfg.steps), int(head_cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    n_views, n = y.shape[:2]
    for _ in range(steps):
        idx = torch.randint(0, n, (bs,), generator=g)
        v = torch.randint(0, n_views, (bs,), generator=g)
        pred = head(*x.view(v, idx))
        m = valid[v, idx]
        loss = F.smooth_l1_loss(pred[m] / head.height_scale, y[v, idx][m] / head.height_scale,
                                beta=1.0 / head.height_scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return head.eval()


def pixel_baseline(images: np.ndarray, chm: np.ndarray, eval_images: np.ndarray, seed: int,
                   n_pixels: int = 60_000) -> np.ndarray:
    """Per-pixel reference: gradient-boosted trees from a pixel's band values (no neighbourhood) to its height,
    fitted on ``n_pixels`` random labelled pixels. images: (n, C, t, t); chm: (n, t, t) m (NaN unknown);
    eval_images: (m, C, t, t) -> (m, t, t) float32 predicted heights (m, >= 0)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    c = images.shape[1]
    x = np.asarray(images, np.float32).transpose(0, 2, 3, 1).reshape(-1, c)
    y = chm.reshape(-1)
    ok = np.nonzero(np.isfinite(y))[0]
    rng = np.random.default_rng([seed, 5])
    pick = rng.choice(ok, size=min(n_pixels, ok.size), replace=False)
    gbm = HistGradientBoostingRegressor(max_iter=100, random_state=seed).fit(x[pick], y[pick])
    xe = np.asarray(eval_images, np.float32).transpose(0, 2, 3, 1).reshape(-1, c)
    return np.maximum(gbm.predict(xe), 0).reshape(len(eval_images), *eval_images.shape[2:]).astype(np.float32)
