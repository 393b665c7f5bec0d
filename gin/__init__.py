"""Gin configs, installed so `--gin_file` can name them from anywhere."""
