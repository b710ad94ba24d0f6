# Two commands: `make run` (set up, then the main job on the bundled default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing mamba_pyserini and its dependencies into $(VENV) (log: $(VENV)/install.log)"
	@$(PY) -m pip install -c constraints.txt -e '.[cpu,test]' > $(VENV)/install.log 2>&1 \
		|| { tail -n 30 $(VENV)/install.log; exit 1; }
	@touch $@

run: setup
	$(PY) -m mamba_pyserini.search --topics dl19

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs/*.txt runs/*.json
