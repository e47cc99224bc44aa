# The README's two commands: `make run` and `make test`. Both do all set-up first.
PY ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := redis-server nginx wrk libzstd-dev libbrotli-dev zlib1g-dev libmodsecurity-dev modsecurity-crs \
	libnginx-mod-http-modsecurity
HEADERS := /usr/include/zstd.h /usr/include/brotli/encode.h /usr/include/zlib.h
WAF_FILES := /usr/include/modsecurity/modsecurity.h /etc/modsecurity/crs/crs-setup.conf

.PHONY: setup run test bench lint

setup:
	@missing=""; for tool in redis-server nginx wrk; do command -v $$tool >/dev/null 2>&1 || missing=1; done; \
	for header in $(HEADERS); do [ -f $$header ] || missing=1; done; \
	for file in $(WAF_FILES); do [ -f $$file ] || missing=1; done; \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES); \
	fi
	$(PY) -m pip install -q -e '.[test]'
	$(PY) setup.py -q build_ext --inplace
	@$(PY) -c "import fastgw._c.http_parser" || { echo "the Cython build failed"; exit 1; }
	@$(PY) -c "import fastgw._c.compress" || { echo "csrc/compress.pyx did not build: are libzstd-dev, libbrotli-dev and zlib1g-dev installed?"; exit 1; }
	@$(PY) -c "import fastgw._c.modsec" || { echo "csrc/modsec.pyx did not build: is libmodsecurity-dev installed?"; exit 1; }

run: setup
	$(PY) -m fastgw run $(ARGS)

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) bench/run.py $(ARGS)
