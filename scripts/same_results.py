"""Does a change keep every study's results? Run the same small study configurations on a base revision and on the
working tree, one after the other, and compare what they select and measure.

    python scripts/same_results.py                  # the working tree against HEAD
    python scripts/same_results.py --base main~3 --runs "experiment=satellite_quick"

For each run: every selection file (``indices.npy`` of each curation, the text study's ``selections/*.npy``) must
hold the same rows, and every metric of metrics.json the same value, wall times aside (metrics named ``*_s``).
The base revision is checked out into a temporary git worktree beside this one, with this checkout's compiled
kernels and package metadata copied in: the built-in text pool samples installed packages' descriptions, so
both trees must see the same installed packages. Each run gets its own empty cache, so nothing is reused
between the trees. Exits 1 when a run differs or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("experiment=web_images_quick",
        "experiment=web_images_quick embedder=ssl_manual embedder.max_steps=20",
        "experiment=satellite_quick",
        "experiment=text +preset=text_quick")
COMMON = ("logger=none", "progress=false", "torch_threads=1")


def run_study(tree: Path, overrides: str, folder: Path) -> bool:
    """``python run.py OVERRIDES`` with ``tree``'s code; its run folder and cache under ``folder``."""
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{tree}"}
    cmd = [sys.executable, "run.py", *shlex.split(overrides), *COMMON, f"paths.cache_dir={folder / 'cache'}",
           f"hydra.run.dir={folder / 'run'}"]
    with open(folder.with_suffix(".log"), "w") as log:
        return subprocess.run(cmd, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT).returncode == 0


def selections(run: Path) -> dict[str, np.ndarray]:
    files = [*run.rglob("indices.npy"), *run.glob("selections/*.npy")]
    return {str(f.relative_to(run)): np.load(f) for f in files}


def differences(base: Path, new: Path) -> list[str]:
    """What differs between two finished runs: selection files and metric values (wall times aside)."""
    out = []
    a, b = selections(base), selections(new)
    out += [f"selection {name}: only in one run" for name in sorted(set(a) ^ set(b))]
    out += [f"selection {name}" for name in sorted(set(a) & set(b)) if not np.array_equal(a[name], b[name])]
    ra = json.loads((base / "metrics.json").read_text())["results"]
    rb = json.loads((new / "metrics.json").read_text())["results"]
    for variant in sorted(set(ra) | set(rb)):
        ma, mb = ra.get(variant, {}), rb.get(variant, {})
        for metric in sorted(set(ma) | set(mb)):
            if not metric.endswith("_s") and ma.get(metric) != mb.get(metric):
                out.append(f"{variant}/{metric}: {_values(ma.get(metric))} -> {_values(mb.get(metric))}")
    return out


def _values(stats: dict | None):
    return None if stats is None else stats.get("values")


def base_worktree(rev: str, where: Path) -> Path:
    tree = where / "base"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=ROOT, check=True,
                   capture_output=True)
    for built in [*(ROOT / "src" / "sslcurate").glob("_kernels*.so"), *(ROOT / "src").glob("*.egg-info")]:
        dest = tree / built.relative_to(ROOT)
        (shutil.copytree if built.is_dir() else shutil.copy2)(built, dest)
    return tree


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="HEAD", help="the revision to compare against (default HEAD)")
    ap.add_argument("--runs", nargs="+", default=list(RUNS), help="run.py overrides, one string per run")
    ap.add_argument("--keep", action="store_true", help="keep the runs' folders (printed) instead of deleting them")
    args = ap.parse_args(argv)
    where = Path(tempfile.mkdtemp(prefix="same_results_"))
    tree = base_worktree(args.base, where)
    failed = False
    try:
        for i, overrides in enumerate(args.runs):
            folders = {name: where / f"{name}{i}" for name in ("base", "new")}
            ok = [run_study(code, overrides, folders[name]) for name, code in (("base", tree), ("new", ROOT))]
            if not all(ok):
                failed = True
                print(f"FAILED  {overrides}: see {' '.join(str(f.with_suffix('.log')) for f in folders.values())}")
                continue
            diff = differences(folders["base"] / "run", folders["new"] / "run")
            failed |= bool(diff)
            n_sel = len(selections(folders["new"] / "run"))
            print(f"{'DIFFERS' if diff else 'same':8}{overrides} ({n_sel} selection files)")
            for line in diff[:20]:
                print(f"        {line}")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
        if args.keep:
            print(f"runs kept in {where}")
        else:
            shutil.rmtree(where, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
