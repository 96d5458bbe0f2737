# The two commands of the README, and the steps they are made of.
#   make demo   the whole pipeline on the embedded offline default (2-core CPU, ~10 minutes)
#   make study  the demo plus baselines (Preferred-FT, IPO, robust DPO) and a label-noise sweep (~25 minutes)
#   make test   the test suite (~5 minutes)
# Everything runs in .venv, created on first use from requirements.txt; finished steps are skipped on later runs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
CONFIGS ?= configs/tiny

.PHONY: install assets sft pairs dpo eval demo preferred-ft study test clean-demo

install: $(INSTALLED)

# pip byte-compiles ~14,000 files on one core; compileall does it on every core (half the wall time on two).
# A file that does not compile is compiled, or reported, when it is imported instead.
$(INSTALLED): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { echo "error: the pinned \
	packages need Python 3.11 or newer, and $(PYTHON) is $$($(PYTHON) --version 2>&1 || echo missing); install one \
	(Ubuntu 22.04: sudo apt install python3.11 python3.11-venv) and run make PYTHON=python3.11 ..." >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile -r requirements.txt
	@$(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null 2>&1 || true
	@touch $@

assets: install
	$(PY) -m sentiment_dpo.embedded --config $(CONFIGS)/assets.yaml

sft: assets
	$(PY) sft.py --config $(CONFIGS)/sft.yaml

pairs: sft
	$(PY) preference_pairs.py --config $(CONFIGS)/pairs.yaml

dpo: pairs
	$(PY) dpo.py --config $(CONFIGS)/dpo.yaml

eval: dpo
	$(PY) eval.py --config $(CONFIGS)/eval.yaml

demo: eval
	@echo "Demo finished: report in runs/tiny/eval/report.md (frontier.png, frontier.csv beside it)"

preferred-ft: pairs
	$(PY) sft.py --config $(CONFIGS)/preferred_ft.yaml

# Extends the demo: evaluation is incremental, so the second eval.py measures only the new models.
study: demo preferred-ft
	$(PY) dpo.py --config $(CONFIGS)/dpo_study.yaml
	$(PY) eval.py --config $(CONFIGS)/eval.yaml
	@echo "Study finished: report in runs/tiny/eval/report.md"

test: install
	$(PY) -m pytest -q tests

# Removes the demo's outputs (not the cached assets in .cache/embedded).
clean-demo:
	rm -rf runs/tiny generations/tiny
