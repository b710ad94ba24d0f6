# Two commands: `make run` (set up, then the main job on the bundled default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing mamba_pyserini and its dependencies into $(VENV) (log: $(VENV)/install.log)"
	@$(PY) -m pip install -c constraints.txt -e '.[cpu,test]' > $(VENV)/install.log 2>&1 \
		|| { tail -n 30 $(VENV)/install.log; exit 1; }
	@touch $@

run: setup
	$(PY) -m mamba_pyserini.search --topics dl19

test: setup  # everything that runs offline on a CPU, slow lane included (what CI runs)
	$(PY) -m pytest -q --durations=25

test-fast: setup  # the unmarked lane: no slow, network or GPU tests
	$(PY) -m pytest -q -m "not slow and not network and not gpu"

clean:
	rm -rf $(VENV) runs/*.txt runs/*.json
