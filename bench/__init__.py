"""Benchmarks of hyperprompt against the tools a user would pick instead.

`python -m bench.run` measures everything in one run on one machine, writes
`bench/results/<CPU type>.json`, and from every CPU type's results the
generated sections of `BENCHMARKS.md` and `README.md` and the charts.
Benchmarks are never tests: nothing here asserts a time.
"""
