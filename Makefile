# Migration Console: `make run` to try it, `make test` for the whole suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench devdb stop-devdb screenshot clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Local development: a throw-away cluster under .devdb/ unless DATABASE_URL/DB_DSN are set.
# The console on http://127.0.0.1:8000 and one migration worker; Ctrl-C stops both.
run: $(STAMP)
	@if [ -z "$$DATABASE_URL$$DB_DSN" ]; then $(PY) scripts/pgcluster.py dev; fi
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(PY) manage.py migrate --no-input -v0
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(PY) scripts/ensure_admin.py
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(PY) scripts/devserver.py

devdb:
	$(PYTHON) scripts/pgcluster.py dev

stop-devdb:
	$(PYTHON) scripts/pgcluster.py stop-dev

# The whole suite, on a temporary PostgreSQL cluster started for it (CI calls exactly this).
test: $(STAMP)
	$(PY) scripts/pgcluster.py exec -- env DJANGO_DEBUG=1 DJANGO_SECRET_KEY=test-only-secret \
		$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) bench/run_all.py

# Screenshots of the console for the README (docs/*.png), against a throw-away cluster.
screenshot: $(STAMP)
	$(PY) scripts/screenshot.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache staticfiles
