"""The pieces of ``scripts/prepare_real_data.py``: the registries (Debian archive, PyPI) and one module per
pool. Plain modules beside the script, importable without the project installed."""
