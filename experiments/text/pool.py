"""The text pool: an offline, web-like mix of documents, and streamed loaders for users' JSONL / Parquet shards.

A :class:`TextCorpus` is three parallel lists: ``texts``, ``domains`` (evaluation-only labels) and ``groups``
(the article / module / package a document comes from; splits are made by group so a held-out document never has
a sibling paragraph in the pool).

The built-in pool (:func:`build_builtin`) mixes, from what every installation carries:

* ``wiki``: paragraphs of the 106 Wikipedia articles in gensim's test data (a slice is kept apart as the CCNet
  reference corpus, another for evaluation);
* ``news``: the Lee news corpus of gensim's test data, articles cut into paragraph-sized chunks;
* ``code``: top-level functions and classes of the Python standard library (docstrings removed);
* ``docs``: standard-library docstrings;
* ``pkgdocs``: long descriptions of the installed packages (``importlib.metadata``), cut into paragraphs;
* generated junk that dominates by count, as on the web: ``boilerplate`` (cookie banners, menus, footers from
  a handful of templates, so mostly exact repeats), ``spam`` (templated keyword-stuffed ads), ``seo``
  (machine-spun articles of a content farm: varied wording, so near-duplicate removal keeps them, on one money
  topic) and ``duplicate`` (exact and near copies of a few popular pool documents).

The pieces live beside this module: :mod:`.corpus` (``TextCorpus``, ``PoolSplit``), :mod:`.sources` (the real
text above), :mod:`.junk` (the generated junk) and :mod:`.shards` (users' shards, :func:`load_shards`); their
names are importable from here too.
"""

from __future__ import annotations

import logging

import numpy as np

from sslcurate import CurationInputError

from .corpus import CONTENT_DOMAINS, JUNK_DOMAINS, PoolSplit, TextCorpus, group_fraction
from .junk import SEO_TOPICS, generate_boilerplate, generate_duplicates, generate_seo, generate_spam, near_duplicate
from .shards import (GROUP_FIELDS, SHARD_SUFFIXES, iter_jsonl, iter_parquet, iter_shards, list_shards, load_shards,
                     read_corpus)
from .sources import (NEWS_FILES, WIKI_FILE, chunk_paragraphs, gensim_test_data, news_paragraphs,
                      package_descriptions, stdlib_code_and_docs, stdlib_files, wikipedia_paragraphs)

__all__ = ["CONTENT_DOMAINS", "GROUP_FIELDS", "JUNK_DOMAINS", "NEWS_FILES", "SEO_TOPICS", "SHARD_SUFFIXES",
           "WIKI_FILE", "PoolSplit", "TextCorpus", "build_builtin", "chunk_paragraphs", "generate_boilerplate",
           "generate_duplicates", "generate_seo", "generate_spam", "gensim_test_data", "iter_jsonl", "iter_parquet",
           "iter_shards", "list_shards", "load_shards", "near_duplicate", "news_paragraphs", "package_descriptions",
           "read_corpus", "stdlib_code_and_docs", "stdlib_files", "wikipedia_paragraphs"]

log = logging.getLogger(__name__)


def _cap(corpus: TextCorpus, n: int | None, rng: np.random.Generator) -> TextCorpus:
    if n is None or len(corpus) <= n:
        return corpus
    return corpus.subset(np.sort(rng.choice(len(corpus), size=n, replace=False)))


def build_builtin(cfg, seed: int = 0) -> PoolSplit:
    """Build the offline pool from ``cfg`` (``configs/data/text_builtin.yaml``); deterministic in ``seed``.

    Splits are by group: ``cfg.reference_fraction`` of the Wikipedia articles train the CCNet n-gram model only,
    ``cfg.eval_fraction`` of the groups of every content domain are held out for evaluation, the rest (capped at
    ``cfg.max_docs[domain]``) enter the pool, and the generated junk is added to the pool alone.
    """
    rng = np.random.default_rng([seed, 7])
    lo, hi = cfg.min_chars, cfg.max_chars
    code, docs = stdlib_code_and_docs(lo, hi, cfg.min_doc_chars, cfg.get("stdlib_max_files"))
    sources = {"wiki": wikipedia_paragraphs(lo, hi), "news": news_paragraphs(lo, hi), "code": code,
               "docs": docs, "pkgdocs": package_descriptions(lo, hi)}
    pool, evals, reference = TextCorpus(), TextCorpus(), TextCorpus()
    for domain in CONTENT_DOMAINS:
        corpus = sources[domain]
        if len(corpus) == 0:
            raise CurationInputError(f"built-in pool: no '{domain}' documents found on this machine")
        in_pool, in_eval = [], []
        for i, g in enumerate(corpus.groups):
            u = group_fraction(g, seed)
            if domain == "wiki" and u < cfg.reference_fraction:
                reference.add(corpus.texts[i], domain, g)
            elif u > 1 - cfg.eval_fraction:
                in_eval.append(i)
            else:
                in_pool.append(i)
        evals.extend(_cap(corpus.subset(in_eval), cfg.max_eval_docs, rng))
        pool.extend(_cap(corpus.subset(in_pool), cfg.max_docs.get(domain), rng))
    content = list(pool.texts)
    junk = cfg.junk
    for i, t in enumerate(generate_boilerplate(junk.boilerplate, rng)):
        pool.add(t, "boilerplate", f"boilerplate:{i}")
    for i, t in enumerate(generate_spam(junk.spam, rng, junk.get("spam_campaigns"))):
        pool.add(t, "spam", f"spam:{i}")
    for i, t in enumerate(generate_seo(junk.get("seo", 0), rng, junk.get("seo_topics"))):
        pool.add(t, "seo", f"seo:{i}")
    popular = [content[i] for i in rng.choice(len(content), size=min(junk.duplicate_sources, len(content)),
                                               replace=False)]
    for i, t in enumerate(generate_duplicates(popular, junk.duplicates, junk.exact_fraction, rng)):
        pool.add(t, "duplicate", f"duplicate:{i}")
    order = rng.permutation(len(pool))  # a crawl has no order
    pool = pool.subset(order)
    log.info("built-in text pool: %d documents %s; eval %d %s; CCNet reference %d Wikipedia paragraphs",
             len(pool), pool.domain_counts(), len(evals), evals.domain_counts(), len(reference))
    return PoolSplit(pool=pool, eval=evals, reference=reference)
