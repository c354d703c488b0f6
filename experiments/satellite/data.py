"""The study's data: scenes on disk as GeoTIFF (generated, or a user's folder) -> tiles for the three roles.

Folder layout (the generated data is written in the same layout, so one loader reads both)::

    root/pool/<scene>.tif                        unlabelled scenes: the pool that is curated (CHMs ignored)
    root/train/<scene>.tif + <scene>_chm.tif     labelled scenes for the height head (a small labelled set)
    root/eval/<scene>.tif  + <scene>_chm.tif     held-out evaluation regions, one region per scene
    (optional <scene>_landcover.tif beside any scene: class raster used only to measure land-cover shares)

Images: >= 4 bands (R, G, B, NIR, in that order, or pick them with ``data.bands``), any dtype, reflectance =
value x ``data.reflectance_scale``. Canopy-height rasters: metres, any CRS/resolution (warped onto the image grid
unless ``data.chm_mismatch=error``), nodata honoured.
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

from sslcurate import CurationInputError
from sslcurate.artifacts import atomic_save_json, atomic_save_npy, config_hash

from .geo import Tiles, find_scene_pairs, read_scenes, write_geotiff
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


def tile_kwargs(data: DictConfig) -> dict:
    return dict(tile=int(data.tile_size), stride=int(data.stride), n_bands=int(data.n_bands),
                reflectance_scale=float(data.reflectance_scale), max_nodata_frac=float(data.max_nodata_frac),
                chm_mismatch=str(data.chm_mismatch), max_height=float(data.max_height))


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
        gen_key = config_hash({"generator": OmegaConf.to_container(data.generator, resolve=True),
                               "render_version": RENDER_VERSION})
        root = generate(data.generator, cache / "satellite_scenes" / gen_key, progress)
        fingerprint = gen_key
    elif data.source == "folder":
        if not data.root:
            raise CurationInputError("data.source=folder needs data.root=PATH (with pool/, train/, eval/ inside)")
        root = Path(str(data.root)).expanduser()
        if not root.is_dir():
            raise CurationInputError(f"satellite data folder {root} does not exist")
        fingerprint = config_hash(_folder_fingerprint(root))
    else:
        raise CurationInputError(f"data.source must be 'generated' or 'folder', not {data.source!r}")
    kw = tile_kwargs(data)
    key = config_hash({"scenes": fingerprint, "tiles": kw, "root": str(root), "n_labelled": int(data.n_labelled),
                       "labelled_seed": int(data.labelled_seed), "bands": list(data.bands)})
    tdir = cache / "satellite_tiles" / key
    parts = {}
    for role in ROLES:
        folder = tdir / role
        if (folder / "tiles.json").exists():
            parts[role] = _load_tiles(folder)
            continue
        pairs = find_scene_pairs(root / role, chm_suffix=str(data.chm_suffix), require_chm=role != "pool")
        t = read_scenes(pairs, with_chm=role != "pool", **kw)
        t = _select_bands(t, list(data.bands))
        if role == "train" and int(data.n_labelled) < len(t):  # the small labelled set: fixed for every variant
            rng = np.random.default_rng([int(data.labelled_seed), 11])
            t = t.subset(np.sort(rng.choice(len(t), size=int(data.n_labelled), replace=False)))
        log.info("%s: %d tiles of %d px from %d scene(s)", role, len(t), kw["tile"], len(t.scene_names))
        _save_tiles(folder, t)
        parts[role] = t
    return StudyData(parts["pool"], parts["train"], parts["eval"], root, key)


def _select_bands(t: Tiles, bands: list[int]) -> Tiles:
    """Keep the configured bands (1-based, in R, G, B, NIR order) of tiles read with the first n_bands bands."""
    idx = [b - 1 for b in bands]
    if idx != list(range(len(idx))) or t.images.shape[1] != len(idx):
        if max(idx) >= t.images.shape[1]:
            raise CurationInputError(f"data.bands {bands} asks for band {max(bands)} but only "
                                     f"{t.images.shape[1]} were read (raise data.n_bands)")
        t.images = np.ascontiguousarray(t.images[:, idx])
    return t


def forest_mask(land_cover: np.ndarray) -> np.ndarray:
    """True for tiles whose majority class is a forest kind."""
    return np.isin(land_cover, FOREST)


def land_cover_shares(land_cover: np.ndarray, n_classes: int = len(CLASSES)) -> np.ndarray:
    """(n_classes,) share of tiles per majority class (tiles of unknown class ignored)."""
    lc = land_cover[land_cover >= 0]
    return np.bincount(lc, minlength=n_classes)[:n_classes] / max(lc.size, 1)


def data_summary(d: StudyData) -> dict:
    hv = d.eval.chm[np.isfinite(d.eval.chm)]
    return {"pool_tiles": len(d.pool), "labelled_tiles": len(d.labelled), "eval_tiles": len(d.eval),
            "regions": d.regions, "pool_forest_share": float(forest_mask(d.pool.land_cover).mean()),
            "pool_land_cover_shares": dict(zip(CLASSES, land_cover_shares(d.pool.land_cover).round(4).tolist())),
            "eval_height_mean": float(hv.mean()) if hv.size else float("nan"),
            "eval_height_std": float(hv.std()) if hv.size else float("nan")}


def digest(*arrays) -> str:
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]
