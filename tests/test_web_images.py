"""Study 2 (web images): the generated pool, the real-data loaders on small files, the reusable SSL modules, the
quick preset end to end, and the paper-scale configuration (dry run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.kit import levels as kit_levels
from experiments.ssl.augment import MultiCrop, MultiCropConfig
from experiments.ssl.dino import DINO, DINOConfig, koleo_loss
from experiments.ssl.evaluate import accuracy, knn_classify, linear_probe, regression_scores, ridge_probe
from experiments.web_images import loaders, pool as gen
from sslcurate import CurationInputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


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
def _images(n=12, s=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, s, s, 3), dtype=np.uint8)


def test_image_folder_loader(tmp_path):
    """ImageFolder tree -> images resized to S, labels from sorted folder names; PNG round-trips exactly."""
    imgs, labels = _images(), np.repeat([0, 1, 2], 4)
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
    imgs, labels = _images(10, 16), np.arange(10) % 3
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
    imgs = _images(60, 24)
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


# ---------------------------------------------------------------------------------------------- real data as users bring it
@pytest.fixture
def one_thread():
    """torch on one thread for an in-process run (tiny k-means is many times slower on busy shared cores with
    more), restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _compose(*overrides: str, experiment: str = "web_images_quick"):
    from experiments.web_images.selection_stats import compose

    return compose(["progress=false", *overrides], experiment)


def _write_pngs(folder: Path, names: list[str], images: np.ndarray) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name, im in zip(names, images):
        Image.fromarray(im).save(folder / name)


def _user_folder(root: Path) -> Path:
    """A folder as users bring it: three classes of 20 images, classes of 1, 3 and 5 images, 60 unlabelled images
    directly under the root and 10 exact copies of them (near-duplicates)."""
    w = gen.make_world(rng=np.random.default_rng(0))
    rng = np.random.default_rng(5)
    sizes = {"animals": 20, "plants": 20, "tools": 20, "rare1": 1, "rare3": 3, "rare5": 5}
    for k, (name, n) in enumerate(sizes.items()):
        concepts = rng.integers(0, 100, n) if n < 20 else 10 * k + rng.integers(0, 10, n)
        _write_pngs(root / name, [f"{i:03d}.png" for i in range(n)], gen.render(w, concepts, 16, rng))
    loose = gen.render(w, rng.integers(0, 100, 60), 16, rng)
    _write_pngs(root, [f"web{i:03d}.png" for i in range(60)], loose)
    _write_pngs(root, [f"web{i:03d} (1).png" for i in range(10)], loose[:10])
    return root


_USER = ("data=web_images_folder", "data.image_size=16", "subset_size=56", "data.eval.bank_per_concept=4",
         "data.eval.test_per_concept=2", "trainer.max_steps=2", "trainer.batch_size=16",
         "model.augment.global_size=16", "model.augment.local_size=8", "logger=none", "torch_threads=1")


def test_small_classes_stay_in_the_pool_and_root_images_are_unlabelled(tmp_path, caplog):
    """Classes of 1-5 images (too few for bank 3 + test 2 plus one pool image) stay in the pool and are left out of
    evaluation, with the count logged; images directly under the root are unlabelled (-1) pool items; the bank and
    test sets hold only the large classes, balanced."""
    import logging

    from experiments.web_images.data import build_data

    root = tmp_path / "tree"
    sizes = {"big_a": 12, "big_b": 9, "tiny1": 1, "tiny3": 3, "tiny5": 5}
    imgs = _images(sum(sizes.values()) + 4, 8)
    at = 0
    for name, n in sizes.items():
        _write_pngs(root / name, [f"{i:03d}.png" for i in range(n)], imgs[at:at + n])
        at += n
    _write_pngs(root, [f"loose{i}.png" for i in range(4)], imgs[at:])
    cfg = _compose("data=web_images_folder", f"data.root={root}", "data.image_size=8", "data.eval.bank_per_concept=3",
                   "data.eval.test_per_concept=2", "subset_size=10", f"paths.cache_dir={tmp_path / 'cache'}")
    with caplog.at_level(logging.WARNING):
        data = build_data(cfg, tmp_path / "cache")
    assert "3 of 5 classes are too small for the evaluation split" in caplog.text
    names = data.concept_names
    evaluated = [names.index("big_a"), names.index("big_b")]
    assert np.array_equal(np.unique(data.bank.labels, return_counts=True)[1], [3, 3])
    assert set(data.bank.labels) == set(data.test.labels) == set(evaluated) and len(data.test.labels) == 4
    assert data.meta["eval_concepts"] == evaluated and set(data.tail_concepts) <= set(evaluated)
    pool_counts = {names[k]: int((data.labels == k).sum()) for k in range(len(names))}
    assert pool_counts == {"big_a": 7, "big_b": 4, "tiny1": 1, "tiny3": 3, "tiny5": 5}
    assert (data.labels == -1).sum() == 4 and len(data.images) == 24


def test_item_stem_and_group_sources(tmp_path):
    """group_by=stem strips size / copy markers and an index prefix (not a bare number); a groups CSV decides
    for the files it lists; bad values are clear errors."""
    from experiments.web_images.loaders import image_groups, item_stem

    for name in ("frog_16.png", "frog-32x32.png", "frog@2x.png", "frog (1).png", "000123_frog.png",
                 "000007_frog-1.png", "frog_32x32@2x.png", "frog.png"):
        assert item_stem(name) == "frog", name
    assert item_stem("000123.png") == "000123" and item_stem("7.png") == "7" and item_stem("_16.png") == "_16"
    files = [tmp_path / "a" / "x_1.png", tmp_path / "a" / "x_2.png", tmp_path / "b" / "y.png"]
    assert image_groups(tmp_path, files, "none").tolist() == [0, 1, 2]
    g = image_groups(tmp_path, files, "stem")
    assert g[0] == g[1] != g[2]
    (tmp_path / "groups.csv").write_text("path,group\na/x_1.png,7\nb/y.png,7\n")
    g = image_groups(tmp_path, files, "groups.csv")
    assert g[0] == g[2] != g[1]  # the CSV decides; a file it does not list is a group of its own
    with pytest.raises(CurationInputError, match="group_by"):
        image_groups(tmp_path, files, "name")
    (tmp_path / "bad.csv").write_text("file,item\n")
    with pytest.raises(CurationInputError, match="path,group"):
        image_groups(tmp_path, files, "bad.csv")


def test_eval_split_keeps_groups_whole():
    """No group is on two sides of bank / test / pool; each evaluated class fills its quotas (by less than one group
    over); with one image per group the split is the old per-class random draw, exactly."""
    from experiments.web_images.data import eval_split

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), [40, 30, 25, 9, 6, 3])
    groups = rng.integers(0, 15, labels.size) + 100 * labels  # 1-6 variants per item
    bank, test, evaluated = eval_split(labels, groups, 6, 5, 3, np.random.default_rng(1))
    pool = np.setdiff1d(np.arange(labels.size), np.concatenate([bank, test]))
    sides = [set(groups[bank]), set(groups[test]), set(groups[pool])]
    assert all(not (a & b) for i, a in enumerate(sides) for b in sides[i + 1:])
    for k in np.flatnonzero(evaluated):
        nb, nt = (labels[bank] == k).sum(), (labels[test] == k).sum()
        most = np.bincount(groups[labels == k]).max()
        assert 5 <= nb < 5 + most and 3 <= nt < 3 + most
    assert evaluated[:3].all() and not evaluated[5]
    assert not np.isin(labels[bank], np.flatnonzero(~evaluated)).any()
    # one image per group: bank and test are the first images of the old per-class permutation
    single = np.arange(labels.size)
    bank, test, evaluated = eval_split(labels, single, 6, 5, 3, np.random.default_rng(2))
    old, r = [], np.random.default_rng(2)
    for k in range(6):
        idx = r.permutation(np.flatnonzero(labels == k))
        old.append(idx[:5] if idx.size > 8 else idx[:0])
    assert np.array_equal(bank, np.concatenate(old)) and evaluated.tolist() == [True] * 4 + [False] * 2


def test_group_by_stem_keeps_variants_off_both_sides(tmp_path):
    """data.group_by=stem: every variant of one item (here: same pixels, names item_16 / item-32x32 / item@2x) is in
    one of bank, test or pool; with group_by=none the same folder puts variants on both sides."""
    from experiments.web_images.data import build_data

    root = tmp_path / "tree"
    items = _images(24, 8, seed=3)
    for c in range(2):
        for i in range(12):
            _write_pngs(root / f"c{c}", [f"item{i}_16.png", f"item{i}-32x32.png", f"item{i}@2x.png"],
                        np.repeat(items[12 * c + i][None], 3, 0))

    def sides(group_by):
        cfg = _compose("data=web_images_folder", f"data.root={root}", "data.image_size=8", f"data.group_by={group_by}",
                       "data.eval.bank_per_concept=4", "data.eval.test_per_concept=4", "subset_size=10")
        d = build_data(cfg, tmp_path / "cache")
        key = lambda x: {im.tobytes() for im in np.asarray(x)}
        return key(d.bank.images), key(d.test.images), key(d.images)

    bank, test, pool = sides("stem")
    assert not (bank & test) and not (bank & pool) and not (test & pool)
    bank, test, pool = sides("none")
    assert (bank & pool) or (test & pool) or (bank & test)





def test_levels_sized_from_the_pool_unless_given(monkeypatch):
    """The hierarchy is sized from the pool (suggest_levels with level_sizing; flat: its level 1) unless the
    command line gives curation.levels; given levels are used when they fit, else a one-line error names what
    fits; auto_levels=true sizes them even when given; level_sizing=null uses the configured levels."""
    from experiments.web_images import curation
    from sslcurate.planning import suggest_levels

    cfg = _compose()
    given: list[str] = []
    monkeypatch.setattr(kit_levels, "command_overrides", lambda: given)
    ks = lambda lv: [x.n_clusters for x in lv]
    sized = suggest_levels(2500, points_per_cluster=50, shrink=5, n_levels=2, resampling_steps=2)
    assert curation.variant_levels(cfg, "curation", 2500, "the pool") == (sized, True)
    assert curation.variant_levels(cfg, "flat_curation", 2500, "the pool") == (sized[:1], True)
    given.append("curation.levels.0.n_clusters=50")  # the preset's [60, 12] with level 1 edited
    assert ks(curation.variant_levels(_compose(*given), "curation", 2500, "the pool")[0]) == [50, 12]
    assert curation.variant_levels(_compose(*given), "flat_curation", 2500, "the pool")[1]  # flat still sized
    with pytest.raises(CurationInputError) as err:
        curation.variant_levels(_compose("curation.levels.0.n_clusters=500"), "curation", 300, "the deduplicated pool")
    msg = str(err.value)
    assert "\n" not in msg and "do not fit the deduplicated pool of 300 images" in msg
    assert "curation.auto_levels=true (here k = [6, 2], r = [25, 1])" in msg
    auto = _compose("curation.levels.0.n_clusters=500", "curation.auto_levels=true")
    assert curation.variant_levels(auto, "curation", 300, "the pool")[1]
    fixed = _compose("level_sizing=null")
    given.clear()
    assert ks(curation.variant_levels(fixed, "curation", 2500, "the pool")[0]) == [60, 12]
    assert ks(curation.variant_levels(_compose("level_sizing=null", "curation.auto_levels=true"), "curation", 7400,
                                      "the pool")[0]) == ks(suggest_levels(7400))  # the paper's scaling


def test_fixed_levels_that_do_not_fit_stop_before_any_work(tmp_path, monkeypatch, one_thread):
    """Given levels larger than the pool: the study stops with a one-line error before embedding anything."""
    import experiments.web_images as study

    root = _user_folder(tmp_path / "tree")
    monkeypatch.setattr(kit_levels, "command_overrides", lambda: ["curation.levels.0.n_clusters=500"])
    cfg = _compose(*_USER, f"data.root={root}", "curation.levels.0.n_clusters=500",
                   f"paths.cache_dir={tmp_path / 'cache'}", f"paths.run_dir={tmp_path / 'run'}")
    with pytest.raises(CurationInputError, match=r"k = \[500, 12\]\) do not fit the pool of 121 images.*"
                                                 r"curation.auto_levels=true"):
        study.run(cfg)
    assert not (tmp_path / "cache" / "embeddings").exists()


def test_dry_run_flags_levels_that_cannot_fit(tmp_path, monkeypatch, one_thread):
    """dry_run=true reports the levels the run would use and flags those that cannot fit the pool (and a subset
    larger than it), without stopping."""
    import experiments.web_images as study

    root = _user_folder(tmp_path / "tree")
    monkeypatch.setattr(kit_levels, "command_overrides", lambda: ["curation.levels.0.n_clusters=500"])
    base = [*_USER, f"data.root={root}", f"paths.cache_dir={tmp_path / 'cache'}", f"paths.run_dir={tmp_path / 'run'}",
            "dry_run=true"]
    summary = study.run(_compose(*base, "curation.levels.0.n_clusters=500", "subset_size=200"))
    assert summary["levels"] == [500, 12] and summary["levels_sized_from_pool"] == {"curated": False, "flat": True}
    assert len(summary["problems"]) == 3
    assert "do not fit the pool of 121 images" in summary["problems"][0]
    assert "subset_size = 200 is larger than the pool (121 images)" in summary["problems"][1]
    monkeypatch.setattr(kit_levels, "command_overrides", list)
    summary = study.run(_compose(*base))
    assert summary["problems"] == [] and summary["levels_sized_from_pool"]["curated"]



def test_near_duplicates_are_removed_before_every_curated_variant(tmp_path, monkeypatch, one_thread):
    """The threshold is curation.dedup.threshold, else the embedder's (null: off; flat_curation.dedup is refused:
    one removal serves every variant); the dropped rows are never selected by curated or flat, raw still draws
    from the whole pool, and the count is recorded."""
    from types import SimpleNamespace

    from experiments.web_images import curation, select_variants

    monkeypatch.setattr(kit_levels, "command_overrides", list)
    assert curation.dedup_threshold(_compose()) == 0.99  # the study's embedder's (efficientnet_lite0.yaml)
    assert curation.dedup_threshold(_compose("curation.dedup.threshold=0.5")) == 0.5
    assert curation.dedup_threshold(_compose("embedder.dedup_threshold=null")) is None
    with pytest.raises(CurationInputError, match="flat_curation.dedup is not read"):
        curation.dedup_threshold(_compose("flat_curation.dedup.threshold=0.9"))
    emb = np.random.default_rng(0).normal(size=(400, 16)).astype(np.float32)
    emb[300:] = emb[:100]  # 100 exact copies
    cfg = _compose("subset_size=150", "variants=[raw,curated,flat]", f"paths.cache_dir={tmp_path}")
    kept, record = curation.deduplicated_rows(cfg, emb, tmp_path / "emb.npy", tmp_path)
    assert np.array_equal(kept, np.arange(300)) and record["dropped_rows"] == 100 and record["threshold"] == 0.99
    assert np.array_equal(curation.deduplicated_rows(cfg, emb, tmp_path / "emb.npy", tmp_path)[0], kept)  # cached
    levels, problems = curation.pool_problems(cfg, 400, kept.size, 0, "the deduplicated pool")
    assert not problems
    sel, trees = select_variants(cfg, SimpleNamespace(images=np.zeros((400, 1, 1, 3))), emb, 0, tmp_path / "sel",
                                 kept, {v: lv for v, (lv, _) in levels.items()})
    for v in ("curated", "flat"):
        assert sel[v].size == 150 and sel[v].max() < 300 and np.array_equal(kept[trees[v][1]], sel[v])
    assert sel["raw"].max() >= 300  # raw: a uniform draw from the pool as collected

@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """The study run once, as a user runs it, on a folder as users bring it (see _user_folder)."""
    tmp = tmp_path_factory.mktemp("user")
    root = _user_folder(tmp / "tree")
    args = [*_USER, f"data.root={root}", f"paths.cache_dir={tmp / 'cache'}", f"paths.results_dir={tmp / 'results'}"]
    r = cli("experiment=web_images_quick", *args, "publish=true", f"hydra.run.dir={tmp / 'run'}")
    return tmp, args, r


def test_user_folder_end_to_end(user_run):
    """Small classes stay in the pool (left out of evaluation); near-duplicates are removed before curating and
    counted; the hierarchy is sized from the deduplicated pool; a manual set below the budget is said in
    metrics.json and in the README."""
    tmp, _, r = user_run
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    doc = json.loads((tmp / "run" / "metrics.json").read_text())
    assert doc["eval_classes"] == 3 and doc["eval_excluded_classes"] == ["rare1", "rare3", "rare5"]
    d = doc["dedup"]
    assert d["threshold"] == 0.99 and d["input_rows"] == 121 and d["dropped_rows"] >= 10  # 10 exact copies at least
    assert d["kept_rows"] == 121 - d["dropped_rows"]
    assert doc["levels_sized_from_pool"] == {"curated": True, "flat": True}
    assert doc["training_set_sizes"] == {"raw": 56, "curated": 56, "flat": 56, "manual": 51}
    readme = (tmp / "results" / "README.md").read_text()
    assert f"Near-duplicates: {d['dropped_rows']} of 121 pool images removed at cosine 0.99" in readme
    assert "**Unequal budget:** `manual` trains on 51 images" in readme and "| manual (51 images only) |" in readme
    assert "3 class(es) too small for the evaluation split" in readme


def test_skip_uncached_with_nothing_cached_says_what_is_missing(user_run, one_thread):
    """skip_uncached=true with no cached result: a CurationInputError (run.py: one line, exit 2) naming what is
    missing, not an IndexError in the figures."""
    import experiments.web_images as study

    tmp, args, _ = user_run
    cfg = _compose(*args, "skip_uncached=true", "seeds=[7]", f"paths.run_dir={tmp / 'run7'}")
    with pytest.raises(CurationInputError, match=r"no result of this configuration is in the cache .*missing: "
                                                 r"raw seed 7, curated seed 7, flat seed 7, manual seed 7"):
        study.run(cfg)


def test_run_py_turns_lightning_sigterm_into_a_nonzero_exit(monkeypatch):
    """A SIGTERMException (Lightning's SystemExit without a code, status 0) leaving any study exits 143."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    import run as entry

    def stopped(cfg):
        raise SIGTERMException()

    monkeypatch.setattr(entry, "run", stopped)
    with pytest.raises(SystemExit) as exit_info:
        entry.main.__wrapped__(None)
    assert exit_info.value.code == 143


@pytest.mark.slow
def test_sigterm_during_training_exits_nonzero(user_run):
    """Lightning catches SIGTERM and the process used to exit 0; a stopped run now exits 143."""
    import signal
    import time

    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "experiment=web_images_quick", *user_run[1],
                             "trainer.max_steps=100000", "variants=[raw]", "seeds=[3]",
                             f"hydra.run.dir={user_run[0] / 'run_term'}"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for line in proc.stdout:
            if "pretraining on" in line:
                break
        time.sleep(2)  # into the fit, where Lightning's handler is installed
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, out[-3000:]
    assert "stopped by SIGTERM" in out


def test_fit_turns_sigterm_into_a_nonzero_exit(one_thread):
    """experiments.ssl.training.fit: SIGTERM in the middle of a fit or during its last step ends with
    SystemExit(143) (Lightning alone exits 0 or returns normally)."""
    import signal

    import pytorch_lightning as pl

    from experiments.ssl.training import SIGTERM_EXIT, fit

    class Term(pl.Callback):
        def __init__(self, at):
            self.at = at

        def on_train_batch_start(self, trainer, *args):
            if trainer.global_step == self.at:
                os.kill(os.getpid(), signal.SIGTERM)

    for at in (1, 2):  # mid-run, last step
        torch.manual_seed(0)
        cfg = DINOConfig(backbone="test_resnet", out_dim=32, hidden_dim=16, bottleneck_dim=8, max_steps=3,
                         warmup_steps=1, batch_size=4, augment=MultiCropConfig(global_size=8, local_size=8, n_local=0))
        trainer = pl.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, callbacks=[Term(at)])
        with pytest.raises(SystemExit) as exit_info:
            fit(trainer, DINO(cfg), torch.utils.data.DataLoader(torch.rand(16, 3, 10, 10), batch_size=4))
        assert exit_info.value.code == SIGTERM_EXIT == 143


def _prepared_icon_pool(root: Path, n_classes: int, per_class: int, seed: int = 4) -> Path:
    """The layout scripts/prepare_real_data.py writes for an icon theme: each item drawn at 8 and 16 px
    (``<size>/<class>/<item>.png``), listed in ``index.csv`` (path, label, group: the item)."""
    import csv

    from PIL import Image

    pool = root / "images" / "oxygen"
    items = _images(n_classes * per_class, 8, seed=seed)
    rows = [("path", "label", "group")]
    for c in range(n_classes):
        for i in range(per_class):
            for size in (8, 16):
                rel = f"{size}x{size}/c{c}/item{i}.png"
                (pool / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(items[per_class * c + i]).resize((size, size)).save(pool / rel)
                rows.append((rel, f"c{c}", f"c{c}/item{i}"))
    with open(pool / "index.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return pool


def test_real_pool_keeps_its_groups_and_composites_transparency(tmp_path, monkeypatch):
    """data=web_images_real reads a prepared pool (index.csv: path, label, group) without restructuring: the
    variants of one item stay on one side of the split, and a transparent icon is composited on white, as the
    curation product decodes it."""
    from PIL import Image

    from experiments import realdata
    from experiments.web_images.data import build_data

    monkeypatch.setenv(realdata.ROOT_ENV, str(tmp_path / "real"))
    pool = _prepared_icon_pool(tmp_path / "real", n_classes=2, per_class=12)
    clear = np.zeros((8, 8, 4), np.uint8)  # a fully transparent icon whose hidden colour is black
    Image.fromarray(clear, "RGBA").save(pool / "8x8/c0/item0.png")
    cfg = _compose("data=web_images_real", "data.image_size=8", "data.eval.bank_per_concept=4",
                   "data.eval.test_per_concept=4", "subset_size=10", f"paths.cache_dir={tmp_path / 'cache'}")
    d = build_data(cfg, tmp_path / "cache")
    assert d.concept_names == ["c0", "c1"] and d.meta["group_by"] == "item"
    assert len(d.images) + len(d.bank.labels) + len(d.test.labels) == 48
    white = np.full((8, 8, 3), 255, np.uint8)
    every = np.concatenate([np.asarray(d.images), d.bank.images, d.test.images])
    assert any(np.array_equal(im, white) for im in every)  # the transparent icon, on white
    # both sizes of an item are on one side: compare the 16 px variant (downsampled) by its item's group
    key = lambda x: {im.tobytes() for im in np.asarray(x)}
    bank, test, rest = key(d.bank.images), key(d.test.images), key(d.images)
    assert not (bank & test) and not (bank & rest) and not (test & rest)
    with pytest.raises(CurationInputError, match="keeps its own groups"):
        build_data(_compose("data=web_images_real", "data.group_by=stem", f"paths.cache_dir={tmp_path / 'c2'}"),
                   tmp_path / "c2")


def test_pretrained_embedder_reads_file_backed_pools_at_its_input_size(tmp_path, monkeypatch):
    """A file-backed pool is embedded from its files decoded at the embedder's input size, not from the study's
    small training copies; ``embedder.from_source=false`` embeds the copies; a data cache written before the file
    list existed is imported again."""
    from experiments.web_images import embed_stage
    from experiments.web_images.data import SOURCE_FILES, build_data
    from experiments.web_images.embed import ImageEncoder
    from experiments.web_images.loaders import load_images

    root = tmp_path / "tree"
    for k in range(2):
        _write_pngs(root / f"c{k}", [f"{i:03d}.png" for i in range(12)], _images(12, 40, seed=k))
    seen: list[tuple[int, ...]] = []

    class Recorder(torch.nn.Module):  # the "embedder": records what it is shown, returns its first 8 values
        def forward(self, x):
            seen.append(tuple(x.shape))
            return x.flatten(1)[:, :8]

    monkeypatch.setattr(embed_stage, "build_pretrained_encoder",
                        lambda e: ImageEncoder(Recorder(), int(e.input_size), [0, 0, 0], [1, 1, 1], "recorder"))
    base = ("data=web_images_folder", f"data.root={root}", "data.image_size=8", "data.eval.bank_per_concept=3",
            "data.eval.test_per_concept=2", "subset_size=10", "embedder.input_size=32",
            f"paths.cache_dir={tmp_path / 'cache'}")
    cfg = _compose(*base)
    data = build_data(cfg, tmp_path / "cache")
    assert data.source_files is not None and len(data.source_files) == len(data.images) == 14
    emb, _ = embed_stage.embed_pool(cfg, data, tmp_path / "cache", tmp_path)
    assert {s[2:] for s in seen} == {(32, 32)}
    first8 = lambda im: im.transpose(0, 3, 1, 2).reshape(len(im), -1)[:, :8].astype(np.float32) / 255  # noqa: E731
    np.testing.assert_allclose(emb, first8(load_images(data.source_files, 32)), atol=1e-6)
    seen.clear()
    copies, _ = embed_stage.embed_pool(_compose(*base, "embedder.from_source=false"), data, tmp_path / "cache",
                                       tmp_path)
    assert {s[2:] for s in seen} == {(32, 32)}  # the 8 px copies, upsampled by the encoder
    assert not np.allclose(copies, emb, atol=0.05)
    folder = next((tmp_path / "cache" / "web_images_data").iterdir())
    (folder / SOURCE_FILES).unlink()  # a cache from before the file list: imported again, list restored
    assert build_data(cfg, tmp_path / "cache").source_files == data.source_files


@pytest.mark.parametrize("experiment", ["web_images_real", "text_real"])
def test_real_arms_compose_into_results_real(experiment, tmp_path, monkeypatch):
    """The real arms write under results/<study>/real/ and name the prepared root through ${real_data:...}."""
    from hydra import compose, initialize_config_dir

    from experiments import realdata
    from experiments.kit.config import register_schemas

    monkeypatch.setenv(realdata.ROOT_ENV, str(tmp_path))
    register_schemas()
    with initialize_config_dir(str(Path(__file__).resolve().parents[1] / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}"])
    study = experiment.removesuffix("_real")
    from omegaconf import OmegaConf

    results_dir = OmegaConf.to_container(cfg.paths, resolve=False)["results_dir"]
    assert results_dir.endswith(f"results/{study}/real") and list(cfg.seeds) == [0, 1, 2]
    if study == "text":
        assert cfg.data.path == str(tmp_path / "text" / "pool.jsonl")


def test_real_arm_end_to_end(tmp_path, monkeypatch):
    """``python run.py experiment=web_images_real`` on a small prepared icon pool: every variant, label_entropy
    next to the accuracies, in the common metrics format."""
    from experiments import realdata

    monkeypatch.setenv(realdata.ROOT_ENV, str(tmp_path / "real"))
    _prepared_icon_pool(tmp_path / "real", n_classes=3, per_class=20)
    r = cli("experiment=web_images_real", "seeds=[0]", "data.image_size=16", "subset_size=30",
            "data.eval.bank_per_concept=4", "data.eval.test_per_concept=2", "trainer.max_steps=2",
            "trainer.batch_size=16", "model.augment.global_size=16", "model.augment.local_size=8",
            "level_sizing.points_per_cluster=10", "+level_sizing.resampling_steps=2", "logger=none", "progress=false",
            "torch_threads=1", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(doc["results"]) == {"raw", "curated", "manual", "random_init"} and doc["data_kind"] == "real"
    for v in ("raw", "curated", "manual"):
        assert 0 < doc["results"][v]["label_entropy"]["mean"] <= 1
        assert doc["results"][v]["label_entropy"] == doc["results"][v]["concept_entropy"]
