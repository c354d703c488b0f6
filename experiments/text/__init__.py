"""``experiment=text``: the paper's text study at CPU scale.

pool (built in, or a user's shards with an optional evaluation file) -> embed (SBERT, cached) -> near-duplicate
removal (``sslcurate.deduplicate`` at ``curation.dedup.threshold``, default the embedder's ``dedup_threshold``;
cached) -> three selections from the deduplicated pool with the same token budget (the curation hierarchy sized
from the deduplicated pool unless ``curation.levels`` is given on the command line) -> a small GPT trained from
scratch on each, same steps and tokens -> held-out perplexity per domain (+ macro over the evaluation domains) and
4-way continuation accuracy -> metrics.json over seeds, figures, learning curves.

Variants: ``raw`` (random pool documents), ``ccnet`` (exact dedup + lowest Wikipedia n-gram perplexity first),
``curated`` (hierarchical k-means with resampling + balanced hierarchical sampling on the SBERT embeddings).
Domain labels are read only by the evaluation and the reports.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from experiments.kit.cache import cache_path, cached
from experiments.kit.config import curation_config
from experiments.kit.levels import dedup_setting, kept_rows, level_sizing, levels_given, levels_record, study_levels
from experiments.kit.loop import Study, load_average, run_study, stage
from experiments.kit.metrics import metrics_doc
from sslcurate import CurationInputError, curate
from sslcurate.io import atomic_save_json, atomic_save_npy, config_hash
from sslcurate.metrics import normalized_entropy

from . import ccnet as ccnet_mod
from .pool import CONTENT_DOMAINS, JUNK_DOMAINS, PoolSplit, TextCorpus, build_builtin, generate_boilerplate, \
    generate_seo, generate_spam, load_shards

log = logging.getLogger(__name__)
VARIANTS = ("raw", "ccnet", "curated")


# ----------------------------------------------------------------------------------------------------------------
# stages that do not depend on the run seed (cached under paths.cache_dir)

def load_pool(cfg: DictConfig, cache_dir: Path) -> PoolSplit:
    data = cfg.data
    if data.source == "shards":
        return load_shards(data, seed=data.seed)
    if data.source != "builtin":
        raise CurationInputError(f"data.source must be 'builtin' or 'shards', got {data.source!r}")
    env = {"python": platform.python_version(), "dists": _installed_dists()}
    folder = cache_path(cache_dir, "text_pool", {"data": OmegaConf.to_container(data, resolve=True), "env": env,
                                                 "v": 1}, suffix="")
    files = [folder / f"{name}.parquet" for name in ("pool", "eval", "reference")]
    if all(f.exists() for f in files):
        log.info("text pool from cache: %s", folder)
        return PoolSplit(*(TextCorpus.load(f) for f in files))
    split = build_builtin(data, seed=data.seed)
    for corpus, f in zip((split.pool, split.eval, split.reference), files):
        corpus.save(f)
    return split


def _installed_dists() -> str:
    import importlib.metadata
    names = sorted(f"{d.metadata.get('Name')}=={d.version}" for d in importlib.metadata.distributions())
    return config_hash(names)


def ccnet_scores(split: PoolSplit, cfg: DictConfig, cache_dir: Path) -> np.ndarray:
    """(n,) Wikipedia n-gram perplexity of every pool document (cached)."""
    key = {"pool": split.pool.fingerprint(), "ref": split.reference.fingerprint(), "order": cfg.order,
           "min_count": cfg.min_count}

    def perplexities() -> np.ndarray:
        lm = ccnet_mod.KneserNeyLM(order=cfg.order, min_count=cfg.min_count).fit(split.reference.texts)
        return np.array([lm.perplexity(t) for t in split.pool.texts], dtype=np.float64)
    return cached("text_ccnet", key, perplexities, cache=cache_dir, prefix="ppl-").value


def pool_rows(emb: np.ndarray | None, threshold: float | None, n_clusters: int | None, emb_key: str,
              cache_dir: Path) -> np.ndarray | None:
    """(m,) sorted pool rows left after near-duplicate removal at cosine ``threshold`` on the SBERT embeddings
    (cached); every variant selects from these, as the paper's pools were deduplicated before curation (raw = a
    random subset of the deduplicated pool). threshold None: every row (None without embeddings)."""
    if threshold is None:
        return None if emb is None else np.arange(len(emb), dtype=np.int64)
    key = {"emb": emb_key, "n": len(emb), "threshold": float(threshold), "n_clusters": n_clusters}
    return kept_rows(emb, threshold, n_clusters, cache=cache_dir, kind="text_dedup", key=key, prefix="kept-")


def run_dedup_setting(cfg: DictConfig) -> tuple[float | None, int | None, str]:
    """The dedup setting of a run's config (:func:`experiments.kit.levels.dedup_setting`); configs written before
    ``curation.dedup`` decided it carry their own ``pool_dedup`` section."""
    if "pool_dedup" in cfg:
        return cfg.pool_dedup.threshold, cfg.pool_dedup.n_clusters, "pool_dedup.threshold"
    return dedup_setting(cfg)


def dedup_examples(emb: np.ndarray, kept: np.ndarray, texts: list[str], k: int = 6, chars: int = 160) -> list:
    """Up to ``k`` dropped documents (evenly spread over the dropped rows), each beside its most similar kept
    document and their cosine: what near-duplicate removal took out, for a person to check."""
    dropped = np.setdiff1d(np.arange(len(emb)), kept)
    if dropped.size == 0 or kept.size == 0:
        return []
    picks = dropped[np.linspace(0, dropped.size - 1, min(k, dropped.size)).round().astype(int)]
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    sims = unit[picks] @ unit[kept].T
    best = sims.argmax(1)
    return [{"dropped": texts[d][:chars], "kept": texts[kept[b]][:chars], "cosine": round(float(sims[i, b]), 4)}
            for i, (d, b) in enumerate(zip(picks, best))]


def macro_domains(cfg: DictConfig, eval_domains: set[str]) -> list[str]:
    """The domains ``val_ppl_macro`` averages: ``evaluation.macro_domains`` (``auto``: every evaluation domain but
    the generated junk, built-in content domains first). Checked before any work: a named domain the evaluation
    set does not have is a one-line error naming those it has."""
    have = sorted(eval_domains - {"junk"}, key=lambda d: (CONTENT_DOMAINS.index(d) if d in CONTENT_DOMAINS
                                                          else len(CONTENT_DOMAINS), d))
    want = cfg.evaluation.macro_domains
    if isinstance(want, str):
        if want != "auto":
            raise CurationInputError(f"evaluation.macro_domains must be 'auto' or a list of domains, not {want!r}")
        if not have:
            raise CurationInputError("the evaluation set has no documents outside the generated junk")
        return have
    missing = [d for d in want if d not in have]
    if missing:
        raise CurationInputError(
            f"evaluation.macro_domains {missing} not in the evaluation set, whose domains are {have}: set "
            f"evaluation.macro_domains=auto (all of them) or a subset, e.g. evaluation.macro_domains=[{have[0]}]")
    return list(want)


def balanced_eval(split: PoolSplit, cfg: DictConfig, seed: int, junk: bool = True) -> TextCorpus:
    """The same number of held-out documents from every domain, plus (``junk``: the built-in pool only, whose
    pool holds generated junk) fresh generated boilerplate, spam and SEO articles, reported apart as ``junk``,
    not in the macro average. A user's evaluation set is never mixed with generated text."""
    rng = np.random.default_rng([seed, 31])
    ev = split.eval
    doms = np.array(ev.domains, dtype=object)
    picked = []
    for d in sorted(set(ev.domains)):
        rows = np.flatnonzero(doms == d)
        if len(rows) < cfg.docs_per_domain:
            log.warning("eval domain %s has %d held-out documents (< %d)", d, len(rows), cfg.docs_per_domain)
        picked += sorted(rng.choice(rows, size=min(len(rows), cfg.docs_per_domain), replace=False).tolist())
    out = ev.subset(picked)
    if junk and cfg.junk_docs:
        third = cfg.junk_docs // 3
        fresh = generate_boilerplate(third, rng) + generate_spam(third, rng) + \
            generate_seo(cfg.junk_docs - 2 * third, rng)
        for i, t in enumerate(fresh):
            out.add(t, "junk", f"eval-junk:{i}")
    return out


# ----------------------------------------------------------------------------------------------------------------
# the three selections

def select(variant: str, n_tokens: np.ndarray, budget: int, seed: int, *, scores=None, texts=None,
           curated=None, dedup: bool = True, rows: np.ndarray | None = None) -> np.ndarray:
    """Pool rows of ``variant``'s training set, in training order, holding at least ``budget`` tokens.

    rows: the pool rows every variant chooses from (the near-duplicate-free pool; None: all rows). ``curated``
    holds pool rows already."""
    from .lm import take_budget
    rng = np.random.default_rng([seed, 101])
    rows = np.arange(len(n_tokens)) if rows is None else np.asarray(rows)
    if variant == "raw":
        order = rng.permutation(rows)
    elif variant == "ccnet":
        texts_in = [texts[i] for i in rows]
        local = ccnet_mod.ccnet_ranking(texts_in, scores[rows]) if dedup else np.argsort(scores[rows], kind="stable")
        order = rows[local]
    elif variant == "curated":
        order = rng.permutation(np.asarray(curated))
    else:
        raise CurationInputError(f"unknown variant {variant!r} (known: {VARIANTS})")
    try:
        return take_budget(order, n_tokens, budget)
    except ValueError as err:
        hint = " (raise curation.target_size)" if variant == "curated" else ""
        raise CurationInputError(f"variant {variant}: {err}{hint}") from None


def shares(domains: np.ndarray, n_tokens: np.ndarray, rows: np.ndarray, names: list[str]) -> dict:
    """Fraction of documents and of tokens per domain among ``rows``."""
    d = domains[rows]
    tok = n_tokens[rows].astype(float)
    return {"docs": {n: float(np.mean(d == n)) for n in names},
            "tokens": {n: float(tok[d == n].sum() / tok.sum()) for n in names}}


# ----------------------------------------------------------------------------------------------------------------
# training and evaluation of one variant

def train_and_evaluate(cfg: DictConfig, stream: np.ndarray, eval_ds, mc_items, domains: list[str], macro: list[str],
                       vocab: int, eot: int, seed: int, out: Path, tag: str) -> dict:
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from experiments.kit.trainer import build_trainer

    from .lm import CausalLM, WindowDataset, domain_perplexity, eval_loader, mc_accuracy

    tr = cfg.trainer
    pl.seed_everything(seed, workers=True, verbose=False)
    train_ds = WindowDataset(stream, cfg.model.context, tr.max_steps * tr.batch_size, seed)
    train_dl = DataLoader(train_ds, batch_size=tr.batch_size, shuffle=False, num_workers=0)
    val_dl = eval_loader(eval_ds, tr.eval_batch_size)
    module = CausalLM(cfg.model, tr.optim, vocab, domains, macro, tr.max_steps)
    trainer = build_trainer(tr, out, bool(cfg.progress), tag, gradient_clip_val=tr.gradient_clip,
                            val_check_interval=min(tr.eval_every, tr.max_steps), check_val_every_n_epoch=None,
                            deterministic="warn")
    start = time.perf_counter()
    trainer.fit(module, train_dl, val_dl)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    model = module.model.cpu()
    ppl = domain_perplexity(model, val_dl, domains)
    acc, acc_per = mc_accuracy(model, mc_items, eot, tr.eval_batch_size)
    eval_s = time.perf_counter() - start
    ppl_macro = float(np.mean([ppl[d] for d in macro]))
    res = {"val_ppl_macro": ppl_macro, "mc_accuracy": acc, "train_time_s": train_s, "eval_time_s": eval_s,
           "final_train_loss": module.history[-1]["train_loss"] if module.history else float("nan")}
    res.update({f"ppl_{d}": v for d, v in ppl.items()})
    res.update({f"mc_accuracy_{domains[d]}": v for d, v in acc_per.items()})
    log.info("%s: val_ppl_macro %.2f, mc_accuracy %.3f (train %.0f s)", tag, ppl_macro, acc, train_s)
    return {"metrics": res, "history": module.history}


# ----------------------------------------------------------------------------------------------------------------

def check_inputs(cfg: DictConfig, split: PoolSplit) -> dict:
    """What can be checked as soon as the documents are read, before any embedding or training: the macro
    domains exist in the evaluation set, given curation levels and the target fit the pool (they are checked
    again on the deduplicated pool). Returns the facts a plan records."""
    macro = macro_domains(cfg, set(split.eval.domains))
    unseen = sorted(set(split.pool.domains) - set(split.eval.domains) - set(JUNK_DOMAINS))
    if unseen:
        log.warning("pool domains %s have no held-out documents, so no perplexity: raise data.eval_fraction or give "
                    "data.eval_path", unseen)
    facts = {"pool_docs": len(split.pool), "eval_docs": len(split.eval), "eval_domains": split.eval.domain_counts(),
             "macro_domains": macro}
    if "curated" in cfg.variants:
        ccfg = curation_config(cfg.curation)
        levels, _ = study_levels(ccfg, len(split.pool), level_sizing(cfg))
        facts["curation_levels_before_dedup"] = [lv.n_clusters for lv in levels]
        s = ccfg.sampling
        if ccfg.target_size > len(split.pool) * s.multiplier and not s.clamp:
            raise CurationInputError(f"curation.target_size={ccfg.target_size} is larger than the pool "
                                     f"({len(split.pool)} documents): lower it (paper: 10-30% of the pool)")
    return facts


def dry_run(cfg: DictConfig, out: Path) -> dict:
    """Check the configuration end to end: curation settings, the model (built on the meta device), the token
    budget, the trainer; and the documents when they are there (the built-in pool, or shards that exist: read
    and checked as :func:`check_inputs` does, nothing embedded); write ``plan.json``."""
    import torch

    from .lm import build_model
    ccfg = curation_config(cfg.curation)
    with torch.device("meta"):
        model = build_model(cfg.model, cfg.model.vocab_size)
    n_params = sum(p.numel() for p in model.parameters())
    tr = cfg.trainer
    world = tr.devices * tr.num_nodes
    given = levels_given() and not ccfg.auto_levels
    plan = {"data": OmegaConf.to_container(cfg.data, resolve=True),
            "embedder": OmegaConf.to_container(cfg.embedder, resolve=True),
            "dedup": dict(zip(("threshold", "n_clusters", "from"), dedup_setting(cfg))),
            "curation_levels": ([lv.n_clusters for lv in ccfg.levels] if given else
                                "sized from the deduplicated pool"),
            "level_sizing": level_sizing(cfg), "curation_target": ccfg.target_size,
            "model_params": n_params, "tokens_per_step": tr.batch_size * world * cfg.model.context,
            "train_tokens": tr.max_steps * tr.batch_size * world * cfg.model.context,
            "budget_tokens": cfg.budget_tokens, "variants": list(cfg.variants), "seeds": list(cfg.seeds)}
    paths = [cfg.data.get("path"), cfg.data.get("eval_path")] if cfg.data.source == "shards" else []
    missing = [str(p) for p in paths if p and not _exists(p)]
    if missing:
        plan["inputs"] = f"not checked: {', '.join(missing)} not found"
    else:
        plan["inputs"] = check_inputs(cfg, load_pool(cfg, Path(cfg.paths.cache_dir)))
    atomic_save_json(out / "plan.json", plan)
    log.info("dry run: %s", plan)
    return {"experiment": cfg.experiment_name, "dry_run": True, "plan": plan, "seeds": list(cfg.seeds),
            "primary_metric": "val_ppl_macro", "higher_is_better": False, "results": {}}


def _exists(path) -> bool:
    from .pool import list_shards
    try:
        return bool(list_shards(path))
    except CurationInputError:
        return False


def run(cfg: DictConfig) -> dict:
    for v in cfg.variants:
        if v not in VARIANTS:
            raise CurationInputError(f"unknown variant {v!r} (known: {VARIANTS})")
    return run_study(cfg, TextStudy)


class TextStudy(Study):
    """The hooks of :func:`experiments.kit.loop.run_study` for this study. ``times`` keeps the study's own stage
    times (``timings_s`` of metrics.json: per stage, summed over seeds)."""

    def load(self) -> None:
        if self.cfg.dry_run:  # the dry run reads the documents itself, and only when they are there
            return
        from .lm import EvalDataset, build_mc_items, cached_tokenizer, encode, eot_id

        cfg, cache = self.cfg, self.cache
        self.times: dict[str, float] = {}
        with stage(self.times, "pool"):
            self.split = split = load_pool(cfg, cache)
        self.macro = check_inputs(cfg, split)["macro_domains"]
        pool = split.pool
        self.pool_fp = pool.fingerprint()
        self.domains_all = np.array(pool.domains, dtype=object)
        self.domain_names = [d for d in (*CONTENT_DOMAINS, *JUNK_DOMAINS) if d in set(pool.domains)] + \
            sorted(set(pool.domains) - set(CONTENT_DOMAINS) - set(JUNK_DOMAINS))
        log.info("pool: %d documents, %s", len(pool), pool.domain_counts())

        with stage(self.times, "tokenizer"):
            tok = cached_tokenizer(pool.texts, self.pool_fp, cfg.model.vocab_size, cache)
            self.pool_ids = encode(tok, pool.texts)
            self.n_tokens = np.array([len(x) + 1 for x in self.pool_ids], dtype=np.int64)  # + the separator
            self.eot = eot_id(tok)
            self.vocab = tok.get_vocab_size()

        self.evalset = evalset = balanced_eval(split, cfg.evaluation, cfg.data.seed, junk=cfg.data.source == "builtin")
        self.eval_domains = sorted(set(evalset.domains), key=lambda d: (d == "junk", d))
        dom_index = {d: i for i, d in enumerate(self.eval_domains)}
        eval_ids = encode(tok, evalset.texts)
        eval_dom = np.array([dom_index[d] for d in evalset.domains])
        self.eval_ds = EvalDataset(eval_ids, eval_dom, self.eot, cfg.model.context)
        e = cfg.evaluation
        mc_mask = eval_dom != dom_index.get("junk", -1)
        self.mc_items = build_mc_items([x for x, m in zip(eval_ids, mc_mask) if m], eval_dom[mc_mask], e.mc_prefix,
                                       e.mc_continuation, e.mc_choices, e.mc_per_domain,
                                       np.random.default_rng([cfg.data.seed, 41]))
        log.info("eval: %d documents %s; %d multiple-choice items; macro average over %s", len(evalset),
                 evalset.domain_counts(), len(self.mc_items), self.macro)

    def dry_run(self) -> dict:
        return dry_run(self.cfg, self.out)

    def prepare(self, timings: dict) -> None:
        cfg, cache, pool = self.cfg, self.cache, self.split.pool
        self.scores = None
        if "ccnet" in cfg.variants:
            with stage(self.times, "ccnet_scores"):
                self.scores = ccnet_scores(self.split, cfg.ccnet, cache)
        self.emb = None
        threshold, n_clusters, threshold_from = self.dedup_setting = dedup_setting(cfg)
        if "curated" in cfg.variants or threshold is not None:
            from .embed import cached_embeddings
            with stage(self.times, "embed"):
                self.emb, self.emb_path, self.emb_hit = cached_embeddings(pool.texts, self.pool_fp, cfg.embedder,
                                                                          cache, progress=cfg.progress)
        with stage(self.times, "dedup"):
            kept = pool_rows(self.emb, threshold, n_clusters, self.emb_path.stem if self.emb is not None else "",
                             cache)
        self.kept = np.arange(len(pool)) if kept is None else kept
        log.info("pool after dedup (%s): %d of %d documents", threshold_from, len(self.kept), len(pool))
        self.levels, self.sized, self.ccfg = None, False, None
        if "curated" in cfg.variants:
            self.ccfg = curation_config(cfg.curation)
            self.levels, self.sized = study_levels(self.ccfg, len(self.kept), level_sizing(cfg))
            log.info("curation levels (%s): %s", "sized from the deduplicated pool" if self.sized else "given",
                     [(lv.n_clusters, lv.resampling_steps, lv.sample_size) for lv in self.levels])
        self.histories: dict[str, list] = {v: [] for v in cfg.variants}
        self.share_rec: dict[str, list] = {v: [] for v in cfg.variants}
        self.curation_reports: dict = {}

    def select(self, seed: int) -> dict:
        """Every variant's rows in training order; curated from one curation of the deduplicated pool."""
        cfg, kept = self.cfg, self.kept
        curated = None
        if "curated" in cfg.variants:
            # the pool is deduplicated above, for every variant: the core gets the kept rows with dedup off
            core = dataclasses.replace(self.ccfg, seed=seed, levels=self.levels, auto_levels=False,
                                       dedup=dataclasses.replace(self.ccfg.dedup, threshold=None))
            with stage(self.times, "curation"):
                result = curate(self.emb[kept], core, out_dir=self.out / "curation" / f"seed{seed}",
                                progress=cfg.progress)
            curated = kept[result.indices]
            self.curation_reports[seed] = {k: _level_report(result.report, len(self.levels))["subset"][k]
                                           for k in ("normalized_entropy", "gini")}
        selection = {}
        for variant in cfg.variants:
            rows = select(variant, self.n_tokens, cfg.budget_tokens, seed, scores=self.scores,
                          texts=self.split.pool.texts, curated=curated, dedup=cfg.ccnet.dedup, rows=kept)
            atomic_save_npy(self.out / "selections" / f"{variant}_seed{seed}.npy", rows.astype(np.int64))
            selection[variant] = rows
        return selection

    def result(self, selection: dict, variant: str, seed: int) -> dict:
        from .lm import token_stream

        cfg, rows = self.cfg, selection[variant]
        self.share_rec[variant].append(shares(self.domains_all, self.n_tokens, rows, self.domain_names))
        stream = token_stream([self.pool_ids[i] for i in rows], self.eot, cfg.budget_tokens)
        with stage(self.times, f"train_{variant}"):
            res = train_and_evaluate(cfg, stream, self.eval_ds, self.mc_items, self.eval_domains, self.macro,
                                     self.vocab, self.eot, seed, self.out, f"{variant}_seed{seed}")
        metrics = {**res["metrics"], "distinct_docs": len(np.unique(rows)),
                   # label_entropy: normalised entropy of the domains over the training set's documents (every
                   # study's metrics.json has it under this name)
                   "label_entropy": normalized_entropy(np.array([np.sum(self.domains_all[rows] == d)
                                                                 for d in self.domain_names]))}
        self.histories[variant].append(res["history"])
        for h in res["history"]:
            self.tracker.log({f"{variant}/seed{seed}/{k}": v for k, v in h.items() if k != "step"})
        return metrics

    def document(self, results: dict, done: dict, timings: dict) -> dict:
        cfg, pool, kept, emb = self.cfg, self.split.pool, self.kept, self.emb
        variants, domains_all, names, n_tokens = list(cfg.variants), self.domains_all, self.domain_names, self.n_tokens
        threshold, n_clusters, threshold_from = self.dedup_setting
        dropped_dom = domains_all[np.setdiff1d(np.arange(len(pool)), kept)]
        times = {k: round(v, 1) for k, v in self.times.items()}
        times["total"] = round(sum(self.times.values()), 1)
        evalset = self.evalset
        embedding = None
        if emb is not None:
            from .embed import cache_record
            embedding = {"cache_hit": self.emb_hit, **cache_record(self.emb_path)}
        return metrics_doc(
            cfg.experiment_name, cfg.seeds, "val_ppl_macro", False, results, primary_variant="curated",
            variants=variants, macro_domains=self.macro, eval_domains=self.eval_domains,
            timing_note=cfg.get("timing_note"),
            pool={"size": len(pool), "domains": pool.domain_counts(),
                  "shares": shares(domains_all, n_tokens, np.arange(len(pool)), names),
                  "fingerprint": self.pool_fp, "tokens": int(n_tokens.sum())},
            pool_dedup={"threshold": threshold, "threshold_from": threshold_from, "n_clusters": n_clusters,
                        "size": int(len(kept)), "dropped": int(len(pool) - len(kept)),
                        "tokens": int(n_tokens[kept].sum()), "shares": shares(domains_all, n_tokens, kept, names),
                        "domains": {d: int(np.sum(domains_all[kept] == d)) for d in names},
                        "dropped_domains": {d: int(np.sum(dropped_dom == d)) for d in names},
                        "examples": dedup_examples(emb, kept, pool.texts) if emb is not None else []},
            curation_levels=levels_record(self.levels, self.sized, level_sizing(cfg)) if self.levels else None,
            eval={"size": len(evalset), "domains": evalset.domain_counts(), "mc_items": len(self.mc_items),
                  "source": str(cfg.data.get("eval_path") or "held out from the pool")},
            budget_tokens=int(cfg.budget_tokens),
            train_tokens=int(cfg.trainer.max_steps * cfg.trainer.batch_size * cfg.model.context),
            shares={v: _mean_shares(self.share_rec[v]) for v in variants},
            learning_curves={v: self.histories[v] for v in variants},
            curation_balance={str(k): v for k, v in self.curation_reports.items()},
            embedding=embedding, timings_s=times, command="python " + " ".join(sys.argv),
            machine={"python": platform.python_version(), "cpu_threads": torch_threads(),
                     "cpu_count": os.cpu_count(), "loadavg_start": timings["load_at_start"], "loadavg_end": load_average()})

    def figures(self, doc: dict) -> list[Path]:
        """The figures, and the run's README (the text study writes one into every run folder)."""
        from .readme import write_readme
        from .report import make_figures
        figures = make_figures(doc, self.out)
        write_readme(self.out, doc)
        log.info("text study done in %.0f s: %s", doc["timings_s"]["total"],
                 {v: round(doc["results"][v]["val_ppl_macro"]["mean"], 2) for v in doc["results"]})
        return figures

    def write_readme(self, folder: Path) -> Path:
        from .readme import write_readme
        return write_readme(folder, json.loads((folder / "metrics.json").read_text()))


def torch_threads() -> int:
    import torch
    return torch.get_num_threads()


def _mean_shares(recs: list[dict]) -> dict:
    return {kind: {d: float(np.mean([r[kind][d] for r in recs])) for d in recs[0][kind]}
            for kind in ("docs", "tokens")}


def _level_report(report: dict, level: int) -> dict:
    levels = report["levels"]
    return levels[level] if level in levels else levels[str(level)]
