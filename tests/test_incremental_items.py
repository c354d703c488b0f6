"""Incremental curation of raw items (``curation.update_from`` with ``data=image_folder``): an update killed with
SIGKILL midway and rerun ends with what an uninterrupted update selects, and an update under torchrun (2 gloo
processes) selects what one process does."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import ROOT

FAST = ["logger=none", "progress=false", "embedder.input_size=64", "data.num_workers=0"]
NEW_SHARDS = 8  # the update's new items, in shards of 4


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    # One thread: the model's kernels round differently at another thread count, and a resumed or 2-process run
    # must embed each item exactly as the reference run does.
    env.update(OMP_NUM_THREADS="1", WANDB_MODE="disabled", WANDB_SILENT="true", HYDRA_FULL_ERROR="0")
    return env


def _images(folder, colour, n, rng, start=0):
    """n 24x24 images of one colour with random blocks (distinct enough to survive near-duplicate removal)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        blocks = rng.normal(size=(4, 4, 3)) * 70 + colour
        a = np.kron(blocks, np.ones((6, 6, 1))) + rng.normal(size=(24, 24, 3)) * 10
        Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def grown_folder(tmp_path_factory):
    """An image folder curated once (``a/``, 40 images), then grown by 32 images (two new colours, more red) and
    shrunk by one, and a seed folder of one of the new colours."""
    root = tmp_path_factory.mktemp("grown_images")
    rng = np.random.default_rng(4)
    pool = root / "pool"
    for name, colour, n in (("red", (200, 40, 40), 20), ("green", (40, 200, 40), 12), ("blue", (40, 40, 200), 8)):
        _images(pool / name, colour, n, rng)
    _run(_base(pool, root / "a"))
    _images(pool / "white", (225, 225, 225), 12, rng)
    _images(pool / "yellow", (220, 220, 40), 12, rng)
    _images(pool / "red", (200, 40, 40), 8, rng, start=20)
    (pool / "green" / "0.png").unlink()
    _images(root / "seeds" / "yellow", (220, 220, 40), 3, rng, start=100)
    return root


def _base(pool, out, *extra) -> list[str]:
    return ["experiment=curate", "data=image_folder", f"data.path={pool}", "curation.target_size=20",
            f"hydra.run.dir={out}", *FAST, *extra]


def _run(args, launcher=()) -> None:
    proc = subprocess.run([sys.executable, *launcher, str(ROOT / "run.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=_env(), check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


def _update_args(root, out) -> list[str]:
    return _base(root / "pool", out, f"curation.update_from={root / 'a'}", "data.shard_items=4",
                 f"curation.retrieval.seed={root / 'seeds'}", "curation.retrieval.fraction=0.25")


def _kill_when(args, out, pattern: str, timeout: float = 300) -> bool:
    """Start the product, SIGKILL its whole process group as soon as a file matching ``pattern`` exists under
    ``out``; True if it was killed, False if it finished first."""
    with open(out.parent / f"{out.name}.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=_env(), stdout=log,
                                stderr=log, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if next(out.glob(pattern), None) is not None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, (out.parent / f"{out.name}.log").read_text()[-3000:]
    return False


def _selection(out) -> dict:
    """What an update selects and records: the manifest (items, clusters, distances, retrieved), indices, the
    report's selection sections, the page's cluster grids and the pool record a next update builds on."""
    report = json.loads((out / "report.json").read_text())
    page = (out / "report.html").read_text()
    grids = page[page.index("<h2>Top-level clusters"):page.index("<h2>Near-duplicate examples")]
    pool = out / "pool"
    return {"manifest": pq.read_table(out / "manifest.parquet").to_pydict(),
            "indices": np.load(out / "indices.npy").tolist(),
            "report": {k: report[k] for k in ("update", "levels", "concepts", "subset_size", "unique_in_subset",
                                              "items", "skipped", "dedup")},
            "retrieval": {k: v for k, v in report["retrieval"].items() if k != "seed"},
            "page": re.sub(r"\s+", " ", grids),
            "pool": {p.name: (p.read_bytes() if p.suffix == ".npy" else None) for p in sorted(pool.glob("*.npy"))},
            "pool_ids": json.loads((pool / "ids.json").read_text())}


@pytest.mark.slow
def test_update_killed_midway_reruns_to_the_uninterrupted_result(grown_folder):
    """An update (new images embedded in 8 shards of 4, deduplicated, assigned, re-sampled with retrieval) is
    SIGKILLed after its first embedding shard is done, rerun (it embeds only the unfinished shards) and SIGKILLed
    again after its selection is saved but before its pool record, then rerun to the end: the manifest, indices,
    report, page and pool record are those of an uninterrupted update, and no temp file is left."""
    root = grown_folder
    ref, out = root / "reference", root / "killed"
    _run(_update_args(root, ref))
    assert _kill_when(_update_args(root, out), out, "embeddings/*/done_00000.json")
    done = list(out.glob("embeddings/*/done_*.json"))
    assert 1 <= len(done) < NEW_SHARDS  # killed while embedding: the rerun must resume
    assert _kill_when(_update_args(root, out), out, "indices.npy")
    assert len(list(out.glob("embeddings/*/done_*.json"))) == NEW_SHARDS and not (out / "pool" / "pool.json").exists()
    # The second attempt embedded only the shards the first left unfinished (it logs its count, the first did not).
    assert re.findall(r"embedded (\d+) items in", (root / "killed.log").read_text()) == [str(32 - 4 * len(done))]
    _run(_update_args(root, out))
    assert _selection(out) == _selection(ref)
    assert not list(out.rglob("*.tmp"))
    report = json.loads((out / "report.json").read_text())
    assert report["update"]["new_items_embedded"] == 32 and report["update"]["removed"] == 1


def test_torchrun_image_folder_update_selects_what_one_process_does(grown_folder, tmp_path):
    """The same update (new images in shards split between the processes, retrieval around seed images) with
    torchrun --nproc_per_node=2 (gloo on CPU): the same manifest, indices, report selection and pool record."""
    root = grown_folder
    _run(_update_args(root, tmp_path / "one"))
    _run(_update_args(root, tmp_path / "two"),
         launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"))
    assert _selection(tmp_path / "two") == _selection(tmp_path / "one")
    report = json.loads((tmp_path / "two" / "report.json").read_text())
    assert report["environment"]["world_size"] == 2 and report["update"]["new_items_embedded"] == 32
    retrieved = [i for i, r in zip(*pq.read_table(tmp_path / "two" / "manifest.parquet")
                                   .select(["item", "retrieved"]).to_pydict().values()) if r]
    assert len(retrieved) == 5 and all(i.startswith("yellow/") for i in retrieved)
