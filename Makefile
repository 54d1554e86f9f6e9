# Quick start: `make drill` (a DR drill on the embedded lab) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help setup test lint drill bench

help:
	@echo "make drill   run a disaster-recovery drill on the embedded lab"
	@echo "make test    run lint and the whole test suite (what CI runs)"
	@echo "make bench   run the benchmarks against the anchors (bench/RESULTS.md)"

setup:
	@tools/bootstrap.sh

lint: setup
	.venv/bin/ruff check .

test: setup lint
	.venv/bin/python -m pytest

drill: setup
	@tools/drill.sh

bench: setup
	.venv/bin/python -m bench.run $(BENCH_ARGS)
