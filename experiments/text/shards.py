"""Users' text shards (C4, RedPajama, Common Crawl WET extracts): JSONL (plain, .gz or .bz2) and Parquet, streamed
one record at a time, and the pool / held-out split made from them by source document."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Iterator

from sslcurate import CurationInputError

from .corpus import PoolSplit, TextCorpus, held_out_groups
from .sources import wikipedia_paragraphs

log = logging.getLogger(__name__)

SHARD_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.bz2", ".parquet")


def list_shards(path: str | os.PathLike) -> list[Path]:
    """Shard files under ``path`` (a file, a folder searched recursively, or a glob), sorted."""
    p = Path(os.path.expanduser(str(path)))
    if any(ch in str(path) for ch in "*?["):
        files = sorted(Path(p.anchor or ".").glob(str(p.relative_to(p.anchor)) if p.is_absolute() else str(p)))
    elif p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(SHARD_SUFFIXES))
    elif p.is_file():
        files = [p]
    else:
        raise CurationInputError(f"text shards: {path} does not exist")
    files = [f for f in files if f.name.endswith(SHARD_SUFFIXES)]
    if not files:
        raise CurationInputError(f"text shards: no {'/'.join(SHARD_SUFFIXES)} files under {path}")
    return files


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if path.name.endswith(".bz2"):
        return bz2.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_jsonl(path: Path, text_field: str, extra_fields: tuple[str, ...] = ()) -> Iterator[dict]:
    """Records of a JSONL shard, one line at a time; a bad line or a missing field is an error naming both."""
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise CurationInputError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(rec, dict) or text_field not in rec:
                raise CurationInputError(f"{path}:{lineno}: no '{text_field}' field "
                                         f"(set data.text_field; keys here: {sorted(rec)[:8] if isinstance(rec, dict) else type(rec).__name__})")
            yield {"text": rec[text_field], **{k: rec.get(k) for k in extra_fields}}


def iter_parquet(path: Path, text_field: str, extra_fields: tuple[str, ...] = (),
                 batch_rows: int = 4096) -> Iterator[dict]:
    """Records of a Parquet shard, read ``batch_rows`` rows at a time (never the whole file)."""
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a bad file
        raise CurationInputError(f"{path}: not a readable Parquet file ({err})") from None
    names = pf.schema_arrow.names
    if text_field not in names:
        raise CurationInputError(f"{path}: no '{text_field}' column (set data.text_field; columns: {names})")
    cols = [text_field] + [k for k in extra_fields if k in names]
    for batch in pf.iter_batches(batch_size=batch_rows, columns=cols):
        data = batch.to_pydict()
        for i in range(batch.num_rows):
            yield {"text": data[text_field][i], **{k: (data[k][i] if k in data else None) for k in extra_fields}}


def iter_shards(path, text_field: str = "text", extra_fields: tuple[str, ...] = (),
                max_docs: int | None = None, min_chars: int = 1) -> Iterator[dict]:
    """Stream documents from every shard under ``path``; skips empty / non-string texts and ones shorter than
    ``min_chars``; stops after ``max_docs``."""
    n = 0
    for shard in list_shards(path):
        reader = iter_parquet if shard.name.endswith(".parquet") else iter_jsonl
        for rec in reader(shard, text_field, extra_fields):
            text = rec["text"]
            if not isinstance(text, str) or len(text.strip()) < min_chars:
                continue
            yield rec
            n += 1
            if max_docs is not None and n >= max_docs:
                return


GROUP_FIELDS = ("group", "source")  # data.group_by=auto: the first of these a record has names its document


def _record_group(rec: dict, group_by: str | None, text: str, n: int) -> str:
    """The source document of a record: its ``group_by`` field (``auto``: the first of GROUP_FIELDS it has), else
    the record itself (a hash of its text)."""
    if group_by == "auto":
        value = next((rec.get(f) for f in GROUP_FIELDS if rec.get(f) is not None), None)
    elif group_by:
        value = rec.get(group_by)
        if value is None:
            raise CurationInputError(f"text shards: document {n} has no '{group_by}' field (data.group_by names the "
                                     "record field holding its source document; null: each record alone)")
    else:
        value = None
    if value is None:
        return "doc:" + hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()[:12]
    return f"group:{value}"


def _group_fields(group_by: str | None) -> tuple[str, ...]:
    return GROUP_FIELDS if group_by == "auto" else ((group_by,) if group_by else ())


def read_corpus(path, cfg, max_docs: int | None = None) -> TextCorpus:
    """Every document under ``path`` (shards in the formats of :func:`list_shards`) as a corpus: text cut at
    ``cfg.max_chars``, domain from ``cfg.domain_field`` (else ``web``), group (source document) from
    ``cfg.group_by``."""
    group_by = cfg.get("group_by", None)
    extra = tuple(dict.fromkeys(((cfg.domain_field,) if cfg.domain_field else ()) + _group_fields(group_by)))
    corpus = TextCorpus()
    for n, rec in enumerate(iter_shards(path, cfg.text_field, extra, max_docs, cfg.min_chars)):
        text = rec["text"][: cfg.max_chars]
        domain = str(rec.get(cfg.domain_field) or "web") if cfg.domain_field else "web"
        corpus.add(text, domain, _record_group(rec, group_by, text, n))
    return corpus


def load_shards(cfg, seed: int = 0) -> PoolSplit:
    """A pool from users' shards (``configs/data/text_shards.yaml``) and its held-out evaluation documents.

    With ``cfg.eval_path``, the evaluation documents are read from there (same formats) and the pool is every
    document of ``cfg.path``. Otherwise whole source documents are held out: each record's group (the
    ``cfg.group_by`` field, e.g. the page or file a chunk was cut from; ``auto``: a ``group`` or ``source`` field
    when the records have one; null or absent: the record alone) is held out whole, about ``cfg.eval_fraction``
    of each domain's documents in a seeded hash order (:func:`~.corpus.held_out_groups`), so no document has
    pieces on both sides and a small domain is not left out of the evaluation by chance. The optional
    ``cfg.domain_field`` labels evaluation domains (else every document is ``web``); the CCNet reference is the
    built-in Wikipedia slice unless ``cfg.reference`` names shards of reference text."""
    corpus = read_corpus(cfg.path, cfg, cfg.max_docs)
    eval_path = cfg.get("eval_path")
    if eval_path:
        pool, evals = corpus, read_corpus(eval_path, cfg)
        shared = len(set(pool.texts) & set(evals.texts))
        if shared:
            log.warning("%d evaluation document(s) of %s also appear in the pool %s", shared, eval_path, cfg.path)
    else:
        held = held_out_groups(corpus, cfg.eval_fraction, seed)
        pool = corpus.subset(i for i, g in enumerate(corpus.groups) if g not in held)
        evals = corpus.subset(i for i, g in enumerate(corpus.groups) if g in held)
        log.info("held out %d of %d documents (%d of %d source documents, data.group_by=%s)", len(evals),
                 len(corpus), len(set(evals.groups)), len(set(corpus.groups)), cfg.get("group_by", None))
    if len(pool) == 0 or len(evals) == 0:
        where = f"the evaluation file(s) {eval_path}" if eval_path else "the hold-out"
        raise CurationInputError(f"text shards under {cfg.path}: {len(pool)} pool and {len(evals)} held-out "
                                 f"documents from {where}; need at least one of each (more documents, another "
                                 "eval_fraction, or data.eval_path=FILE)")
    if cfg.reference:
        reference = TextCorpus()
        for rec in iter_shards(cfg.reference, cfg.text_field, (), None, cfg.min_chars):
            reference.add(rec["text"], "reference", "reference")
    else:
        wiki = wikipedia_paragraphs(200, 1500)
        reference = wiki
    return PoolSplit(pool=pool, eval=evals, reference=reference)
