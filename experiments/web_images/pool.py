"""A generated "web-like" image pool with known concepts, so balance and accuracy can be measured.

World: ``n_groups`` coarse groups (shape families: disk, square, triangle, ring, cross, star, stripes, checker,
dots, crescent, ...) x ``fine_per_group`` fine concepts (each with its own foreground/background colours and shape
parameter). Concept frequencies in the pool follow a Zipf law over a seeded random ranking of the concepts (head
concept >= 100x the tail), or a hierarchical one (rare groups, and rare concepts within each group). On top: clusters of near-duplicates of head-concept images (web re-uploads), and junk
(blank, noise, text-like images) that belongs to no concept. Each instance varies in position, scale, rotation,
colour, background gradient and noise. ``style="shifted"`` renders the same concepts as outline sketches on paper
(the analog of ImageNet-R / Sketch).

All rendering is vectorised over a batch; every random draw comes from a ``np.random.Generator`` argument.
Images are uint8 ``(n, S, S, 3)``; labels int64 (concept id, -1 for junk); kinds uint8 (0 clean, 1 near-duplicate,
2 junk).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

KIND_CLEAN, KIND_DUPLICATE, KIND_JUNK = 0, 1, 2
SHAPES = ("disk", "square", "triangle", "ring", "cross", "star", "stripes", "checker", "dots", "crescent",
          "pentagon", "bars", "spiral", "diamond", "blob", "grid")


@dataclass
class World:
    """The concept hierarchy and its pool frequencies. Arrays are indexed by concept id."""

    group: np.ndarray  # (C,) coarse group of each concept
    fg: np.ndarray  # (C, 3) foreground colour in [0, 1]
    bg: np.ndarray  # (C, 3) background colour
    param: np.ndarray  # (C,) shape parameter in [0, 1]
    freq: np.ndarray  # (C,) probability of each concept among the pool's concept images

    @property
    def n_concepts(self) -> int:
        return int(self.group.size)

    @property
    def n_groups(self) -> int:
        return int(self.group.max()) + 1

    def names(self) -> list[str]:
        return [f"{SHAPES[g % len(SHAPES)]}_{i % (self.n_concepts // self.n_groups)}"
                for i, g in enumerate(self.group)]

    def tail_concepts(self, fraction: float) -> np.ndarray:
        """The ``fraction`` least frequent concepts (ids)."""
        n = max(1, int(round(fraction * self.n_concepts)))
        return np.argsort(self.freq, kind="stable")[:n]


def make_world(n_groups: int = 10, fine_per_group: int = 10, zipf_exponent: float = 1.1,
               rng: np.random.Generator | None = None, group_zipf_exponent: float | None = None) -> World:
    """Concept prototypes and Zipf frequencies.

    ``group_zipf_exponent=None``: p_rank ~ rank^-zipf_exponent over one random ranking of all concepts (every
    coarse group then tends to hold some frequent concept). A number: a hierarchical long tail, as on the web, where
    whole coarse categories are rare: p(group) ~ rank^-group_zipf_exponent over a random ranking of the groups, and
    within each group p(fine | group) ~ rank^-zipf_exponent over a random ranking of its concepts."""
    if n_groups > len(SHAPES):
        raise ValueError(f"at most {len(SHAPES)} coarse groups, got {n_groups}")
    rng = rng or np.random.default_rng(0)
    c = n_groups * fine_per_group
    group = np.repeat(np.arange(n_groups), fine_per_group)
    # colours: hues spread around the wheel with a random offset per group, so fine concepts of one group differ
    fg, bg = np.zeros((c, 3)), np.zeros((c, 3))
    for g in range(n_groups):
        hues = (rng.uniform() + np.arange(fine_per_group) / fine_per_group + rng.uniform(-0.03, 0.03,
                                                                                          fine_per_group)) % 1
        rng.shuffle(hues)
        for j, h in enumerate(hues):
            i = g * fine_per_group + j
            fg[i] = colorsys.hsv_to_rgb(h, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
            bg[i] = colorsys.hsv_to_rgb((h + rng.uniform(0.3, 0.7)) % 1, rng.uniform(0.2, 0.7),
                                        rng.uniform(0.15, 0.55))
    param = np.tile(np.linspace(0, 1, fine_per_group), n_groups)
    param = param[rng.permutation(c)]
    if group_zipf_exponent is None:
        ranks = rng.permutation(c)
        freq = (ranks + 1.0) ** -zipf_exponent
    else:
        p_group = (rng.permutation(n_groups) + 1.0) ** -float(group_zipf_exponent)
        fine_rank = np.stack([rng.permutation(fine_per_group) for _ in range(n_groups)]).ravel()
        p_fine = ((fine_rank + 1.0) ** -zipf_exponent).reshape(n_groups, fine_per_group)
        freq = (p_group[:, None] / p_group.sum() * p_fine / p_fine.sum(1, keepdims=True)).ravel()
    return World(group=group, fg=fg, bg=bg, param=param, freq=freq / freq.sum())


def allocate(freq: np.ndarray, total: int, minimum: int = 0) -> np.ndarray:
    """Integer counts proportional to ``freq`` summing to ``total`` (largest remainder), each >= ``minimum``."""
    freq = np.asarray(freq, np.float64)
    base = np.full(freq.size, minimum, dtype=np.int64)
    rest = total - base.sum()
    if rest < 0:
        raise ValueError(f"{total} items cannot give {freq.size} concepts {minimum} each")
    raw = freq / freq.sum() * rest
    counts = np.floor(raw).astype(np.int64)
    short = rest - counts.sum()
    counts[np.argsort(-(raw - counts), kind="stable")[:short]] += 1
    return base + counts


def _sdf(shape: int, u: np.ndarray, v: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Signed distance-like field (< 0 inside) of one shape family. u, v: (B, S, S); p: (B, 1, 1) in [0, 1]."""
    r = np.hypot(u, v)
    th = np.arctan2(v, u)
    name = SHAPES[shape % len(SHAPES)]
    if name == "disk":
        return r - (0.35 + 0.3 * p)
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v) * (0.6 + 0.8 * p)) - 0.45
    if name in ("triangle", "pentagon"):
        n = 3 if name == "triangle" else 5
        return r * np.cos((th % (2 * np.pi / n)) - np.pi / n) - (0.3 + 0.25 * p) * np.cos(np.pi / n)
    if name == "ring":
        return np.abs(r - (0.4 + 0.2 * p)) - (0.07 + 0.08 * p)
    if name == "cross":
        w = 0.1 + 0.12 * p
        return np.minimum(np.maximum(np.abs(u) - w, np.abs(v) - 0.65), np.maximum(np.abs(u) - 0.65, np.abs(v) - w))
    if name == "star":
        n = np.round(4 + 3 * p)
        return r - 0.55 * (0.6 + 0.4 * np.cos(n * th))
    if name == "stripes":
        return 0.25 * np.sin(u * np.pi * (2 + 4 * p))
    if name == "checker":
        f = np.pi * (1.5 + 2.5 * p)
        return 0.25 * np.sin(f * u) * np.sin(f * v)
    if name == "dots":
        f = 2 + 2.5 * p
        du, dv = (u * f) % 1 - 0.5, (v * f) % 1 - 0.5
        return (np.hypot(du, dv) - 0.25) / f
    if name == "crescent":
        big = r - 0.55
        small = np.hypot(u - (0.2 + 0.3 * p), v) - 0.45
        return np.maximum(big, -small)
    if name == "bars":
        return 0.25 * np.sin(r * np.pi * (2 + 3 * p))
    if name == "spiral":
        return 0.25 * np.sin(th * 2 + r * np.pi * (3 + 4 * p))
    if name == "diamond":
        return np.abs(u) * (0.6 + 0.8 * p) + np.abs(v) - 0.55
    if name == "blob":
        return r - 0.45 * (1 + 0.25 * np.sin(3 * th + 6 * p) * np.cos(2 * th))
    return 0.25 * np.minimum(np.abs(np.sin(u * np.pi * (2 + 3 * p))), np.abs(np.sin(v * np.pi * (2 + 3 * p)))) - 0.1


def render(world: World, concepts: np.ndarray, size: int, rng: np.random.Generator, style: str = "photo",
           noise: float = 0.06) -> np.ndarray:
    """Images of the given concepts: (len(concepts), size, size, 3) uint8. style: "photo" or "shifted"."""
    concepts = np.asarray(concepts, dtype=np.int64)
    b = concepts.size
    out = np.empty((b, size, size, 3), dtype=np.uint8)
    if b == 0:
        return out
    lin = (np.arange(size) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(lin, lin, indexing="ij")
    cx, cy = rng.uniform(-0.25, 0.25, (2, b, 1, 1))
    scale = rng.uniform(0.75, 1.15, (b, 1, 1))
    ang = rng.uniform(0, 2 * np.pi, (b, 1, 1))
    ca, sa = np.cos(ang), np.sin(ang)
    u = ((xx - cx) * ca + (yy - cy) * sa) / scale
    v = (-(xx - cx) * sa + (yy - cy) * ca) / scale
    p = world.param[concepts][:, None, None]
    sdf = np.empty((b, size, size))
    groups = world.group[concepts]
    for g in np.unique(groups):
        m = groups == g
        sdf[m] = _sdf(int(g), u[m], v[m], p[m])
    sharp = size / 2.5  # soft edge about one pixel wide (antialiasing)
    fg = world.fg[concepts] * rng.uniform(0.8, 1.2, (b, 1)) + rng.normal(0, 0.04, (b, 3))
    if style == "photo":
        mask = 1 / (1 + np.exp(np.clip(sdf * sharp * 2, -30, 30)))
        bg = world.bg[concepts] * rng.uniform(0.75, 1.25, (b, 1)) + rng.normal(0, 0.05, (b, 3))
        grad_dir = rng.uniform(0, 2 * np.pi, (b, 1, 1))
        grad = 0.15 * rng.uniform(0, 1, (b, 1, 1)) * (np.cos(grad_dir) * xx + np.sin(grad_dir) * yy)
        bg_img = bg[:, None, None, :] + grad[..., None]
        light = 1 + 0.15 * (np.cos(ang) * u - np.sin(ang) * v)[..., None] * rng.uniform(0, 1, (b, 1, 1, 1))
        fg_img = fg[:, None, None, :] * light
    elif style == "shifted":  # "rendition": pale flat fill, thick dark ink outline, on light paper
        fill = 1 / (1 + np.exp(np.clip(sdf * sharp * 2, -30, 30)))
        edge = np.exp(-(sdf * sharp) ** 2 / 2.0)
        paper = rng.uniform(0.82, 0.97, (b, 1)) * np.array([1.0, 0.97, 0.9])
        pale = 0.55 * fg + 0.45 * paper
        ink = 0.45 * fg
        bg_img = np.broadcast_to(paper[:, None, None, :], (b, size, size, 3))
        img = bg_img * (1 - fill[..., None]) + pale[:, None, None, :] * fill[..., None]
        img = img * (1 - edge[..., None]) + ink[:, None, None, :] * edge[..., None]
        img = img + rng.normal(0, noise, img.shape)
        out[:] = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
        return out
    else:
        raise ValueError(f"unknown style {style!r}; use 'photo' or 'shifted'")
    img = bg_img * (1 - mask[..., None]) + fg_img * mask[..., None]
    img = img + rng.normal(0, noise, img.shape)
    out[:] = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


def render_junk(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Images of no concept: a third blank (flat colour), a third noise, a third text-like. (n, S, S, 3) uint8."""
    out = np.empty((n, size, size, 3), dtype=np.float64)
    kind = rng.integers(0, 3, n)
    for k in range(3):
        m = np.flatnonzero(kind == k)
        if m.size == 0:
            continue
        if k == 0:  # blank
            out[m] = rng.uniform(0, 1, (m.size, 1, 1, 3)) + rng.normal(0, 0.01, (m.size, size, size, 3))
        elif k == 1:  # noise, sometimes coarse
            cells = rng.choice([size, size // 4, size // 8], m.size)
            for c in np.unique(cells):
                mm = m[cells == c]
                z = rng.uniform(0, 1, (mm.size, c, c, 3))
                out[mm] = np.repeat(np.repeat(z, size // c, 1), size // c, 2)
        else:  # text-like: rows of dark glyph blocks on light paper
            paper = rng.uniform(0.85, 1.0, (m.size, 1, 1, 1))
            glyph = rng.uniform(0, 1, (m.size, size // 4, size // 2)) < 0.45
            rows = np.zeros((m.size, size, size), dtype=bool)
            rows[:, ::4, :] = False
            g = np.repeat(np.repeat(glyph, 4, 1), 2, 2)[:, :size, :size]
            g[:, 3::4, :] = False  # line spacing
            rows |= g
            out[m] = paper * (1 - 0.8 * rows[..., None]) + rng.normal(0, 0.02, (m.size, size, size, 3))
    return np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)


def near_duplicates(sources: np.ndarray, copies: np.ndarray, rng: np.random.Generator,
                    chunk: int = 4096) -> np.ndarray:
    """``copies[i]`` near-duplicates of image ``sources[i]`` (web re-uploads: 1-pixel shifts, brightness and
    JPEG-like noise). sources: (m, S, S, 3) uint8 -> (copies.sum(), S, S, 3) uint8.

    The float64 work runs ``chunk`` copies at a time (a 1M pool has 120k copies: 3 GB per float64 array in one
    piece); the noise is drawn chunk after chunk from the same stream, so the images do not depend on ``chunk``."""
    src = np.repeat(np.arange(len(sources)), copies)
    n = src.size
    shifts = rng.integers(-1, 2, (n, 2))
    gain = rng.uniform(0.93, 1.07, (n, 1, 1, 1))
    out = np.empty((n, *sources.shape[1:]), dtype=np.uint8)
    for s in range(0, n, chunk):
        rep = sources[src[s:s + chunk]].astype(np.float64)
        sh = shifts[s:s + chunk]
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                m = (sh[:, 0] == dy) & (sh[:, 1] == dx)
                if m.any() and (dy or dx):
                    rep[m] = np.roll(rep[m], (dy, dx), axis=(1, 2))
        rep = rep * gain[s:s + chunk] + rng.normal(0, 3, rep.shape)
        out[s:s + chunk] = np.clip(rep + 0.5, 0, 255).astype(np.uint8)
    return out


@dataclass
class PoolPlan:
    """How many images of each kind the pool holds; decided before any rendering (cheap, exact)."""

    concept_counts: np.ndarray  # (C,) clean images per concept
    n_duplicate_sources: int
    duplicate_copies: np.ndarray  # (n_duplicate_sources,) copies of each source
    duplicate_concepts: np.ndarray  # (n_duplicate_sources,) concept of each source
    n_junk: int

    @property
    def size(self) -> int:
        return int(self.concept_counts.sum() + self.duplicate_copies.sum() + self.n_junk)


def plan_pool(world: World, size: int, duplicate_fraction: float, junk_fraction: float, head_concepts: int,
              min_per_concept: int, rng: np.random.Generator) -> PoolPlan:
    """Split ``size`` into clean concept images (Zipf), near-duplicate clusters on the ``head_concepts`` most
    frequent concepts (each source copied 5-40 times), and junk."""
    n_junk = int(round(junk_fraction * size))
    n_dup = int(round(duplicate_fraction * size))
    copies = []
    while sum(copies) < n_dup:
        copies.append(int(min(rng.integers(5, 41), n_dup - sum(copies))))
    copies = np.array(copies, dtype=np.int64)
    head = np.argsort(-world.freq, kind="stable")[:head_concepts]
    dup_concepts = rng.choice(head, size=copies.size, p=world.freq[head] / world.freq[head].sum())
    counts = allocate(world.freq, size - n_junk - int(copies.sum()), min_per_concept)
    return PoolPlan(counts, int(copies.size), copies, dup_concepts, n_junk)


def generate_pool(world: World, plan: PoolPlan, size_px: int, rng: np.random.Generator, out: np.ndarray,
                  chunk: int = 4096, progress: bool = False):
    """Render the pool into ``out`` ((plan.size, S, S, 3) uint8, e.g. a memory-mapped .npy) in chunks, in a
    seeded random order. Returns (labels (n,) int64, kinds (n,) uint8, duplicate_group (n,) int64, -1 if none)."""
    from tqdm.auto import tqdm

    labels = np.concatenate([np.repeat(np.arange(world.n_concepts), plan.concept_counts),
                             np.repeat(plan.duplicate_concepts, plan.duplicate_copies),
                             np.full(plan.n_junk, -1)]).astype(np.int64)
    kinds = np.concatenate([np.full(plan.concept_counts.sum(), KIND_CLEAN), np.full(plan.duplicate_copies.sum(),
                           KIND_DUPLICATE), np.full(plan.n_junk, KIND_JUNK)]).astype(np.uint8)
    dup_group = np.concatenate([np.full(plan.concept_counts.sum(), -1),
                                np.repeat(np.arange(plan.n_duplicate_sources), plan.duplicate_copies),
                                np.full(plan.n_junk, -1)]).astype(np.int64)
    order = rng.permutation(labels.size)  # position in the pool of each planned item
    labels_out, kinds_out, dup_out = (np.empty_like(a) for a in (labels, kinds, dup_group))
    labels_out[order], kinds_out[order], dup_out[order] = labels, kinds, dup_group
    # duplicate sources first (copies are written where their items landed)
    sources = render(world, plan.duplicate_concepts, size_px, rng)
    dup_positions = order[kinds == KIND_DUPLICATE]
    dups = near_duplicates(sources, plan.duplicate_copies, rng)
    for s in range(0, dup_positions.size, chunk):
        _write(out, dup_positions[s:s + chunk], dups[s:s + chunk])
    clean_positions = order[kinds == KIND_CLEAN]
    clean_labels = labels[kinds == KIND_CLEAN]
    bar = tqdm(total=clean_positions.size + plan.n_junk, desc="render pool", disable=not progress)
    for s in range(0, clean_positions.size, chunk):
        _write(out, clean_positions[s:s + chunk], render(world, clean_labels[s:s + chunk], size_px, rng))
        bar.update(min(chunk, clean_positions.size - s))
    junk_positions = order[kinds == KIND_JUNK]
    for s in range(0, junk_positions.size, chunk):
        pos = junk_positions[s:s + chunk]
        _write(out, pos, render_junk(pos.size, size_px, rng))
        bar.update(pos.size)
    bar.close()
    return labels_out, kinds_out, dup_out


def _write(out: np.ndarray, positions: np.ndarray, images: np.ndarray) -> None:
    srt = np.argsort(positions)
    out[positions[srt]] = images[srt]
