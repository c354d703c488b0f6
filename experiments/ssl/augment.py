"""Multi-crop augmentation computed on whole batches with tensor ops (no per-image Python loop).

DINO's recipe: two large "global" crops and several small "local" crops of every image, each randomly resized,
flipped and photometrically jittered. All operations work for any channel count; the colour-specific ones
(saturation, grayscale, solarize) apply only to 3-channel input, so multi-band data (satellite) reuses the module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class MultiCropConfig:
    """Settings of :class:`MultiCrop`. Scales are fractions of the image area."""

    global_size: int = 32  # side of the global crops (pixels)
    local_size: int = 16  # side of the local crops
    n_global: int = 2  # DINO: 2 global crops; the teacher sees only these
    n_local: int = 4  # DINO: 6-10 local crops at ImageNet scale; fewer on CPU
    global_scale: tuple = (0.35, 1.0)  # DINO: (0.4, 1.0) for ViTs, (0.14, 1.0) for ResNets
    local_scale: tuple = (0.08, 0.35)  # DINO: (0.05, 0.4)
    ratio: tuple = (0.75, 1.3333)  # aspect-ratio range of the crops
    hflip: float = 0.5  # probability of a horizontal flip
    vflip: float = 0.0  # probability of a vertical flip (0 for photos; 0.5 suits overhead imagery)
    jitter_p: float = 0.8  # probability of brightness/contrast (+ saturation for RGB) jitter
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2  # RGB only
    grayscale_p: float = 0.2  # RGB only
    solarize_p: float = 0.2  # RGB only; applied to the second global crop, as in DINO/BYOL
    noise_std: float = 0.0  # additive Gaussian noise (in [0, 1] units), useful for multi-band data


class MultiCrop:
    """``views = MultiCrop(cfg)(x, generator)``: ``x`` (B, C, H, W) float in [0, 1] -> list of n_global + n_local
    tensors, globals ``(B, C, global_size, global_size)`` first, then locals ``(B, C, local_size, local_size)``.
    Outputs stay in [0, 1]; normalisation is the model's job."""

    def __init__(self, cfg: MultiCropConfig):
        self.cfg = cfg

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        c = self.cfg
        views = []
        for i in range(c.n_global):
            v = self.crop(x, c.global_size, c.global_scale, generator)
            views.append(self.photometric(v, generator, solarize=(i == 1)))
        for _ in range(c.n_local):
            v = self.crop(x, c.local_size, c.local_scale, generator)
            views.append(self.photometric(v, generator, solarize=False))
        return views

    def crop(self, x: torch.Tensor, size: int, scale, generator) -> torch.Tensor:
        """Random resized crop + flips of every image, one ``grid_sample`` for the batch. (B, C, size, size)."""
        b = x.shape[0]
        u = lambda: torch.rand(b, generator=generator, device=x.device)  # noqa: E731
        area = scale[0] + (scale[1] - scale[0]) * u()
        log_r = math.log(self.cfg.ratio[0]) + (math.log(self.cfg.ratio[1]) - math.log(self.cfg.ratio[0])) * u()
        r = torch.exp(log_r)
        w = torch.sqrt(area * r).clamp(max=1.0)  # crop width / image width
        h = torch.sqrt(area / r).clamp(max=1.0)
        cx = (1 - w) * (2 * u() - 1)  # centre in normalised [-1, 1] coordinates, crop inside the image
        cy = (1 - h) * (2 * u() - 1)
        fx = torch.where(u() < self.cfg.hflip, -1.0, 1.0)
        fy = torch.where(u() < self.cfg.vflip, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0], theta[:, 0, 2] = w * fx, cx
        theta[:, 1, 1], theta[:, 1, 2] = h * fy, cy
        grid = F.affine_grid(theta, [b, x.shape[1], size, size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def photometric(self, x: torch.Tensor, generator, solarize: bool) -> torch.Tensor:
        c = self.cfg
        b, ch = x.shape[:2]
        shape = (b, 1, 1, 1)
        u = lambda: torch.rand(shape, generator=generator, device=x.device)  # noqa: E731
        apply = (u() < c.jitter_p).to(x.dtype)
        bright = 1 + c.brightness * (2 * u() - 1) * apply
        x = x * bright
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        contrast = 1 + c.contrast * (2 * u() - 1) * apply
        x = (x - mean) * contrast + mean
        if ch == 3:
            gray = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
            sat = 1 + c.saturation * (2 * u() - 1) * apply
            x = gray + (x - gray) * sat
            to_gray = (u() < c.grayscale_p).to(x.dtype)
            gray = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
            x = to_gray * gray.expand_as(x) + (1 - to_gray) * x
        x = x.clamp(0, 1)
        if ch == 3 and solarize and c.solarize_p > 0:
            sol = (u() < c.solarize_p)
            x = torch.where(sol & (x >= 0.5), 1 - x, x)
        if c.noise_std > 0:
            x = x + c.noise_std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x
