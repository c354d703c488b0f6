"""The curation product end to end, as the README's "Curate your own data" commands run it: raw items in (an image
folder, text records, GeoTIFF scenes), manifest.parquet + report.json + report.html out."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import run_cli

FAST = ["logger=none", "progress=false", "embedder.input_size=64", "data.num_workers=0"]


def write_image_pool(root, rng):
    """Four labelled folders of unequal size (one nested), near-duplicate copies, and three bad files."""
    sizes = {"cats": 40, "dogs": 16, "birds": 8, "fish": 4}
    for c, n in sizes.items():
        (root / c / "deep").mkdir(parents=True)
        colour = rng.integers(0, 255, 3)
        for i in range(n):
            a = (rng.normal(size=(40, 40, 3)) * 60 + colour).clip(0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / c / ("deep" if i % 2 else "") / f"{i}.png")
            if i % 4 == 0:  # a re-upload of the same picture under another name and format
                Image.fromarray(a).save(root / c / f"{i}_v.bmp")
    (root / "broken.png").write_bytes(b"this is text, not a PNG")
    (root / "empty.jpg").write_bytes(b"")
    Image.fromarray(rng.integers(0, 255, (30, 30), dtype=np.uint8)).save(root / "gray.png")  # unlabelled, fine
    return sum(sizes.values()) + sum(-(-n // 4) for n in sizes.values()) + 1


@pytest.fixture(scope="module")
def image_pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    n_good = write_image_pool(root, np.random.default_rng(0))
    return root, n_good


def image_args(root, out, *extra):
    return ["experiment=curate", "data=image_folder", f"data.path={root}", "curation.target_size=20",
            f"hydra.run.dir={out}", *FAST, *extra]


def test_image_folder_to_manifest_report_and_page(image_pool, tmp_path):
    """Every good image embedded once, the bad ones skipped and listed, near-duplicates dropped, the hierarchy
    sized from the deduplicated pool; a manifest row per selected item with its clusters; the same manifest on a
    rerun in a fresh directory, and a rerun in the same directory reuses the embeddings."""
    root, n_good = image_pool
    out = tmp_path / "a"
    proc = run_cli(*image_args(root, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["items"] == {"listed": n_good + 2, "embedded": n_good}
    assert sorted(s["item"] for s in report["skipped"]) == ["broken.png", "empty.jpg"]
    assert "not an image" in next(s["reason"] for s in report["skipped"] if s["item"] == "broken.png")
    assert report["dedup"]["threshold"] is not None and report["dedup"]["dropped_rows"] >= 1
    assert report["levels_sized_from_pool"] and report["levels_used"]
    for ex in report["dedup"]["examples"]:
        assert ex["cosine"] >= report["dedup"]["threshold"] - 1e-6
    table = pq.read_table(out / "manifest.parquet").to_pydict()
    assert len(table["item"]) == 20 and len(set(table["item"])) == 20
    assert set(table["label"]) <= {"cats", "dogs", "birds", "fish", None}
    assert {"level1_cluster", "distance", "copies"} <= set(table)
    assert all(c == 1 for c in table["copies"])
    assert report["concepts"]["random"]["normalized_entropy"] > 0
    page = (out / "report.html").read_text()
    assert page.count('class="cluster"') >= 2 and page.count("data:image/png;base64,") >= 10
    assert "broken.png" in page and "Near-duplicate examples" in page

    again = tmp_path / "b"
    assert run_cli(*image_args(root, again)).returncode == 0
    assert pq.read_table(again / "manifest.parquet").equals(pq.read_table(out / "manifest.parquet"))
    rerun = run_cli(*image_args(root, out, "curation.target_size=10"))
    assert rerun.returncode == 0 and "embedded " not in rerun.stdout + rerun.stderr  # every shard was cached
    assert pq.read_table(out / "manifest.parquet").num_rows == 10


def test_killed_embedding_resumes_at_the_unfinished_shard(image_pool, tmp_path):
    """Shards of 16 items: remove the last shard's marker (as a kill before it finished) and rerun: only that
    shard is embedded again, and the selection is unchanged."""
    root, n_good = image_pool
    args = image_args(root, tmp_path, "data.shard_items=16")
    assert run_cli(*args).returncode == 0
    first = pq.read_table(tmp_path / "manifest.parquet")
    markers = sorted(tmp_path.glob("embeddings/*/done_*.json"))
    assert len(markers) == -(-(n_good + 2) // 16)
    last = json.loads(markers[-1].read_text())["embedded"]
    markers[-1].unlink()
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"embedded {last} items" in proc.stdout + proc.stderr
    assert pq.read_table(tmp_path / "manifest.parquet").equals(first)


def test_strict_stops_at_the_first_bad_item_without_outputs(image_pool, tmp_path):
    root, _ = image_pool
    proc = run_cli(*image_args(root, tmp_path, "data.strict=true"))
    assert proc.returncode != 0
    log = proc.stdout + proc.stderr
    assert "broken.png" in log.strip().splitlines()[-1] and "Traceback" not in log
    assert not (tmp_path / "manifest.parquet").exists() and not (tmp_path / "report.json").exists()


def test_given_levels_that_cannot_fit_name_a_fitting_setting(image_pool, tmp_path):
    root, _ = image_pool
    proc = run_cli(*image_args(root, tmp_path, "curation.levels=[{n_clusters:500},{n_clusters:10}]"))
    assert proc.returncode != 0
    log = proc.stdout + proc.stderr
    assert "drop curation.levels to size them from the pool" in log and "Traceback" not in log


def test_text_records_with_bad_lines(tmp_path):
    """JSONL with a line that is not JSON, an empty document and a record without the field: skipped and listed;
    the rest embedded with the bundled MiniLM and curated."""
    rng = np.random.default_rng(1)
    topics = ["the cat sat on the mat", "stock markets fell sharply", "the recipe needs two eggs",
              "the rocket reached orbit"]
    lines = [json.dumps({"text": f"{topics[i % 4]} {' '.join(rng.choice(['a', 'b', 'c', 'd'], 5))} {i}",
                         "domain": ["pets", "finance", "food", "space"][i % 4]}) for i in range(60)]
    lines += ["{not json", json.dumps({"text": "   "}), json.dumps({"body": "no text field"})]
    (tmp_path / "pool.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    proc = run_cli("experiment=curate", "data=text", f"data.path={tmp_path / 'pool.jsonl'}", "data.label_field=domain",
                   "curation.target_size=12", f"hydra.run.dir={out}", "logger=none", "progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert len(report["skipped"]) == 3 and report["items"]["embedded"] == 60
    table = pq.read_table(out / "manifest.parquet").to_pydict()
    assert len(table["item"]) == 12 and all(i.startswith("pool.jsonl:") for i in table["item"])
    assert "class=\"text\"" in (out / "report.html").read_text()


def test_geotiff_scenes_cut_into_tiles(tmp_path):
    """Two 4-band scenes cut into 16 x 16 tiles; an all-nodata tile is skipped."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(2)
    for s in range(2):
        data = rng.uniform(0, 3000, size=(4, 64, 64)).astype(np.float32)
        data[:, :16, :16] = -9999  # one tile of nodata
        with rasterio.open(tmp_path / f"scene{s}.tif", "w", driver="GTiff", height=64, width=64, count=4,
                           dtype="float32", crs="EPSG:32633", transform=from_origin(0, 64, 1, 1),
                           nodata=-9999) as ds:
            ds.write(data)
    out = tmp_path / "run"
    proc = run_cli("experiment=curate", "data=geotiff", f"data.path={tmp_path}", "data.tile=16",
                   "curation.target_size=10", f"hydra.run.dir={out}", *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["items"]["listed"] == 32 and report["items"]["embedded"] == 30
    assert all("nodata" in s["reason"] for s in report["skipped"])
    assert all(":" in i and i.split(":")[0].startswith("scene") for i in
               pq.read_table(out / "manifest.parquet").column("item").to_pylist())


def test_report_page_renders_in_headless_chromium(image_pool, tmp_path):
    """The page works offline in a real browser: Chromium renders it (screenshot) and its DOM holds the
    clusters and decoded thumbnails."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    root, _ = image_pool
    out = tmp_path / "run"
    assert run_cli(*image_args(root, out)).returncode == 0
    page = (out / "report.html").resolve()
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files"]
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[0] >= 1000 and img.std() > 10  # drawn, not a blank page
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert dom.count('class="cluster"') >= 2 and dom.count("<img") >= 10 and "Curation report" in dom


def test_webdataset_shards_and_given_embeddings(tmp_path):
    """The README's webdataset command on brace-expanded shards, and its embeddings command (data=embeddings):
    both end in a manifest of the target size."""
    from experiments.web_images.loaders import write_webdataset

    rng = np.random.default_rng(3)
    images = (rng.normal(size=(48, 40, 40, 3)) * 50 + 128).clip(0, 255).astype(np.uint8)
    images[:24] //= 3  # two kinds of picture
    write_webdataset(tmp_path / "shards", images, rng.integers(0, 3, 48), per_shard=16)
    out = tmp_path / "wds"
    proc = run_cli("experiment=curate", "data=webdataset", f'data.path="{tmp_path / "shards"}/shard-{{000000..000002}}.tar"',  # quoted: Hydra reads braces
                   "curation.target_size=12", "embedder.dedup_threshold=null", f"hydra.run.dir={out}", *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "report.json").read_text())["dedup"]["dropped_rows"] == 0  # near-duplicates kept
    items = pq.read_table(out / "manifest.parquet").column("item").to_pylist()
    assert len(items) == 12 and all(".tar:" in i for i in items)

    x = rng.normal(size=(400, 8)).astype(np.float32) + np.repeat(rng.normal(size=(4, 8)) * 5, 100, 0)
    np.save(tmp_path / "emb.npy", x)
    out = tmp_path / "emb"
    proc = run_cli("experiment=curate", "data=embeddings", f"data.path={tmp_path / 'emb.npy'}",
                   "curation.target_size=50", f"hydra.run.dir={out}", "logger=none", "progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["dedup"]["threshold"] is None  # given embeddings: only curation.dedup.threshold turns it on
    assert pq.read_table(out / "manifest.parquet").column("item").to_pylist()[0].startswith("row ")


def test_torchrun_embeds_in_shards_and_selects_the_same_items(image_pool, tmp_path):
    """Two processes split the embedding shards between them and select exactly what one process does."""
    import os
    import sys

    from conftest import ROOT

    root, _ = image_pool
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["OMP_NUM_THREADS"] = "1"  # the model's own kernels round differently at another thread count
    runs = {"one": [], "two": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]}
    for name, launcher in runs.items():
        proc = subprocess.run([sys.executable, *launcher, str(ROOT / "run.py"),
                               *image_args(root, tmp_path / name, "data.shard_items=16")], cwd=ROOT,
                              capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    one, two = tmp_path / "one", tmp_path / "two"
    assert pq.read_table(two / "manifest.parquet").equals(pq.read_table(one / "manifest.parquet"))
    assert json.loads((two / "report.json").read_text())["environment"]["world_size"] == 2
