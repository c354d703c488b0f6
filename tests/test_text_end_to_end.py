"""Text study end to end: the quick run, bad shard paths, the default and paper-scale configs, merging seeds, the
generated README, and the real arm on a small prepared pool."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sslcurate import CurationInputError

from conftest import ROOT, run_cli


# ---------------------------------------------------------------------------------------------- end to end

def test_quick_run_end_to_end(tmp_path):
    """The quick preset runs every stage and writes metrics.json in the common format, figures, selections."""
    res = run_cli("experiment=text", "+preset=text_quick", "logger=none", "progress=false",
                  f"hydra.run.dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}", timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert doc["primary_metric"] == "val_ppl_macro" and doc["higher_is_better"] is False
    assert set(doc["results"]) == {"raw", "ccnet", "curated"}
    for v, r in doc["results"].items():
        assert np.isfinite(r["val_ppl_macro"]["mean"]) and 1 < r["val_ppl_macro"]["mean"] < 1e4
        assert 0 <= r["mc_accuracy"]["mean"] <= 1
        for d in doc["macro_domains"]:
            assert f"ppl_{d}" in r
    assert doc["pool"]["shares"]["docs"]["boilerplate"] > 0
    for f in ("domain_shares.png", "ppl_per_domain.png", "learning_curves.png"):
        assert (tmp_path / f).stat().st_size > 1000
    assert (tmp_path / "selections" / "curated_seed0.npy").exists()
    dd = doc["pool_dedup"]  # exact and near duplicates are gone before selection, at the embedder's threshold
    assert dd["size"] < doc["pool"]["size"] and dd["dropped"] == doc["pool"]["size"] - dd["size"]
    assert dd["threshold_from"] == "embedder.dedup_threshold" and sum(dd["dropped_domains"].values()) == dd["dropped"]
    assert dd["examples"] and all(ex["cosine"] >= dd["threshold"] - 1e-3 for ex in dd["examples"])
    assert doc["curation_levels"]["sized_from_pool"] and len(doc["curation_levels"]["levels"]) == 2
    assert doc["macro_domains"] == ["wiki", "news", "code", "docs", "pkgdocs"] and "junk" in doc["eval_domains"]
    from experiments.text.concepts import main as concepts
    concepts([str(tmp_path), "--out", str(tmp_path), "--cache", str(tmp_path / "cache")])
    doc = json.loads((tmp_path / "metrics.json").read_text())
    top = doc["concepts"]["0"]["top_clusters"]
    assert 0 < sum(top.values()) <= doc["concepts"]["0"]["levels"][-1]  # non-empty top-level clusters
    assert "Top-level clusters" in (tmp_path / "README.md").read_text()


def test_bad_shard_path_exits_with_code_2(tmp_path):
    res = run_cli("experiment=text", "data=text_shards", f"data.path={tmp_path / 'missing'}", "logger=none",
                  f"hydra.run.dir={tmp_path}", "progress=false", timeout=300)
    assert res.returncode == 2
    assert "does not exist" in res.stdout + res.stderr


def test_paper_config_composes_and_dry_runs(tmp_path):
    """experiment=text_paper: SBERT on web shards, 4-level curation, a ~1B Llama on 64 GPUs; dry run builds the
    model on the meta device and writes the plan without touching data."""
    res = run_cli("experiment=text_paper", "dry_run=true", "logger=none", f"hydra.run.dir={tmp_path}",
                  "data.path=/nonexistent/shards", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["model_params"] > 5e8
    assert plan["curation_levels"] == "sized from the deduplicated pool" and plan["level_sizing"]["n_levels"] == 4
    assert plan["dedup"]["n_clusters"] == 100_000 and plan["inputs"].startswith("not checked")
    assert plan["train_tokens"] >= 1e11


def test_default_config_composes():
    from hydra import compose, initialize_config_dir

    from experiments.kit.config import curation_config, register_schemas
    register_schemas()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=text"], return_hydra_config=False)
    assert cfg.task == "text" and list(cfg.variants) == ["raw", "ccnet", "curated"] and len(cfg.seeds) >= 3
    ccfg = curation_config(cfg.curation)
    assert ccfg.target_size > 0 and cfg.level_sizing.points_per_cluster > 1 and cfg.evaluation.macro_domains == "auto"


def _fake_doc(seed: int, shift: float) -> dict:
    from experiments.kit.metrics import metrics_doc
    variants = ["raw", "ccnet", "curated"]
    doms = ["wiki", "code"]
    res = {v: {"val_ppl_macro": [100.0 + i * 10 + shift], "mc_accuracy": [0.3 + 0.01 * i],
               "train_time_s": [10.0], **{f"ppl_{d}": [90.0 + i + shift] for d in doms},
               **{f"mc_accuracy_{d}": [0.3] for d in doms}} for i, v in enumerate(variants)}
    sh = {"docs": {"wiki": 0.5, "code": 0.5}, "tokens": {"wiki": 0.4, "code": 0.6}}
    return metrics_doc("text", [seed], "val_ppl_macro", False, res, variants=variants, macro_domains=doms,
                       eval_domains=doms, budget_tokens=1000, train_tokens=2000,
                       pool={"size": 10, "tokens": 100, "domains": {"wiki": 5, "code": 5}, "shares": sh,
                             "fingerprint": "abc"},
                       eval={"size": 4, "domains": {}, "mc_items": 2}, shares={v: sh for v in variants},
                       learning_curves={v: [[{"step": 1, "val_ppl_macro": 5.0, "train_loss": 2.0}]]
                                        for v in variants},
                       timings_s={"pool": 1.0, "total": 5.0 + seed}, command=f"python run.py seeds=[{seed}]")


def test_merge_runs_over_seeds(tmp_path):
    """Per-seed runs merge into one document over all seeds (values in run order, summaries recomputed), with
    figures and README; runs on different budgets or repeated seeds refuse to merge."""
    from experiments.text.merge import main, merge_docs
    runs = []
    for s in range(3):
        d = tmp_path / f"seed{s}"
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps(_fake_doc(s, float(s))))
        runs.append(str(d))
    out = main([*runs, "--out", str(tmp_path / "merged")])
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["seeds"] == [0, 1, 2]
    assert doc["results"]["raw"]["val_ppl_macro"]["values"] == [100.0, 101.0, 102.0]
    assert doc["results"]["raw"]["val_ppl_macro"]["std"] == pytest.approx(np.std([100, 101, 102]))
    assert len(doc["learning_curves"]["curated"]) == 3 and doc["timings_s"]["total"] == 6.0
    readme = (out / "README.md").read_text()
    assert "curated" in readme and "seed spread" in readme
    assert (out / "ppl_per_domain.png").exists()
    bad = _fake_doc(5, 0.0)
    bad["budget_tokens"] = 7
    with pytest.raises(CurationInputError, match="budget_tokens"):
        merge_docs([_fake_doc(0, 0.0), bad])
    with pytest.raises(CurationInputError, match="duplicate seeds"):
        merge_docs([_fake_doc(0, 0.0), _fake_doc(0, 1.0)])


def test_readme_lists_sub_studies_with_their_verdict(tmp_path):
    """A sub-folder with its own metrics.json (the study under other settings) appears in the parent README with
    its numbers and the curated-vs-raw verdict against its own seed spread."""
    from experiments.text.merge import main
    runs = []
    for s in range(3):
        d = tmp_path / "runs" / f"seed{s}"
        d.mkdir(parents=True)
        doc = _fake_doc(s, float(s))
        doc["results"]["curated"]["val_ppl_macro"]["values"] = [80.0 + s]  # raw: 100-102: curated wins by 20
        (d / "metrics.json").write_text(json.dumps(doc))
        runs.append(str(d))
    main([*runs, "--out", str(tmp_path / "study" / "short_schedule")])
    main([*runs, "--out", str(tmp_path / "study")])
    readme = (tmp_path / "study" / "README.md").read_text()
    assert "## The same study under other settings" in readme
    line = next(x for x in readme.splitlines() if x.startswith("- [`short_schedule/`]"))
    assert "`raw` 101.0 ± 0.8" in line and "`curated` 20.0 lower than `raw`, by more than the seed spread" in line
    assert "under other settings" not in (tmp_path / "study" / "short_schedule" / "README.md").read_text()


def test_crossing_lines_name_the_step_a_variant_overtakes_raw():
    """The mean curve over seeds decides: curated above raw until step 2, then below for good; ccnet never."""
    from experiments.text.readme import crossing_lines

    def runs(*curves):
        return [[{"step": s, "val_ppl_macro": v} for s, v in zip((1, 2, 3, 4), c)] for c in curves]
    doc = {"learning_curves": {"raw": runs((10, 8, 7, 6), (10, 8, 7, 6)),
                               "curated": runs((12, 9, 6, 5), (12, 8, 7, 5)),  # mean 12, 8.5, 6.5, 5
                               "ccnet": runs((9, 9, 8, 7), (9, 9, 8, 7))}}
    (line,) = crossing_lines(doc)
    assert "`curated` is above `raw` until step 2 and below from step 3 on" in line
    assert "`ccnet` is above `raw` at the last evaluation (step 4), below at step 1" in line


def test_real_arm_end_to_end(tmp_path):
    """``python run.py experiment=text_real`` on a small prepared pool (the layout scripts/prepare_real_data.py
    writes: text, domain, group): domains read for evaluation only, label_entropy per variant, the generated
    README names the real arm and the label balance."""
    import os

    from experiments.text.readme import render

    root = tmp_path / "real" / "text"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    vocab = {d: [f"{d}{i}" for i in range(40)] for d in ("python_docs", "wiki", "changelog")}
    sizes = {"python_docs": 60, "wiki": 20, "changelog": 10}  # documents per domain, 4 chunks each
    with open(root / "pool.jsonl", "w") as f:
        for d, n in sizes.items():
            for doc in range(n):
                for chunk in range(4):
                    text = " ".join(rng.choice(vocab[d], 60)) + "."
                    f.write(json.dumps({"text": text, "domain": d, "group": f"{d}:{doc}"}) + "\n")
    os.environ["SSLCURATE_REAL_DATA"] = str(tmp_path / "real")
    try:
        small = ["seeds=[0]", "budget_tokens=5000", "data.eval_fraction=0.2", "embedder.max_seq_length=32",
                 "model.vocab_size=512", "model.context=32", "model.d_model=32", "model.n_layers=1", "model.n_heads=2",
                 "trainer.max_steps=4", "trainer.batch_size=4", "trainer.eval_every=2", "evaluation.docs_per_domain=4",
                 "evaluation.mc_per_domain=4", "evaluation.mc_prefix=8", "evaluation.mc_continuation=4",
                 "level_sizing.points_per_cluster=10", "curation.target_size=120"]
        res = run_cli("experiment=text_real", *small, "logger=none", "progress=false",
                      f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}", timeout=900)
    finally:
        del os.environ["SSLCURATE_REAL_DATA"]
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert doc["experiment"] == "text_real" and set(doc["eval_domains"]) == set(sizes)
    for v in ("raw", "ccnet", "curated"):  # ccnet may keep one domain only (entropy 0): its filter ranks them
        assert 0 <= doc["results"][v]["label_entropy"]["mean"] <= 1
    assert doc["results"]["raw"]["label_entropy"]["mean"] > 0
    text = render(doc)
    assert "real-data arm" in text and "label_entropy" in text and "Junk" not in text
