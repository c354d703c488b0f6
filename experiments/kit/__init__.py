"""What the studies share, one small module each: ``config`` (the typed curation schema), ``record`` (the run's
folder, config, git SHA and command), ``levels`` (dedup setting and the hierarchy sized from the pool),
``tracker`` (W&B, offline by default, rank 0 only), ``metrics`` (the metrics.json shape, seed summaries,
mean ± std text), ``publish`` (results/<name>/ and a study's last steps), ``cache`` (stage caches keyed by a
config hash), ``trainer`` (the one Lightning trainer builder) and ``loop`` (the one study loop: a study is a
:class:`~experiments.kit.loop.Study` whose hooks :func:`~experiments.kit.loop.run_study` drives)."""
