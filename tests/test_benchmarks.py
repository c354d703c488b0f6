"""The benchmark scripts run end to end on tiny settings and write what their READMEs describe."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from conftest import ROOT

from sslcurate.fused import fused_available


def test_bench_precision_tiny(tmp_path):
    out = tmp_path / "precision"
    lowp = ["bf16", "int8"] + (["int16"] if fused_available("int16") else [])  # int16 has no emulated path
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_precision.py"), "--n", "3000",
                           "--dims", "96", "--ks", "40", "--iters", "2", "--repeat", "1", "--threads", "1",
                           "--methods", ",".join(lowp), "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.with_suffix(".json").read_text())
    (point,) = report["points"]
    assert set(point["methods"]) == {"faiss", "fp32", *lowp}
    for m in lowp:
        assert point[f"{m}_assignment_agreement"] >= 0.999
        assert point[f"{m}_same_centroids_objective_rel_diff"] < 1e-4
        assert 0 <= point[f"{m}_settled_at_end"] <= 1 and 0 <= point[f"{m}_settled_at_start"] <= 1
    assert "| 96 | 40 |" in out.with_suffix(".md").read_text()
    assert "cpus (" in report["machine"]  # the bf16/int8 instructions the reduced-precision paths can use
    # the peak is the better of two BLAS libraries' GEMM, both recorded
    peaks = [*report["gemm_peaks_before"].values(), *report["gemm_peaks_after"].values()]
    assert report["gemm_peak_gflops"] == max(peaks)
    # faiss ran under the OpenBLAS kernel its probe measured fastest, and the report says which
    blas = report["faiss_blas"]
    assert "default" in blas["gflops"]
    assert blas["gflops"][blas["coretype"] or "default"] == max(blas["gflops"].values())
    assert "faiss ran with OPENBLAS_CORETYPE=" in out.with_suffix(".md").read_text()


def test_readme_tables_are_the_committed_results(tmp_path):
    """The README's performance tables are rendered from benchmarks/results/*.json, never typed by hand; --write
    brings a stale copy up to date."""
    script = [sys.executable, str(ROOT / "benchmarks" / "readme_tables.py")]
    proc = subprocess.run([*script, "--check"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stale = tmp_path / "README.md"
    text = (ROOT / "README.md").read_text()
    stale.write_text(text.replace("| 768 | 10,000 |", "| 768 | 12,345 |"))
    check = subprocess.run([*script, "--check", "--readme", str(stale)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 1 and "differ" in check.stderr
    assert subprocess.run([*script, "--write", "--readme", str(stale)], timeout=120).returncode == 0
    assert stale.read_text() == text


def test_bench_pipeline_tiny(tmp_path):
    out = tmp_path / "pipeline"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_pipeline.py"), "--n", "6000",
                           "--d", "72", "--levels", "60,12,4,2", "--steps", "2", "--n-iters", "2", "--centers", "100",
                           "--official-steps", "1", "--threads", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert {s.split(":")[0] for s in report["ours"]["stages"]} == {"level 1", "level 2", "level 3", "level 4"}
    assert report["official"]["total_s"] >= report["official"]["measured_s"] > 0
    md = out.with_suffix(".md").read_text()
    assert "Speed-up of ours over the official style" in md
    assert "Measured part alone" in md  # the lower bound on the speed-up without extrapolation


def test_bench_init_and_kmeans_tiny(tmp_path):
    for script, extra in (("bench_init.py", ["--n", "5000", "--k", "50", "--quality-n", "3000", "--quality-k", "30",
                                             "--iters", "2", "--seeds", "1", "--model-points", "3000x30x16"]),
                          ("bench_kmeans.py", ["--n", "3000", "--d", "16", "--k", "10", "--iters", "2",
                                               "--methods", "ours,faiss"])):
        out = tmp_path / script.removesuffix(".py")
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *extra, "--threads", "1",
                               "--out", str(out)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        report = json.loads(out.with_suffix(".json").read_text())
        assert report["machine"] and out.with_suffix(".md").read_text().startswith("# ")
    init = json.loads((tmp_path / "bench_init.json").read_text())
    assert 0.9 < init["quality"][0]["objective_ratio"] < 1.5
    assert init["auto_init"] in ("k-means++", "k-means||") and init["auto_init_over_lloyd"] > 0
    assert init["full_kmeanspp"]["sample_rows"] == 5000  # the objective reference at the cost point's scale
    assert [(m["n"], m["k"], m["d"]) for m in init["model"]] == [(3000, 30, 16)] and init["model"][0]["kmeanspp_s"] > 0


def test_bench_invariance_tiny():
    """bench_invariance.py runs both checkouts and compares objectives (here the checkout against itself)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_invariance.py"), "--baseline-src",
                           str(ROOT / "src"), "--n", "3000", "--d", "72", "--k", "20", "--iters", "2", "--repeats", "1",
                           "--rounds", "1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| reallike") or line.startswith("| blobs64")]
    assert len(rows) == 2 and all(row.rstrip().endswith("| True |") for row in rows)


def test_bench_product_tiny(tmp_path):
    """The product benchmark writes both pools, runs the product on each and reports stages, RSS and the
    embedding stage against the model's own throughput (and the image model's plain forward); ``--reuse`` reads
    the finished runs back instead of running them again."""
    out = tmp_path / "product"
    args = [sys.executable, str(ROOT / "benchmarks" / "bench_product.py"), "--images", "60", "--docs", "60",
            "--side", "48", "--input-size", "64", "--batch-size", "16", "--workers", "0",
            "--work", str(tmp_path / "work"), "--out", str(out), "embedder.dedup_threshold=null"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.with_suffix(".json").read_text())
    assert len(doc["pools"]) == 2
    for r in doc["pools"].values():
        assert r["items"]["embedded"] == 60 and r["subset_size"] == 12
        assert set(r["stage_seconds"]) == {"read", "embed", "dedup", "curate", "outputs"}
        assert r["model_items_per_second"] > 0 and r["peak_rss_gib"] > 0
    images = next(r for name, r in doc["pools"].items() if name.startswith("images"))
    assert images["plain_forward_items_per_second"] > 0
    proc = subprocess.run(args + ["--reuse"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads(out.with_suffix(".json").read_text())
    for name, r in again["pools"].items():  # the same runs, read back: their own wall times and stages
        assert (r["wall_seconds"], r["stage_seconds"]) == (doc["pools"][name]["wall_seconds"],
                                                           doc["pools"][name]["stage_seconds"])


def test_bench_sharded_tiny(tmp_path):
    """bench_sharded.py curates a memory-mapped pool with 1 and 2 gloo processes and reports time, peak RSS per
    rank and bytes per level; the sharded sampling picks the rows one process picks."""
    out = tmp_path / "sharded"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_sharded.py"), "--rows", "6000",
                           "--worlds", "1,2", "--work", str(tmp_path), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.with_suffix(".json").read_text())
    assert [w["world"] for w in doc["worlds"]] == [1, 2]
    for w in doc["worlds"]:
        assert w["selected"] == 1500 and len(w["ranks"]) == w["world"]
        assert all(r["added_peak_mib"] > 0 and len(r["levels"]) == len(doc["levels"]) for r in w["ranks"])
    two = doc["worlds"][1]["ranks"]
    assert sum(r["rows"] for r in two) == 6000 and all(lv["bytes"] > 0 for lv in two[0]["levels"])
    assert "| 2 |" in out.with_suffix(".md").read_text()


def test_bench_gpu_runs_on_cpu(tmp_path):
    """The prepared GPU check (bench_gpu.py) runs end to end on the CPU at small sizes, so a GPU session finds it
    working: both k-means methods report an objective, and the 1- and 2-process curations select the same rows.
    Asked for CUDA where there is none, it refuses in one line."""
    script = str(ROOT / "benchmarks" / "bench_gpu.py")
    out = tmp_path / "gpu"
    proc = subprocess.run([sys.executable, script, "--device", "cpu", "--n", "4000", "--d", "32", "--k", "40",
                           "--iters", "3", "--curate-n", "6000", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kmeans_doc = json.loads(Path(f"{out}_kmeans.json").read_text())
    assert [r["method"] for r in kmeans_doc["rows"]] == ["ours-fp32", "faiss"]
    assert all(r["objective"] > 0 for r in kmeans_doc["rows"])
    runs = json.loads(Path(f"{out}_curate.json").read_text())["runs"]
    assert [(r["run"], r["identical"]) for r in runs] == [("1 process, gloo, CPU", True),
                                                         ("2 processes, gloo, CPU", True)]
    assert "| ours-fp32 |" in Path(f"{out}_kmeans.md").read_text()
    if not torch.cuda.is_available():
        refused = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0 and refused.stderr.strip().splitlines() == [
            "bench_gpu.py: no CUDA device here; run it on a GPU machine, or pass --device cpu for a small check"]
