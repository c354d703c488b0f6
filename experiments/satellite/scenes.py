"""Generated satellite scenes: land cover, trees, a canopy-height model (CHM) and 4-band imagery rendered from it.

Pure NumPy/SciPy, arrays in and arrays out (GeoTIFF I/O lives in :mod:`experiments.satellite.geo`).

How a scene is made (one region, ``size x size`` pixels of ``gsd`` metres):

1. **Land cover** (:func:`land_cover`): one smooth random field per class plus a per-class bias, ``argmax`` over
   classes; the biases are fitted so the class shares match the region's recipe (mostly water, bare ground,
   cropland and urban; forests rarer and of four kinds).
2. **Trees** (:func:`place_trees`, :func:`render_crowns`): a smooth stand-height field per forest kind; tree
   positions are a thinned Poisson process whose density follows the crown area (taller stands, bigger crowns,
   fewer stems), heights scatter around the stand height, crown radius follows an allometry ``r = a * h^b``
   per kind; conifers are cones, broadleaf crowns half-ellipsoids, plantations sit on a grid. The CHM is the
   upper envelope of the crowns (metres); a few hedgerow trees stand in cropland and urban areas.
3. **Imagery** (:func:`render_reflectance`): surface reflectance per land-cover class (R, G, B, NIR, typical
   values from spectral libraries: water NIR ~0.02, soil ~0.3, vegetation NIR 0.25-0.5, red 0.03-0.05),
   crown NIR brightening weakly with tree height, per-tree brightness and NIR factors (so colour alone says little
   about height), leaf-clumping texture inside crowns, Lambertian shading of the crown
   surface, and cast shadows of trees and buildings traced along the sun direction over the surface model (a
   shadow's length is ``height / tan(sun elevation)``), diffuse sky light in the shadows, per-scene haze and
   gain, sensor noise. Heights are therefore recoverable from crown size and texture, NIR brightness and shadow
   length, as in real very-high-resolution imagery; urban buildings cast shadows too but are not canopy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

CLASSES = ("water", "bare", "cropland", "urban", "conifer", "broadleaf", "woodland", "plantation")
FOREST = (4, 5, 6, 7)  # indices of the forest kinds in CLASSES
BANDS = ("red", "green", "blue", "nir")

# Surface reflectance (R, G, B, NIR) of the non-tree surfaces.
_WATER = np.array([0.030, 0.050, 0.060, 0.020])
_SOIL = np.array([0.25, 0.21, 0.16, 0.31])
_ROCK = np.array([0.32, 0.30, 0.27, 0.36])
_CROP = np.array([0.050, 0.090, 0.040, 0.42])
_DRY_CROP = np.array([0.20, 0.18, 0.12, 0.30])
_GRASS = np.array([0.070, 0.100, 0.050, 0.30])
_ASPHALT = np.array([0.10, 0.10, 0.10, 0.12])
_FLOOR = np.array([0.060, 0.070, 0.040, 0.20])  # forest floor / understorey

# Per forest kind: stand height range (m), crown allometry r = a h^b (m), crown shape, canopy cover, crown
# reflectance (R, G, B, NIR at 0 m) and NIR gain per metre of tree height. The gain is weak (~10% over the height
# range) and every tree has its own brightness and NIR factor (species, vigour, leaf angle: TREE_BRIGHTNESS_SD,
# TREE_NIR_SD), so a pixel's colour says "crown" but barely "how tall": as in real imagery, height has to be read
# from crown size, texture and shadow length. (With a strong, noise-free gain, gradient boosting on a pixel's four
# band values alone, the study's `pixel_gbm` reference, outscored every pretrained backbone: no backbone was needed.)
FOREST_KINDS = {
    "conifer": dict(h=(12.0, 42.0), a=0.30, b=0.75, shape="cone", cover=1.3,
                    refl=[0.025, 0.045, 0.020, 0.20], nir_per_m=0.0008),
    "broadleaf": dict(h=(8.0, 34.0), a=0.42, b=0.80, shape="dome", cover=1.5,
                      refl=[0.035, 0.070, 0.030, 0.28], nir_per_m=0.0010),
    "woodland": dict(h=(3.0, 16.0), a=0.55, b=0.75, shape="dome", cover=0.35,
                     refl=[0.045, 0.070, 0.035, 0.25], nir_per_m=0.0010),
    "plantation": dict(h=(4.0, 26.0), a=0.35, b=0.75, shape="cone", cover=0.65,
                       refl=[0.030, 0.055, 0.025, 0.23], nir_per_m=0.0010),
}
TREE_BRIGHTNESS_SD = 0.25  # log-sd of a tree's overall brightness factor (all bands)
TREE_NIR_SD = 0.15  # log-sd of its extra NIR factor
RENDER_VERSION = 2  # part of the scene cache key: bump when a change here alters the generated scenes


@dataclass
class SceneSpec:
    """One region's recipe."""

    name: str
    size: int = 512  # pixels per side
    gsd: float = 1.0  # metres per pixel
    shares: dict = field(default_factory=dict)  # land-cover class -> share of the area (normalised)
    patch_scale: float = 40.0  # metres: correlation length of the land-cover patches
    sun_elevation: float = 45.0  # degrees above the horizon
    sun_azimuth: float = 160.0  # degrees clockwise from north
    height_shift: float = 0.0  # shifts every stand-height range (m): regional site quality
    haze: float = 0.01  # additive path radiance (reflectance units, strongest in blue)
    gain: float = 1.0  # sensor/atmosphere gain
    nodata_corner: float = 0.0  # fraction of the side cut off by a diagonal no-data corner (scene footprint edge)


def smooth_field(shape, scale_px: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise, standardised: (H, W) float64 with correlation length ~scale_px."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=max(scale_px, 0.5), mode="wrap")
    return (f - f.mean()) / (f.std() + 1e-12)


def land_cover(spec: SceneSpec, rng: np.random.Generator, n_fit: int = 12) -> np.ndarray:
    """(size, size) uint8 class map whose class shares follow ``spec.shares``."""
    n = spec.size
    names = [c for c in CLASSES if spec.shares.get(c, 0) > 0]
    target = np.array([spec.shares[c] for c in names], float)
    target /= target.sum()
    scale = spec.patch_scale / spec.gsd
    fields = np.stack([smooth_field((n, n), scale * rng.uniform(0.7, 1.4), rng) for _ in names])
    bias = np.log(target) * 0.8
    for _ in range(n_fit):  # fit the biases so the argmax shares match the target
        lab = np.argmax(fields + bias[:, None, None], axis=0)
        share = np.bincount(lab.ravel(), minlength=len(names)) / lab.size
        bias += 0.7 * (np.log(target + 1e-6) - np.log(share + 1e-6))
    lab = np.argmax(fields + bias[:, None, None], axis=0)
    out = np.array([CLASSES.index(c) for c in names], np.uint8)[lab]
    return out


def crown_radius(kind: str, h: np.ndarray) -> np.ndarray:
    p = FOREST_KINDS[kind]
    return p["a"] * np.power(np.maximum(h, 0.5), p["b"])


def place_trees(spec: SceneSpec, lc: np.ndarray, rng: np.random.Generator) -> list[tuple]:
    """Tree list ``[(row, col, height_m, radius_m, kind), ...]`` over the forest classes, plus hedgerow trees."""
    n = spec.size
    trees = []
    for ci in FOREST:
        kind = CLASSES[ci]
        mask = lc == ci
        if not mask.any():
            continue
        p = FOREST_KINDS[kind]
        lo, hi = p["h"][0] + spec.height_shift, p["h"][1] + spec.height_shift
        stand = lo + (hi - lo) * (0.5 + 0.5 * np.tanh(0.9 * smooth_field((n, n), 60.0 / spec.gsd, rng)))
        stand = np.maximum(stand, 1.5)
        r = crown_radius(kind, stand)  # metres
        if kind == "plantation":  # rows: a regular grid with spacing ~ crown diameter, jittered
            spacing = max(2.0 * float(np.median(r[mask])) / spec.gsd * 1.05, 1.5)
            rr, cc = np.meshgrid(np.arange(spacing / 2, n, spacing), np.arange(spacing / 2, n, spacing), indexing="ij")
            rr = rr.ravel() + rng.normal(0, 0.15 * spacing, rr.size)
            cc = cc.ravel() + rng.normal(0, 0.15 * spacing, cc.size)
            ok = (rr >= 0) & (rr < n) & (cc >= 0) & (cc < n)
            rr, cc = rr[ok], cc[ok]
            keep = mask[rr.astype(int), cc.astype(int)] & (rng.random(rr.size) < 0.95)
            rows, cols = rr[keep], cc[keep]
        else:  # thinned Poisson: stems per pixel = cover / crown area
            density = p["cover"] / (np.pi * (r / spec.gsd) ** 2)
            hit = mask & (rng.random((n, n)) < density)
            rows, cols = np.nonzero(hit)
            rows = rows + rng.random(rows.size)
            cols = cols + rng.random(cols.size)
        h_stand = stand[rows.astype(int), cols.astype(int)]
        sd = 0.05 if kind == "plantation" else 0.15
        h = h_stand * np.exp(rng.normal(0, sd, rows.size))
        rad = crown_radius(kind, h) * np.exp(rng.normal(0, 0.08, rows.size))
        trees += list(zip(rows, cols, h, rad, [kind] * rows.size))
    # hedgerow / street trees outside forests (trees outside forests are common in real imagery)
    for ci, rate in ((2, 2e-4), (3, 4e-4)):
        rows, cols = np.nonzero((lc == ci) & (rng.random((n, n)) < rate))
        h = rng.uniform(6, 20, rows.size)
        trees += list(zip(rows + 0.5, cols + 0.5, h, crown_radius("broadleaf", h), ["broadleaf"] * rows.size))
    return trees


def render_crowns(spec: SceneSpec, trees: list[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Upper envelope of the crowns. Returns CHM (m, float32), the owning tree's kind index (-1: no crown), the
    owning tree's height (m) and its index in ``trees`` (-1: no crown), all (size, size)."""
    n = spec.size
    chm = np.zeros((n, n), np.float32)
    owner_kind = np.full((n, n), -1, np.int8)
    owner_h = np.zeros((n, n), np.float32)
    owner_id = np.full((n, n), -1, np.int64)
    kinds = list(FOREST_KINDS)
    for i, (row, col, h, rad, kind) in enumerate(trees):
        rp = rad / spec.gsd
        r0, r1 = int(max(row - rp, 0)), int(min(row + rp + 1, n))
        c0, c1 = int(max(col - rp, 0)), int(min(col + rp + 1, n))
        if r1 <= r0 or c1 <= c0:
            continue
        yy, xx = np.mgrid[r0:r1, c0:c1]
        d = np.sqrt((yy + 0.5 - row) ** 2 + (xx + 0.5 - col) ** 2) / max(rp, 1e-3)
        inside = d < 1
        if FOREST_KINDS[kind]["shape"] == "cone":
            z = h * (1 - 0.55 * d)  # cone from the top down to ~45% of the height at the crown edge
        else:
            z = h * (0.55 + 0.45 * np.sqrt(np.clip(1 - d * d, 0, 1)))  # half-ellipsoid dome
        z = np.where(inside, z, 0).astype(np.float32)
        win = chm[r0:r1, c0:c1]
        higher = z > win
        win[higher] = z[higher]
        owner_kind[r0:r1, c0:c1][higher] = kinds.index(kind)
        owner_h[r0:r1, c0:c1][higher] = h
        owner_id[r0:r1, c0:c1][higher] = i
    return chm, owner_kind, owner_h, owner_id


def buildings(spec: SceneSpec, lc: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rectangular buildings on urban land: (height (m), roof reflectance (4, H, W)) with zeros off-roof."""
    n = spec.size
    height = np.zeros((n, n), np.float32)
    roof = np.zeros((4, n, n), np.float32)
    urban = lc == 3
    n_b = int(urban.sum() / 220)
    if n_b == 0:
        return height, roof
    rows, cols = np.nonzero(urban)
    pick = rng.choice(rows.size, size=n_b, replace=False)
    for i in pick:
        h = rng.uniform(4, 25) if rng.random() < 0.8 else rng.uniform(25, 45)
        w, l = rng.integers(5, 18, size=2)
        r0, c0 = rows[i], cols[i]
        sl = (slice(r0, min(r0 + int(l), n)), slice(c0, min(c0 + int(w), n)))
        if not urban[sl].all():
            continue
        height[sl] = h
        tone = rng.uniform(0.12, 0.45)
        tint = rng.normal(0, 0.02, 4)
        roof[(slice(None),) + sl] = (np.array([tone, tone * 0.97, tone * 0.92, tone * 0.95]) + tint)[:, None, None]
    return height, roof


def cast_shadows(dsm: np.ndarray, gsd: float, elevation: float, azimuth: float) -> np.ndarray:
    """Boolean shadow mask: a pixel is shaded when the surface model rises above the ray towards the sun.

    dsm: (H, W) surface heights (m). Shadows fall away from the sun and are ``h / tan(elevation)`` metres long."""
    tan_e = np.tan(np.radians(elevation))
    dr, dc = -np.cos(np.radians(azimuth)), np.sin(np.radians(azimuth))  # towards the sun; north is row -1
    max_steps = int(np.ceil(dsm.max() / (gsd * tan_e))) + 1
    shade = np.zeros(dsm.shape, bool)
    h, w = dsm.shape
    pad = max_steps + 1
    padded = np.pad(dsm, pad, mode="constant")  # nothing casts shadows from outside
    for t in range(1, max_steps + 1):
        oy, ox = int(round(t * dr)), int(round(t * dc))
        shifted = padded[pad + oy:pad + oy + h, pad + ox:pad + ox + w]
        shade |= shifted > dsm + t * gsd * tan_e + 0.3
    return shade


def shading(dsm: np.ndarray, gsd: float, elevation: float, azimuth: float) -> np.ndarray:
    """Lambertian direct-illumination factor of the surface relative to flat ground: (H, W) >= 0."""
    gy, gx = np.gradient(dsm.astype(np.float64), gsd)
    el, az = np.radians(elevation), np.radians(azimuth)
    sun = np.array([np.sin(az) * np.cos(el), np.cos(az) * np.cos(el), np.sin(el)])  # east, north, up
    # surface normal (-dz/dx, -dz/dy_north, 1); rows grow southwards so dz/dnorth = -gy
    nx, ny, nz = -gx, gy, np.ones_like(gx)
    norm = np.sqrt(nx ** 2 + ny ** 2 + nz ** 2)
    cos_i = (nx * sun[0] + ny * sun[1] + nz * sun[2]) / norm
    return np.clip(cos_i, 0, None) / np.sin(el)


def render_reflectance(spec: SceneSpec, lc: np.ndarray, chm: np.ndarray, owner_kind: np.ndarray,
                       owner_h: np.ndarray, owner_id: np.ndarray, n_trees: int, bld_h: np.ndarray,
                       roof: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Top-of-canopy surface reflectance (4, H, W) float32 in [0, 1]."""
    n = spec.size
    fine = smooth_field((n, n), 1.0, rng)
    mid = smooth_field((n, n), 8.0 / spec.gsd, rng)
    refl = np.zeros((4, n, n), np.float64)

    water = lc == 0
    refl[:, water] = np.outer(_WATER, 1 + 0.05 * fine[water])
    bare = lc == 1
    mix = (0.5 + 0.5 * np.tanh(mid))[bare]
    refl[:, bare] = (np.outer(_SOIL, mix) + np.outer(_ROCK, 1 - mix)) * (1 + 0.10 * fine[bare])[None]
    # cropland: rectangular parcels, each green / dry / bare, green ones with row texture
    crop = lc == 2
    if crop.any():
        parcel_r = np.cumsum(rng.integers(20, 70, size=n)) // 1
        parcel_c = np.cumsum(rng.integers(20, 70, size=n))
        pr = np.searchsorted(parcel_r, np.arange(n))
        pc = np.searchsorted(parcel_c, np.arange(n))
        pid = (pr[:, None] * 1000 + pc[None, :])
        uniq, inv = np.unique(pid[crop], return_inverse=True)
        state = rng.choice(3, size=uniq.size, p=[0.55, 0.25, 0.20])[inv]
        vigour = rng.uniform(0.7, 1.1, size=uniq.size)[inv]
        rows = np.nonzero(crop)[0]
        stripe = 1 + 0.10 * np.sin(rows * 2 * np.pi / 4.0)
        base = np.where(state[None] == 0, np.outer(_CROP, vigour),
                        np.where(state[None] == 1, _DRY_CROP[:, None], _SOIL[:, None] * 0.9))
        refl[:, crop] = base * np.where(state == 0, stripe, 1.0)[None] * (1 + 0.05 * fine[crop])[None]
    urban = lc == 3
    if urban.any():
        ground = np.where((mid[urban] > 0.6)[None], _GRASS[:, None], _ASPHALT[:, None] * (1.3 + 0.3 * mid[urban]))
        refl[:, urban] = ground * (1 + 0.08 * fine[urban])[None]
        on_roof = urban & (bld_h > 0)
        refl[:, on_roof] = roof[:, on_roof]
    forest = np.isin(lc, FOREST)
    refl[:, forest] = np.outer(_FLOOR, 1 + 0.10 * fine[forest]) * np.where(lc[forest] == 6, 1.6, 1.0)[None]
    # crowns: kind colour times the tree's own factors, NIR rising weakly with tree height, leaf-clumping texture
    crown = owner_kind >= 0
    kinds = list(FOREST_KINDS)
    base = np.array([FOREST_KINDS[k]["refl"] for k in kinds])[owner_kind[crown]].T  # (4, m)
    gain = np.array([FOREST_KINDS[k]["nir_per_m"] for k in kinds])[owner_kind[crown]]
    base[3] = base[3] + gain * owner_h[crown]
    tree_bright = np.exp(rng.normal(0, TREE_BRIGHTNESS_SD, max(n_trees, 1)))
    tree_nir = np.exp(rng.normal(0, TREE_NIR_SD, max(n_trees, 1)))
    ids = owner_id[crown]
    base = base * tree_bright[ids][None]
    base[3] = base[3] * tree_nir[ids]
    clump = 1 + 0.22 * fine[crown]
    refl[:, crown] = base * clump[None]

    # illumination: direct (Lambertian on the surface model) + diffuse sky, cast shadows of trees and buildings
    dsm = chm + bld_h
    direct = shading(dsm, spec.gsd, spec.sun_elevation, spec.sun_azimuth)
    shadow = cast_shadows(dsm, spec.gsd, spec.sun_elevation, spec.sun_azimuth)
    diffuse = np.array([0.30, 0.25, 0.22, 0.15])[:, None, None]  # skylight is bluer
    light = diffuse + (1 - diffuse) * np.where(shadow, 0.0, np.minimum(direct, 1.6))[None]
    light[:, water] = np.where(shadow[water], 0.6, 1.0)[None]  # water is mostly specular/volume: shadows are weak
    refl = refl * light
    refl = spec.gain * refl + spec.haze * np.array([1.0, 0.7, 1.6, 0.3])[:, None, None]
    refl += rng.normal(0, 0.004, refl.shape)  # sensor noise
    return np.clip(refl, 0.0, 1.0).astype(np.float32)


def nodata_mask(spec: SceneSpec) -> np.ndarray:
    """True where the scene has no data (a diagonal corner outside the footprint)."""
    n = spec.size
    if spec.nodata_corner <= 0:
        return np.zeros((n, n), bool)
    yy, xx = np.mgrid[0:n, 0:n]
    return (yy + xx) < spec.nodata_corner * n


def make_scene(spec: SceneSpec, rng: np.random.Generator) -> dict:
    """Everything of one region: ``reflectance`` (4, H, W) float32, ``chm`` (H, W) float32 metres, ``land_cover``
    (H, W) uint8, ``nodata`` (H, W) bool."""
    lc = land_cover(spec, rng)
    trees = place_trees(spec, lc, rng)
    chm, owner_kind, owner_h, owner_id = render_crowns(spec, trees)
    bld_h, roof = buildings(spec, lc, rng)
    refl = render_reflectance(spec, lc, chm, owner_kind, owner_h, owner_id, len(trees), bld_h, roof, rng)
    return {"reflectance": refl, "chm": chm, "land_cover": lc, "nodata": nodata_mask(spec), "n_trees": len(trees)}
