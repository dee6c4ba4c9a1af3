"""Benchmarks: the project's stages against DuckDB and notebook-style pandas, clustering at scale, the whole flow.

Run `python -m bench` (or `make bench`); see bench/__main__.py for the options.
"""
