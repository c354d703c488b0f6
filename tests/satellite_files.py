"""Small rasters the satellite tests write: a multiband scene and its canopy-height model."""

from __future__ import annotations

import numpy as np
from rasterio.transform import from_origin

from experiments.satellite.geo import write_geotiff

CRS = "EPSG:32632"


def scene_files(folder, name, rng, size=64, chm_res=1.0, nodata_rows=0, bands=4, with_chm=True, x0=500000,
                dtype=np.uint16, high=5000):
    """A small image (DN of ``dtype`` in [1, high), nodata 0; floats: reflectance) and its CHM (float32 m) written to
    ``folder`` with its top-left corner at easting ``x0``; returns (dn, chm)."""
    folder.mkdir(parents=True, exist_ok=True)
    if np.dtype(dtype).kind == "f":
        dn = rng.uniform(0.01, high, size=(bands, size, size)).astype(dtype)
    else:
        dn = rng.integers(max(1, high // 50), high, size=(bands, size, size)).astype(dtype)
    dn[:, :nodata_rows] = 0
    chm = rng.uniform(0, 30, size=(size, size)).astype(np.float32)
    t = from_origin(x0, 5400000, 1.0, 1.0)
    write_geotiff(folder / f"{name}.tif", dn, CRS, t, nodata=0)
    if with_chm:
        f = int(round(1.0 / chm_res))
        hi = np.kron(chm, np.ones((f, f), np.float32)) if f > 1 else chm
        write_geotiff(folder / f"{name}_chm.tif", hi, CRS, from_origin(x0, 5400000, chm_res, chm_res),
                      nodata=-9999.0)
    return dn, chm
