"""GeoTIFF I/O for the satellite study (rasterio): writing generated scenes, pairing a user's scenes with their
canopy-height rasters, aligning a height raster to its image grid, and cutting tiles with windowed reads.

Large rasters are never loaded whole: tiles are read strip by strip (one row of tiles at a time) through
``rasterio`` windows; a height raster in another CRS or at another resolution is warped onto the image grid on
the fly (``WarpedVRT``, average resampling when it is finer, bilinear otherwise) or rejected with a clear error
(``chm_mismatch="error"``). Bad input raises :class:`sslcurate.CurationInputError` naming the file and the problem.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sslcurate import CurationInputError

log = logging.getLogger(__name__)
TIF_SUFFIXES = (".tif", ".tiff")


def write_geotiff(path: Path, data: np.ndarray, crs: str, transform, nodata=None, tags: dict | None = None,
                  descriptions: tuple | None = None) -> Path:
    """Write ``data`` (C, H, W) or (H, W) as a tiled, deflate-compressed GeoTIFF (atomically: temp file + rename)."""
    import rasterio

    path = Path(path)
    arr = data[None] if data.ndim == 2 else data
    tmp = path.with_name(f".{path.name}.tmp")
    profile = dict(driver="GTiff", height=arr.shape[1], width=arr.shape[2], count=arr.shape[0], dtype=arr.dtype,
                   crs=crs, transform=transform, nodata=nodata, compress="deflate")
    if arr.shape[1] >= 256 and arr.shape[2] >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(arr)
        if tags:
            dst.update_tags(**{k: str(v) for k, v in tags.items()})
        for i, d in enumerate(descriptions or (), 1):
            dst.set_band_description(i, d)
    tmp.replace(path)
    return path


@dataclass
class ScenePair:
    """An image scene and (optionally) its canopy-height and land-cover rasters."""

    name: str
    image: Path
    chm: Path | None = None
    land_cover: Path | None = None  # optional class raster, for measurement only


def find_scene_pairs(folder: Path, chm_suffix: str = "_chm", landcover_suffix: str = "_landcover",
                     require_chm: bool = True) -> list[ScenePair]:
    """Image GeoTIFFs of ``folder`` paired with ``<stem><chm_suffix>.tif`` height rasters (sorted by name).

    Files ending in the CHM or land-cover suffix are not images. ``require_chm``: an image without its CHM is an
    error (labelled and evaluation folders) rather than silently dropped."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise CurationInputError(f"satellite data folder {folder} does not exist or is not a directory")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in TIF_SUFFIXES and not p.name.startswith("."))
    by_stem = {p.stem: p for p in files}
    pairs = []
    for p in files:
        if p.stem.endswith(chm_suffix) or p.stem.endswith(landcover_suffix):
            continue
        chm = by_stem.get(p.stem + chm_suffix)
        if chm is None and require_chm:
            raise CurationInputError(f"{p}: no canopy-height raster {p.stem}{chm_suffix}.tif beside it in {folder}")
        pairs.append(ScenePair(p.stem, p, chm, by_stem.get(p.stem + landcover_suffix)))
    if not pairs:
        raise CurationInputError(f"no GeoTIFF scenes (*.tif) in {folder}")
    return pairs


def _open(path: Path):
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        return rasterio.open(path)
    except RasterioIOError as err:
        raise CurationInputError(f"cannot read GeoTIFF {path}: {err}") from None


def check_image(ds, bands: list[int] | None, path: Path) -> None:
    """A readable, georeferenced, north-up image holding the 1-based ``bands`` (None: any band count)."""
    if ds.crs is None:
        raise CurationInputError(f"{path}: no CRS; satellite scenes must be georeferenced")
    if bands and max(bands) > ds.count:
        raise CurationInputError(f"{path}: {ds.count} band(s), the study reads bands {list(bands)}; set "
                                 f"data.bands=auto (all {ds.count} bands) or pick {ds.count} or fewer, e.g. "
                                 f"data.bands={list(range(1, ds.count + 1))}")
    t = ds.transform
    if t.b != 0 or t.d != 0:
        raise CurationInputError(f"{path}: rotated/sheared geotransform {tuple(t)[:6]} is not supported; "
                                 "warp it north-up first (gdalwarp)")


@dataclass
class RasterInfo:
    """What the study infers an image's bands and value range from: band count, dtype, the largest valid value
    (of a decimated read, at most ``max_px`` pixels a side) and the footprint in WGS84 (west, south, east, north)."""

    path: Path
    count: int
    dtype: str
    max_value: float
    bounds_wgs84: tuple


def raster_info(path: Path, max_px: int = 512) -> RasterInfo:
    from rasterio.enums import Resampling
    from rasterio.warp import transform_bounds

    with _open(path) as ds:
        if ds.crs is None:
            raise CurationInputError(f"{path}: no CRS; satellite scenes must be georeferenced")
        f = max(1, int(np.ceil(max(ds.width, ds.height) / max_px)))
        shape = (ds.count, max(1, ds.height // f), max(1, ds.width // f))
        x = ds.read(out_shape=shape, resampling=Resampling.nearest, masked=True)
        valid = x.compressed()
        valid = valid[np.isfinite(valid)] if valid.dtype.kind == "f" else valid
        top = float(valid.max()) if valid.size else 0.0
        return RasterInfo(Path(path), ds.count, str(ds.dtypes[0]), top, tuple(transform_bounds(ds.crs, "EPSG:4326",
                                                                                               *ds.bounds)))


def infer_reflectance_scale(dtypes: set[str], max_value: float) -> tuple[float, str]:
    """The factor that maps stored values to reflectance in [0, 1], from the dtype and the largest value seen:
    8-bit: 1/255; values up to 1.5 (floats): 1; up to 10,000: 1e-4 (reflectance x 10,000 products: Sentinel-2,
    Landsat surface reflectance); larger: 1 / (2^b - 1) for the smallest bit depth b holding them (raw DN of an
    11-, 12-, 14- or 16-bit sensor). Returns (scale, the reason in words)."""
    if dtypes <= {"uint8", "int8"}:
        return 1 / 255, "8-bit values (0-255)"
    if max_value <= 1.5:
        return 1.0, f"values up to {max_value:g} (reflectance 0-1)"
    if max_value <= 10_000:
        return 1e-4, f"values up to {max_value:g} (reflectance x 10,000)"
    bits = int(np.ceil(np.log2(max_value + 1)))
    return 1 / (2 ** bits - 1), f"values up to {max_value:g} ({bits}-bit digital numbers)"


def same_grid(a, b, tol: float = 1e-6) -> bool:
    """Same CRS, same pixel grid and same shape."""
    return (a.crs == b.crs and a.width == b.width and a.height == b.height
            and all(abs(x - y) <= tol * max(1.0, abs(x)) for x, y in zip(tuple(a.transform)[:6],
                                                                          tuple(b.transform)[:6])))


def aligned_chm(stack: ExitStack, img, chm_path: Path, on_mismatch: str = "reproject"):
    """The height raster as a dataset on the image's grid: itself when it already is, else a ``WarpedVRT``.

    on_mismatch: ``reproject`` (warp: average resampling from a finer grid, bilinear otherwise) or ``error``."""
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import transform_bounds

    chm = stack.enter_context(_open(chm_path))
    if chm.crs is None:
        raise CurationInputError(f"{chm_path}: canopy-height raster has no CRS")
    if same_grid(img, chm):
        return chm
    what = (f"image {img.name}: {img.crs} at {img.res[0]:g} x {img.res[1]:g} ({img.width} x {img.height} px); "
            f"CHM {chm_path}: {chm.crs} at {chm.res[0]:g} x {chm.res[1]:g} ({chm.width} x {chm.height} px)")
    if on_mismatch == "error":
        raise CurationInputError(f"image and canopy-height grids differ ({what}); set "
                                 "data.chm_mismatch=reproject to warp the CHM onto the image grid")
    if on_mismatch != "reproject":
        raise CurationInputError(f"data.chm_mismatch must be 'reproject' or 'error', not {on_mismatch!r}")
    left, bottom, right, top = transform_bounds(chm.crs, img.crs, *chm.bounds)
    ib = img.bounds
    if left >= ib.right or right <= ib.left or bottom >= ib.top or top <= ib.bottom:
        raise CurationInputError(f"canopy-height raster does not overlap its image ({what})")
    chm_res = np.sqrt(abs(chm.res[0] * chm.res[1]))
    if chm.crs != img.crs:  # approximate CHM pixel size in the image CRS
        l2, b2, r2, t2 = transform_bounds(chm.crs, img.crs, *chm.bounds)
        chm_res = np.sqrt(abs((r2 - l2) * (t2 - b2)) / (chm.width * chm.height))
    finer = chm_res < 0.99 * np.sqrt(abs(img.res[0] * img.res[1]))
    resampling = Resampling.average if finer else Resampling.bilinear
    log.info("warping CHM onto the image grid (%s resampling): %s", resampling.name, what)
    nodata = chm.nodata if chm.nodata is not None else -9999.0
    return stack.enter_context(WarpedVRT(chm, crs=img.crs, transform=img.transform, width=img.width,
                                         height=img.height, resampling=resampling, src_nodata=chm.nodata,
                                         nodata=nodata, dtype="float32"))


@dataclass
class Tiles:
    """Tiles cut from one or more scenes. ``images`` (n, C, t, t) float16 reflectance in [0, 1];
    ``chm`` (n, t, t) float32 metres with NaN where unknown (None without heights); ``land_cover`` (n,) int16
    majority class (-1 unknown; measurement only); ``scene`` (n,) int16 index into ``scene_names``;
    ``origin`` (n, 2) int32 pixel (row, col) of the tile in its scene; ``centre_xy`` (n, 2) float64 map
    coordinates of the tile centre in its scene's CRS."""

    images: np.ndarray
    chm: np.ndarray | None
    land_cover: np.ndarray
    scene: np.ndarray
    origin: np.ndarray
    centre_xy: np.ndarray
    scene_names: list

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: np.ndarray) -> "Tiles":
        return Tiles(self.images[idx], None if self.chm is None else self.chm[idx], self.land_cover[idx],
                     self.scene[idx], self.origin[idx], self.centre_xy[idx], self.scene_names)

    @staticmethod
    def concat(parts: list["Tiles"]) -> "Tiles":
        names, offset, scenes = [], 0, []
        for p in parts:
            scenes.append(p.scene + offset)
            names += p.scene_names
            offset += len(p.scene_names)
        chm = None if any(p.chm is None for p in parts) else np.concatenate([p.chm for p in parts])
        return Tiles(np.concatenate([p.images for p in parts]), chm,
                     np.concatenate([p.land_cover for p in parts]), np.concatenate(scenes).astype(np.int16),
                     np.concatenate([p.origin for p in parts]), np.concatenate([p.centre_xy for p in parts]), names)


def read_tiles(pair: ScenePair, tile: int = 32, stride: int | None = None, bands: list[int] | None = None,
               reflectance_scale: float | dict = 1e-4, max_nodata_frac: float = 0.1, with_chm: bool = True,
               chm_mismatch: str = "reproject", max_height: float = 120.0, n_classes: int = 256) -> Tiles:
    """Cut ``tile`` x ``tile`` tiles (step ``stride``) from one scene with windowed reads, strip by strip.

    bands: 1-based band numbers to read, in the order the tiles keep (None: every band of the file); values are
    multiplied by ``reflectance_scale`` (or by its entry for the file's dtype, a dict) and clipped to [0, 1].

    A pixel is invalid where any band is masked (nodata / alpha / internal mask) or, with ``with_chm``, where
    the height is nodata, NaN, or above ``max_height``; tiles with more than ``max_nodata_frac`` invalid pixels
    are dropped. Invalid image pixels become 0, invalid heights NaN; negative heights (lidar noise) become 0."""
    from rasterio.windows import Window

    stride = stride or tile
    if with_chm and pair.chm is None:
        raise CurationInputError(f"{pair.image}: no canopy-height raster")
    out_img, out_chm, out_lc, out_origin, out_xy = [], [], [], [], []
    with ExitStack() as stack:
        img = stack.enter_context(_open(pair.image))
        check_image(img, bands, pair.image)
        bands = list(bands) if bands else list(range(1, img.count + 1))
        scale = reflectance_scale[img.dtypes[0]] if isinstance(reflectance_scale, dict) else reflectance_scale
        if img.width < tile or img.height < tile:
            raise CurationInputError(f"{pair.image}: {img.width} x {img.height} px is smaller than one tile ({tile})")
        chm = aligned_chm(stack, img, pair.chm, chm_mismatch) if with_chm else None
        lc = None
        if pair.land_cover is not None:
            lc_ds = stack.enter_context(_open(pair.land_cover))
            lc = lc_ds if same_grid(img, lc_ds) else None
        cols = np.arange(0, img.width - tile + 1, stride)
        for r0 in range(0, img.height - tile + 1, stride):
            win = Window(0, r0, int(cols[-1] + tile), tile)
            values = img.read(bands, window=win).astype(np.float32) * scale
            valid = (img.read_masks(bands, window=win) > 0).all(axis=0)
            if with_chm:
                h = chm.read(1, window=win, masked=True).astype(np.float32)
                hv = np.ma.getmaskarray(h) | ~np.isfinite(h.filled(0)) | (h.filled(0) > max_height)
                h = np.where(hv, np.nan, np.maximum(h.filled(0), 0)).astype(np.float32)
                valid &= ~hv
            lcs = lc.read(1, window=win) if lc is not None else None
            for c0 in cols:
                v = valid[:, c0:c0 + tile]
                if 1 - v.mean() > max_nodata_frac:
                    continue
                t_img = np.where(v[None], values[:, :, c0:c0 + tile], 0)
                out_img.append(np.clip(t_img, 0, 1).astype(np.float16))
                if with_chm:
                    out_chm.append(np.where(v, h[:, c0:c0 + tile], np.nan))
                if lcs is not None:
                    counts = np.bincount(lcs[:, c0:c0 + tile][v].ravel().astype(np.int64), minlength=n_classes)
                    out_lc.append(int(counts.argmax()) if counts.sum() else -1)
                else:
                    out_lc.append(-1)
                out_origin.append((r0, c0))
                x, y = img.xy(r0 + tile / 2 - 0.5, c0 + tile / 2 - 0.5)
                out_xy.append((x, y))
    n = len(out_img)
    if n == 0:
        raise CurationInputError(f"{pair.image}: no tile of {tile} px with at most {max_nodata_frac:.0%} no-data")
    return Tiles(np.stack(out_img), np.stack(out_chm).astype(np.float32) if with_chm else None,
                 np.array(out_lc, np.int16), np.zeros(n, np.int16), np.array(out_origin, np.int32),
                 np.array(out_xy, np.float64), [pair.name])


def read_scenes(pairs: list[ScenePair], **kwargs) -> Tiles:
    """:func:`read_tiles` over several scenes, concatenated (``scene`` indexes ``scene_names``)."""
    return Tiles.concat([read_tiles(p, **kwargs) for p in pairs])
