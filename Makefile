# VibeCraft: `make demo` renders a video on a local cluster; `make test` runs every test.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# librosa's numba kernels, compiled once by bootstrap; one cache per checkout (numba keys entries by
# source path), the same dir vibecraft_localcluster.images.numba_cache() seeds render pods from.
export NUMBA_CACHE_DIR ?= $(or $(VIBECRAFT_CACHE),$(HOME)/.cache/vibecraft)/numba/$(shell printf %s "$(CURDIR)" | sha1sum | cut -c1-12)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: bootstrap cluster-up cluster-down cluster-status test test-fast lint bench chaos demo clean crds chart-docs contact-sheet

bootstrap:  ## install apt packages, the venv and the Go-built binaries (cached)
	@bash localcluster/bootstrap.sh

cluster-up: bootstrap  ## start the local cluster + S3 (no-op if running)
	@$(VENV)/bin/vibecraft-cluster up

cluster-down:  ## stop the local cluster, leaving no process behind
	@$(VENV)/bin/vibecraft-cluster down

cluster-status:
	@$(VENV)/bin/vibecraft-cluster status

crds: bootstrap  ## regenerate crds/musicvideo.yaml (and the chart's copy) from vibecraft_common's spec and status models
	$(PY) -m vibecraft_common.crd

chart-docs: bootstrap  ## regenerate charts/vibecraft/README.md from values.yaml's `# --` comments (helm-docs)
	$(or $(VIBECRAFT_CACHE),$(HOME)/.cache/vibecraft)/helm-docs-v$$(sed -n 's/^HELM_DOCS_VERSION="$${HELM_DOCS_VERSION:-\(.*\)}"/\1/p' localcluster/build-helm-docs.sh)/bin/helm-docs -c charts

lint: bootstrap  ## ruff + mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: bootstrap lint  ## every test, against a private local cluster and S3
	$(PY) -m pytest -q -n 2 --dist loadgroup --durations=25

chaos: bootstrap  ## the operator's chaos suite, bigger than in make test (VIBECRAFT_CHAOS_SCALE=5), with its figures
	VIBECRAFT_CHAOS_SCALE=$${VIBECRAFT_CHAOS_SCALE:-5} $(PY) -m pytest -q -s -m chaos tests/operator tests/renderer tests/realnode

bench: bootstrap  ## performance and sync figures (against baselines measured in the same run); every bench runs, a missed target fails at the end
	@rc=0; for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || rc=1; done; exit $$rc

contact-sheet: bootstrap  ## the platform presets side by side, as docs/renderer.md shows them (written to ~/.cache/vibecraft/)
	$(PY) docs/contact_sheet.py

demo:  ## render a music video on the local cluster, copy it to ./out/ (bootstraps only what it needs)
	@bash localcluster/bootstrap.sh demo
	@bash localcluster/demo.sh

clean: cluster-down
	rm -rf .localcluster out
