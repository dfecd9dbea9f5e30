# Two commands for a fresh machine: `make run` and `make test` (see README.md).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cass-installed
# Every Python package, direct and transitive, pinned with its hashes for Python 3.11 on Linux
# x86_64; `make lock` writes it from pyproject.toml (README, "Dependencies").
LOCK := requirements.lock
UV := $(BIN)/uv
# A DAGSTER_HOME set in the shell wins over the repository's instance.
DEFAULT_DAGSTER_HOME := $(CURDIR)/data/dagster_home
DAGSTER_HOME ?= $(DEFAULT_DAGSTER_HOME)
export DAGSTER_HOME

.PHONY: run test lint dev dicom-node review-app env lock instance clean-data

## uv, the installer, at the version and hashes the lock gives it (pip installs only this).
$(UV): $(LOCK)
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "CASS needs Python 3.11"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	sed -n '/^uv==/,/^    # via/p' $(LOCK) > $(VENV)/uv-requirement.txt
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(VENV)/uv-requirement.txt
	@touch $@

## Make the environment exactly what the lock says (packages not in it are removed), then
## install CASS itself, editable, with the locked setuptools.
$(STAMP): $(LOCK) pyproject.toml $(UV)
	$(UV) pip sync --quiet --python $(BIN)/python --require-hashes $(LOCK)
	$(UV) pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	@touch $@

## Write the lock from pyproject.toml, keeping every pin that still satisfies it;
## `make lock UPGRADE=name` moves one package (and what it needs) to its newest release,
## `make lock UPGRADE=--all` every package.
lock: $(UV)
	$(UV) pip compile pyproject.toml --extra dev --generate-hashes --quiet \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		--custom-compile-command 'make lock' \
		$(if $(filter --all,$(UPGRADE)),--upgrade,$(if $(UPGRADE),--upgrade-package $(UPGRADE))) \
		--output-file $(LOCK)

## DAGSTER_HOME for `dagster dev` run from the checkout: the repository's instance, unless
## DAGSTER_HOME is already set (dotenv expands the default only when it is not).
.env: Makefile
	@echo 'DAGSTER_HOME="$${DAGSTER_HOME:-$(DEFAULT_DAGSTER_HOME)}"' > $@

## The persistent Dagster instance (run history, schedules, pools, run monitoring) from
## config/dagster_instance.yaml; a dagster.yaml of the user's own is left as it is.
INSTANCE_YAML := config/dagster_instance.yaml
instance:
	@mkdir -p "$$DAGSTER_HOME"
	@target="$$DAGSTER_HOME/dagster.yaml"; \
	if [ ! -f "$$target" ] || head -1 "$$target" | grep -q '^# CASS instance' \
		|| [ "$$(cat "$$target")" = "$$(printf 'telemetry:\n  enabled: false')" ]; then \
		cp "$(INSTANCE_YAML)" "$$target"; fi

## Debian packages, installed as root (or through sudo) when a file they bring is absent:
## Tesseract's English model for the OCR check on the pixels CASS writes (the engine itself
## is the tesserocr wheel); dcmtk (dsrdump checks the structured reports, storescu stands in
## for a workstation), dicom3tools (dciodvfy checks every object CASS writes), Orthanc
## with its DICOMweb plugin (the PACS of the DICOM tests), and chromium with its driver (the
## review app's browser tests drive them; nothing is downloaded at run time).
OCR_MODEL := /usr/share/tesseract-ocr/5/tessdata/eng.traineddata
DICOMWEB_PLUGIN := /usr/share/orthanc/plugins/libOrthancDicomWeb.so
DEBIAN_FILES := $(OCR_MODEL) /usr/bin/dsrdump /usr/sbin/Orthanc /usr/bin/dciodvfy $(DICOMWEB_PLUGIN) \
	/usr/bin/chromium /usr/bin/chromedriver
DEBIAN_PACKAGES := tesseract-ocr-eng dcmtk orthanc dicom3tools orthanc-dicomweb chromium chromium-driver
$(DEBIAN_FILES) &:
	@$$( [ "$$(id -u)" = 0 ] || echo sudo ) sh -c 'apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_PACKAGES) >/dev/null'

env: $(STAMP) .env instance $(DEBIAN_FILES)

## Materialise the whole asset graph headless on the default (synthetic) data, with the CPU
## kernels pinned so that the figures repeat on every x86 machine (README, "The demo").
run: env
	CASS_CPU_KERNELS=avx2 $(BIN)/dagster job execute -m cass_pipeline.definitions -j demo

## Lint, then the test suite.
test: env
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

## The DICOM node on 127.0.0.1:11112 for a try on this machine (dcmtk's storescu calls as
## STORESCU); a hospital sets its own senders (docs/pacs.md).
DICOM_NODE_OPTIONS ?= --allowed-aes STORESCU
dicom-node: env
	$(BIN)/cass dicom-node $(DICOM_NODE_OPTIONS)

## The review app on http://127.0.0.1:8300 (accounts: `cass review-user`; docs/review.md).
review-app: env
	$(BIN)/cass review-app

## The Dagster UI on http://127.0.0.1:3000.
dev: env
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000

## Delete generated data (raw synthetic cohort, processed outputs, MLflow store, run history).
clean-data:
	find data -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
