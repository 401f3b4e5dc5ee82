# One entry point for people and CI. `make help` lists the targets.
SHELL := /bin/bash
VENV  := .venv
PY    := python3
# Every option is built and tested: kmsauth (the AWS SDK) and RabbitMQ dispatch (lapin).
FEATURES := --features signer_auth/kmsauth,signer_worker/rabbitmq
# A target's prerequisites are made side by side: the venvs and promtool download while cargo compiles.
MAKEFLAGS += --jobs=4

.PHONY: help venv run-venv reference-venv tools browser-tools bench-tools build build-run plugin-test test lint audit fmt run demo bench clean

help:
	@echo "make run    start a local Kinto (:8888) and signer-api with 2 in-process workers (:8000); no database needed"
	@echo "make demo   create, sign and verify a sample collection (on the make run stack, or its own)"
	@echo "make test   install the Python peers and promtool, build, run unit + end-to-end tests"
	@echo "            (needs Postgres on 127.0.0.1:5432 and RabbitMQ on 127.0.0.1:5672; the chaos tests start their"
	@echo "            own Postgres and RabbitMQ nodes, as the postgres and rabbitmq users when run as root)"
	@echo "make lint   rustfmt check, clippy with warnings as errors (as the build compiles), RustSec advisories"
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

# The browser test of kinto-admin's signoff UI. kinto-admin comes built only inside Kinto's source packages (later
# Kinto wheels fetch it from GitHub, which may be unreachable): 6.1.1, from Kinto 23.3.2's sdist on PyPI, checked
# against its hash. Chromium is Debian's (a test tool's own browser download needs the open internet); Playwright's
# driver without a browser is npm's playwright-core, pinned by its package-lock.json.
KINTO_ADMIN := .tools/kinto-admin
KINTO_ADMIN_SDIST := kinto-23.3.2.tar.gz
KINTO_ADMIN_SHA256 := 79964c053c9a40f33ae2e8ed127b329a3847a85c598751b4fd37cfab6e914f96
$(KINTO_ADMIN)/index.html:
	@echo "unpacking kinto-admin from $(KINTO_ADMIN_SDIST) into $(KINTO_ADMIN)"
	@rm -rf .tools/sdist $(KINTO_ADMIN) && mkdir -p .tools/sdist $(KINTO_ADMIN)
	@$(PY) -m pip download --quiet --no-deps --no-binary :all: kinto==23.3.2 -d .tools/sdist
	@echo "$(KINTO_ADMIN_SHA256)  .tools/sdist/$(KINTO_ADMIN_SDIST)" | sha256sum --check --quiet
	@tar -xzf .tools/sdist/$(KINTO_ADMIN_SDIST) -C $(KINTO_ADMIN) --strip-components=5 \
		kinto-23.3.2/kinto/plugins/admin/build
	@rm -rf .tools/sdist

tests/browser/node_modules/.installed: tests/browser/package-lock.json
	cd tests/browser && npm ci --no-audit --no-fund --loglevel=error
	touch $@

/usr/bin/chromium:
	@echo "installing Chromium (Debian package chromium)"
	@export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq --no-install-recommends chromium >/dev/null \
		|| { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

browser-tools: $(KINTO_ADMIN)/index.html tests/browser/node_modules/.installed /usr/bin/chromium

# What runs: the two binaries with default features, nothing only the tests need (no AWS SDK, no RabbitMQ client,
# no test targets).
build-run:
	cargo build --locked -p signer_api -p signer_worker --bins

# What the tests run, linted as it compiles: every target (binaries, tests, the benchmarks of `make bench`) with
# every optional scheme, the workspace's own crates compiled by clippy-driver with warnings denied (what `cargo
# clippy -- -D warnings` asks of it). Lint and tests share this one build: the dependencies compile once, as the
# tests need them, where a separate `cargo clippy` would check them all again in its own mode.
# nextest compiles with the same settings, or it would build the workspace's crates again.
CLIPPY_ENV := RUSTC_WORKSPACE_WRAPPER=clippy-driver CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
CLIPPY_BUILD := $(CLIPPY_ENV) cargo build --workspace --all-targets --locked $(FEATURES)
build:
	$(CLIPPY_BUILD)

# The Kinto plugin's lint and own tests (deploy/kinto/tests: its workflow rules, its listener, and the plugin
# inside a real Kinto app on the memory backend and on the machine's PostgreSQL); the end-to-end tests run it in a
# Kinto server beside the service.
plugin-test: venv
	cd deploy/kinto && ../../$(VENV)/bin/ruff check --no-cache . && ../../$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests

# The end-to-end tests spend most of their time waiting for the servers and processes they start: twice as many
# at once as there are cores keeps the cores busy (the README gives the suite's time on 2 cores).
TEST_THREADS := $(shell echo $$(( $$(nproc) * 2 )))
test: venv reference-venv tools browser-tools build plugin-test
	@if cargo nextest --version >/dev/null 2>&1; then \
		$(CLIPPY_ENV) cargo nextest run --workspace --tests --locked --no-fail-fast --test-threads $(TEST_THREADS) $(FEATURES); \
	else \
		$(CLIPPY_ENV) cargo test --workspace --tests --locked --no-fail-fast $(FEATURES); \
	fi

# clippy runs as the build compiles (see build).
lint: audit build
	cargo fmt --all --check

# RustSec advisories against Cargo.lock (accepted ones, each with its reason, in .cargo/audit.toml). The advisory
# database is a git repository on GitHub that cargo-audit clones into ~/.cargo/advisory-db and updates. Where GitHub
# cannot be reached, the copy already there is used, or the one ADVISORY_DB names, and its date is printed;
# with none, the check cannot run: it says so and does not fail the build.
CARGO_AUDIT_VERSION := 0.22.2
ADVISORY_DB ?= $(HOME)/.cargo/advisory-db
audit:
	@command -v cargo-audit >/dev/null || cargo install --quiet --locked cargo-audit --version $(CARGO_AUDIT_VERSION)
	@if timeout 20 git ls-remote --quiet https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then \
		cargo audit; \
	elif [ -d "$(ADVISORY_DB)" ]; then \
		echo "advisories: GitHub unreachable; the database at $(ADVISORY_DB) as of $$(git -C $(ADVISORY_DB) log -1 --format=%cs)"; \
		cargo audit --no-fetch --stale --db "$(ADVISORY_DB)"; \
	else \
		echo "advisories NOT checked: GitHub unreachable and no advisory database at $(ADVISORY_DB) (see README, Operations)"; \
	fi

fmt:
	cargo fmt --all

run: run-venv build-run
	deploy/local/run.sh

demo: run-venv build-run
	deploy/local/demo.sh

clean:
	cargo clean
	rm -rf $(VENV) .venv-run .venv-reference .tools var tests/browser/node_modules

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
