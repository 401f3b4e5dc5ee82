# One entry point for people and CI. `make help` lists the targets.
SHELL := /bin/bash
VENV  := .venv
PY    := python3
# Every optional scheme is built and tested (kmsauth brings the AWS SDK).
FEATURES := --features signer_api/kmsauth
# A target's prerequisites are made side by side: the venvs and promtool download while cargo compiles.
MAKEFLAGS += --jobs=4

.PHONY: help venv run-venv reference-venv tools bench-tools build build-run plugin-test test lint fmt run demo bench clean

help:
	@echo "make run    start a local Kinto (:8888) and signer-api with 2 in-process workers (:8000); no database needed"
	@echo "make demo   create, sign and verify a sample collection (on the make run stack, or its own)"
	@echo "make test   install the Python peers and promtool, build, run unit + end-to-end tests"
	@echo "            (needs Postgres on 127.0.0.1:5432 and RabbitMQ on 127.0.0.1:5672; the chaos tests start their"
	@echo "            own Postgres and RabbitMQ nodes, as the postgres and rabbitmq users when run as root)"
	@echo "make lint   rustfmt check and clippy with warnings as errors"
	@echo "make fmt    format the code"
	@echo "make bench  benchmarks beside their references: canonical JSON + SHA-384, the queue vs Graphile Worker,"
	@echo "            end-to-end signing, scale-out (release build; see BENCHMARKS.md)"

# The real peers the tests talk to (Kinto server, canonicaljson-rs, cryptography), pinned in one file.
$(VENV)/.installed: tests/python/requirements.txt
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	touch $@

venv: $(VENV)/.installed

# What `make run` and `make demo` need: Kinto alone (memory backend), the plugin coming from deploy/kinto.
.venv-run/.installed: deploy/local/requirements.txt
	$(PY) -m venv .venv-run
	.venv-run/bin/pip install --quiet --disable-pip-version-check -r deploy/local/requirements.txt
	touch $@

run-venv: .venv-run/.installed

# kinto-signer 8.1.1, the reference the interop tests and benchmarks compare against.
.venv-reference/.installed: tests/python/reference-requirements.txt
	$(PY) -m venv .venv-reference
	.venv-reference/bin/pip install --quiet --disable-pip-version-check -r tests/python/reference-requirements.txt
	touch $@

reference-venv: .venv-reference/.installed

# promtool checks the alert rules. It is taken out of Debian's prometheus package, unpacked, not installed: the
# package would bring a Prometheus server, its service and a web UI's JavaScript with it.
PROMTOOL := .tools/bin/promtool
$(PROMTOOL):
	@echo "unpacking promtool from Debian's prometheus package into $(@D)"
	@rm -rf .tools/deb && mkdir -p .tools/deb $(@D)
	@cd .tools/deb && { apt-get download -qq prometheus 2>/dev/null \
		|| { apt-get update -qq && apt-get download -qq prometheus; }; }
	@dpkg-deb --fsys-tarfile .tools/deb/prometheus_*.deb | tar -xO ./usr/bin/promtool > $@.part
	@chmod +x $@.part && mv $@.part $@ && rm -rf .tools/deb

tools: $(PROMTOOL)

# What runs: the two binaries with default features, nothing only the tests need (no AWS SDK, no test targets).
build-run:
	cargo build --locked -p signer_api -p signer_worker --bins

# What the tests run: the binaries and every test target, with every optional scheme. The benchmarks (examples)
# are type-checked by `make lint` and built by `make bench`.
build:
	cargo build --workspace --bins --tests --locked $(FEATURES)

# The Kinto plugin's lint and own tests (deploy/kinto/tests: its workflow rules, its listener); the end-to-end
# tests run it in Kinto.
plugin-test: venv
	cd deploy/kinto && ../../$(VENV)/bin/ruff check --no-cache . && ../../$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests

test: venv reference-venv tools build plugin-test
	@if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace --tests --locked --no-fail-fast $(FEATURES); \
	else \
		cargo test --workspace --tests --locked --no-fail-fast $(FEATURES); \
	fi

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

fmt:
	cargo fmt --all

run: run-venv build-run
	deploy/local/run.sh

demo: run-venv build-run
	deploy/local/demo.sh

clean:
	cargo clean
	rm -rf $(VENV) .venv-run .venv-reference .tools var

# What `make bench` measures with and against: Graphile Worker from npm (pinned by its package-lock.json), and
# wrk (Debian's package) for the API under load.
bench-tools:
	cd tests/bench/graphile && npm ci --no-audit --no-fund --loglevel=error
	@command -v wrk >/dev/null || { \
		echo "installing wrk (Debian package wrk)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq --no-install-recommends wrk >/dev/null \
			|| { apt-get update -qq && apt-get install -y -qq --no-install-recommends wrk >/dev/null; }; \
	}

# Not part of `make test`: prints the tables of BENCHMARKS.md, each side by side with its reference.
bench: venv reference-venv bench-tools
	cargo build --workspace --release --locked $(FEATURES)
	cargo run --release --locked -p signer_e2e --example canonical_throughput -- 10000 50000
	cargo run --release --locked -p signer_e2e --example queue_throughput -- 100000 1000
	cargo run --release --locked -p signer_e2e --example api_load -- 10
	cargo run --release --locked -p signer_e2e --example sign_collection -- postgresql without-plugin 1000 10000
	cargo run --release --locked -p signer_e2e --example sign_collection -- postgresql 100000
	cargo run --release --locked -p signer_e2e --example sign_collection -- memory without-plugin 1000 10000
	cargo run --release --locked -p signer_e2e --example scale_out -- 200
	cargo run --release --locked -p signer_e2e --example scale_out -- 100 100
