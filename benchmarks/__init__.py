"""The project's benchmarks: each module prints one table and writes JSON to `results/`.

Run them from the repository root as modules, e.g. `python -m benchmarks.engine`, so they import
each other as a package; `docs/benchmarks.md` has every command with its hardware and date.
"""
