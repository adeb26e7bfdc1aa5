# The README's two commands: `make up` runs the whole system, `make test` runs the whole suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: up test install install-dev lint bench browser

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(VENV)/.installed: requirements/base.txt | $(PY)
	$(PIP) install -q -r requirements/base.txt
	touch $@

$(VENV)/.installed-dev: requirements/dev.txt requirements/base.txt | $(PY)
	$(PIP) install -q -r requirements/dev.txt
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

up: install
	$(PY) manage.py bootstrap
	$(PY) -m botai.launcher

# The browser test needs Debian's chromium + chromium-driver: install them when missing and
# possible (root or passwordless sudo); otherwise that one test is skipped and says why.
APT_BROWSER := env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing chromium and chromium-driver for the browser test"; \
	  $(APT_BROWSER) >/dev/null 2>&1 || sudo -n $(APT_BROWSER) >/dev/null 2>&1 || \
	  echo "cannot install chromium here (needs apt and root): the browser test will be skipped"; }

test:
	@$(PYTHON) -m tests.backend --which 2>/dev/null || python3 -m tests.backend --which
	@$(MAKE) --no-print-directory browser
	@$(MAKE) --no-print-directory install-dev
	$(PY) -m tests.backend

lint: install-dev
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
