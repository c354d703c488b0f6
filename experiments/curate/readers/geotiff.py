"""GeoTIFF scenes cut into tiles: listing reads metadata only, each tile is a windowed read."""

from __future__ import annotations

import logging

import numpy as np

from sslcurate import CurationInputError

from .base import Item, ItemError, Reader, _find_files

log = logging.getLogger(__name__)

TIF_SUFFIXES = (".tif", ".tiff")


class GeoTiffReader(Reader):
    """``tile`` x ``tile`` tiles (step ``stride``, default ``tile``) of GeoTIFF scenes: ``data.path`` a folder
    (searched recursively), a glob or one file. ``bands``: 1-based band indexes (default: every band of the first
    readable scene). Tiles that would cross the right or bottom edge are not cut. Listing reads only metadata;
    each tile is a windowed read."""

    kind = "geotiff"
    what = "GeoTIFF scenes (.tif/.tiff): a folder, a glob or a file"

    def __init__(self, path, tile: int = 224, stride: int | None = None, bands: list[int] | None = None,
                 strict: bool = False):
        super().__init__(path, strict)
        self.tile = int(tile)
        self.stride = int(stride or tile)
        self.bands = None if bands is None else [int(b) for b in bands]
        if self.tile < 1 or self.stride < 1:
            raise CurationInputError(f"data.tile ({tile}) and data.stride ({stride}) must be positive")
        if self.bands is not None and (not self.bands or min(self.bands) < 1):
            raise CurationInputError(f"data.bands {bands}: 1-based band indexes, e.g. [1, 2, 3]")

    def _list(self):
        import rasterio
        from rasterio.errors import RasterioError

        root, paths = _find_files(self.path, TIF_SUFFIXES, self.what)
        self.scenes, items, where = [], [], []
        t, s = self.tile, self.stride
        for path in paths:
            name = path.relative_to(root).as_posix()
            try:
                with rasterio.open(path) as ds:
                    count, height, width = ds.count, ds.height, ds.width
            except (RasterioError, OSError) as err:
                self._skip(name, f"not a readable GeoTIFF ({err})")
                continue
            if self.bands is None:
                self.bands = list(range(1, count + 1))
                log.info("geotiff: reading bands %s (all bands of %s; set data.bands to choose)", self.bands, name)
            if max(self.bands) > count:
                self._skip(name, f"{count} band(s), band {max(self.bands)} is asked for (data.bands={self.bands})")
                continue
            if height < t or width < t:
                self._skip(name, f"{width} x {height} px is smaller than one tile ({t} px)")
                continue
            rows, cols = np.arange(0, height - t + 1, s), np.arange(0, width - t + 1, s)
            items += [Item(f"{name}:{r},{c}") for r in rows for c in cols]
            rr, cc = np.meshgrid(rows, cols, indexing="ij")
            where.append(np.stack([np.full(rr.size, len(self.scenes)), rr.ravel(), cc.ravel()], axis=1))
            self.scenes.append(path)
        self.where = np.concatenate(where) if where else np.zeros((0, 3), np.int64)  # (n, 3): scene, row, col
        return items

    def _open(self, scene: int):
        import rasterio
        from rasterio.errors import RasterioError

        try:
            return rasterio.open(self.scenes[scene])
        except (RasterioError, OSError) as err:
            raise ItemError(f"cannot open scene ({err})") from None

    def _load(self, i: int) -> np.ndarray:
        """(bands, tile, tile) float32 raw values; nodata (masked or NaN) pixels read as 0."""
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        scene, row, col = (int(v) for v in self.where[i])
        ds = self._cached(("scene", scene), lambda: self._open(scene))
        try:
            tile = ds.read(self.bands, window=Window(col, row, self.tile, self.tile), masked=True)
        except (RasterioError, OSError, ValueError) as err:
            raise ItemError(f"cannot read tile ({err})") from None
        data = np.asarray(tile.data, dtype=np.float32)
        invalid = np.ma.getmaskarray(tile) | np.isnan(data)
        if invalid.all():
            raise ItemError("all nodata")
        data[invalid] = 0
        return data
