"""Satellite study: scene generation, GeoTIFF loading (windowed tiles, nodata, CRS/resolution mismatch, bad input)
on small files the tests write, metrics, the dense head, the quick preset end to end, and the paper config's
dry run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from omegaconf import OmegaConf
from rasterio.transform import from_origin

from experiments.satellite.data import build_data
from experiments.satellite.geo import ScenePair, find_scene_pairs, read_tiles, write_geotiff
from experiments.satellite.metrics import block_means, height_metrics
from experiments.satellite.scenes import CLASSES, FOREST, SceneSpec, cast_shadows, make_scene
from sslcurate import CurationInputError

from conftest import ROOT, run_cli
from satellite_files import CRS, scene_files


def test_scene_is_long_tailed_and_heights_live_in_forests():
    """Generated shares follow the recipe; heights are >= 0, tall only in and at the edge of forests; reflectance in [0, 1]; crowns
    are brighter in NIR than in red (vegetation)."""
    spec = SceneSpec("t", size=128, shares={"water": 0.5, "cropland": 0.3, "conifer": 0.2}, sun_elevation=40)
    s = make_scene(spec, np.random.default_rng(0))
    lc, chm, refl = s["land_cover"], s["chm"], s["reflectance"]
    shares = np.bincount(lc.ravel(), minlength=len(CLASSES)) / lc.size
    assert abs(shares[0] - 0.5) < 0.12 and abs(shares[4] - 0.2) < 0.1
    from scipy import ndimage
    far = ndimage.distance_transform_edt(~np.isin(lc, FOREST)) > 12  # crowns overhang forest edges, no further
    assert chm.min() >= 0 and chm[far & (lc == 0)].max() == 0
    assert chm[np.isin(lc, FOREST)].mean() > 5
    assert 0 <= refl.min() and refl.max() <= 1
    crown = chm > 5
    assert refl[3][crown].mean() > 3 * refl[0][crown].mean()


def test_pixel_colour_says_crown_not_height():
    """Within crowns, a pixel's NIR brightness correlates only weakly with its height (per-tree reflectance factors,
    weak NIR gain), so height has to come from crown size, texture and shadows."""
    spec = SceneSpec("t", size=128, shares={"water": 0.3, "cropland": 0.2, "conifer": 0.25, "broadleaf": 0.25},
                     sun_elevation=40)
    s = make_scene(spec, np.random.default_rng(0))
    crown = s["chm"] > 2
    assert crown.sum() > 1000
    assert abs(np.corrcoef(s["reflectance"][3][crown], s["chm"][crown])[0, 1]) < 0.5


@pytest.mark.parametrize("elevation", [30.0, 60.0])
def test_shadows_lengthen_with_height_and_low_sun(elevation):
    """A lone 20 m column casts a shadow ~ h / tan(elevation) long, away from the sun (sun in the south)."""
    dsm = np.zeros((200, 200))
    dsm[150, 100] = 20.0
    shade = cast_shadows(dsm, gsd=1.0, elevation=elevation, azimuth=180.0)
    rows = np.nonzero(shade[:, 100])[0]
    assert rows.size and rows.max() < 150  # north of the tree (rows decrease northwards)
    expected = 20.0 / np.tan(np.radians(elevation))
    assert abs((150 - rows.min()) - expected) <= 2


def test_windowed_tiles_roundtrip(tmp_path, rng):
    """Tiles read back equal the written rasters; map coordinates of the tile centres follow the transform."""
    dn, chm = scene_files(tmp_path, "a", rng, size=64)
    t = read_tiles(ScenePair("a", tmp_path / "a.tif", tmp_path / "a_chm.tif"), tile=32, max_nodata_frac=0.0)
    assert len(t) == 4 and t.images.shape == (4, 4, 32, 32) and t.chm.shape == (4, 32, 32)
    np.testing.assert_allclose(t.images[1].astype(np.float32), dn[:, :32, 32:] * 1e-4, atol=1e-3)
    np.testing.assert_allclose(t.chm[2], chm[32:, :32], atol=1e-5)
    assert tuple(t.origin[3]) == (32, 32)
    np.testing.assert_allclose(t.centre_xy[0], (500016.0, 5399984.0))


def test_nodata_tiles_dropped_and_pixels_masked(tmp_path, rng):
    """Image nodata rows: fully invalid tiles are dropped; a partly invalid tile keeps NaN heights there."""
    scene_files(tmp_path, "a", rng, size=64, nodata_rows=36)
    pair = ScenePair("a", tmp_path / "a.tif", tmp_path / "a_chm.tif")
    t = read_tiles(pair, tile=32, max_nodata_frac=0.2)
    assert len(t) == 2 and (t.origin[:, 0] == 32).all()
    assert np.isnan(t.chm[:, :4]).all() and np.isfinite(t.chm[:, 4:]).all()
    assert (t.images[:, :, :4] == 0).all()
    with pytest.raises(CurationInputError, match="no tile"):
        read_tiles(pair, tile=32, max_nodata_frac=0.0, stride=64)  # the only tile at stride 64 is invalid


def test_finer_chm_is_averaged_onto_the_image_grid(tmp_path, rng):
    """A 0.5 m CHM (each 1 m pixel split in four) warps back onto the 1 m image grid exactly (average)."""
    _, chm = scene_files(tmp_path, "a", rng, size=64, chm_res=0.5)
    t = read_tiles(ScenePair("a", tmp_path / "a.tif", tmp_path / "a_chm.tif"), tile=32)
    np.testing.assert_allclose(t.chm[0], chm[:32, :32], atol=1e-4)
    with pytest.raises(CurationInputError, match="grids differ.*0.5"):
        read_tiles(ScenePair("a", tmp_path / "a.tif", tmp_path / "a_chm.tif"), tile=32, chm_mismatch="error")


def test_chm_in_another_crs_is_reprojected(tmp_path):
    """A CHM stored in WGS84 is warped onto the UTM image grid; smooth heights survive the round trip."""
    size = 64
    yy, xx = np.mgrid[0:size, 0:size]
    chm = (10 + 0.3 * xx + 0.2 * yy).astype(np.float32)
    t = from_origin(500000, 5400000, 1.0, 1.0)
    write_geotiff(tmp_path / "a.tif", np.full((4, size, size), 1000, np.uint16), CRS, t, nodata=0)
    from rasterio.warp import Resampling, calculate_default_transform, reproject
    bounds = rasterio.transform.array_bounds(size, size, t)  # (west, south, east, north)
    dst_t, w, h = calculate_default_transform(CRS, "EPSG:4326", size, size, *bounds)
    out = np.full((h, w), -9999.0, np.float32)
    reproject(chm, out, src_transform=t, src_crs=CRS, dst_transform=dst_t, dst_crs="EPSG:4326",
              resampling=Resampling.bilinear, dst_nodata=-9999.0)
    write_geotiff(tmp_path / "a_chm.tif", out, "EPSG:4326", dst_t, nodata=-9999.0)
    tiles = read_tiles(ScenePair("a", tmp_path / "a.tif", tmp_path / "a_chm.tif"), tile=32, max_nodata_frac=0.3)
    assert len(tiles) >= 3
    for tile_chm, (r, c) in zip(tiles.chm, tiles.origin):
        ok = np.isfinite(tile_chm)
        assert ok.mean() > 0.7
        assert np.abs(tile_chm[ok] - chm[r:r + 32, c:c + 32][ok]).mean() < 1.0


def test_bad_inputs_fail_clearly(tmp_path, rng):
    """Missing folder, image without its CHM, too few bands, a CHM that does not overlap: CurationInputError."""
    with pytest.raises(CurationInputError, match="does not exist"):
        find_scene_pairs(tmp_path / "nope")
    scene_files(tmp_path / "nochm", "a", rng, with_chm=False)
    with pytest.raises(CurationInputError, match="no canopy-height raster"):
        find_scene_pairs(tmp_path / "nochm")
    assert find_scene_pairs(tmp_path / "nochm", require_chm=False)[0].chm is None
    scene_files(tmp_path / "rgb", "a", rng, bands=3)
    with pytest.raises(CurationInputError, match=r"3 band\(s\), the study reads bands \[1, 2, 3, 4\]; set "
                                                 r"data.bands=auto .* data.bands=\[1, 2, 3\]"):
        read_tiles(find_scene_pairs(tmp_path / "rgb")[0], tile=32, bands=[1, 2, 3, 4])
    assert read_tiles(find_scene_pairs(tmp_path / "rgb")[0], tile=32).images.shape[1] == 3  # every band
    scene_files(tmp_path / "far", "a", rng)
    write_geotiff(tmp_path / "far" / "a_chm.tif", np.zeros((64, 64), np.float32), CRS,
                  from_origin(900000, 5400000, 1.0, 1.0), nodata=-9999.0)
    with pytest.raises(CurationInputError, match="does not overlap"):
        read_tiles(find_scene_pairs(tmp_path / "far")[0], tile=32)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.tif").write_bytes(b"not a tiff")
    (tmp_path / "broken" / "a_chm.tif").write_bytes(b"not a tiff")
    with pytest.raises(CurationInputError, match="cannot read"):
        read_tiles(find_scene_pairs(tmp_path / "broken")[0], tile=32)


def test_folder_loader_builds_pool_labelled_and_eval(tmp_path, rng):
    """A user's folder (pool/ without CHMs, train/ and eval/ with CHMs) becomes the study's tiles."""
    root = tmp_path / "scenes"
    for i in range(2):
        scene_files(root / "pool", f"p{i}", rng, size=96, with_chm=False)
    scene_files(root / "train", "lab", rng, size=64)
    scene_files(root / "eval", "e1", rng, size=64, chm_res=0.5, x0=510000)
    scene_files(root / "eval", "e2", rng, size=64, nodata_rows=10, x0=520000)
    data_cfg = OmegaConf.load(ROOT / "configs" / "data" / "satellite.yaml")
    data_cfg.source, data_cfg.root, data_cfg.n_labelled = "folder", str(root), 3
    d = build_data(OmegaConf.create({"data": data_cfg}), tmp_path / "cache")
    assert len(d.pool) == 18 and d.pool.chm is None
    assert len(d.labelled) == 3 and d.labelled.chm.shape == (3, 32, 32)
    assert d.regions == ["e1", "e2"] and len(d.eval) == 4 + 2  # e2: its top tiles are 31% no-data
    again = build_data(OmegaConf.create({"data": data_cfg}), tmp_path / "cache")  # from the tile cache
    np.testing.assert_array_equal(again.eval.chm, d.eval.chm)


def test_height_metrics():
    """Perfect predictions: R² = block R² = 1, MAE = 0; predicting the mean: R² = 0; NaN pixels are ignored."""
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 30, (6, 32, 32)).astype(np.float32)
    true[0, :3] = np.nan
    m = height_metrics(np.nan_to_num(true), true, block=16)
    assert m["r2"] == pytest.approx(1) and m["block_r2"] == pytest.approx(1) and m["mae"] == 0
    flat = np.full_like(true, np.nanmean(true))
    assert height_metrics(flat, true)["r2"] == pytest.approx(0, abs=1e-6)
    means, keep = block_means(np.ones((2, 32, 32)), np.ones((2, 32, 32), bool), 16)
    assert means.shape == (8,) and keep.all()


def test_dense_head_on_frozen_multiband_backbone():
    """The shared DINO module takes 4 bands; the head maps its multi-scale maps (and the bands, with the skip) to
    (B, t, t) heights >= 0; the fitted heads are averaged."""
    import torch

    from experiments.satellite.model import DenseHeightHead, feature_maps, head_inputs, train_head
    from experiments.ssl.dino import DINO, DINOConfig

    module = DINO(DINOConfig(backbone="test_resnet", in_chans=4, mean=[0.1] * 4, std=[0.1] * 4))
    x = np.random.default_rng(0).uniform(0, 0.5, (6, 4, 32, 32)).astype(np.float16)
    maps = feature_maps(module, x, [1, 2, 3, 4])
    assert [m.shape[-1] for m in maps] == [8, 4, 2, 1]
    chm = np.random.default_rng(1).uniform(0, 20, (6, 32, 32)).astype(np.float32)
    chm[0, :4] = np.nan  # unknown heights are masked out of the loss
    cfg = OmegaConf.create(dict(dim=16, height_scale=10.0, lr=1e-3, weight_decay=0.0, steps=3, batch_size=4,
                                n_fits=2))
    for skip in (False, True):
        lab = head_inputs(module, x, [1, 2, 3, 4], chm, symmetries=True, image_skip=skip)
        assert lab.feats[0].shape == (8, 6, 32, 8, 8) and lab.chm.shape == (8, 6, 32, 32)
        heads, loss = train_head(lab, cfg, 0, 32)
        assert len(heads.heads) == 2 and all(isinstance(h, DenseHeightHead) for h in heads.heads)
        assert all((h.image_channels == 4) == skip for h in heads.heads)
        out = heads.predict(head_inputs(module, x, [1, 2, 3, 4], image_skip=skip))
        assert out.shape == (6, 32, 32) and (out >= 0).all() and np.isfinite(loss)
        with torch.no_grad():  # the average of the two heads
            xs = heads.norm([m[0] for m in lab.feats])
            img = lab.image[0] if skip else None
            mean = (heads.heads[0](xs, img) + heads.heads[1](xs, img)) / 2
        np.testing.assert_allclose(out, mean.numpy(), rtol=1e-5, atol=1e-5)


def test_dihedral_views_carry_heights_with_the_image():
    """Symmetry k rotates/mirrors image and heights alike: a bright pixel and its height stay together, and the
    eight views are distinct."""
    import torch

    from experiments.satellite.model import dihedral

    img = torch.zeros(1, 4, 5, 5)
    img[0, :, 0, 1] = 1.0
    chm = torch.zeros(1, 5, 5)
    chm[0, 0, 1] = 7.0
    seen = set()
    for k in range(8):
        i, c = dihedral(img, k), dihedral(chm, k)
        assert torch.equal(i[0, 0] == 1.0, c[0] == 7.0)
        seen.add(tuple(torch.nonzero(c[0])[0].tolist()))
    assert len(seen) == 8 and torch.equal(dihedral(img, 0), img)


def test_quick_preset_end_to_end(tmp_path):
    """experiment=satellite_quick runs every stage and writes metrics.json (common format) and the figures."""
    res = run_cli("experiment=satellite_quick", "logger=none", "progress=false", "torch_threads=1",
                  f"hydra.run.dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}")
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert doc["primary_metric"] == "r2_mean" and doc["higher_is_better"]
    assert set(doc["results"]) == {"raw", "curated", "manual", "random_init", "pixel_gbm"}
    assert 0.99 < sum(doc["results"]["curated"][f"share_{c}"]["mean"] for c in CLASSES) < 1.01
    assert doc["results"]["curated"]["top_clusters"]["mean"] <= 4  # quick preset: ~4 top-level clusters
    dd = doc["dedup"]  # near-duplicate tiles removed first, at the embedder's threshold, for every variant
    assert dd["threshold_from"] == "embedder.dedup_threshold" and 64 <= dd["kept_tiles"] < dd["input_tiles"]
    assert doc["curation_levels"]["sized_from_pool"] and doc["normalisation"]["source"]["mean"] == "pool"
    for v in ("raw", "curated"):
        r = doc["results"][v]
        assert np.isfinite(r["r2_mean"]["mean"]) and r["mae_mean"]["mean"] >= 0
        assert {f"r2_{g}" for g in doc["regions"]} <= set(r)
    for f in ("land_cover_shares.png", "height_panels.png", "height_scatter.png", "r2_per_region.png"):
        assert (tmp_path / f).stat().st_size > 1000
    from experiments.satellite.report import write_readme
    text = write_readme(tmp_path, command="python run.py experiment=satellite_quick").read_text()
    assert "| `curated` |" in text and "boreal" in text and "experiment=satellite_quick" in text


def test_bad_subset_size_exits_2(tmp_path):
    res = run_cli("experiment=satellite_quick", "logger=none", "subset_size=100000", f"hydra.run.dir={tmp_path}",
                  f"paths.cache_dir={tmp_path / 'cache'}")
    assert res.returncode == 2 and "larger than the pool" in res.stderr + res.stdout


def test_paper_config_dry_run(tmp_path, rng):
    """experiment=satellite_paper composes (folder data, 4-level curation, ViT-L/14 on 4 bands, DDP trainer) and
    builds every object on small files."""
    root = tmp_path / "scenes"
    scene_files(root / "pool", "p", rng, size=224, with_chm=False)
    scene_files(root / "train", "t", rng, size=224, x0=510000)
    scene_files(root / "eval", "e", rng, size=224, x0=520000)
    res = run_cli("experiment=satellite_paper", "dry_run=true", "logger=none", f"data.root={root}",
                  f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}")
    assert res.returncode == 0, res.stderr[-3000:]
    s = json.loads((tmp_path / "run" / "dry_run.json").read_text())
    assert s["levels"] == "sized from the deduplicated pool" and s["level_sizing"]["n_levels"] == 4
    assert s["target_size"] == 9_000_000 and "larger than the pool" in s["problems"][0]
    assert s["normalisation"]["source"] == {"mean": "pool", "std": "pool"}
    assert s["in_chans"] == 4 and s["params_millions"] > 250 and s["devices"] == 8
    assert s["feature_shapes"][0] == [1024, 16, 16]


def test_manual_baseline_is_class_balanced():
    """The manual baseline water-fills over land-cover classes: tail classes are taken whole, head classes share the
    rest equally; no tile twice; the same seed gives the same set."""
    from experiments.satellite import class_balanced

    lc = np.repeat(np.arange(6), [500, 400, 300, 20, 30, 10]).astype(np.int16)
    idx = class_balanced(lc, 300, np.random.default_rng(0))
    assert len(idx) == np.unique(idx).size == 300
    np.testing.assert_array_equal(np.bincount(lc[idx]), [80, 80, 80, 20, 30, 10])
    np.testing.assert_array_equal(idx, class_balanced(lc, 300, np.random.default_rng(0)))
    with pytest.raises(CurationInputError, match="land-cover"):
        class_balanced(np.full(5, -1, np.int16), 3, np.random.default_rng(0))


# ------------------------------------------------------------------------------------------- users' imagery

def _folder_cfg(root, **data):
    cfg = OmegaConf.load(ROOT / "configs" / "data" / "satellite.yaml")
    cfg.source, cfg.root, cfg.n_labelled = "folder", str(root), 4
    for k, v in data.items():
        cfg[k] = v
    return OmegaConf.create({"data": cfg})


def _study(root, rng, bands=3, dtype=np.uint8, high=256):
    """pool/ (two scenes, no CHM, no land cover), train/ and eval/ scenes on separate ground."""
    for i in range(2):
        scene_files(root / "pool", f"p{i}", rng, size=64, bands=bands, with_chm=False, x0=500000 + 1000 * i,
                     dtype=dtype, high=high)
    scene_files(root / "train", "t", rng, size=64, bands=bands, x0=510000, dtype=dtype, high=high)
    scene_files(root / "eval", "e", rng, size=64, bands=bands, x0=520000, dtype=dtype, high=high)


@pytest.mark.parametrize("dtype,high,scale", [(np.uint8, 256, 1 / 255), (np.uint16, 10_000, 1e-4),
                                              (np.float32, 1.0, 1.0), (np.uint16, 60_000, 1 / 65535)])
def test_band_count_and_value_range_are_read_from_the_rasters(tmp_path, rng, dtype, high, scale):
    """Three-band scenes of any value range need no band or scale settings: every band is read and the scale
    follows the dtype and values (uint8 0-255, reflectance x 10,000, floats 0-1, 16-bit DN), so tiles span
    reflectance 0-1 (uint8 is not squashed to 0-0.0255)."""
    _study(tmp_path, rng, dtype=dtype, high=high)
    d = build_data(_folder_cfg(tmp_path), tmp_path / "cache")
    assert d.bands["bands"] == [1, 2, 3] and d.bands["reflectance_scale"] == pytest.approx(scale, rel=1e-6)
    assert d.pool.images.shape[1:] == (3, 32, 32) and 0.6 < float(d.pool.images.max()) <= 1.0


def test_scenes_of_several_dtypes_each_get_their_scale(tmp_path, rng):
    """An 8-bit and a reflectance x 10,000 scene in one pool: each dtype gets its own scale, so both reach 0-1."""
    _study(tmp_path, rng)  # uint8
    scene_files(tmp_path / "pool", "p_uint16", rng, size=64, bands=3, with_chm=False, x0=530000, high=10_000)
    d = build_data(_folder_cfg(tmp_path), tmp_path / "cache")
    assert d.bands["reflectance_scale"] == {"uint8": pytest.approx(1 / 255), "uint16": 1e-4}
    for name in ("p0", "p_uint16"):
        assert float(d.pool.images[d.pool.scene == d.pool.scene_names.index(name)].max()) > 0.6


def test_band_and_scale_settings_override_and_mismatches_name_the_fix(tmp_path, rng, caplog):
    """data.bands picks bands (in order), data.n_bands the first n; a given scale is kept but a warning names
    the inferred one when it squashes the values; scenes with different band counts ask for data.bands."""
    import logging
    _study(tmp_path, rng, bands=4)
    d = build_data(_folder_cfg(tmp_path, bands=[4, 1, 2]), tmp_path / "c1")
    assert d.bands["bands"] == [4, 1, 2] and d.pool.images.shape[1] == 3
    assert build_data(_folder_cfg(tmp_path, n_bands=2), tmp_path / "c2").pool.images.shape[1] == 2
    with caplog.at_level(logging.WARNING):
        d = build_data(_folder_cfg(tmp_path, reflectance_scale=1e-4), tmp_path / "c3")
    assert d.bands["reflectance_scale"] == 1e-4 and "data.reflectance_scale=auto would use 0.003922" in caplog.text
    assert float(d.pool.images.max()) < 0.03  # what the old default did to 8-bit imagery
    scene_files(tmp_path / "pool", "p9", rng, size=64, bands=3, with_chm=False, x0=530000, dtype=np.uint8,
                 high=256)
    with pytest.raises(CurationInputError, match=r"scenes have \[3, 4\] bands .*data.bands=\[1, 2, 3\]"):
        build_data(_folder_cfg(tmp_path), tmp_path / "c4")


def test_normalisation_is_computed_on_the_pool_unless_given():
    """model.mean / model.std: auto takes each band's mean and std over the pool's valid pixels (no-data fill
    left out); numbers in the config are kept."""
    from experiments.satellite import resolve_normalisation
    rng = np.random.default_rng(0)
    images = np.stack([rng.normal(0.2, 0.05, (50, 32, 32)), rng.normal(0.6, 0.1, (50, 32, 32))], 1).astype(np.float16)
    images[:5] = 0  # no-data tiles
    cfg = OmegaConf.create({"model": {"mean": "auto", "std": "auto"}})
    norm = resolve_normalisation(cfg, images)
    np.testing.assert_allclose(cfg.model.mean, [0.2, 0.6], atol=0.005)
    np.testing.assert_allclose(cfg.model.std, [0.05, 0.1], atol=0.005)
    assert norm["source"] == {"mean": "pool", "std": "pool"}
    cfg = OmegaConf.create({"model": {"mean": [0.1, 0.1], "std": "auto"}})
    assert resolve_normalisation(cfg, images)["source"] == {"mean": "config", "std": "pool"}
    assert list(cfg.model.mean) == [0.1, 0.1]


def test_labelled_and_evaluation_scenes_never_share_a_scene_or_site(tmp_path, rng):
    """data.group_by=scene: the same scene (name or file) in train/ and eval/ is an error; site (the default):
    overlapping ground too, e.g. a crop of a labelled scene used for evaluation."""
    from experiments.satellite.data import check_split
    scene_files(tmp_path / "train", "a", rng, size=64, x0=500000)
    scene_files(tmp_path / "eval", "crop", rng, size=64, x0=500032)  # half of it over "a"
    scene_files(tmp_path / "eval", "far", rng, size=64, x0=590000)
    train, evals = find_scene_pairs(tmp_path / "train"), find_scene_pairs(tmp_path / "eval")
    with pytest.raises(CurationInputError, match=r"a.tif and evaluation scene .*crop.tif cover the same ground"):
        check_split(train, evals, "site")
    check_split(train, evals, "scene")  # different scenes of one site are allowed by scene
    check_split(train, evals[1:], "site")
    import shutil
    shutil.copy(tmp_path / "train" / "a.tif", tmp_path / "eval" / "same.tif")
    shutil.copy(tmp_path / "train" / "a_chm.tif", tmp_path / "eval" / "same_chm.tif")
    with pytest.raises(CurationInputError, match="same scene"):
        check_split(train, find_scene_pairs(tmp_path / "eval"), "scene")


def test_pool_dedup_and_sized_levels_before_curation(monkeypatch):
    """Near-duplicate tiles go before any variant selects, at the embedder's threshold (curation.dedup.threshold
    wins; null embedder threshold: off); subset and levels given on the command line are checked against the
    deduplicated pool with one-line errors."""
    from types import SimpleNamespace

    from experiments.kit import levels
    from experiments.kit.config import CurationJobConfig
    from experiments.satellite import _check_sizes, dedup_pool
    rng = np.random.default_rng(0)
    base = rng.standard_normal((80, 16)).astype(np.float32) + 5.0  # a shared offset, as pooled ReLU features
    emb = np.concatenate([base, base[:20] + 1e-3 * rng.standard_normal((20, 16)).astype(np.float32)])
    lc = np.repeat(np.arange(4), 25).astype(np.int16)
    data = SimpleNamespace(pool=SimpleNamespace(land_cover=lc))
    cfg = OmegaConf.create({"embedder": {"dedup_threshold": 0.9}, "curation": {"dedup": {"threshold": None,
                                                                                          "n_clusters": None}}})
    kept, rec = dedup_pool(cfg, data, emb)
    assert kept.tolist() == list(range(80)) and rec["dropped_tiles"] == 20
    assert rec["threshold_from"] == "embedder.dedup_threshold" and sum(rec["dropped_land_cover"].values()) == 20
    cfg.embedder.dedup_threshold = None
    assert dedup_pool(cfg, data, emb)[0].size == 100
    cfg.curation.dedup.threshold = 0.999
    assert dedup_pool(cfg, data, emb)[1]["threshold_from"] == "curation.dedup.threshold"

    cur = OmegaConf.merge(OmegaConf.structured(CurationJobConfig), {
        "levels": [{"n_clusters": 50, "resampling_steps": 2, "sample_size": 2}], "target_size": 64})
    scfg = OmegaConf.create({"subset_size": 64, "trainer": {"batch_size": 32}, "variants": ["raw", "curated"],
                             "level_sizing": {"points_per_cluster": 10}})
    scfg.curation = cur
    _check_sizes(scfg, 80)  # levels from a config file are not "given": sized from the pool
    with pytest.raises(CurationInputError, match=r"larger than the deduplicated pool \(60 tiles\)"):
        _check_sizes(scfg, 60, "deduplicated pool")
    monkeypatch.setattr(levels, "command_overrides", lambda: ["curation.levels=[{n_clusters:50}]"])
    with pytest.raises(CurationInputError, match=r"do not fit the pool of 80: .*r=2 .*curation.auto_levels=true"):
        _check_sizes(scfg, 80)


def test_pool_without_land_cover_skips_manual_and_reports_unknown(tmp_path, rng):
    """A user's RGB uint8 folder without land-cover rasters: the dry run infers bands, scale and normalisation,
    drops the manual variant with its reason, and reports the forest share as unknown (not 0%); label_entropy is
    measured over sites instead."""
    _study(tmp_path / "scenes", rng)
    res = run_cli("experiment=satellite", "data=satellite_folder", f"data.root={tmp_path / 'scenes'}",
                  "data.n_labelled=4", "dry_run=true", "logger=none", f"hydra.run.dir={tmp_path / 'run'}",
                  f"paths.cache_dir={tmp_path / 'cache'}", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    s = json.loads((tmp_path / "run" / "dry_run.json").read_text())
    assert s["in_chans"] == 3 and s["bands"]["reflectance_scale"] == pytest.approx(1 / 255)
    assert s["pool_forest_share"] is None and s["pool_land_cover_shares"] is None
    assert "manual" not in s["variants"] and s["normalisation"]["source"]["mean"] == "pool"
    log = res.stdout + res.stderr
    assert "variant manual skipped: the pool has no land-cover rasters" in log and "forest unknown" in log
    from experiments.satellite import composition
    from experiments.satellite.data import build_data as build
    d = build(_folder_cfg(tmp_path / "scenes"), tmp_path / "cache2")
    comp = composition(d, np.arange(3))  # without land cover, balance is measured over the scenes' sites
    assert comp["unique_tiles"] == 3 and 0 <= comp["label_entropy"] <= 1 and "forest_share" not in comp
    assert sum(v for k, v in comp.items() if k.startswith("share_site_")) == pytest.approx(1.0)
