# Makes the repository root importable in tests (run.py, experiments/), wherever pytest is started from.
