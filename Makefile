# Quick start: `make drill` (a DR drill on the embedded lab) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help setup test lint sanity drill bench lab lab-down

help:
	@echo "make drill   run a disaster-recovery drill on the embedded lab"
	@echo "make lab     start the embedded lab (SCALE=1 by default; var/lab/lab.env); make lab-down [PURGE=1]"
	@echo "make test    run lint and the whole test suite (what CI runs)"
	@echo "make bench   run the benchmarks against the anchors (bench/RESULTS.md)"

setup:
	@tools/bootstrap.sh

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ansible-lint -q ansible roles molecule

sanity: setup
	tools/sanity.sh

test: setup lint sanity
	.venv/bin/python -m pytest

drill: setup
	@tools/drill.sh

lab: setup
	.venv/bin/python tools/lab/lab.py up $(if $(SCALE),--scale $(SCALE)) $(if $(STORAGE),--storage $(STORAGE))

lab-down: setup
	.venv/bin/python tools/lab/lab.py down $(if $(PURGE),--purge)

bench: setup
	.venv/bin/python -m bench.run $(BENCH_ARGS)
