"""Real text every installation carries, cut into paragraph-sized documents: Wikipedia articles and Lee news of
gensim's test data, the Python standard library's code and docstrings, and installed packages' descriptions."""

from __future__ import annotations

import ast
import bz2
import importlib.metadata
import re
import sysconfig
from pathlib import Path
from typing import Iterable

import numpy as np

from sslcurate import CurationInputError

from .corpus import TextCorpus


def chunk_paragraphs(paragraphs: Iterable[str], min_chars: int, max_chars: int) -> list[str]:
    """Merge consecutive short paragraphs up to ``min_chars``; cut long ones at sentence ends near ``max_chars``."""
    out, buf = [], ""
    for p in paragraphs:
        p = re.sub(r"[ \t]+", " ", p).strip()
        if not p:
            continue
        buf = f"{buf}\n{p}" if buf else p
        while len(buf) > max_chars:
            cut = buf.rfind(". ", min_chars, max_chars)
            cut = cut + 1 if cut > 0 else max_chars
            out.append(buf[:cut].strip())
            buf = buf[cut:].strip()
        if len(buf) >= min_chars:
            out.append(buf)
            buf = ""
    if len(buf) >= min_chars:
        out.append(buf)
    return out


def gensim_test_data() -> Path:
    try:
        import gensim
    except ImportError as err:  # pragma: no cover - gensim is a dependency
        raise CurationInputError("the built-in text pool needs gensim (pip install gensim)") from err
    path = Path(gensim.__file__).parent / "test" / "test_data"
    if not path.is_dir():
        raise CurationInputError(f"gensim's test corpora are missing: {path} is not a folder")
    return path


WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
NEWS_FILES = ("lee_background.cor", "lee.cor")


def _sentence_groups(sentences: list[str], size: int) -> list[str]:
    out, buf = [], ""
    for s in sentences:
        buf = f"{buf} {s}".strip()
        if len(buf) >= size:
            out.append(buf)
            buf = ""
    if buf:
        out.append(buf)
    return out


def wikipedia_paragraphs(min_chars: int, max_chars: int) -> TextCorpus:
    """Paragraphs of the Wikipedia articles bundled with gensim; group = article title."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki
    path = gensim_test_data() / WIKI_FILE
    corpus = TextCorpus()
    with bz2.open(path) as f:
        for title, text, _ in extract_pages(f, filter_namespaces=("0",)):
            if text.lstrip().lower().startswith("#redirect"):
                continue
            clean = re.sub(r"'{2,}", "", filter_wiki(text))
            paras = [p for p in clean.split("\n") if len(p.strip()) > 40]
            for chunk in chunk_paragraphs(paras, min_chars, max_chars):
                corpus.add(chunk, "wiki", f"wiki:{title}")
    return corpus


def news_paragraphs(min_chars: int, max_chars: int) -> TextCorpus:
    """Lee news articles (one per line) cut into paragraph-sized chunks of whole sentences."""
    corpus = TextCorpus()
    for name in NEWS_FILES:
        lines = (gensim_test_data() / name).read_text(encoding="utf-8", errors="replace").splitlines()
        for i, line in enumerate(lines):
            sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", line.strip())
            for chunk in chunk_paragraphs(_sentence_groups(sentences, min_chars), min_chars, max_chars):
                corpus.add(chunk, "news", f"news:{name}:{i}")
    return corpus


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo", "encodings",
            "__pycache__", "pydoc_data", "ensurepip", "tkinter"}
    files = [p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts)]
    return sorted(files)


def _code_chunks(lines: list[str], min_chars: int, max_chars: int) -> list[str]:
    """Cut a definition at line boundaries into pieces of at most ``max_chars``."""
    out, buf = [], []
    size = 0
    for line in lines:
        if size + len(line) + 1 > max_chars and size >= min_chars:
            out.append("\n".join(buf))
            buf, size = [], 0
        buf.append(line.rstrip())
        size += len(line) + 1
    if size >= min_chars:
        out.append("\n".join(buf))
    return [c for c in out if c.strip()]


def stdlib_code_and_docs(min_chars: int, max_chars: int, min_doc_chars: int,
                         max_files: int | None = None) -> tuple[TextCorpus, TextCorpus]:
    """Top-level functions / classes of the standard library without docstrings (``code``) and the docstrings
    (``docs``); group = module path. max_files: parse only this many modules, evenly spaced in path order (parsing
    all of them dominates a small pool's build time); None: all."""
    root = Path(sysconfig.get_paths()["stdlib"])
    code, docs = TextCorpus(), TextCorpus()
    files = stdlib_files()
    if max_files is not None and max_files < len(files):
        files = [files[i] for i in np.linspace(0, len(files) - 1, max(1, max_files)).round().astype(int)]
    for path in files:
        module = "stdlib:" + str(path.relative_to(root))
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = source.splitlines()
        doc_lines: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                                          ast.Constant) \
                        and isinstance(body[0].value.value, str):
                    doc = ast.get_docstring(node, clean=True) or ""
                    doc_lines.update(range(body[0].lineno, body[0].end_lineno + 1))
                    for chunk in chunk_paragraphs(doc.split("\n\n"), min_doc_chars, max_chars):
                        docs.add(chunk, "docs", module)
        for node in tree.body:
            if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            body = [lines[i - 1] for i in range(start, node.end_lineno + 1) if i not in doc_lines]
            for chunk in _code_chunks(body, min_chars, max_chars):
                code.add(chunk, "code", module)
    return code, docs


def package_descriptions(min_chars: int, max_chars: int) -> TextCorpus:
    """Long descriptions of the installed distributions, cut into paragraphs; group = distribution name."""
    corpus, seen = TextCorpus(), set()
    dists = sorted(importlib.metadata.distributions(), key=lambda d: (d.metadata.get("Name") or "").lower())
    for dist in dists:
        name = (dist.metadata.get("Name") or "").lower()
        if not name or name in seen:
            continue
        seen.add(name)
        desc = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        if not isinstance(desc, str) or len(desc) < min_chars:
            continue
        paras = re.split(r"\n\s*\n", desc)
        for chunk in chunk_paragraphs(paras, min_chars, max_chars):
            corpus.add(chunk, "pkgdocs", f"pkg:{name}")
    return corpus
