"""Study 2 (web images), real-data arm: a prepared icon pool read as it is (groups of variants kept whole,
transparency on white), a file-backed pool embedded at the embedder's input size, the real arms' result folders,
and ``experiment=web_images_real`` end to end on a small prepared pool."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sslcurate import CurationInputError

from web_image_files import cli, random_images, study_config, write_pngs


def _prepared_icon_pool(root: Path, n_classes: int, per_class: int, seed: int = 4) -> Path:
    """The layout scripts/prepare_real_data.py writes for an icon theme: each item drawn at 8 and 16 px
    (``<size>/<class>/<item>.png``), listed in ``index.csv`` (path, label, group: the item)."""
    import csv

    from PIL import Image

    pool = root / "images" / "oxygen"
    items = random_images(n_classes * per_class, 8, seed=seed)
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
    cfg = study_config("data=web_images_real", "data.image_size=8", "data.eval.bank_per_concept=4",
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
        build_data(study_config("data=web_images_real", "data.group_by=stem", f"paths.cache_dir={tmp_path / 'c2'}"),
                   tmp_path / "c2")


def test_pretrained_embedder_reads_file_backed_pools_at_its_input_size(tmp_path, monkeypatch):
    """A file-backed pool is embedded from its files decoded at the embedder's input size, not from the study's
    small training copies; ``embedder.from_source=false`` embeds the copies; a data cache written before the file
    list existed is imported again."""
    from experiments.web_images import embed_stage
    from experiments.web_images.data import SOURCE_FILES, build_data
    from experiments.embedders import ImageModelEmbedder
    from experiments.web_images.loaders import load_images

    root = tmp_path / "tree"
    for k in range(2):
        write_pngs(root / f"c{k}", [f"{i:03d}.png" for i in range(12)], random_images(12, 40, seed=k))
    seen: list[tuple[int, ...]] = []

    class Recorder(torch.nn.Module):  # the "embedder": records what it is shown, returns its first 8 values
        def forward(self, x):
            seen.append(tuple(x.shape))
            return x.flatten(1)[:, :8]

    monkeypatch.setattr(embed_stage, "create_embedder", lambda e, modality: ImageModelEmbedder(
        "recorder", Recorder(), int(e.input_size), [0, 0, 0], [1, 1, 1], int(e.batch_size)))
    base = ("data=web_images_folder", f"data.root={root}", "data.image_size=8", "data.eval.bank_per_concept=3",
            "data.eval.test_per_concept=2", "subset_size=10", "embedder.input_size=32",
            f"paths.cache_dir={tmp_path / 'cache'}")
    cfg = study_config(*base)
    data = build_data(cfg, tmp_path / "cache")
    assert data.source_files is not None and len(data.source_files) == len(data.images) == 14
    emb, _ = embed_stage.embed_pool(cfg, data, tmp_path / "cache", tmp_path)
    assert {s[2:] for s in seen} == {(32, 32)}
    first8 = lambda im: im.transpose(0, 3, 1, 2).reshape(len(im), -1)[:, :8].astype(np.float32) / 255
    np.testing.assert_allclose(emb, first8(load_images(data.source_files, 32)), atol=1e-6)
    seen.clear()
    copies, _ = embed_stage.embed_pool(study_config(*base, "embedder.from_source=false"), data, tmp_path / "cache",
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
