"""Text study: shard loaders on files written here, pool pieces, the CCNet filter, LM data and evaluation helpers,
the quick end-to-end run and the paper-scale config's dry run."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from experiments.text import ccnet, select, shares
from experiments.text.lm import (EvalDataset, WindowDataset, build_mc_items, take_budget, token_stream,
                                 train_tokenizer)
from experiments.text.pool import (TextCorpus, chunk_paragraphs, generate_duplicates, generate_spam, iter_shards,
                                   list_shards, load_shards, near_duplicate)
from sslcurate import CurationInputError

from conftest import ROOT, run_cli


# ---------------------------------------------------------------------------------------------- shard loaders

def _write_jsonl(path: Path, records, compress=False):
    data = "\n".join(json.dumps(r) for r in records) + "\n"
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(data)
    else:
        path.write_text(data)


def _write_parquet(path: Path, records):
    import pyarrow as pa
    import pyarrow.parquet as pq
    cols = {k: [r.get(k) for r in records] for k in records[0]}
    pq.write_table(pa.table(cols), path, row_group_size=3)


def test_jsonl_and_parquet_shards_stream_all_records_in_order(tmp_path):
    """Every record of every shard (plain, gzipped JSONL, Parquet with several row groups) comes out once, shards
    in sorted order; empty and too-short texts are skipped; max_docs stops the stream."""
    recs = [{"text": f"document number {i} " * 5, "url": f"u{i}", "lang": "en"} for i in range(10)]
    _write_jsonl(tmp_path / "a.jsonl", recs[:4])
    _write_jsonl(tmp_path / "b.jsonl.gz", recs[4:6] + [{"text": ""}, {"text": None}], compress=True)
    _write_parquet(tmp_path / "c.parquet", recs[6:])
    got = list(iter_shards(tmp_path, "text", ("url",), min_chars=5))
    assert [g["text"] for g in got] == [r["text"] for r in recs]
    assert [g["url"] for g in got] == [r["url"] for r in recs]
    assert len(list(iter_shards(tmp_path, max_docs=7))) == 7
    assert [p.name for p in list_shards(str(tmp_path / "*.jsonl*"))] == ["a.jsonl", "b.jsonl.gz"]


def test_shard_errors_name_the_problem(tmp_path):
    """A missing path, a folder without shards, a bad JSON line and a missing text field are clear errors."""
    with pytest.raises(CurationInputError, match="does not exist"):
        list(iter_shards(tmp_path / "nope"))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(CurationInputError, match="no .* files"):
        list(iter_shards(tmp_path))
    (tmp_path / "bad.jsonl").write_text('{"text": "ok ok ok"}\n{not json\n')
    with pytest.raises(CurationInputError, match=r"bad.jsonl:2"):
        list(iter_shards(tmp_path / "bad.jsonl"))
    _write_jsonl(tmp_path / "other.jsonl", [{"content": "x" * 50}])
    with pytest.raises(CurationInputError, match="no 'text' field"):
        list(iter_shards(tmp_path / "other.jsonl"))
    _write_parquet(tmp_path / "p.parquet", [{"content": "x" * 50}])
    with pytest.raises(CurationInputError, match="no 'text' column"):
        list(iter_shards(tmp_path / "p.parquet"))


def test_load_shards_splits_pool_and_eval_by_text_hash(tmp_path):
    """Users' shards become a pool and a held-out set that never share a document; domains come from a field."""
    recs = [{"text": f"unique text {i} about topic {i % 3} " * 10, "src": f"s{i % 3}"} for i in range(200)]
    _write_jsonl(tmp_path / "a.jsonl", recs)
    cfg = OmegaConf.create({"path": str(tmp_path), "text_field": "text", "domain_field": "src", "max_docs": None,
                            "min_chars": 10, "max_chars": 4000, "eval_fraction": 0.2,
                            "reference": str(tmp_path / "a.jsonl"), "seed": 0})
    split = load_shards(cfg)
    assert len(split.pool) + len(split.eval) == 200
    assert not set(split.pool.texts) & set(split.eval.texts)
    assert 10 < len(split.eval) < 70
    assert set(split.pool.domains) == {"s0", "s1", "s2"}
    assert len(split.reference) == 200


# ---------------------------------------------------------------------------------------------- pool pieces

def test_chunk_paragraphs_respects_bounds():
    """Short paragraphs merge up to min_chars; nothing exceeds max_chars; no text is lost between chunks."""
    paras = ["short one.", "another short one."] + ["A sentence of some length. " * 30] + ["tail."]
    chunks = chunk_paragraphs(paras, 40, 200)
    assert all(len(c) <= 200 for c in chunks)
    assert all(len(c) >= 40 for c in chunks)
    assert chunks[0].startswith("short one.\nanother short one.")


def test_duplicates_follow_zipf_popularity_and_near_copies_are_close():
    rng = np.random.default_rng(0)
    sources = [f"source document number {i} with several words in it" for i in range(20)]
    dups = generate_duplicates(sources, 2000, 0.5, rng)
    exact = [d for d in dups if d in sources]
    assert 800 < len(exact) < 1200
    counts = np.array([sum(d == s for d in exact) for s in sources])
    assert counts[0] > counts[-1] * 5  # the head is far more popular than the tail
    near = near_duplicate(sources[0] * 3, np.random.default_rng(1))
    assert len(set(near.split()) & set(sources[0].split())) >= 8


def test_spam_campaigns_repeat_one_template_product_and_phone():
    """Campaign spam: every page of a campaign shares template, product and phone (only city and numbers vary), so
    a few campaigns give a few distinct page skeletons; campaign sizes are skewed; without campaigns every page
    is a fresh combination. A bad campaign count is a clear error."""
    import re
    rng = np.random.default_rng(0)
    pages = generate_spam(600, rng, campaigns=12)
    phones = [re.search(r"\+1-\d+-\d+-\d+", p) for p in pages]
    keyed = [m.group(0) for m in phones if m]
    # templates with a phone number: one phone per campaign, so at most 12 distinct
    assert 0 < len(set(keyed)) <= 12
    cities = "|".join(["New York", "London", "Sydney", "Toronto", "Berlin", "Mumbai", "Dubai", "Paris", "Singapore",
                       "Lagos"])
    skeletons = [re.sub(r"\d+", "#", re.sub(cities, "CITY", p)) for p in pages]  # what a campaign fixes
    counts = np.unique(skeletons, return_counts=True)[1]
    assert len(counts) <= 12
    assert counts.max() > 3 * np.median(counts)  # Zipf-like: the largest campaign dominates
    free = generate_spam(600, np.random.default_rng(0))
    assert len({re.sub(r"\d+", "#", p) for p in free}) > 200
    with pytest.raises(CurationInputError, match="campaigns"):
        generate_spam(5, rng, campaigns=0)


def test_seo_articles_are_spun_per_page_on_the_chosen_topics():
    """Content-farm articles: every slot and {a|b} alternative is resolved, pages are distinct in wording (the
    reason near-duplicate removal keeps them), they speak only of the chosen topics' keywords, the same generator
    state gives the same pages, and an unknown topic is a clear error."""
    from experiments.text.pool import SEO_TOPICS, generate_seo
    pages = generate_seo(400, np.random.default_rng(0), ["casino"])
    assert not any("{" in p or "}" in p or "|" in p for p in pages)
    assert len(set(pages)) == 400
    assert len({p.split("\n", 1)[0] for p in pages}) > 200  # titles vary too: not one skeleton with slots
    other = [k for t, kws in SEO_TOPICS.items() if t != "casino" for k in kws]
    assert not any(k in p.lower() for p in pages for k in other)
    assert all(any(k in p.lower() for k in SEO_TOPICS["casino"]) for p in pages)
    assert 300 < np.mean([len(p) for p in pages]) < 1500
    assert generate_seo(5, np.random.default_rng(3)) == generate_seo(5, np.random.default_rng(3))
    with pytest.raises(CurationInputError, match="SEO topics"):
        generate_seo(3, np.random.default_rng(0), ["gardening"])


def test_pool_rows_drop_near_duplicates_and_are_cached(tmp_path):
    """The deduplicated pool keeps one row of each near-duplicate group, is read back from the cache, and is the
    whole pool when dedup is off."""
    from experiments.text import pool_rows
    rng = np.random.default_rng(0)
    base = rng.standard_normal((50, 16)).astype(np.float32)
    emb = np.concatenate([base, base[:10] + 1e-4 * rng.standard_normal((10, 16)).astype(np.float32)])
    kept = pool_rows(emb, 0.99, None, "k", tmp_path)
    assert kept.tolist() == list(range(50))
    assert len(list((tmp_path / "text_dedup").glob("*.npy"))) == 1
    assert np.array_equal(pool_rows(emb, 0.99, None, "k", tmp_path), kept)
    assert pool_rows(emb, None, None, "k", tmp_path).tolist() == list(range(60))


def _compose_text(*overrides: str):
    from hydra import compose, initialize_config_dir

    from experiments.kit.config import register_schemas
    register_schemas()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="config", overrides=["experiment=text", "logger=none", *overrides])


def test_dedup_threshold_comes_from_the_embedder_unless_the_curation_sets_it():
    """The text study deduplicates by default at the embedder's threshold; curation.dedup.threshold overrides it;
    embedder.dedup_threshold=null turns removal off; configs of older runs keep their pool_dedup section."""
    from experiments.text import run_dedup_setting
    cfg = _compose_text()
    assert run_dedup_setting(cfg) == (cfg.embedder.dedup_threshold, None, "embedder.dedup_threshold")
    assert cfg.embedder.dedup_threshold is not None
    assert run_dedup_setting(_compose_text("curation.dedup.threshold=0.97", "curation.dedup.n_clusters=8")) == \
        (0.97, 8, "curation.dedup.threshold")
    assert run_dedup_setting(_compose_text("embedder.dedup_threshold=null"))[0] is None
    old = OmegaConf.create({"pool_dedup": {"threshold": 0.95, "n_clusters": None}})
    assert run_dedup_setting(old)[:2] == (0.95, None)


def test_levels_are_sized_from_the_pool_unless_given():
    """Levels given on the command line are used when they fit, and a one-line error names levels that fit when
    they do not; curation.auto_levels=true (or levels from a config file) sizes them from the pool."""
    from experiments.kit.config import curation_config
    from experiments.kit.levels import study_levels
    cfg = _compose_text("curation.levels=[{n_clusters:40,resampling_steps:2,sample_size:5}]")
    ccfg = curation_config(cfg.curation)
    sizing = {"points_per_cluster": 74, "shrink": 5}
    levels, sized = study_levels(ccfg, 22_000, sizing, given=False)
    assert sized and [lv.n_clusters for lv in levels] == [297, 59]
    levels, sized = study_levels(ccfg, 1000, sizing, given=True)
    assert not sized and [lv.n_clusters for lv in levels] == [40]
    with pytest.raises(CurationInputError, match=r"do not fit the pool of 30: .*k=40.*curation.auto_levels=true.*k = "):
        study_levels(ccfg, 30, sizing, given=True)
    ccfg.auto_levels = True
    assert study_levels(ccfg, 1000, sizing, given=True)[1]


def _write_groups(path: Path, n_groups: int, pieces: int, domains=("blog", "forum"), field="group", start=0):
    recs = [{"text": f"piece {j} of document {g}: " + f"words about subject {g} " * 12,
             field: f"doc{g}", "domain": domains[g % len(domains)]}
            for g in range(start, start + n_groups) for j in range(pieces)]
    _write_jsonl(path, recs)
    return recs


def _shard_cfg(path, **kw):
    base = {"path": str(path), "eval_path": None, "text_field": "text", "domain_field": "domain", "group_by": "auto",
            "max_docs": None, "min_chars": 10, "max_chars": 4000, "eval_fraction": 0.2, "reference": str(path),
            "seed": 0}
    return OmegaConf.create({**base, **kw})


def test_hold_out_keeps_every_source_document_on_one_side(tmp_path):
    """Pieces of one source document (data.group_by: a `group` or `source` field, or a named one) are all in the
    pool or all held out; null splits record by record; a named field a record lacks is a clear error."""
    _write_groups(tmp_path / "g.jsonl", 60, 5)
    split = load_shards(_shard_cfg(tmp_path / "g.jsonl"))
    assert not set(split.pool.groups) & set(split.eval.groups)
    assert 3 <= len(set(split.eval.groups)) <= 25 and len(split.eval) == 5 * len(set(split.eval.groups))
    _write_groups(tmp_path / "s.jsonl", 60, 5, field="source")
    split = load_shards(_shard_cfg(tmp_path / "s.jsonl"))
    assert not set(split.pool.groups) & set(split.eval.groups) and len(split.eval) % 5 == 0
    _write_groups(tmp_path / "u.jsonl", 60, 5, field="url")
    split = load_shards(_shard_cfg(tmp_path / "u.jsonl", group_by="url"))
    assert not set(split.pool.groups) & set(split.eval.groups)
    by_record = load_shards(_shard_cfg(tmp_path / "g.jsonl", group_by=None))
    def docs(corpus):
        return {t.split(": ")[0].split(" of ")[1] for t in corpus.texts}
    assert docs(by_record.pool) & docs(by_record.eval)  # record by record, documents straddle the split
    with pytest.raises(CurationInputError, match="no 'url' field"):
        load_shards(_shard_cfg(tmp_path / "g.jsonl", group_by="url"))


def test_hold_out_takes_about_the_fraction_of_every_domain():
    """Whole groups are held out per domain, about eval_fraction of each domain's documents (never more than
    1.5 x), whatever the order of the records: a small domain of one large and many small documents (the real
    pool's changelogs) is not left with a handful of held-out pieces; a domain of one document stays in the pool."""
    import random

    from experiments.text.corpus import TextCorpus, held_out_groups
    rng = random.Random(0)
    recs = [("log", "log:big", i) for i in range(500)]  # one large changelog, then 29 small ones
    recs += [("log", f"log:{g}", i) for g in range(29) for i in range(rng.randint(5, 60))]
    recs += [("docs", f"docs:{g}", i) for g in range(400) for i in range(rng.randint(1, 80))]
    recs += [("solo", "solo:0", i) for i in range(50)]
    for order in range(3):
        rng.shuffle(recs)
        corpus = TextCorpus()
        for domain, group, i in recs:
            corpus.add(f"{group} piece {i}", domain, group)
        held = held_out_groups(corpus, 0.1, salt=0)
        if order == 0:
            first = held
        assert held == first
        for domain in ("log", "docs"):
            n = sum(d == domain for d in corpus.domains)
            n_held = sum(d == domain and g in held for g, d in zip(corpus.groups, corpus.domains))
            assert 0.1 * n <= n_held <= 0.15 * n, (domain, n_held, n)
        assert "solo:0" not in held and "log:big" not in held
    assert held_out_groups(corpus, 0.1, salt=1) != first  # the seed draws other documents


def test_separate_evaluation_file_and_macro_domains_from_the_data(tmp_path):
    """data.eval_path: the evaluation documents come from that file and the whole of data.path is the pool; the
    macro domains default to the evaluation domains; naming one it lacks is an error naming those it has; a
    user's evaluation set gets no generated junk."""
    from experiments.text import balanced_eval, macro_domains
    _write_groups(tmp_path / "pool.jsonl", 30, 3, domains=("python_docs", "changelog"))
    _write_groups(tmp_path / "eval.jsonl", 12, 2, domains=("python_docs", "changelog", "news"), start=100)
    split = load_shards(_shard_cfg(tmp_path / "pool.jsonl", eval_path=str(tmp_path / "eval.jsonl")))
    assert len(split.pool) == 90 and len(split.eval) == 24
    assert set(split.eval.domains) == {"python_docs", "changelog", "news"}
    cfg = OmegaConf.create({"evaluation": {"macro_domains": "auto", "docs_per_domain": 4, "junk_docs": 6}})
    assert macro_domains(cfg, set(split.eval.domains)) == ["news", "changelog", "python_docs"]  # built-in names first
    cfg.evaluation.macro_domains = ["wiki", "news", "code"]
    with pytest.raises(CurationInputError, match=r"\['wiki', 'code'\] not in the evaluation set, whose domains "
                                                 r"are \['news', 'changelog', 'python_docs'\]"):
        macro_domains(cfg, set(split.eval.domains))
    ev = balanced_eval(split, cfg.evaluation, 0, junk=False)
    assert "junk" not in ev.domains and len(ev) == 12
    assert balanced_eval(split, cfg.evaluation, 0, junk=True).domains.count("junk") == 6


def test_bad_macro_domains_and_levels_stop_the_run_before_any_work(tmp_path):
    """On a user's shards, macro domains the evaluation set lacks and curation levels that do not fit the pool
    exit with code 2 and one line naming the fix, before anything is embedded or trained."""
    _write_groups(tmp_path / "pool.jsonl", 20, 3, domains=("python_docs", "changelog"))
    common = ["experiment=text", "data=text_shards", f"data.path={tmp_path / 'pool.jsonl'}",
              f"data.reference={tmp_path / 'pool.jsonl'}", "data.min_chars=10", "data.eval_fraction=0.3",
              "data.domain_field=domain", "logger=none", "progress=false", f"paths.cache_dir={tmp_path / 'cache'}"]
    res = run_cli(*common, f"hydra.run.dir={tmp_path / 'a'}", "evaluation.macro_domains=[wiki,news]", timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "whose domains are ['changelog', 'python_docs']" in res.stderr + res.stdout
    res = run_cli(*common, f"hydra.run.dir={tmp_path / 'b'}",
                  "curation.levels=[{n_clusters:500,resampling_steps:1,sample_size:1}]", timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "do not fit the pool" in res.stderr + res.stdout and "curation.auto_levels=true" in res.stderr + res.stdout
    assert not list((tmp_path / "cache").rglob("*.*"))  # no tokenizer, embeddings or scores were written


def test_corpus_fingerprint_and_parquet_roundtrip(tmp_path):
    c = TextCorpus(["a b", "c d"], ["wiki", "code"], ["g1", "g2"])
    c.save(tmp_path / "c.parquet")
    back = TextCorpus.load(tmp_path / "c.parquet")
    assert back.texts == c.texts and back.domains == c.domains and back.fingerprint() == c.fingerprint()
    assert TextCorpus(["a b", "c e"], ["wiki", "code"], ["g1", "g2"]).fingerprint() != c.fingerprint()


# ---------------------------------------------------------------------------------------------- CCNet filter

def test_kneser_ney_is_normalised_and_prefers_in_domain_text():
    """Probabilities over the vocabulary sum to one for a seen context; reference-like text has lower
    perplexity than off-domain text."""
    ref = ["the cat sat on the mat .", "the dog sat on the log .", "a cat and a dog sat together ."] * 5
    lm = ccnet.KneserNeyLM(order=3, min_count=1).fit(ref)
    total = sum(lm._prob(("the", "cat", w)) for w in lm.vocab)
    assert math.isclose(total, 1.0, rel_tol=1e-6)
    assert lm.perplexity("the cat sat on the log .") < lm.perplexity("def f(x): return x ** 2")


def test_ccnet_ranking_drops_exact_duplicates_and_sorts_by_perplexity():
    texts = ["Hello, World!", "hello world", "b", "c", "Hello world 1", "hello world 2"]
    scores = np.array([5.0, 1.0, 3.0, 2.0, 4.0, 0.5])
    order = ccnet.ccnet_ranking(texts, scores)
    # rows 1 (normalised duplicate of 0) and 5 (digits folded: duplicate of 4) are dropped
    assert order.tolist() == [3, 2, 4, 0]


# ---------------------------------------------------------------------------------------------- selections

def test_every_variant_gets_the_same_token_budget_and_raw_is_seeded():
    rng = np.random.default_rng(0)
    n_tok = rng.integers(10, 200, size=500)
    texts = ["doc " + "".join(chr(97 + int(c)) for c in str(i)) for i in range(500)]  # distinct after CCNet's digit folding
    scores = rng.random(500)
    curated = rng.choice(500, 150, replace=False)
    sels = {v: select(v, n_tok, 3000, 0, scores=scores, texts=texts, curated=curated)
            for v in ("raw", "ccnet", "curated")}
    for v, rows in sels.items():
        assert 3000 <= n_tok[rows].sum() < 3000 + 200, v
        assert n_tok[rows[:-1]].sum() < 3000  # the shortest prefix
    assert set(sels["curated"]) <= set(curated)
    assert np.array_equal(sels["raw"], select("raw", n_tok, 3000, 0))
    assert not np.array_equal(sels["raw"], select("raw", n_tok, 3000, 1))
    with pytest.raises(CurationInputError, match="raise curation.target_size"):
        select("curated", n_tok, 10**6, 0, curated=curated)
    # a deduplicated pool: raw and ccnet choose only among its rows
    rows = np.arange(0, 500, 2)
    for v in ("raw", "ccnet"):
        got = select(v, n_tok, 3000, 0, scores=scores, texts=texts, rows=rows)
        assert set(got) <= set(rows) and n_tok[got].sum() >= 3000, v


def test_shares_sum_to_one():
    doms = np.array(["a", "b", "a", "c"], dtype=object)
    s = shares(doms, np.array([1, 2, 3, 4]), np.array([0, 1, 2]), ["a", "b", "c"])
    assert math.isclose(sum(s["docs"].values()), 1) and math.isclose(sum(s["tokens"].values()), 1)
    assert s["tokens"]["a"] == pytest.approx(4 / 6)


# ---------------------------------------------------------------------------------------------- LM data / eval

def test_tokenizer_stream_and_windows():
    texts = ["hello world, this is a test of the tokenizer"] * 20 + ["def f(x):\n    return x"] * 20
    tok = train_tokenizer(texts, vocab_size=300, min_frequency=1)
    eot = tok.token_to_id("<|endoftext|>")
    assert eot == 0
    docs = [np.asarray(e.ids, dtype=np.int32) for e in tok.encode_batch(texts[:3])]
    assert tok.decode(docs[0].tolist()) == texts[0]
    stream = token_stream(docs, eot)
    assert len(stream) == sum(len(d) + 1 for d in docs) and stream[0] == eot
    assert len(token_stream(docs, eot, budget=5)) == 5
    ds = WindowDataset(np.arange(100, dtype=np.int32), context=8, n=16, seed=0)
    w = ds[3]
    assert w.shape == (9,) and np.all(np.diff(w.numpy()) == 1)
    assert np.array_equal(ds.starts, WindowDataset(np.arange(100, dtype=np.int32), 8, 16, 0).starts)


def test_take_budget_errors_when_short():
    with pytest.raises(ValueError, match="fewer than the budget"):
        take_budget(np.arange(3), np.array([1, 1, 1]), 10)


def test_eval_dataset_masks_padding_and_the_first_token():
    ds = EvalDataset([np.array([5, 6, 7]), np.arange(1, 20)], np.array([0, 1]), eot=0, context=8)
    x, mask, dom = ds[0]
    assert x.tolist()[:4] == [0, 5, 6, 7] and mask.tolist() == [False, True, True, True] + [False] * 5
    x, mask, dom = ds[1]
    assert dom == 1 and mask.sum() == 8


def test_mc_items_are_balanced_with_same_domain_distractors():
    rng = np.random.default_rng(0)
    docs = [np.arange(i * 100, i * 100 + 40) for i in range(30)]
    doms = np.array([i % 3 for i in range(30)])
    items = build_mc_items(docs, doms, prefix=10, cont=5, n_choices=4, per_domain=6, rng=rng)
    assert len(items) == 18
    for it in items:
        assert len(it["options"]) == 4 and all(len(o) == 5 for o in it["options"])
        true = it["options"][it["answer"]]
        assert true[0] == it["prefix"][-1] + 1  # the true continuation follows the prefix
        src = {int(o[0]) // 100 for o in it["options"]}
        assert len(src) == 4 and {s % 3 for s in src} == {it["domain"]}
    answers = np.bincount([it["answer"] for it in items], minlength=4)
    assert answers.max() < 18  # answer positions are shuffled


def test_mc_accuracy_of_an_oracle_model_is_one():
    """A model that always predicts token t+1 after t picks every true continuation."""
    import torch

    from experiments.text.lm import mc_accuracy

    class Oracle(torch.nn.Module):
        def forward(self, input_ids):
            logits = torch.full((*input_ids.shape, 600), -20.0)
            logits.scatter_(2, (input_ids + 1).clamp(max=599).unsqueeze(-1), 0.0)
            return type("Out", (), {"logits": logits})()

    docs = [np.arange(i * 20, i * 20 + 15) for i in range(12)]
    items = build_mc_items(docs, np.zeros(12, dtype=int), 8, 4, 4, 10, np.random.default_rng(0))
    acc, per = mc_accuracy(Oracle(), items, eot=599)
    assert acc == 1.0 and per == {0: 1.0}


def test_text_embeddings_are_cached_with_their_cost_and_a_damaged_entry_is_computed_again(tmp_path):
    """The stage cache of the text study's SBERT embeddings: a second call reads the entry back (same rows), the
    record beside it keeps what computing it cost, and an entry with the wrong row count is recomputed."""
    from experiments.text.embed import cached_embeddings

    cfg = OmegaConf.load(ROOT / "configs" / "embedder" / "text_minilm.yaml")
    texts = ["the cat sat on the mat", "stock markets fell sharply today", "the cat sat on the mat",
             "def f(x): return x + 1"]
    emb, path, hit = cached_embeddings(texts, "k", cfg, tmp_path, progress=False)
    assert not hit and emb.shape == (4, 384) and np.array_equal(emb[0], emb[2])
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["shape"] == [4, 384] and record["distinct_texts"] == 3 and record["seconds"] >= 0
    again, path2, hit = cached_embeddings(texts, "k", cfg, tmp_path, progress=False)
    assert hit and path2 == path and np.array_equal(again, emb)
    np.save(path, emb[:2])  # damaged: rows missing
    fixed, _, hit = cached_embeddings(texts, "k", cfg, tmp_path, progress=False)
    assert not hit and np.array_equal(fixed, emb)


def test_recorded_commands_are_shown_with_the_current_setting_names():
    from experiments.text.readme import renamed_settings

    recorded = "python run.py experiment=text seeds=[0] trainer.threads=2 trainer.steps=10\npython -m merge a b"
    assert renamed_settings(recorded) == ("python run.py experiment=text seeds=[0] torch_threads=2 "
                                          "trainer.max_steps=10\npython -m merge a b")
    current = "python run.py experiment=text_real  trainer.max_steps=3 publish=true"
    assert renamed_settings(current) == current
