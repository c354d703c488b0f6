"""Study 2 (web images) on real data as users bring it: image folders with small classes and loose images, groups
of variants kept whole, levels sized from the pool, near-duplicates removed first, and SIGTERM handling. The real arm
(a prepared icon pool) has its own file, test_web_images_real.py."""

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
from experiments.ssl.augment import MultiCropConfig
from experiments.ssl.dino import DINO, DINOConfig
from experiments.web_images import pool as gen
from sslcurate import CurationInputError

from web_image_files import cli, random_images, study_config, write_pngs

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- real data as users bring it
@pytest.fixture
def one_thread():
    """torch on one thread for an in-process run (tiny k-means is many times slower on busy shared cores with
    more), restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _user_folder(root: Path) -> Path:
    """A folder as users bring it: three classes of 20 images, classes of 1, 3 and 5 images, 60 unlabelled images
    directly under the root and 10 exact copies of them (near-duplicates)."""
    w = gen.make_world(rng=np.random.default_rng(0))
    rng = np.random.default_rng(5)
    sizes = {"animals": 20, "plants": 20, "tools": 20, "rare1": 1, "rare3": 3, "rare5": 5}
    for k, (name, n) in enumerate(sizes.items()):
        concepts = rng.integers(0, 100, n) if n < 20 else 10 * k + rng.integers(0, 10, n)
        write_pngs(root / name, [f"{i:03d}.png" for i in range(n)], gen.render(w, concepts, 16, rng))
    loose = gen.render(w, rng.integers(0, 100, 60), 16, rng)
    write_pngs(root, [f"web{i:03d}.png" for i in range(60)], loose)
    write_pngs(root, [f"web{i:03d} (1).png" for i in range(10)], loose[:10])
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
    imgs = random_images(sum(sizes.values()) + 4, 8)
    at = 0
    for name, n in sizes.items():
        write_pngs(root / name, [f"{i:03d}.png" for i in range(n)], imgs[at:at + n])
        at += n
    write_pngs(root, [f"loose{i}.png" for i in range(4)], imgs[at:])
    cfg = study_config("data=web_images_folder", f"data.root={root}", "data.image_size=8", "data.eval.bank_per_concept=3",
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
    items = random_images(24, 8, seed=3)
    for c in range(2):
        for i in range(12):
            write_pngs(root / f"c{c}", [f"item{i}_16.png", f"item{i}-32x32.png", f"item{i}@2x.png"],
                        np.repeat(items[12 * c + i][None], 3, 0))

    def sides(group_by):
        cfg = study_config("data=web_images_folder", f"data.root={root}", "data.image_size=8", f"data.group_by={group_by}",
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

    cfg = study_config()
    given: list[str] = []
    monkeypatch.setattr(kit_levels, "command_overrides", lambda: given)
    ks = lambda lv: [x.n_clusters for x in lv]
    sized = suggest_levels(2500, points_per_cluster=50, shrink=5, n_levels=2, resampling_steps=2)
    assert curation.variant_levels(cfg, "curation", 2500, "the pool") == (sized, True)
    assert curation.variant_levels(cfg, "flat_curation", 2500, "the pool") == (sized[:1], True)
    given.append("curation.levels.0.n_clusters=50")  # the preset's [60, 12] with level 1 edited
    assert ks(curation.variant_levels(study_config(*given), "curation", 2500, "the pool")[0]) == [50, 12]
    assert curation.variant_levels(study_config(*given), "flat_curation", 2500, "the pool")[1]  # flat still sized
    with pytest.raises(CurationInputError) as err:
        curation.variant_levels(study_config("curation.levels.0.n_clusters=500"), "curation", 300, "the deduplicated pool")
    msg = str(err.value)
    assert "\n" not in msg and "do not fit the deduplicated pool of 300 images" in msg
    assert "curation.auto_levels=true (here k = [6, 2], r = [25, 1])" in msg
    auto = study_config("curation.levels.0.n_clusters=500", "curation.auto_levels=true")
    assert curation.variant_levels(auto, "curation", 300, "the pool")[1]
    fixed = study_config("level_sizing=null")
    given.clear()
    assert ks(curation.variant_levels(fixed, "curation", 2500, "the pool")[0]) == [60, 12]
    assert ks(curation.variant_levels(study_config("level_sizing=null", "curation.auto_levels=true"), "curation", 7400,
                                      "the pool")[0]) == ks(suggest_levels(7400))  # the paper's scaling


def test_fixed_levels_that_do_not_fit_stop_before_any_work(tmp_path, monkeypatch, one_thread):
    """Given levels larger than the pool: the study stops with a one-line error before embedding anything."""
    import experiments.web_images as study

    root = _user_folder(tmp_path / "tree")
    monkeypatch.setattr(kit_levels, "command_overrides", lambda: ["curation.levels.0.n_clusters=500"])
    cfg = study_config(*_USER, f"data.root={root}", "curation.levels.0.n_clusters=500",
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
    summary = study.run(study_config(*base, "curation.levels.0.n_clusters=500", "subset_size=200"))
    assert summary["levels"] == [500, 12] and summary["levels_sized_from_pool"] == {"curated": False, "flat": True}
    assert len(summary["problems"]) == 3
    assert "do not fit the pool of 121 images" in summary["problems"][0]
    assert "subset_size = 200 is larger than the pool (121 images)" in summary["problems"][1]
    monkeypatch.setattr(kit_levels, "command_overrides", list)
    summary = study.run(study_config(*base))
    assert summary["problems"] == [] and summary["levels_sized_from_pool"]["curated"]



def test_near_duplicates_are_removed_before_every_curated_variant(tmp_path, monkeypatch, one_thread):
    """The threshold is curation.dedup.threshold, else the embedder's (null: off; flat_curation.dedup is refused:
    one removal serves every variant); the dropped rows are never selected by curated or flat, raw still draws
    from the whole pool, and the count is recorded."""
    from types import SimpleNamespace

    from experiments.web_images import curation, select_variants

    monkeypatch.setattr(kit_levels, "command_overrides", list)
    assert curation.dedup_threshold(study_config()) == 0.99  # the study's embedder's (efficientnet_lite0.yaml)
    assert curation.dedup_threshold(study_config("curation.dedup.threshold=0.5")) == 0.5
    assert curation.dedup_threshold(study_config("embedder.dedup_threshold=null")) is None
    with pytest.raises(CurationInputError, match="flat_curation.dedup is not read"):
        curation.dedup_threshold(study_config("flat_curation.dedup.threshold=0.9"))
    emb = np.random.default_rng(0).normal(size=(400, 16)).astype(np.float32)
    emb[300:] = emb[:100]  # 100 exact copies
    cfg = study_config("subset_size=150", "variants=[raw,curated,flat]", f"paths.cache_dir={tmp_path}")
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
    cfg = study_config(*args, "skip_uncached=true", "seeds=[7]", f"paths.run_dir={tmp / 'run7'}")
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
