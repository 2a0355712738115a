# stackd: developer entry points. `make setup` once, then `make test`.
PY ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12.*/bin/python3) $(shell command -v python3.12))
VENV := .venv
PYTEST_ARGS ?=

.PHONY: setup deps test lint quickstart clean

# Host packages the engine and the tests use (Debian 12).
APT_PACKAGES := runc crun skopeo umoci docker-registry busybox-static iptables nftables \
	debootstrap libseccomp2 iproute2 openssl apache2-utils curl tini

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

setup: deps $(VENV)/bin/stackd

$(VENV)/bin/stackd: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]' --config-settings editable_mode=compat
	@touch $@

test: setup
	$(VENV)/bin/pytest -n 2 $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check stackd tests bench
	$(VENV)/bin/mypy stackd
	$(VENV)/bin/lint-imports

quickstart: setup
	$(VENV)/bin/stackd -f examples/quickstart/stack.yaml config

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
