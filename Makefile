# Two commands: `make run` (set up, then the main job on the bundled default) and `make test`.
# Any Python 3.11-3.13: `make run PYTHON=python3.12`. 3.11 gets Pyserini 1.6, 3.12 and 3.13 Pyserini 2.x.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# the exact versions the tests passed with on this Python, where recorded (`make lock`)
LOCK := $(wildcard locks/py$(PYVER).txt)

.PHONY: setup run test test-fast test-host smoke lock clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt $(LOCK)
	@$(PY) -c 'import sys; sys.exit("%d.%d" % sys.version_info[:2] != "$(PYVER)")' 2>/dev/null \
		|| { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	@echo "installing mamba_pyserini and its dependencies into $(VENV) (Python $(PYVER); log: $(VENV)/install.log)"
	@$(PY) -m pip install -c constraints.txt $(if $(LOCK),-c $(LOCK)) -e '.[cpu,test]' > $(VENV)/install.log 2>&1 \
		|| { tail -n 30 $(VENV)/install.log; exit 1; }
	@touch $@

run: setup
	$(PY) -m mamba_pyserini.search --topics dl19

test: setup  # everything that runs offline on a CPU, slow lane included (what CI runs)
	$(PY) -m pytest -q --durations=25

test-fast: setup  # the unmarked lane: no slow, network or GPU tests
	$(PY) -m pytest -q -m "not slow and not network and not gpu"

test-host: setup  # the fast lane plus the slow tests where the host matters: CI's check of a second Pyserini line
	$(PY) -m pytest -q -m "(not slow or host) and not network and not gpu" --durations=10

smoke: run  # the main job, then one regression condition (CI's check of a third Python)
	$(PY) -m mamba_pyserini.regression --condition cacm-bm25 --directory runs/smoke

lock:  # resolve constraints.txt afresh on this Python and record the versions in locks/pyX.Y.txt
	rm -rf $(VENV).lock && $(PYTHON) -m venv $(VENV).lock
	$(VENV).lock/bin/pip install -q -c constraints.txt -e '.[cpu,test]'
	mkdir -p locks && { echo "# pip freeze on Python $(PYVER), from constraints.txt by \`make lock PYTHON=$(PYTHON)\`"; \
		$(VENV).lock/bin/pip freeze --exclude-editable | sed -E 's/^(torch==[^+]*)[+].*/\1/'; } > locks/py$(PYVER).txt
	rm -rf $(VENV).lock

clean:
	rm -rf $(VENV) runs/*.txt runs/*.json runs/smoke
