"""The small-scale accuracy study (python -m study.run; EXPERIMENTS.md)."""
