# netmon: make run (install and start), make test (install and run every test),
# make lint (ruff and the import-linter layer contracts).
# Targets create .venv/ in this folder when it is missing and install netmon into it.
# tshark/dumpcap come from apt-get when missing and you are root; otherwise the
# exact command to run is printed.

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
APT    := DEBIAN_FRONTEND=noninteractive apt-get install -y -q
ARGS   ?=

.PHONY: run demo test lint bench system-deps test-deps clean

run: system-deps $(STAMP)
	$(VENV)/bin/netmon $(ARGS)

demo: system-deps $(STAMP)
	$(VENV)/bin/netmon demo $(ARGS)

test: system-deps test-deps $(STAMP)
	$(PY) -m pytest -q -ra

lint: $(STAMP)
	$(VENV)/bin/ruff check netmon tests
	$(VENV)/bin/lint-imports

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

# For the tests only: a throwaway sshd (--ssh tests), softflowd and nfdump (a real
# NetFlow/IPFIX exporter and a second collector as the oracle), tcpdump. Installed
# with a policy-rc.d that keeps apt from starting their system services (no sshd on
# port 22, no nfcapd): the tests start their own on 127.0.0.1.
test-deps:
	@missing=""; \
	test -x /usr/sbin/sshd || missing="$$missing openssh-server"; \
	command -v softflowd >/dev/null 2>&1 || test -x /usr/sbin/softflowd || missing="$$missing softflowd"; \
	command -v nfcapd >/dev/null 2>&1 || missing="$$missing nfdump"; \
	command -v tcpdump >/dev/null 2>&1 || test -x /usr/sbin/tcpdump || missing="$$missing tcpdump"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing for the tests:$$missing"; \
	    policy=""; \
	    if [ ! -e /usr/sbin/policy-rc.d ]; then \
	      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy=1; \
	    fi; \
	    apt-get update -q >/dev/null && $(APT)$$missing >/dev/null; rc=$$?; \
	    if [ -n "$$policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	    test $$rc = 0 || exit 1; \
	  else \
	    echo "tests that need$$missing will be skipped (sudo apt-get install -y$$missing)"; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
