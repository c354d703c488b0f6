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

CRS = "EPSG:32632"


def _scene_files(folder, name, rng, size=64, chm_res=1.0, nodata_rows=0, bands=4, with_chm=True):
    """A small image (uint16 DN, nodata 0) and its CHM (float32 m) written to ``folder``; returns (dn, chm)."""
    folder.mkdir(parents=True, exist_ok=True)
    dn = rng.integers(100, 5000, size=(bands, size, size)).astype(np.uint16)
    dn[:, :nodata_rows] = 0
    chm = rng.uniform(0, 30, size=(size, size)).astype(np.float32)
    t = from_origin(500000, 5400000, 1.0, 1.0)
    write_geotiff(folder / f"{name}.tif", dn, CRS, t, nodata=0)
    if with_chm:
        f = int(round(1.0 / chm_res))
        hi = np.kron(chm, np.ones((f, f), np.float32)) if f > 1 else chm
        write_geotiff(folder / f"{name}_chm.tif", hi, CRS, from_origin(500000, 5400000, chm_res, chm_res),
                      nodata=-9999.0)
    return dn, chm


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
    dn, chm = _scene_files(tmp_path, "a", rng, size=64)
    t = read_tiles(ScenePair("a", tmp_path / "a.tif", tmp_path / "a_chm.tif"), tile=32, max_nodata_frac=0.0)
    assert len(t) == 4 and t.images.shape == (4, 4, 32, 32) and t.chm.shape == (4, 32, 32)
    np.testing.assert_allclose(t.images[1].astype(np.float32), dn[:, :32, 32:] * 1e-4, atol=1e-3)
    np.testing.assert_allclose(t.chm[2], chm[32:, :32], atol=1e-5)
    assert tuple(t.origin[3]) == (32, 32)
    np.testing.assert_allclose(t.centre_xy[0], (500016.0, 5399984.0))


def test_nodata_tiles_dropped_and_pixels_masked(tmp_path, rng):
    """Image nodata rows: fully invalid tiles are dropped; a partly invalid tile keeps NaN heights there."""
    _scene_files(tmp_path, "a", rng, size=64, nodata_rows=36)
    pair = ScenePair("a", tmp_path / "a.tif", tmp_path / "a_chm.tif")
    t = read_tiles(pair, tile=32, max_nodata_frac=0.2)
    assert len(t) == 2 and (t.origin[:, 0] == 32).all()
    assert np.isnan(t.chm[:, :4]).all() and np.isfinite(t.chm[:, 4:]).all()
    assert (t.images[:, :, :4] == 0).all()
    with pytest.raises(CurationInputError, match="no tile"):
        read_tiles(pair, tile=32, max_nodata_frac=0.0, stride=64)  # the only tile at stride 64 is invalid


def test_finer_chm_is_averaged_onto_the_image_grid(tmp_path, rng):
    """A 0.5 m CHM (each 1 m pixel split in four) warps back onto the 1 m image grid exactly (average)."""
    _, chm = _scene_files(tmp_path, "a", rng, size=64, chm_res=0.5)
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
    _scene_files(tmp_path / "nochm", "a", rng, with_chm=False)
    with pytest.raises(CurationInputError, match="no canopy-height raster"):
        find_scene_pairs(tmp_path / "nochm")
    assert find_scene_pairs(tmp_path / "nochm", require_chm=False)[0].chm is None
    _scene_files(tmp_path / "rgb", "a", rng, bands=3)
    with pytest.raises(CurationInputError, match="3 band"):
        read_tiles(find_scene_pairs(tmp_path / "rgb")[0], tile=32)
    _scene_files(tmp_path / "far", "a", rng)
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
        _scene_files(root / "pool", f"p{i}", rng, size=96, with_chm=False)
    _scene_files(root / "train", "lab", rng, size=64)
    _scene_files(root / "eval", "e1", rng, size=64, chm_res=0.5)
    _scene_files(root / "eval", "e2", rng, size=64, nodata_rows=10)
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
    assert doc["results"]["curated"]["top_clusters"]["mean"] <= 4  # quick preset: 4 top-level clusters
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
    _scene_files(root / "pool", "p", rng, size=224, with_chm=False)
    _scene_files(root / "train", "t", rng, size=224)
    _scene_files(root / "eval", "e", rng, size=224)
    res = run_cli("experiment=satellite_paper", "dry_run=true", "logger=none", f"data.root={root}",
                  f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}")
    assert res.returncode == 0, res.stderr[-3000:]
    s = json.loads((tmp_path / "run" / "dry_run.json").read_text())
    assert s["levels"] == [250_000, 25_000, 2_500, 500] and s["target_size"] == 9_000_000
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
