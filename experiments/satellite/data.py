"""The study's data: scenes on disk as GeoTIFF (generated, a user's folder, or the prepared real scenes written as
one: :mod:`experiments.satellite.real`) -> tiles for the three roles.

Folder layout (the generated data is written in the same layout, so one loader reads both)::

    root/pool/<scene>.tif                        unlabelled scenes: the pool that is curated (CHMs ignored)
    root/train/<scene>.tif + <scene>_chm.tif     labelled scenes for the height head (a small labelled set)
    root/eval/<scene>.tif  + <scene>_chm.tif     held-out evaluation regions, one region per scene
    (optional <scene>_landcover.tif beside any scene: class raster used only to measure land-cover shares)

Images: any number of bands (every band by default, e.g. R, G, B or NIR, R, G colour infrared; pick some with
``data.bands``), any dtype; reflectance = value x ``data.reflectance_scale``, inferred from the rasters by default
(uint8 0-255, reflectance x 10,000, floats 0-1, raw n-bit DN: :func:`infer_reflectance_scale`). Canopy-height
rasters: metres, any CRS/resolution (warped onto the image grid unless ``data.chm_mismatch=error``), nodata
honoured. Labelled and evaluation scenes must not share a scene, or with ``data.group_by=site`` ground
(:func:`check_split`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from experiments.kit.cache import cache_path
from sslcurate import CurationInputError
from sslcurate.io import atomic_save_json, atomic_save_npy, config_hash

from .geo import Tiles, find_scene_pairs, infer_reflectance_scale, raster_info, read_scenes, write_geotiff
from .scenes import BANDS, CLASSES, FOREST, RENDER_VERSION, SceneSpec, make_scene

log = logging.getLogger(__name__)
ROLES = ("pool", "train", "eval")


@dataclass
class StudyData:
    """pool (no heights), labelled (the head's training tiles) and evaluation tiles (one scene per region)."""

    pool: Tiles
    labelled: Tiles
    eval: Tiles
    root: Path
    key: str
    class_names: tuple = CLASSES
    bands: dict | None = None  # what was read: {"bands", "reflectance_scale", "how", ...} (resolve_bands)
    pool_sites: list | None = None  # site of each pool scene (aligned with pool.scene_names): scene_sites
    real: dict | None = None  # the real-data arm's folder record (real.real_folder_record), else None

    @property
    def regions(self) -> list[str]:
        return list(self.eval.scene_names)


# ---------------------------------------------------------------------------------------------- generation
def region_specs(gen: DictConfig) -> list[tuple[str, SceneSpec, dict]]:
    """(role, SceneSpec, geo dict) per configured region."""
    out = []
    for r in gen.regions:
        r = OmegaConf.to_container(r, resolve=True)
        unknown = set(r.get("shares", {})) - set(CLASSES)
        if unknown:
            raise CurationInputError(f"region {r['name']}: unknown land-cover classes {sorted(unknown)}; "
                                     f"known: {list(CLASSES)}")
        if r["role"] not in ROLES:
            raise CurationInputError(f"region {r['name']}: role must be one of {ROLES}, not {r['role']!r}")
        spec = SceneSpec(name=r["name"], size=int(r.get("size", gen.scene_size)), gsd=float(gen.gsd),
                         shares=r["shares"], patch_scale=float(r.get("patch_scale", 40.0)),
                         sun_elevation=float(r["sun"][0]), sun_azimuth=float(r["sun"][1]),
                         height_shift=float(r.get("height_shift", 0.0)), haze=float(r.get("haze", 0.01)),
                         gain=float(r.get("gain", 1.0)), nodata_corner=float(r.get("nodata_corner", 0.0)))
        geo = {"epsg": int(r["epsg"]), "origin": tuple(float(v) for v in r["origin"]),
               "chm_gsd": float(r.get("chm_gsd", gen.gsd))}
        out.append((r["role"], spec, geo))
    return out


def write_scene(folder: Path, role: str, spec: SceneSpec, geo: dict, rng: np.random.Generator) -> dict:
    """Generate one region and write ``<name>.tif`` (uint16 reflectance x 10000, nodata 0), ``<name>_chm.tif``
    (float32 m, nodata -9999; at ``chm_gsd``, finer grids as lidar CHMs often are) and ``<name>_landcover.tif``."""
    from rasterio.transform import from_origin

    scene = make_scene(spec, rng)
    crs = f"EPSG:{geo['epsg']}"
    x0, y0 = geo["origin"]
    transform = from_origin(x0, y0, spec.gsd, spec.gsd)
    dn = np.clip(np.round(scene["reflectance"] * 10000), 1, 10000).astype(np.uint16)  # 0 is reserved for nodata
    dn[:, scene["nodata"]] = 0
    tags = {"SUN_ELEVATION": spec.sun_elevation, "SUN_AZIMUTH": spec.sun_azimuth, "REGION": spec.name,
            "ROLE": role, "REFLECTANCE_SCALE": 1e-4, "GENERATOR": "sslcurate satellite scenes"}
    d = folder / role
    d.mkdir(parents=True, exist_ok=True)
    write_geotiff(d / f"{spec.name}.tif", dn, crs, transform, nodata=0, tags=tags, descriptions=BANDS)
    chm = np.where(scene["nodata"], -9999.0, scene["chm"]).astype(np.float32)
    factor = spec.gsd / geo["chm_gsd"]
    if abs(factor - round(factor)) > 1e-6 or factor < 1:
        raise CurationInputError(f"region {spec.name}: chm_gsd must divide the image gsd ({spec.gsd})")
    f = int(round(factor))
    if f > 1:  # a finer CHM grid (e.g. a 0.5 m lidar product): each image pixel split into f x f
        chm = np.kron(chm, np.ones((f, f), np.float32))
    write_geotiff(d / f"{spec.name}_chm.tif", chm, crs, from_origin(x0, y0, geo["chm_gsd"], geo["chm_gsd"]),
                  nodata=-9999.0, tags={"UNITS": "metre", "REGION": spec.name})
    lc = np.where(scene["nodata"], 255, scene["land_cover"]).astype(np.uint8)
    write_geotiff(d / f"{spec.name}_landcover.tif", lc, crs, transform, nodata=255,
                  tags={"CLASSES": ",".join(CLASSES)})
    return {"name": spec.name, "role": role, "crs": crs, "size": spec.size, "n_trees": scene["n_trees"],
            "land_cover_shares": (np.bincount(scene["land_cover"].ravel(), minlength=len(CLASSES))
                                  / scene["land_cover"].size).round(4).tolist()}


def generate(gen: DictConfig, root: Path, progress: bool = False) -> Path:
    """Write every configured region under ``root`` (skipped when its manifest exists; atomic via a temp dir)."""
    manifest = root / "scenes.json"
    if manifest.exists():
        return root
    from tqdm import tqdm

    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    specs = region_specs(gen)
    rng = np.random.default_rng([int(gen.seed), 2023])
    info = []
    for role, spec, geo in tqdm(specs, desc="generating scenes", disable=not progress):
        info.append(write_scene(tmp, role, spec, geo, np.random.default_rng(rng.integers(2 ** 63))))
        log.info("scene %s (%s): %d x %d px, %d trees", spec.name, role, spec.size, spec.size, info[-1]["n_trees"])
    atomic_save_json(tmp / "scenes.json", {"classes": list(CLASSES), "regions": info,
                                           "generator": OmegaConf.to_container(gen, resolve=True)})
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    return root


# ------------------------------------------------------------------------------------------------- tiling
def _folder_fingerprint(root: Path) -> list:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".tif", ".tiff"))
    return [(str(p.relative_to(root)), p.stat().st_size, int(p.stat().st_mtime)) for p in files]


def tile_kwargs(data: DictConfig, bands: list[int], scale: float | dict) -> dict:
    return dict(tile=int(data.tile_size), stride=int(data.stride), bands=list(bands),
                reflectance_scale=scale if isinstance(scale, dict) else float(scale),
                max_nodata_frac=float(data.max_nodata_frac), chm_mismatch=str(data.chm_mismatch),
                max_height=float(data.max_height))


def resolve_bands(data: DictConfig, images: list[Path], sample: int = 16) -> dict:
    """The bands to read and the reflectance scale, from the config where it gives them, else from the rasters.

    ``data.bands``: 1-based band numbers (list) or ``auto`` (every band; scenes must agree on the count);
    ``data.n_bands``: an int reads bands 1..n (ignored when ``data.bands`` is a list); ``data.reflectance_scale``: a
    number or ``auto``: :func:`infer_reflectance_scale` per dtype, from the largest values of up to ``sample``
    scenes of that dtype (so 8-bit and 16-bit scenes mixed in one folder each get theirs). Returns ``{"bands",
    "reflectance_scale" (a number, or {dtype: number} when several dtypes need different ones), "how", "dtypes",
    "max_value"}``; a mismatch is a one-line error naming the options that fix it."""
    import rasterio

    headers = []
    for p in images:  # band count and dtype of every scene (its header only)
        with rasterio.open(p) as ds:
            headers.append((p, ds.count, str(ds.dtypes[0])))
    by_dtype: dict[str, list[Path]] = {}
    for p, _, dt in headers:
        by_dtype.setdefault(dt, []).append(p)
    top = {dt: max(raster_info(p).max_value for p in paths[:sample]) for dt, paths in by_dtype.items()}
    counts = sorted({c for _, c, _ in headers})
    how = {}
    bands, n_bands = data.get("bands", "auto"), data.get("n_bands", "auto")
    if not isinstance(bands, str):
        bands = [int(b) for b in bands]
        how["bands"] = "data.bands"
    elif bands != "auto":
        raise CurationInputError(f"data.bands must be 'auto' or a list of 1-based band numbers, not {bands!r}")
    elif not isinstance(n_bands, str):
        bands = list(range(1, int(n_bands) + 1))
        how["bands"] = "data.n_bands"
    elif len(counts) > 1:
        few = [next(f"{p.name}: {c}" for p, c, _ in headers if c == n) for n in counts]
        raise CurationInputError(f"scenes have {counts} bands (e.g. {', '.join(few)}); read the same bands from "
                                 f"each with data.bands={list(range(1, counts[0] + 1))} (1-based band numbers)")
    else:
        bands = list(range(1, counts[0] + 1))
        how["bands"] = f"every band of the scenes ({counts[0]})"
    short = [(p, c) for p, c, _ in headers if max(bands) > c]
    if short:
        raise CurationInputError(f"{short[0][0]}: {short[0][1]} band(s), the study reads bands {bands}; set "
                                 f"data.bands=auto or list at most {short[0][1]} bands, e.g. "
                                 f"data.bands={list(range(1, short[0][1] + 1))}")
    scale = data.get("reflectance_scale", "auto")
    inferred = {dt: infer_reflectance_scale({dt}, v) for dt, v in top.items()}
    if isinstance(scale, str):
        if scale != "auto":
            raise CurationInputError(f"data.reflectance_scale must be 'auto' or a number, not {scale!r}")
        values = {dt: v for dt, (v, _) in inferred.items()}
        scale = next(iter(values.values())) if len(set(values.values())) == 1 else values
        how["reflectance_scale"] = "inferred: " + "; ".join(f"{dt} {why}" for dt, (_, why) in inferred.items())
    else:
        scale = float(scale)
        how["reflectance_scale"] = "data.reflectance_scale"
        for dt, v in top.items():
            if v * scale < 0.05 or v * scale > 1.5:
                log.warning("data.reflectance_scale=%g maps the largest %s value %g to %.3g, far from reflectance "
                            "0-1: data.reflectance_scale=auto would use %.4g (%s)", scale, dt, v, v * scale,
                            *inferred[dt])
    log.info("reading bands %s (%s); reflectance = value x %s (%s)", bands, how["bands"], scale,
             how["reflectance_scale"])
    return {"bands": bands, "reflectance_scale": scale, "how": how, "dtypes": sorted(top),
            "max_value": max(top.values())}


def check_split(train: list, evals: list, group_by: str) -> None:
    """Labelled (train/) and evaluation (eval/) scenes never share a group. ``scene``: the same scene name or an
    identical file; ``site``: also the same ground (footprints that overlap in WGS84: two dates of one place, or a
    scene and a crop of it). A shared group is a one-line error naming both files."""
    if group_by not in ("scene", "site"):
        raise CurationInputError(f"data.group_by must be 'scene' or 'site', not {group_by!r}")

    def ident(path: Path):
        with open(path, "rb") as f:
            return path.stat().st_size, hashlib.sha1(f.read(1 << 20)).hexdigest()

    bounds = {}
    for a in train:
        for b in evals:
            same = a.name == b.name or ident(a.image) == ident(b.image)
            if not same and group_by == "site":
                for p in (a.image, b.image):
                    if p not in bounds:
                        bounds[p] = raster_info(p, max_px=1).bounds_wgs84
                (wa, sa, ea, na), (wb, sb, eb, nb) = bounds[a.image], bounds[b.image]
                same = min(ea, eb) > max(wa, wb) and min(na, nb) > max(sa, sb)
            if same:
                what = "are the same scene" if group_by == "scene" or a.name == b.name else "cover the same ground"
                raise CurationInputError(f"labelled scene {a.image} and evaluation scene {b.image} {what}: tiles of "
                                         f"one {group_by} stay on one side of the train/eval split "
                                         f"(data.group_by={group_by}); move one of them")


def _save_tiles(folder: Path, t: Tiles) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("images", "chm", "land_cover", "scene", "origin", "centre_xy"):
        arr = getattr(t, name)
        if arr is not None:
            atomic_save_npy(folder / f"{name}.npy", arr)
    atomic_save_json(folder / "tiles.json", {"scene_names": t.scene_names, "n": len(t)})


def _load_tiles(folder: Path) -> Tiles:
    meta = json.loads((folder / "tiles.json").read_text())
    arr = {n: (np.load(folder / f"{n}.npy") if (folder / f"{n}.npy").exists() else None)
           for n in ("images", "chm", "land_cover", "scene", "origin", "centre_xy")}
    return Tiles(scene_names=meta["scene_names"], **arr)


def build_data(cfg: DictConfig, cache: Path, progress: bool = False) -> StudyData:
    """Scenes (generated into the cache, or ``data.root``) -> pool / labelled / eval tiles, cached by content."""
    data = cfg.data
    if data.source == "generated":
        root = generate(data.generator, cache_path(cache, "satellite_scenes", {
            "generator": OmegaConf.to_container(data.generator, resolve=True), "render_version": RENDER_VERSION},
            suffix=""), progress)
        fingerprint = root.name  # the hash of the generator settings
    elif data.source == "real":  # the prepared real scenes, written once as such a folder (satellite/real.py)
        from .real import build_real_folder

        root = build_real_folder(data, cache)
        fingerprint = config_hash(_folder_fingerprint(root))
    elif data.source == "folder":
        if not data.root:
            raise CurationInputError("data.source=folder needs data.root=PATH (with pool/, train/, eval/ inside)")
        root = Path(str(data.root)).expanduser()
        if not root.is_dir():
            raise CurationInputError(f"satellite data folder {root} does not exist")
        fingerprint = config_hash(_folder_fingerprint(root))
    else:
        raise CurationInputError(f"data.source must be 'generated', 'folder' or 'real', not {data.source!r}")
    pairs = {role: find_scene_pairs(root / role, chm_suffix=str(data.chm_suffix), require_chm=role != "pool")
             for role in ROLES}
    check_split(pairs["train"], pairs["eval"], str(data.get("group_by", "scene")))
    bands = resolve_bands(data, [p.image for role in ROLES for p in pairs[role]])
    kw = tile_kwargs(data, bands["bands"], bands["reflectance_scale"])
    tdir = cache_path(cache, "satellite_tiles", {"scenes": fingerprint, "tiles": kw, "root": str(root),
                                                  "n_labelled": int(data.n_labelled),
                                                  "labelled_seed": int(data.labelled_seed)}, suffix="")
    key = tdir.name  # the data's identity in the other stages' keys
    parts = {}
    for role in ROLES:
        folder = tdir / role
        if (folder / "tiles.json").exists():
            parts[role] = _load_tiles(folder)
            continue
        t = read_scenes(pairs[role], with_chm=role != "pool", **kw)
        if role == "train" and int(data.n_labelled) < len(t):  # the small labelled set: fixed for every variant
            rng = np.random.default_rng([int(data.labelled_seed), 11])
            t = t.subset(np.sort(rng.choice(len(t), size=int(data.n_labelled), replace=False)))
        log.info("%s: %d tiles of %d px from %d scene(s)", role, len(t), kw["tile"], len(t.scene_names))
        _save_tiles(folder, t)
        parts[role] = t
    real = None
    if data.source == "real":
        from .real import real_folder_record
        real = real_folder_record(root)
    return StudyData(parts["pool"], parts["train"], parts["eval"], root, key, bands=bands,
                     pool_sites=scene_sites(pairs["pool"]), real=real)


def scene_sites(pairs: list) -> list[str]:
    """The site of each scene: its ``SITE`` GeoTIFF tag when every scene has one (the real arm writes the prepared
    index's sites), else scenes whose WGS84 footprints overlap (two dates of one place, a crop) share the site of
    the first of them, grouped transitively. Aligned with ``pairs``."""
    import rasterio

    tags = []
    for p in pairs:
        with rasterio.open(p.image) as ds:
            tags.append(ds.tags().get("SITE"))
    if all(tags):
        return [str(t) for t in tags]
    boxes = [raster_info(p.image, max_px=1).bounds_wgs84 for p in pairs]
    site = list(range(len(pairs)))
    for i, (w, s, e, n) in enumerate(boxes):
        for j in range(i):
            wj, sj, ej, nj = boxes[j]
            if min(e, ej) > max(w, wj) and min(n, nj) > max(s, sj):
                old, new = site[i], site[j]
                site = [new if x == old else x for x in site]
    return [pairs[k].name for k in site]


def tile_labels(d: StudyData) -> tuple[np.ndarray, list[str], str]:
    """The labels whose balance every variant's training set is measured by (``label_entropy``): the tiles'
    majority land cover when the pool has land-cover rasters, else the site of the tile's scene (scenes over
    overlapping ground share one; :func:`scene_sites`). Measurement only: no variant but ``manual`` reads land cover.
    Returns (labels: (n_pool,) int64, -1 unknown; names: one per label value; kind: "land_cover" | "site")."""
    if has_land_cover(d.pool.land_cover):
        return d.pool.land_cover.astype(np.int64), list(CLASSES), "land_cover"
    sites = d.pool_sites or list(d.pool.scene_names)
    names, per_scene = np.unique(sites, return_inverse=True)
    return per_scene[d.pool.scene.astype(np.int64)].astype(np.int64), [str(n) for n in names], "site"


def normalised_entropy(labels: np.ndarray, n_classes: int) -> float:
    """Entropy of the label shares of ``labels`` (ints in [0, n_classes); negatives ignored) over log(n_classes):
    1 for a set spread evenly over every class, 0 for one class."""
    lab = labels[labels >= 0]
    if n_classes < 2 or lab.size == 0:
        return float("nan")
    p = np.bincount(lab, minlength=n_classes) / lab.size
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / np.log(n_classes))


def band_statistics(images: np.ndarray, chunk: int = 1024) -> tuple[list[float], list[float]]:
    """Per-band mean and standard deviation of (n, C, t, t) reflectance tiles over their valid pixels (a pixel
    that is 0 in every band is no-data fill and left out): the input normalisation computed on the pool.
    Returns two lists of C floats; a constant band gets std 1e-3 rather than 0."""
    c = images.shape[1]
    total, sq, count = np.zeros(c), np.zeros(c), 0
    for s in range(0, len(images), chunk):
        x = np.asarray(images[s:s + chunk], np.float64).transpose(1, 0, 2, 3).reshape(c, -1)
        x = x[:, (x != 0).any(axis=0)]
        total += x.sum(axis=1)
        sq += (x * x).sum(axis=1)
        count += x.shape[1]
    if count == 0:
        raise CurationInputError("every pool pixel is no-data: nothing to compute the band statistics from")
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean * mean, 0.0))
    return [round(float(v), 5) for v in mean], [round(float(max(v, 1e-3)), 5) for v in std]


def forest_mask(land_cover: np.ndarray) -> np.ndarray:
    """True for tiles whose majority class is a forest kind."""
    return np.isin(land_cover, FOREST)


def land_cover_shares(land_cover: np.ndarray, n_classes: int = len(CLASSES)) -> np.ndarray:
    """(n_classes,) share of tiles per majority class (tiles of unknown class ignored)."""
    lc = land_cover[land_cover >= 0]
    return np.bincount(lc, minlength=n_classes)[:n_classes] / max(lc.size, 1)


def has_land_cover(land_cover: np.ndarray) -> bool:
    """Whether any tile has a known land-cover class (``<scene>_landcover.tif`` beside its scene)."""
    return bool((land_cover >= 0).any())


def data_summary(d: StudyData) -> dict:
    """Sizes, regions, the bands read, the labels behind ``label_entropy`` (their kind, names, pool shares and
    entropy) and, when the pool has land-cover rasters, its make-up (None: unknown)."""
    hv = d.eval.chm[np.isfinite(d.eval.chm)]
    known = has_land_cover(d.pool.land_cover)
    labels, names, kind = tile_labels(d)
    shares = np.bincount(labels[labels >= 0], minlength=len(names)) / max(int((labels >= 0).sum()), 1)
    return {"label_kind": kind, "label_names": names,
            "pool_label_shares": dict(zip(names, shares.round(4).tolist())),
            "pool_label_entropy": normalised_entropy(labels, len(names)),
            **({"real": d.real} if d.real else {}),
            "pool_tiles": len(d.pool), "labelled_tiles": len(d.labelled), "eval_tiles": len(d.eval),
            "regions": d.regions, "bands": d.bands,
            "pool_forest_share": float(forest_mask(d.pool.land_cover[d.pool.land_cover >= 0]).mean()) if known
            else None,
            "pool_land_cover_shares": dict(zip(CLASSES, land_cover_shares(d.pool.land_cover).round(4).tolist()))
            if known else None,
            "eval_height_mean": float(hv.mean()) if hv.size else float("nan"),
            "eval_height_std": float(hv.std()) if hv.size else float("nan")}


def digest(*arrays) -> str:
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]
