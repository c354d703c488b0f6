"""Study 2 (web images): the generated pool, the real-data loaders on small files, the reusable SSL modules, the
quick preset end to end, and the paper-scale configuration (dry run)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.ssl.augment import MultiCrop, MultiCropConfig
from experiments.ssl.dino import DINO, DINOConfig, koleo_loss
from experiments.ssl.evaluate import accuracy, knn_classify, linear_probe, regression_scores, ridge_probe
from experiments.web_images import loaders, pool as gen
from sslcurate import CurationInputError

from web_image_files import cli, random_images

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- generated pool
def test_world_is_a_long_tailed_hierarchy():
    """At least 100 fine concepts in at least 10 coarse groups; head concept >= 100x the tail concept."""
    w = gen.make_world(10, 10, 1.1, np.random.default_rng(0))
    assert w.n_concepts >= 100 and w.n_groups >= 10
    assert w.freq.max() / w.freq.min() >= 100
    assert np.isclose(w.freq.sum(), 1)
    assert len(w.tail_concepts(0.3)) == 30 and w.freq[w.tail_concepts(0.3)].max() <= np.median(w.freq)


def test_hierarchical_long_tail_makes_whole_groups_rare():
    """With group_zipf_exponent, group totals follow their own Zipf law (rarest group 10^a x below the head one)
    and concepts stay long-tailed within each group; without it the world is unchanged."""
    w = gen.make_world(10, 10, 0.7, np.random.default_rng(0), group_zipf_exponent=2.0)
    assert np.isclose(w.freq.sum(), 1) and w.freq.max() / w.freq.min() >= 100
    per_group = np.bincount(w.group, weights=w.freq)
    assert np.isclose(per_group.max() / per_group.min(), 10 ** 2.0)
    within = w.freq.reshape(10, 10) / per_group[:, None]
    assert np.allclose(np.sort(within, axis=1)[:, ::-1][:, 0] / np.sort(within, axis=1)[:, 0], 10 ** 0.7)
    a = gen.make_world(10, 10, 1.1, np.random.default_rng(0))
    b = gen.make_world(10, 10, 1.1, np.random.default_rng(0), group_zipf_exponent=None)
    assert np.array_equal(a.freq, b.freq)


def test_pool_plan_and_generation_have_tail_duplicates_and_junk():
    """The pool holds every kind in the planned amounts; the tail is present (several images each); the
    near-duplicates sit on head concepts and are near-copies; junk has label -1; same seed, same pool."""
    w = gen.make_world(10, 10, 1.1, np.random.default_rng(0))
    plan = gen.plan_pool(w, 6000, 0.12, 0.08, 5, 0, np.random.default_rng(1))
    assert plan.size == 6000
    out = np.zeros((plan.size, 16, 16, 3), np.uint8)
    labels, kinds, dup = gen.generate_pool(w, plan, 16, np.random.default_rng(2), out)
    assert (kinds == gen.KIND_JUNK).sum() == 480 and (labels[kinds == gen.KIND_JUNK] == -1).all()
    assert abs((kinds == gen.KIND_DUPLICATE).sum() - 720) <= 0
    head = np.argsort(-w.freq)[:5]
    assert np.isin(labels[kinds == gen.KIND_DUPLICATE], head).all()
    counts = np.bincount(labels[kinds == gen.KIND_CLEAN], minlength=100)
    assert counts.min() >= 4 and counts.max() / counts.min() >= 100
    g = dup[dup >= 0][0]
    members = out[dup == g].astype(float)
    other = out[(kinds == gen.KIND_CLEAN)][: len(members)].astype(float)
    assert np.abs(members - members[0]).mean() < np.abs(other - members[0]).mean()
    out2 = np.zeros_like(out)
    labels2, _, _ = gen.generate_pool(w, plan, 16, np.random.default_rng(2), out2)
    assert np.array_equal(out, out2) and np.array_equal(labels, labels2)


def test_near_duplicates_do_not_depend_on_the_chunk_size():
    """Copies are rendered a chunk at a time (bounded memory at 1M) from one random stream: same images."""
    src = np.ascontiguousarray(np.broadcast_to(  # flat colours: a 1-pixel shift leaves them unchanged
        np.random.default_rng(0).integers(30, 220, (7, 1, 1, 3), dtype=np.uint8), (7, 8, 8, 3)))
    copies = np.array([5, 1, 40, 3, 9, 2, 11])
    whole = gen.near_duplicates(src, copies, np.random.default_rng(3), chunk=10**6)
    assert whole.shape == (71, 8, 8, 3) and whole.dtype == np.uint8
    assert np.array_equal(whole, gen.near_duplicates(src, copies, np.random.default_rng(3), chunk=4))
    first = whole[:5].astype(int) - src[0].astype(int)
    assert np.abs(first).mean() < 20 and not np.array_equal(whole[0], src[0])  # near, not exact, copies


def test_render_styles_and_allocate():
    w = gen.make_world(rng=np.random.default_rng(0))
    rng = np.random.default_rng(0)
    for style in ("photo", "shifted"):
        im = gen.render(w, np.arange(100), 24, rng, style=style)
        assert im.shape == (100, 24, 24, 3) and im.dtype == np.uint8 and im.std() > 10
    with pytest.raises(ValueError):
        gen.render(w, np.arange(3), 24, rng, style="cartoon")
    c = gen.allocate(np.array([0.7, 0.2, 0.1]), 101, minimum=3)
    assert c.sum() == 101 and c.min() >= 3


# ---------------------------------------------------------------------------------------------- real-data loaders
def test_image_folder_loader(tmp_path):
    """ImageFolder tree -> images resized to S, labels from sorted folder names; PNG round-trips exactly."""
    imgs, labels = random_images(), np.repeat([0, 1, 2], 4)
    loaders.write_image_folder(tmp_path / "tree", imgs, labels)
    x, y, names = loaders.load_image_folder(tmp_path / "tree", 20)
    assert names == ["class_000", "class_001", "class_002"]
    assert np.array_equal(y, labels) and np.array_equal(x, imgs)
    x16, _, _ = loaders.load_image_folder(tmp_path / "tree", 16)
    assert x16.shape == (12, 16, 16, 3)


def test_image_folder_errors(tmp_path):
    with pytest.raises(CurationInputError, match="does not exist"):
        loaders.load_image_folder(tmp_path / "missing", 16)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(CurationInputError, match="no images"):
        loaders.load_image_folder(tmp_path / "empty", 16)
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "x.png").write_bytes(b"not a png")
    with pytest.raises(CurationInputError, match="x.png"):
        loaders.load_image_folder(tmp_path / "bad", 16)


def test_webdataset_loader(tmp_path):
    """Shards written with webdataset read back identical (PNG) with their class labels, from a folder, a
    brace pattern or a glob; missing shards are a clear error."""
    imgs, labels = random_images(10, 16), np.arange(10) % 3
    shards = loaders.write_webdataset(tmp_path / "wds", imgs, labels, per_shard=4)
    assert len(shards) == 3
    for spec in (tmp_path / "wds", str(tmp_path / "wds" / "shard-{000000..000002}.tar"),
                 str(tmp_path / "wds" / "*.tar")):
        x, y, _ = loaders.load_webdataset(spec, 16)
        assert np.array_equal(x, imgs) and np.array_equal(y, labels)
    with pytest.raises(CurationInputError, match="no WebDataset shards"):
        loaders.load_webdataset(tmp_path / "nothing", 16)
    (tmp_path / "corrupt.tar").write_bytes(b"garbage" * 100)
    with pytest.raises(CurationInputError, match="corrupt.tar"):
        loaders.load_webdataset(str(tmp_path / "corrupt.tar"), 16)


# ---------------------------------------------------------------------------------------------- SSL modules
@pytest.mark.parametrize("channels", [3, 5])
def test_multicrop_shapes_any_channel_count(channels):
    cfg = MultiCropConfig(global_size=16, local_size=8, n_local=3)
    x = torch.rand(4, channels, 20, 20)
    views = MultiCrop(cfg)(x, torch.Generator().manual_seed(0))
    assert [v.shape for v in views] == [(4, channels, 16, 16)] * 2 + [(4, channels, 8, 8)] * 3
    assert all(float(v.min()) >= 0 and float(v.max()) <= 1 for v in views)
    again = MultiCrop(cfg)(x, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(views, again))


def test_dino_trains_on_multiband_input(tmp_path):
    """The DINO module is data-agnostic: a few steps on 5-band input run, the loss is finite, the teacher moves
    (EMA), the centre is updated, and KoLeo adds a term."""
    import pytorch_lightning as pl

    torch.manual_seed(0)
    cfg = DINOConfig(backbone="test_resnet", in_chans=5, mean=[0.5] * 5, std=[0.25] * 5, out_dim=64,
                     hidden_dim=32, bottleneck_dim=16, max_steps=3, warmup_steps=1, batch_size=8, koleo_weight=0.1,
                     augment=MultiCropConfig(global_size=16, local_size=8, n_local=2))
    module = DINO(cfg)
    before = [p.clone() for p in module.teacher_backbone.parameters()]
    data = torch.utils.data.DataLoader(torch.rand(32, 5, 20, 20), batch_size=8)
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, data)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert "train/koleo" in trainer.callback_metrics
    assert any(not torch.equal(a, b) for a, b in zip(before, module.teacher_backbone.parameters()))
    assert module.loss_fn.center.abs().sum() > 0
    assert module.embed(torch.rand(2, 5, 16, 16)).shape == (2, module.num_features)
    assert float(koleo_loss(torch.eye(4))) < float(koleo_loss(torch.ones(4, 4) + 1e-3 * torch.eye(4)))


def test_vit_tokens_match_the_backbone_and_mask_token_replaces_patches():
    from experiments.ssl.dino import build_backbone, random_patch_masks, vit_tokens

    torch.manual_seed(0)
    vit = build_backbone("test_vit", 3, False, 32, patch_size=8).eval()
    x = torch.rand(3, 3, 32, 32)
    pooled, patches = vit_tokens(vit, x)
    assert torch.allclose(pooled, vit(x), atol=1e-5) and patches.shape == (3, 16, vit.num_features)
    mask = torch.zeros(3, 16, dtype=torch.bool)
    mask[0, :4] = True  # only image 0 is masked: the others are unchanged, image 0 is not
    mp, _ = vit_tokens(vit, x, mask, torch.ones(1, 1, vit.num_features))
    assert torch.allclose(mp[1:], pooled[1:], atol=1e-5) and not torch.allclose(mp[0], pooled[0], atol=1e-3)
    m = random_patch_masks(4000, 16, (0.25, 0.5), 0.5, torch.Generator().manual_seed(0))
    per = m.sum(1)
    assert abs(float((per > 0).float().mean()) - 0.5) < 0.03  # half of the images are masked at all
    assert int(per[per > 0].min()) >= 4 and int(per.max()) <= 8  # 25-50% of 16 patches
    assert torch.equal(m, random_patch_masks(4000, 16, (0.25, 0.5), 0.5, torch.Generator().manual_seed(0)))


def test_dino_with_ibot_trains_a_vit_and_rejects_a_cnn(tmp_path):
    """The iBOT term: masked global views, a patch loss with its own centre, the mask token learnt."""
    import pytorch_lightning as pl

    torch.manual_seed(0)
    aug = MultiCropConfig(global_size=32, local_size=16, n_local=2)
    cfg = DINOConfig(backbone="test_vit", img_size=32, out_dim=64, hidden_dim=32, bottleneck_dim=16, max_steps=3,
                     warmup_steps=1, batch_size=8, ibot_weight=1.0, ibot_mask_prob=1.0, augment=aug)
    module = DINO(cfg)
    token = module.mask_token.detach().clone()
    data = torch.utils.data.DataLoader(torch.rand(24, 3, 36, 36), batch_size=8)
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, data)
    m = trainer.callback_metrics
    assert torch.isfinite(m["train/ibot"]) and float(m["train/ibot"]) > 0
    assert 0.1 <= float(m["train/masked_share"]) <= 0.5
    assert module.ibot_loss_fn.center.abs().sum() > 0 and not torch.equal(token, module.mask_token.detach())
    with pytest.raises(ValueError, match="needs a ViT backbone"):
        DINO(DINOConfig(backbone="test_resnet", ibot_weight=1.0))
    with pytest.raises(ValueError, match="ibot_mask_ratio"):
        DINO(DINOConfig(backbone="test_vit", img_size=32, ibot_weight=1.0, ibot_mask_ratio=(0.6, 0.2)))


def test_knn_linear_and_ridge_probes_on_separable_data(rng):
    """Well-separated classes are classified (almost) perfectly; random labels are at chance."""
    centers = rng.normal(0, 5, (10, 16))
    ytr, yte = np.repeat(np.arange(10), 20), np.repeat(np.arange(10), 10)
    xtr = centers[ytr] + rng.normal(0, 1, (200, 16))
    xte = centers[yte] + rng.normal(0, 1, (100, 16))
    assert accuracy(knn_classify(xtr, ytr, xte, k=20), yte) > 0.95
    assert accuracy(linear_probe(xtr, ytr, {"t": xte})["t"], yte) > 0.95
    assert accuracy(knn_classify(xtr, rng.permutation(ytr), xte, k=20), yte) < 0.35
    assert accuracy(np.zeros(4), np.zeros(4), np.zeros(4, bool)) != accuracy(np.zeros(4), np.zeros(4))  # NaN
    w = rng.normal(size=16)
    pred = ridge_probe(xtr, xtr @ w, {"t": xte}, alpha=1e-3)["t"]
    assert regression_scores(pred, xte @ w)["r2"] > 0.99


# ---------------------------------------------------------------------------------------------- end to end
def test_quick_preset_end_to_end(tmp_path):
    """``experiment=web_images_quick`` runs every stage and writes the common metrics format with every variant,
    the accuracy and balance metrics, figures, and measured times."""
    r = cli("experiment=web_images_quick", "logger=none", "progress=false", "torch_threads=1",
            f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert doc["primary_metric"] == "knn_top1" and doc["seeds"] == [0]
    assert set(doc["results"]) == {"raw", "curated", "flat", "manual", "random_init"}
    for v in ("raw", "curated", "flat", "manual"):
        for m in ("knn_top1", "linear_top1", "tail_knn_top1", "shifted_knn_top1", "concept_entropy",
                  "concept_coverage"):
            assert 0 <= doc["results"][v][m]["mean"] <= 1, (v, m)
    assert doc["results"]["raw"]["junk_fraction"]["mean"] > 0
    assert doc["results"]["manual"]["junk_fraction"]["mean"] == 0
    assert doc["results"]["curated"]["concept_entropy"]["mean"] > doc["results"]["raw"]["concept_entropy"]["mean"]
    for f in ("concept_histogram.png", "samples.png", "accuracy.png", "cluster_sizes_curated.png"):
        assert (tmp_path / "run" / f).stat().st_size > 1000
    assert doc["timings"]["total_s"] > 0
    # a rerun reuses the cached data, embeddings and per-(variant, seed) results and gives the same numbers
    r2 = cli("experiment=web_images_quick", "logger=none", "progress=false",
             f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run2'}")
    assert r2.returncode == 0, r2.stderr[-3000:]
    doc2 = json.loads((tmp_path / "run2" / "metrics.json").read_text())
    assert doc2["results"] == doc["results"]


def test_selection_stats_without_training(tmp_path):
    """The no-training check builds the pool, the ssl_manual embedder and every selection of the study, and reports
    the balance of each training set (each raw/curated/flat set holds subset_size images)."""
    from experiments.web_images.selection_stats import compose, selection_stats

    cfg = compose(["embedder=ssl_manual", "embedder.max_steps=2", "progress=false",
                   f"paths.cache_dir={tmp_path / 'cache'}"], "web_images_quick")
    doc = selection_stats(cfg, [0], tmp_path / "work")
    assert set(doc["stats"]) == {"raw", "curated", "flat", "manual", "pool"}
    assert doc["embedder"] == "ssl_manual" and doc["levels"] == [60, 12]
    for v in ("raw", "curated", "flat"):
        assert 0 < doc["stats"][v]["concept_entropy"] <= 1 and "group_entropy" in doc["stats"][v]
    assert doc["stats"]["manual"]["junk_fraction"] == 0


def test_readme_generator(tmp_path):
    from experiments.kit.metrics import metrics_doc
    from experiments.web_images.report import write_readme

    res = {v: {"knn_top1": [0.5 + d, 0.52 + d], "linear_top1": [0.6 + d, 0.6 - d], "concept_entropy": [0.9, 0.9]}
           for v, d in (("raw", 0.0), ("curated", 0.1))}
    doc = metrics_doc("web_images", [0, 1], "knn_top1", True, res, pool_size=10, subset_size=5, n_concepts=3,
                      image_size=32, train_steps=1, batch_size=2, backbone="b", embedder="e", tail_concepts=[0],
                      timings={"total_s": 60.0}, seed_seconds={"0": 30.0, "1": 30.0},
                      label_balanced_concept_entropy=0.95)
    (tmp_path / "metrics.json").write_text(json.dumps(doc))
    text = write_readme(tmp_path, command="python run.py experiment=web_images").read_text()
    assert "python run.py experiment=web_images" in text and "| curated | 61.0 ± 1.0" in text
    assert "`curated` beats `raw` on `knn_top1` by +10.0 points (beyond" in text
    # the paired per-seed view: seed 0 gains 10 points of linear accuracy, seed 1 loses 10
    assert "ahead on 2 of 2 seeds (per seed: +10.0, +10.0)" in text
    assert "ahead on 1 of 2 seeds (per seed: +10.0, -10.0)" in text
    assert "would reach 0.950, so curation closes 0% of raw's gap" in text  # both sets at 0.9 entropy


def test_bad_image_folder_is_a_clear_error(tmp_path):
    r = cli("experiment=web_images_quick", "logger=none", "data=web_images_folder",
            f"data.root={tmp_path / 'nope'}", f"paths.cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 2 and "does not exist" in r.stdout + r.stderr


# ---------------------------------------------------------------------------------------------- paper scale
def test_paper_config_composes():
    """``experiment=web_images_paper`` composes with the paper's settings."""
    from hydra import compose, initialize_config_dir

    from experiments.kit.config import register_schemas

    register_schemas()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=web_images_paper", "data.shards=/data/x.tar"])
    assert [lv.n_clusters for lv in cfg.curation.levels] == [10_000_000, 500_000, 50_000, 10_000]
    assert [lv.sample_size for lv in cfg.curation.levels] == [1, 10, 5, 3]
    assert [lv.resampling_steps for lv in cfg.curation.levels][1:] == [10, 10, 10]
    assert cfg.model.backbone == "vit_large_patch14_dinov2" and cfg.trainer.strategy == "ddp"
    assert cfg.data.kind == "webdataset" and cfg.embedder.kind == "timm"


def test_paper_config_dry_runs_with_tiny_overrides(tmp_path):
    """The paper configuration builds every piece (WebDataset pool, curation config, DINOv2-like model, trainer)
    on tiny overrides and stops before the work."""
    imgs = random_images(60, 24)
    loaders.write_webdataset(tmp_path / "wds", imgs, np.arange(60) % 3, per_shard=25)
    r = cli("experiment=web_images_paper", "dry_run=true", "logger=none", f"data.shards={tmp_path / 'wds'}",
            "data.image_size=16", "subset_size=20", "data.eval.bank_per_concept=3", "data.eval.test_per_concept=2",
            "model.backbone=test_vit", "model.img_size=16", "model.out_dim=64", "model.hidden_dim=32",
            f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "dry_run.json").read_text())
    assert summary["levels"] == [10_000_000, 500_000, 50_000, 10_000]
    assert summary["pool_size"] == 60 - 3 * 5 and summary["backbone"] == "test_vit"
    # the paper's hierarchy cannot fit 45 images: flagged (the run itself would stop before any work)
    assert "curation.levels (k = [10000000, 500000, 50000, 10000]) do not fit the pool of 45" in summary["problems"][0]
