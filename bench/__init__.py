"""Benchmarks against the project's own services (see bench/README.md). A package so that a
benchmark too large for one file runs as `python -m bench.<name>` from the repository root."""
