# Developer entry points; CI runs `make test` through .ci/run.
#
#   make test                        all tests, next to throwaway Redis and PostgreSQL
#   make test PYTEST_ARGS='-x -k sse'  pass options to pytest
#   make run                         the app with the sample project on 127.0.0.1:$PORT (5000);
#                                    tasks take GENERATOR_LATENCY_MS (400) each, so progress shows
#   make lint                        ruff

PYTHON ?= python3
VENV := .venv
# Touched after a successful install; setup.cfg newer than it means install again.
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv install run test lint clean distclean

venv install: $(STAMP)

$(VENV)/pyvenv.cfg:
	@# Debian/Ubuntu ship venv's ensurepip in a separate package (python3-venv).
	@if ! $(PYTHON) -m venv $(VENV); then \
	  rm -rf $(VENV); \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing python3-venv" >&2; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get -qq update </dev/null >/dev/null && \
	    apt-get -qq -y install python3-venv </dev/null >/dev/null && \
	    $(PYTHON) -m venv $(VENV); \
	  else \
	    echo "'$(PYTHON) -m venv' failed: install python3-venv (sudo apt-get install python3-venv)" >&2; \
	    exit 1; \
	  fi; \
	fi

$(STAMP): setup.cfg | $(VENV)/pyvenv.cfg
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

run: venv
	LOAD_SAMPLE=1 GENERATOR_LATENCY_MS=$${GENERATOR_LATENCY_MS:-400} $(VENV)/bin/handson serve

test: venv
	scripts/with-services.sh $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

# Keeps .venv (shared, slow to rebuild); `make distclean` removes it too.
clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .hypothesis tests/artifacts
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
