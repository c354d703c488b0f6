"""Tables of ``results/simulated/README.md`` from the files the runs wrote (never from memory).

    python -m experiments.simulated.report [RESULTS_DIR]                 # README from metrics.json (+ ablations)
    python -m experiments.simulated.report --collect MULTIRUN_DIR...     # gather ablation sweeps, then README

``RESULTS_DIR`` defaults to ``results/simulated``. ``--collect`` reads every ``*/metrics.json`` of
``experiment=simulated_ablation`` jobs under the given multirun folders into ``RESULTS_DIR/ablations.json``
(a later job of the same axis and value replaces an earlier one).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments.kit.metrics import mean_std

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = ROOT / "results" / "simulated"
COMMAND = "python run.py experiment=simulated publish=true logger=none"
ABLATION_AXES = {
    "levels": ("number of levels (final k = 300; r = 2, T = 10)", "ablation.n_levels=1,2,3,4"),
    "steps": ("resampling steps T (3 levels, r = 2)", "ablation.resampling_steps=0,1,10,100"),
    "r": ("points per cluster r (3 levels, T = 10)", "ablation.sample_size=1,2,3"),
    "init": ("k-means initialisation (3 levels, r = 2, T = 10)", "ablation.init=k-means++,random"),
    "leaf": ("leaf sampling strategy (3 levels, r = 2, T = 10)", "ablation.leaf_strategy=random,closest,furthest"),
}
LABELS = {"raw": "raw data (KDE of all points)", "kmeans": "k-means, 300 clusters",
          "hkmeans_2level": "2-level [1500, 300]", "hkmeans_3level": "3-level [3000, 1000, 300]",
          "hkmeans_3level_resampled": "3-level + resampling (r = 2, T = 10)", "dbscan": "DBSCAN (cluster means)",
          "agglomerative": "agglomerative (ward), 300 clusters",
          "uniform_bound": "300 uniform random points (lower bound)"}


def fig3_table(doc: dict) -> list[str]:
    paper = doc.get("paper_kl", {})
    n = len(doc["seeds"])
    lines = [f"| method | key | KL to uniform, ours (mean ± std, {n} seeds) | paper | ours / paper | "
             "centroids (mean) |", "|---|---|---|---|---|---|"]
    keys = [k for k in LABELS if k in doc["results"]] + [k for k in doc["results"] if k not in LABELS]
    for key in keys:
        res = doc["results"][key]
        kl = res["kl_to_uniform"]
        ref = paper.get(key)
        ref_s = "—" if ref is None else (f"{ref:.4g} ± 0.0073" if key == "uniform_bound" else f"{ref:.4g}")
        ratio = "—" if not ref else f"{kl['mean'] / ref:.2f}"
        ncent = res.get("n_centroids", {}).get("mean", float("nan"))
        lines.append(f"| {LABELS.get(key, key)} | `{key}` | {mean_std(kl, 4)} | {ref_s} | {ratio} | {ncent:.0f} |")
    return lines


def order_check(doc: dict) -> list[str]:
    """The paper's ordering of methods, checked on our means (and per seed)."""
    res = doc["results"]
    mean = {k: v["kl_to_uniform"]["mean"] for k, v in res.items()}
    vals = {k: v["kl_to_uniform"]["values"] for k, v in res.items()}
    chain = ["raw", "agglomerative", "kmeans", "hkmeans_2level", "hkmeans_3level", "hkmeans_3level_resampled",
             "uniform_bound"]
    chain = [c for c in chain if c in mean]
    out = []
    for a, b in zip(chain, chain[1:]):
        per_seed = sum(x > y for x, y in zip(vals[a], vals[b]))
        out.append(f"- `{a}` > `{b}`: {'yes' if mean[a] > mean[b] else '**no**'} on the mean "
                   f"({mean[a]:.4f} vs {mean[b]:.4f}), in {per_seed} of {len(vals[a])} seeds")
    return out


def fig1a_table(doc: dict) -> list[str]:
    f = doc["fig1a"]
    lines = [f"{f['n_points']:,} points, final k = {f['n_clusters']}. Exponent a: least-squares slope of "
             "log(centroid density) on log(data density), centroid density = 2w / (k (c[i+w] - c[i-w])) with "
             "w = 10, over centroids where p > 1e-3 max p and more than 0.5 from a truncation edge.", "",
             "| variant | levels (k) | fitted a | theory | R² of the fit | centroids in the fit |",
             "|---|---|---|---|---|---|"]
    order = ["kmeans_p2", "kmeans_p4", "kmeans_p8", "hkmeans_2level", "hkmeans_3level", "hkmeans_2level_resampled"]
    names = [n for n in order if n in f["variants"]] + [n for n in f["variants"] if n not in order]
    for name in names:
        v = f["variants"][name]
        theory = f"{v['theory']:.3f}" if "theory" in v else "—"
        lines.append(f"| `{name}` | {v.get('levels', v['k'])} | {v['exponent']:.3f} | {theory} | {v['r2']:.2f} | "
                     f"{v['n_fit']} |")
    return lines


def rings_table(doc: dict) -> list[str]:
    r = doc["rings"]
    c = r["counts"]
    n = len(c["pool"])
    lines = [f"Levels {r['levels']}, target {r['target_size']}.", "",
             "| subset | " + " | ".join(f"ring {i + 1}" for i in range(n)) + " | total |",
             "|---|" + "---|" * (n + 1)]
    for key in ("pool", "random", "curated"):
        lines.append(f"| {key} | " + " | ".join(str(v) for v in c[key]) + f" | {sum(c[key])} |")
    return lines


def ablation_tables(abl: dict) -> list[str]:
    out = []
    for axis, (title, sweep) in ABLATION_AXES.items():
        rows = abl.get(axis)
        if not rows:
            continue
        out += [f"**{title}** — `python run.py -m experiment=simulated_ablation logger=none ablation.axis={axis} "
                f"{sweep}`", "",
                f"| {axis} | KL of the 300 centroids | KL of the {rows[0]['setting']['target_size']} sampled points "
                "| seeds |", "|---|---|---|---|"]
        for row in rows:
            out.append(f"| {row['value']} | {mean_std(row['kl_to_uniform'], 4)} | "
                       f"{mean_std(row['kl_subset_to_uniform'], 4)} | {len(row['seeds'])} |")
        out.append("")
    return out


def collect(dirs: list[Path], results_dir: Path) -> Path:
    """Gather ``experiment=simulated_ablation`` jobs under ``dirs`` into ``results_dir/ablations.json``."""
    path = results_dir / "ablations.json"
    abl = json.loads(path.read_text()) if path.exists() else {}
    for d in dirs:
        jobs = sorted(Path(d).glob("*/metrics.json"), key=lambda p: (p.parent.name.isdigit(),
                                                                      int(p.parent.name) if p.parent.name.isdigit()
                                                                      else 0, str(p)))
        for m in jobs:
            doc = json.loads(m.read_text())
            if doc.get("experiment") != "simulated_ablation":
                continue
            stats = doc["results"][doc["primary_variant"]]
            row = {"value": doc["value"], "seeds": doc["seeds"], "setting": doc["setting"], **stats}
            rows = [r for r in abl.get(doc["axis"], []) if r["value"] != row["value"]]
            abl[doc["axis"]] = rows + [row]
    results_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(abl, indent=2) + "\n")
    return path


NOTES = Path(__file__).with_name("notes.md")


def write_readme(results_dir: Path = DEFAULT_DIR) -> Path:
    results_dir = Path(results_dir)
    doc = json.loads((results_dir / "metrics.json").read_text())
    lines = ["# Study 1: simulated data (paper Fig. 1a, Fig. 3, toy rings)", "",
             "Generated by `python -m experiments.simulated.report` from `metrics.json` (and `ablations.json`); "
             "do not edit by hand.", "",
             f"Reproduce: `{COMMAND}` (all randomness seeded: a rerun writes the same `metrics.json`).", ""]
    if "results" in doc and doc["results"]:
        kd = doc.get("kl_definition", {})
        lines += ["## Fig. 3: KL divergence of the 300 final centroids to the uniform density", "",
                  f"KDE: {kd.get('kde')}, bandwidth {kd.get('bandwidth')}; grid step {kd.get('grid_step')} on "
                  f"[-{kd.get('box')}, {kd.get('box')}]²; KL: {kd.get('kl')}. Each seed draws new data and reruns "
                  "every method; the paper's numbers are one stored run of the official notebook.", "",
                  *fig3_table(doc), "",
                  f"Uniform bound over all {doc['uniform_bound_draws']['n']} draws: "
                  f"{mean_std(doc['uniform_bound_draws'], 4)} "
                  "(paper: 0.0401 ± 0.0073 over 10 draws).", "",
                  "Ordering of the paper, checked on ours:", "", *order_check(doc), "",
                  "![centroids](fig3_centroids.png)", "", "![kde](fig3_kde.png)", ""]
    if "fig1a" in doc:
        lines += ["## Fig. 1a: centroid density vs data density in 1-D", "", *fig1a_table(doc), "",
                  "![fig1a](fig1a_density.png)", ""]
    if "rings" in doc:
        lines += ["## Toy rings: points per ring", "", *rings_table(doc), "", "![rings](rings.png)", ""]
    abl_path = results_dir / "ablations.json"
    if abl_path.exists():
        lines += ["## Ablations (Fig. 3 data; Hydra sweeps of `experiment=simulated_ablation`)", "",
                  "Gathered with `python -m experiments.simulated.report --collect outputs/multiruns/"
                  "simulated_ablation/*`.", "", *ablation_tables(json.loads(abl_path.read_text()))]
    if NOTES.exists():
        lines += [NOTES.read_text().rstrip(), ""]
    path = results_dir / "README.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results_dir", nargs="?", default=str(DEFAULT_DIR))
    ap.add_argument("--collect", nargs="+", metavar="MULTIRUN_DIR", help="gather ablation sweep folders first")
    args = ap.parse_args(argv)
    results_dir = Path(args.results_dir)
    if args.collect:
        print(collect([Path(d) for d in args.collect], results_dir))
    print(write_readme(results_dir))


if __name__ == "__main__":
    main()
