"""DINO-style self-distillation (Caron et al. 2021; DINOv2's KoLeo and iBOT terms optional) as a LightningModule.

Student and teacher share an architecture (any timm backbone, any number of input channels) topped by a DINO
projection head. The student sees all multi-crop views, the teacher (an exponential moving average of the
student) only the global ones; the loss is the cross-entropy between the teacher's centred, sharpened
distribution and the student's, over every (teacher view, other student view) pair.

With ``ibot_weight > 0`` (ViT backbones: the term needs patch tokens) the student also sees its global views with
some patches replaced by a learnt mask token and must match, at those patches, the teacher's centred, sharpened
distribution over the same prototypes computed from the unmasked view (iBOT, Zhou et al. 2022, as in DINOv2).

The module takes float batches ``(B, C, H, W)`` in [0, 1] (a dataset may also yield ``(x, anything)`` pairs);
augmentation and normalisation happen inside, on the batch, with a generator seeded from ``seed``.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F

from .augment import MultiCrop, MultiCropConfig

log = logging.getLogger(__name__)


def build_backbone(name: str, in_chans: int = 3, pretrained: bool = False, img_size: int | None = None,
                   **kwargs) -> nn.Module:
    """A timm model without classifier: ``backbone(x)`` -> (B, num_features) pooled features."""
    import timm

    extra = dict(kwargs)
    if img_size is not None and _is_vit(name):
        extra["img_size"] = img_size
    return timm.create_model(name, pretrained=pretrained, num_classes=0, in_chans=in_chans, **extra)


def _is_vit(name: str) -> bool:
    return any(t in name for t in ("vit", "deit", "eva"))


def vit_tokens(vit: nn.Module, x: torch.Tensor, mask: torch.Tensor | None = None,
               mask_token: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled features (B, D), patch tokens (B, N, D)) of a timm VisionTransformer, the patches where ``mask``
    (B, N) is True replaced by ``mask_token`` before the position embedding (iBOT's masked image modelling)."""
    t = vit.patch_embed(x)
    if mask is not None:
        flat = t.reshape(t.shape[0], -1, t.shape[-1])  # NHWC output when the model takes dynamic image sizes
        flat = torch.where(mask.unsqueeze(-1), mask_token.to(flat.dtype).expand_as(flat), flat)
        t = flat.reshape(t.shape)
    t = vit.norm(vit.blocks(vit.norm_pre(vit.patch_drop(vit._pos_embed(t)))))
    return vit.forward_head(t, pre_logits=True), t[:, vit.num_prefix_tokens:]


def random_patch_masks(n: int, n_patches: int, ratio: tuple[float, float], prob: float,
                       generator: torch.Generator, device=None) -> torch.Tensor:
    """(n, n_patches) bool: each image is masked with probability ``prob``, then a share drawn uniformly from
    ``ratio`` of its patches (at least one), chosen at random. DINOv2 masks blocks; random patches are the
    simpler choice for the few patches of small crops."""
    g = dict(generator=generator, device=device)
    masked = torch.rand(n, **g) < prob
    share = ratio[0] + (ratio[1] - ratio[0]) * torch.rand(n, **g)
    k = torch.where(masked, (share * n_patches).round().clamp(min=1), torch.zeros_like(share))
    rank = torch.rand(n, n_patches, **g).argsort(dim=1).argsort(dim=1)  # a random permutation per row
    return rank < k.unsqueeze(1)


class DINOHead(nn.Module):
    """MLP -> L2-normalised bottleneck -> weight-normalised linear layer to ``out_dim`` prototypes."""

    def __init__(self, in_dim: int, out_dim: int = 1024, hidden_dim: int = 512, bottleneck_dim: int = 128,
                 n_layers: int = 3):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (n_layers - 1)
        layers = []
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b), nn.GELU()]
        layers.append(nn.Linear(dims[-1], bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.last = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last.parametrizations.weight.original0.data.fill_(1.0)
        self.last.parametrizations.weight.original0.requires_grad = False  # DINO: fixed norm of the prototypes
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_dim) -> (B, out_dim)
        return self.last(F.normalize(self.mlp(x), dim=-1))


class DINOLoss(nn.Module):
    """Cross-entropy between the teacher's centred, sharpened output and the student's, with an EMA centre."""

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_out: list[torch.Tensor], teacher_out: list[torch.Tensor],
                teacher_temp: float) -> torch.Tensor:
        """student_out: n_views x (B, K) logits; teacher_out: n_global x (B, K) logits."""
        t_probs = [F.softmax((t - self.center) / teacher_temp, dim=-1) for t in teacher_out]
        s_logp = [F.log_softmax(s / self.student_temp, dim=-1) for s in student_out]
        total, n = 0.0, 0
        for i, tp in enumerate(t_probs):
            for j, sl in enumerate(s_logp):
                if i == j:
                    continue  # the same view seen by both
                total = total + (-tp * sl).sum(dim=-1).mean()
                n += 1
        self.update_center(torch.cat(teacher_out))
        return total / n

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        batch_center = teacher_logits.mean(dim=0, keepdim=True)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(batch_center)
            batch_center /= torch.distributed.get_world_size()
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy regulariser (DINOv2): -mean log distance to the nearest other sample.
    x: (B, D) features (normalised inside)."""
    x = F.normalize(x, dim=-1)
    dots = x @ x.T
    dots.fill_diagonal_(-2.0)
    nn_dist = torch.sqrt((2 - 2 * dots.max(dim=1).values).clamp(min=0))
    return -torch.log(nn_dist + eps).mean()


def cosine_schedule(step: int, total: int, start: float, end: float, warmup: int = 0,
                    warmup_start: float = 0.0) -> float:
    """Linear warm-up from ``warmup_start`` to ``start`` over ``warmup`` steps, then cosine from start to end."""
    if step < warmup:
        return warmup_start + (start - warmup_start) * step / max(warmup, 1)
    t = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * t))


@dataclass
class DINOConfig:
    """Everything :class:`DINO` needs; the Hydra ``model=`` group fills it (plus ``trainer.max_steps``)."""

    backbone: str = "test_resnet"  # any timm model name
    in_chans: int = 3
    img_size: int | None = None  # passed to ViTs (positional embeddings); CNNs take any size
    pretrained: bool = False  # timm hub weights (online only)
    mean: list = field(default_factory=lambda: [0.5, 0.5, 0.5])  # per-channel normalisation
    std: list = field(default_factory=lambda: [0.25, 0.25, 0.25])
    out_dim: int = 1024  # prototypes K; DINO: 65536 at ImageNet scale
    hidden_dim: int = 512
    bottleneck_dim: int = 128
    head_layers: int = 3
    lr: float = 1e-3  # peak learning rate at batch 256 (scaled linearly with the batch size)
    min_lr: float = 1e-5
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    warmup_steps: int = 50
    max_steps: int = 1000
    momentum_teacher: float = 0.99  # EMA of the teacher, cosine-ramped to 1; DINO: 0.996 for long runs
    student_temp: float = 0.1
    teacher_temp: float = 0.05
    warmup_teacher_temp: float = 0.04
    teacher_temp_warmup_steps: int = 100
    center_momentum: float = 0.9
    koleo_weight: float = 0.0  # DINOv2: 0.1
    ibot_weight: float = 0.0  # masked-patch term (ViT backbones only); DINOv2: 1.0
    ibot_mask_ratio: tuple = (0.1, 0.5)  # share of a masked image's patches (DINOv2: 0.1-0.5)
    ibot_mask_prob: float = 0.5  # share of global views that are masked at all (DINOv2: 0.5)
    clip_grad: float = 3.0
    freeze_last_layer_steps: int = 0  # DINO freezes the prototypes for the first epoch
    batch_size: int = 128
    seed: int = 0  # seeds the augmentation generator
    augment: MultiCropConfig = field(default_factory=MultiCropConfig)


class DINO(pl.LightningModule):
    """Self-distillation with no labels. ``self.teacher_backbone`` is the model to evaluate."""

    def __init__(self, cfg: DINOConfig):
        super().__init__()
        self.cfg = cfg
        self.student_backbone = build_backbone(cfg.backbone, cfg.in_chans, cfg.pretrained, cfg.img_size)
        dim = self.student_backbone.num_features
        self.student_head = DINOHead(dim, cfg.out_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.head_layers)
        self.teacher_backbone = copy.deepcopy(self.student_backbone)
        self.teacher_head = copy.deepcopy(self.student_head)
        for p in list(self.teacher_backbone.parameters()) + list(self.teacher_head.parameters()):
            p.requires_grad = False
        self.loss_fn = DINOLoss(cfg.out_dim, cfg.student_temp, cfg.center_momentum)
        if cfg.ibot_weight > 0:
            if not _is_vit(cfg.backbone) or not hasattr(self.student_backbone, "patch_embed"):
                raise ValueError(f"model.ibot_weight > 0 needs a ViT backbone (patch tokens); {cfg.backbone!r} has "
                                 "none: set model.ibot_weight=0")
            lo, hi = cfg.ibot_mask_ratio
            if not (0 < lo <= hi < 1 and 0 < cfg.ibot_mask_prob <= 1):
                raise ValueError(f"model.ibot_mask_ratio must satisfy 0 < min <= max < 1 and model.ibot_mask_prob "
                                 f"lie in (0, 1]; got {list(cfg.ibot_mask_ratio)} and {cfg.ibot_mask_prob}")
            self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
            nn.init.trunc_normal_(self.mask_token, std=0.02)
            # the patch distribution has its own centre (DINOv2 keeps separate centres for the two terms)
            self.ibot_loss_fn = DINOLoss(cfg.out_dim, cfg.student_temp, cfg.center_momentum)
        self.augment = MultiCrop(cfg.augment)
        self.register_buffer("mean", torch.tensor(cfg.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.std, dtype=torch.float32).view(1, -1, 1, 1))
        self._gen: torch.Generator | None = None

    @property
    def num_features(self) -> int:
        return self.student_backbone.num_features

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher backbone features of [0, 1] inputs: (B, C, H, W) -> (B, num_features)."""
        return self.teacher_backbone(self.normalize(x))

    def _generator(self) -> torch.Generator:
        if self._gen is None:
            rank = self.global_rank if self._trainer is not None else 0
            self._gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed * 1000 + rank)
        return self._gen

    def _student(self, views: list[torch.Tensor], mask: torch.Tensor | None = None):
        """Student logits per view, one backbone pass per crop resolution; also the global views' features and,
        with an iBOT ``mask`` over the global views' patches, their tokens at the masked patches (else None)."""
        out, feats, masked = [], [], None
        n_global = self.cfg.augment.n_global
        for i, group in enumerate((views[:n_global], views[n_global:])):
            if not group:
                continue
            x = self.normalize(torch.cat(group))
            if i == 0 and mask is not None:
                f, tokens = vit_tokens(self.student_backbone, x, mask, self.mask_token)
                masked = tokens[mask]
            else:
                f = self.student_backbone(x)
            feats.append(f)
            out.extend(self.student_head(f).chunk(len(group)))
        return out, feats[0], masked

    def _masks(self, g: torch.Tensor) -> torch.Tensor:
        """iBOT masks over the patches of the (normalised, stacked) global views ``g``."""
        ph, pw = self.student_backbone.patch_embed.patch_size
        return random_patch_masks(g.shape[0], (g.shape[2] // ph) * (g.shape[3] // pw),
                                  tuple(self.cfg.ibot_mask_ratio), self.cfg.ibot_mask_prob, self._generator(),
                                  g.device)

    def _ibot_loss(self, mask: torch.Tensor, s_patches: torch.Tensor, t_patches: torch.Tensor,
                   t_temp: float) -> torch.Tensor:
        """Cross-entropy at the masked patches, each image's patches weighted to sum to one, over all images."""
        if not mask.any():  # no view masked this step (possible when ibot_mask_prob < 1)
            return s_patches.sum() * 0.0
        s_logp = F.log_softmax(self.student_head(s_patches) / self.cfg.student_temp, dim=-1)
        with torch.no_grad():
            t_logits = self.teacher_head(t_patches)
            tp = F.softmax((t_logits - self.ibot_loss_fn.center) / t_temp, dim=-1)
            self.ibot_loss_fn.update_center(t_logits)
        weight = (1.0 / mask.sum(1).clamp(min=1)).unsqueeze(1).expand_as(mask)[mask]
        return (-(tp * s_logp).sum(-1) * weight).sum() / mask.shape[0]

    def training_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        cfg = self.cfg
        step = self.global_step
        ibot = cfg.ibot_weight > 0
        with torch.no_grad():
            views = self.augment(x.float(), self._generator())
            g = self.normalize(torch.cat(views[:cfg.augment.n_global]))
            if ibot:
                t_pooled, t_tokens = vit_tokens(self.teacher_backbone, g)
            else:
                t_pooled = self.teacher_backbone(g)
            t_out = list(self.teacher_head(t_pooled).chunk(cfg.augment.n_global))
        mask = self._masks(g) if ibot else None
        s_out, g_feats, s_patches = self._student(views, mask)
        frac = min(step / max(cfg.teacher_temp_warmup_steps, 1), 1.0)  # DINO: linear teacher-temperature warm-up
        t_temp = cfg.warmup_teacher_temp + (cfg.teacher_temp - cfg.warmup_teacher_temp) * frac
        loss = self.loss_fn(s_out, t_out, t_temp)
        logs = {"train/dino_loss": loss.detach()}
        if ibot:
            ib = self._ibot_loss(mask, s_patches, t_tokens[mask], t_temp)
            loss = loss + cfg.ibot_weight * ib
            logs["train/ibot"] = ib.detach()
            logs["train/masked_share"] = mask.float().mean()
        if cfg.koleo_weight > 0:
            kl = sum(koleo_loss(f) for f in g_feats.chunk(cfg.augment.n_global)) / cfg.augment.n_global
            loss = loss + cfg.koleo_weight * kl
            logs["train/koleo"] = kl.detach()
        with torch.no_grad():  # collapse monitors: entropy of the mean teacher distribution, per-sample entropy
            p = F.softmax((torch.cat(t_out) - self.loss_fn.center) / t_temp, dim=-1)
            logs["train/teacher_entropy"] = -(p * torch.log(p + 1e-12)).sum(-1).mean()
            pm = p.mean(0)
            logs["train/teacher_mean_entropy"] = -(pm * torch.log(pm + 1e-12)).sum()
        logs["train/loss"] = loss.detach()
        self.log_dict(logs, prog_bar=False, on_step=True, on_epoch=False, batch_size=x.shape[0])
        self.log("loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=x.shape[0])
        return loss

    def on_before_optimizer_step(self, optimizer):
        step = self.global_step
        wd = cosine_schedule(step, self.cfg.max_steps, self.cfg.weight_decay, self.cfg.weight_decay_end)
        for group in optimizer.param_groups:
            if group.get("apply_wd", True):
                group["weight_decay"] = wd
        if self.cfg.clip_grad:
            torch.nn.utils.clip_grad_norm_(
                [p for p in self.parameters() if p.requires_grad and p.grad is not None], self.cfg.clip_grad)
        if step < self.cfg.freeze_last_layer_steps:
            for p in self.student_head.last.parameters():
                p.grad = None

    def on_train_batch_end(self, outputs, batch, batch_idx):
        m = cosine_schedule(self.global_step, self.cfg.max_steps, self.cfg.momentum_teacher, 1.0)
        with torch.no_grad():
            for s_mod, t_mod in ((self.student_backbone, self.teacher_backbone),
                                 (self.student_head, self.teacher_head)):
                for ps, pt in zip(s_mod.parameters(), t_mod.parameters()):
                    pt.mul_(m).add_(ps.detach(), alpha=1 - m)
                for bs, bt in zip(s_mod.buffers(), t_mod.buffers()):
                    bt.copy_(bs)

    def configure_optimizers(self):
        decay, no_decay = [], []
        extra = [("mask_token", self.mask_token)] if self.cfg.ibot_weight > 0 else []
        for name, p in list(self.student_backbone.named_parameters()) + [
                ("head." + n, p) for n, p in self.student_head.named_parameters()] + extra:
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or name.endswith(".bias") or name == "mask_token" else decay).append(p)
        world = self.trainer.world_size if self._trainer is not None else 1
        lr = self.cfg.lr * self.cfg.batch_size * world / 256
        opt = torch.optim.AdamW([{"params": decay, "apply_wd": True},
                                 {"params": no_decay, "weight_decay": 0.0, "apply_wd": False}], lr=lr)
        cfg = self.cfg
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: cosine_schedule(s, cfg.max_steps, 1.0, cfg.min_lr / cfg.lr, cfg.warmup_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
