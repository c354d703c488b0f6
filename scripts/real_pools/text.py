"""The text pool: Python's documentation, Debian changelogs and copyright files, and gensim's Wikipedia and news
test corpora, cut into paragraph-sized chunks."""

from __future__ import annotations

import bz2
import gzip
import html.parser
import io
import json
import re
import zipfile
from collections import Counter
from pathlib import Path

from real_pools.registries import PrepareError, fetch_debs, fetch_pypi, keep_copyrights

# Common packages whose Debian changelog and copyright file go into the text pool (real, repetitive boilerplate:
# licence texts recur verbatim across copyright files, changelog entries follow one template).
DOC_PACKAGES = (
    "bash", "coreutils", "tar", "gzip", "bzip2", "xz-utils", "grep", "sed", "mawk", "findutils",
    "diffutils", "patch", "make", "file", "less", "nano", "curl", "wget", "rsync", "openssh-client",
    "openssl", "ca-certificates", "tzdata", "apt", "dpkg", "util-linux", "procps", "sudo", "cron", "logrotate",
)
GENSIM_WIKI = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
GENSIM_NEWS = ("gensim/test/test_data/lee_background.cor", "gensim/test/test_data/lee.cor")
MIN_CHARS, MAX_CHARS = 300, 2000  # text chunk size: about one to a few paragraphs


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
