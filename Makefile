# netmon: make run (install and start), make test (install and run every test).
# Targets create .venv/ in this folder when it is missing and install netmon into it.
# tshark/dumpcap come from apt-get when missing and you are root; otherwise the
# exact command to run is printed.

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
APT    := DEBIAN_FRONTEND=noninteractive apt-get install -y -q
ARGS   ?=

.PHONY: run demo test lint bench system-deps clean

run: system-deps $(STAMP)
	$(VENV)/bin/netmon $(ARGS)

demo: system-deps $(STAMP)
	$(VENV)/bin/netmon demo $(ARGS)

test: system-deps $(STAMP)
	$(PY) -m pytest -q -ra

lint: $(STAMP)
	$(VENV)/bin/ruff check netmon tests

bench: system-deps $(STAMP)
	$(PY) -m netmon.bench ingest

# System packages: tshark (brings dumpcap), tmux (terminal tests), python3-venv,
# curl, netcat-openbsd and openssh-client (real clients in the listener tests).
system-deps:
	@missing=""; \
	command -v dumpcap >/dev/null 2>&1 || missing="$$missing tshark"; \
	command -v tmux >/dev/null 2>&1 || missing="$$missing tmux"; \
	command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	command -v nc >/dev/null 2>&1 || missing="$$missing netcat-openbsd"; \
	command -v ssh >/dev/null 2>&1 || missing="$$missing openssh-client"; \
	python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -q >/dev/null && $(APT)$$missing >/dev/null || exit 1; \
	  else \
	    echo "missing:$$missing -- run: sudo apt-get update && sudo apt-get install -y$$missing"; \
	    exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
