# stackd: developer entry points. `make setup` once, then `make test`.
PY ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12.*/bin/python3) $(shell command -v python3.12))
VENV := .venv
PYTEST_ARGS ?=

.PHONY: setup deps compile example-images test lint quickstart quickstart-down quickstart-images images clean

# Host packages the engine and the tests use (Debian 12).
APT_PACKAGES := runc crun skopeo umoci docker-registry busybox-static iptables nftables \
	debootstrap libseccomp2 iproute2 openssl apache2-utils curl tini gcc libc6-dev procps util-linux \
	python3

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
# The shims run on the distribution's python3 (3.11 on Debian 12, for their small RSS): compile
# what they import for it too, or each shim's first start compiles (and weighs more).
compile: $(VENV)/bin/stackd
	$(VENV)/bin/python -m compileall -q stackd >/dev/null
	/usr/bin/python3 -m compileall -q stackd/__init__.py stackd/errors.py stackd/engine/__init__.py \
		stackd/engine/shim stackd/engine/runtime >/dev/null

# The end-to-end tests of examples/ need the example images built (cached; they serve them from
# registries of their own).
test: setup example-images
	$(VENV)/bin/pytest -n 2 $(PYTEST_ARGS)

example-images: deps
	python3 examples/images/build.py build

lint: setup
	$(VENV)/bin/ruff check stackd tests bench
	$(VENV)/bin/mypy stackd
	$(VENV)/bin/lint-imports

# The quick start (examples/quickstart): install, build the images, bring the stack up, print the URL.
# `make quickstart WEB_PORT=9090` publishes another port; `make quickstart-down` removes it all.
WEB_PORT ?= 8080
QUICKSTART := $(VENV)/bin/stackd -f examples/quickstart/stack.yaml

quickstart: setup quickstart-images
	WEB_PORT=$(WEB_PORT) $(QUICKSTART) up -d --wait --wait-timeout 120
	@WEB_PORT=$(WEB_PORT) $(QUICKSTART) ps
	@echo
	@echo "open http://127.0.0.1:$(WEB_PORT)/   (curl it: the page comes from db through api and web)"
	@echo "stop and remove everything with: make quickstart-down"

quickstart-down:
	WEB_PORT=$(WEB_PORT) $(QUICKSTART) down -v
	python3 examples/images/build.py stop

# Example images (busybox, debian:bookworm, redis:7) built from Debian packages, served by a local
# registry on 127.0.0.1 and written to /etc/stackd/registries.toml as the docker.io mirror.
images: deps
	python3 examples/images/build.py all
	python3 examples/images/build.py serve

# The quick start needs busybox only (seconds; `images` also debootstraps debian and redis).
quickstart-images: deps
	python3 examples/images/build.py busybox
	python3 examples/images/build.py serve

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
