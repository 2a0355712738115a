# stackd: developer entry points. `make setup` once, then `make test`.
PY ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12.*/bin/python3) $(shell command -v python3.12))
VENV := .venv
PYTEST_ARGS ?=

.PHONY: setup deps test lint quickstart images clean

# Host packages the engine and the tests use (Debian 12).
APT_PACKAGES := runc crun skopeo umoci docker-registry busybox-static iptables nftables \
	debootstrap libseccomp2 iproute2 openssl apache2-utils curl tini

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

setup: deps $(VENV)/bin/stackd compile

$(VENV)/bin/stackd: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]' --config-settings editable_mode=compat
	@touch $@

# Byte-compile once: start-up time is a feature, and PYTHONDONTWRITEBYTECODE may be set.
compile: $(VENV)/bin/stackd
	$(VENV)/bin/python -m compileall -q stackd >/dev/null

test: setup
	$(VENV)/bin/pytest -n 2 $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check stackd tests bench
	$(VENV)/bin/mypy stackd
	$(VENV)/bin/lint-imports

quickstart: setup
	$(VENV)/bin/stackd -f examples/quickstart/stack.yaml config

# Example images (busybox, debian:bookworm, redis:7) built from Debian packages, served by a local
# registry on 127.0.0.1 and written to /etc/stackd/registries.toml as the docker.io mirror.
images: deps
	python3 examples/images/build.py all
	python3 examples/images/build.py serve

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
