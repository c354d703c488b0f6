"""The curation product end to end on pools written to disk: seconds per stage, items/s, peak RSS, and the
embedding stage's throughput against the model's own forward pass at the same batch size.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_product.py --images 100000 --docs 200000
    python benchmarks/bench_product.py --images 2000 --docs 2000 --out /tmp/p      # a quick look

Pools (generated once under ``--work``, then reused): ``--images`` PNG files (``--side`` pixels, 40 concepts of
coloured shapes with Zipf sizes, one folder per concept) and ``--docs`` JSONL documents (40 topics with Zipf sizes,
~60 words each). Each pool is curated to 20% by ``python run.py experiment=curate ...`` in a fresh process and
directory; ``report.json``'s ``stage_seconds`` give the stages, the child's ``ru_maxrss`` its peak RSS
(``--reuse`` reads a finished run with the same arguments back from ``--work`` instead: ``timing.json`` there keeps
its wall time and peak RSS). The model's
own throughput: ``embedder.embed`` on prepared batches already in memory, the median of 12 timed batches after a
warm-up, same batch size and thread count. Writes ``OUT.json`` and ``OUT.md`` (default ``benchmarks/results/product``).
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_kmeans import machine_info, write_outputs  # noqa: E402

CONCEPTS = 40


def zipf_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    w = 1.0 / np.arange(1, CONCEPTS + 1)
    return np.sort(rng.choice(CONCEPTS, size=n, p=w / w.sum()))


def write_images(root: Path, n: int, side: int, seed: int = 0) -> None:
    """``n`` PNGs ``root/c<label>/<i>.png``: a background colour per concept, a random ellipse or box on it."""
    from PIL import Image, ImageDraw

    if (root / "DONE").exists():
        return
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 255, (CONCEPTS, 2, 3))
    for i, c in enumerate(zipf_labels(n, rng)):
        img = Image.new("RGB", (side, side), tuple(int(v) for v in colours[c, 0]))
        box = sorted(rng.integers(0, side, 2)), sorted(rng.integers(0, side, 2))
        shape = ImageDraw.Draw(img).ellipse if c % 2 else ImageDraw.Draw(img).rectangle
        shape([box[0][0], box[1][0], box[0][1] + 1, box[1][1] + 1], fill=tuple(int(v) for v in colours[c, 1]))
        (root / f"c{c:02d}").mkdir(parents=True, exist_ok=True)
        img.save(root / f"c{c:02d}" / f"{i:07d}.png")
    (root / "DONE").write_text(str(n))


def write_docs(path: Path, n: int, seed: int = 0) -> None:
    """``n`` JSONL records ``{"text", "topic"}``: 60 words drawn mostly from the topic's own 50-word vocabulary."""
    if path.exists():
        return
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(CONCEPTS * 50 + 500)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".tmp"), "w") as fh:
        for c in zipf_labels(n, rng):
            own = rng.integers(c * 50, c * 50 + 50, 48)
            common = rng.integers(CONCEPTS * 50, len(vocab), 12)
            words = [vocab[j] for j in rng.permutation(np.concatenate([own, common]))]
            fh.write(json.dumps({"text": " ".join(words), "topic": f"t{c}"}) + "\n")
    path.with_suffix(".tmp").rename(path)


def model_throughput(kind: str, embedder_args: dict, batch_size: int, side: int, batches: int = 12) -> float:
    """Items/s of the embedder's forward pass alone on prepared batches in memory: ``batches`` timed batches (three
    different ones in turn) after a warm-up, their median time. A median, not the best: the embedding stage's
    rate it is compared with is the average of a long run."""
    from omegaconf import OmegaConf

    from experiments.embedders import create_embedder

    cfg = OmegaConf.create({"kind": "auto", "batch_size": batch_size, **embedder_args})
    emb = create_embedder(cfg, "text" if kind == "text" else "image")
    rng = np.random.default_rng(0)
    if kind == "text":
        words = [f"w{i}" for i in range(2500)]
        prepared = [[" ".join(rng.choice(words, 60)) for _ in range(batch_size)] for _ in range(3)]
    else:
        import torch

        prepared = [torch.stack([emb.prepare(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))
                                 for _ in range(batch_size)]) for _ in range(3)]
    emb.embed(prepared[0])
    seconds = []
    for i in range(batches):
        t = time.perf_counter()
        emb.embed(prepared[i % 3])
        seconds.append(time.perf_counter() - t)
    return batch_size / float(np.median(seconds))


def plain_forward(input_size: int, batch_size: int) -> float:
    """Items/s of EfficientNet-Lite0 called on a whole batch at once with glibc's default malloc settings (median
    of 6 timed batches after a warm-up): the forward pass as it ran before the embedder cut batches into chunks and
    kept freed activations mapped (``experiments.embedders.reuse_freed_memory``). Run in a fresh process:
    ``mallopt`` is process-wide, and this one may have set it."""
    import torch

    from experiments.embedders import efficientnet_lite0

    model = efficientnet_lite0()
    x = torch.rand(batch_size, 3, input_size, input_size)
    seconds = []
    with torch.inference_mode():
        model(x)
        for _ in range(6):
            t = time.perf_counter()
            model(x)
            seconds.append(time.perf_counter() - t)
    return batch_size / float(np.median(seconds))


def plain_forward_throughput(input_size: int, batch_size: int) -> float:
    proc = subprocess.run([sys.executable, __file__, "--plain-forward", f"{input_size},{batch_size}"],
                          capture_output=True, text=True, check=True)
    return float(proc.stdout.split()[-1])


def run_product(args: list[str], out: Path, reuse: bool = False) -> dict:
    """One product run in a fresh process and an empty directory ``out``; with ``reuse``, a finished run already
    in ``out`` with the same arguments is read instead (its own wall time and peak RSS, from ``timing.json``)."""
    cmd = [sys.executable, str(ROOT / "run.py"), "experiment=curate", *args, f"hydra.run.dir={out}", "logger=none",
           "progress=false"]
    if reuse and (out / "timing.json").exists() and json.loads((out / "timing.json").read_text())["args"] == cmd[2:]:
        timing = json.loads((out / "timing.json").read_text())
    else:
        shutil.rmtree(out, ignore_errors=True)  # a previous run's cached embeddings would skip the stage timed
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit((proc.stdout + proc.stderr)[-3000:])
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        timing = {"args": cmd[2:], "wall_seconds": round(wall, 1), "peak_rss_gib": round(max(rss, before) / 2 ** 20, 2)}
        (out / "timing.json").write_text(json.dumps(timing))
    report = json.loads((out / "report.json").read_text())
    return {"wall_seconds": timing["wall_seconds"], "stage_seconds": report["stage_seconds"],
            "items": report["items"], "embed_items_per_second": report["embedding"]["items_per_second"],
            "peak_rss_gib": timing["peak_rss_gib"], "subset_size": report["subset_size"],
            "levels": [lv["n_clusters"] for lv in report["levels_used"]],
            "dedup_dropped": report["dedup"]["dropped_rows"],
            "timing_source": timing.get("measured_by", "this script (the child's wall time and ru_maxrss)")}


def markdown(doc: dict) -> str:
    lines = [f"# The curation product end to end ({doc['machine']})", "",
             f"Command: `{doc['command']}`. Each pool curated to 20% in a fresh process; {doc['config']['note']}.", "",
             "| pool | items | embedded items/s | model forward items/s | ratio | plain forward items/s "
             "| stage seconds | wall s | peak RSS (GiB) | levels |", "|---" * 10 + "|"]
    for name, r in doc["pools"].items():
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r["stage_seconds"].items())
        lines.append(f"| {name} | {r['items']['listed']:,} | {r['embed_items_per_second']:.1f} | "
                     f"{r['model_items_per_second']:.1f} | {r['embed_vs_model']:.2f} | "
                     f"{r.get('plain_forward_items_per_second', float('nan')):.1f} | {stages} | "
                     f"{r['wall_seconds']:.0f} | {r['peak_rss_gib']:.2f} | {r['levels']} |")
    lines += [f"- {name}: wall time and peak RSS measured by {r['timing_source']}" for name, r in doc["pools"].items()
              if r["timing_source"] != "this script (the child's wall time and ru_maxrss)"]
    lines += ["", "ratio: the embedding stage's items/s (reading and decoding in DataLoader workers, batching, "
              "writing shards) over the model's forward pass alone on batches already in memory, as the embedder "
              "runs it (images: chunks of 8, freed activations kept mapped). plain forward: the image model on the "
              "whole batch at once with glibc's default malloc settings, in a fresh process (nan: not measured).", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--side", type=int, default=64, help="image side in pixels (files on disk)")
    ap.add_argument("--input-size", type=int, default=224, help="the image model's input side")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", default=str(Path("~/.cache/sslcurate/bench_product").expanduser()))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "product"))
    ap.add_argument("--note", default="nothing else ran", help="what else ran on the machine, for the table's note")
    ap.add_argument("--reuse", action="store_true",
                    help="read a finished product run with the same arguments from --work instead of rerunning it")
    ap.add_argument("--plain-forward", help=argparse.SUPPRESS)  # INPUT_SIZE,BATCH: plain_forward in this process
    ap.add_argument("overrides", nargs="*",
                    help="more overrides for both product runs, e.g. embedder.dedup_threshold=null")
    args = ap.parse_args(argv)
    if args.plain_forward:
        print(plain_forward(*map(int, args.plain_forward.split(","))))
        return {}
    work = Path(args.work)
    pools = {}
    if args.images:
        folder = work / f"images_{args.images}_{args.side}"
        write_images(folder, args.images, args.side)
        run = run_product(["data=image_folder", f"data.path={folder}", f"curation.target_size={args.images // 5}",
                           f"embedder.input_size={args.input_size}", f"embedder.batch_size={args.batch_size}",
                           f"data.num_workers={args.workers}", *args.overrides], work / "run_images", args.reuse)
        run["model_items_per_second"] = model_throughput("image", {"input_size": args.input_size},
                                                         args.batch_size, args.side)
        run["plain_forward_items_per_second"] = plain_forward_throughput(args.input_size, args.batch_size)
        pools[f"images ({args.side} px files, model input {args.input_size})"] = run
    if args.docs:
        path = work / f"docs_{args.docs}.jsonl"
        write_docs(path, args.docs)
        run = run_product(["data=text", f"data.path={path}", "data.label_field=topic",
                           f"curation.target_size={args.docs // 5}", f"embedder.batch_size={args.batch_size}",
                           *args.overrides],
                          work / "run_docs", args.reuse)
        run["model_items_per_second"] = model_throughput("text", {}, args.batch_size, args.side)
        pools["text (JSONL)"] = run
    for r in pools.values():
        r["embed_vs_model"] = r["embed_items_per_second"] / r["model_items_per_second"]
    doc = {"machine": machine_info(), "config": vars(args), "pools": pools,
           "command": "python benchmarks/bench_product.py " + shlex.join(sys.argv[1:] if argv is None else argv)}
    write_outputs(args.out, doc, markdown(doc))
    return doc


if __name__ == "__main__":
    main()
