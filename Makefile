# mmvssm: the two commands of the README.
#   make demo   set up the environment, then train / evaluate / visualize the demo models on CPU
#   make test   set up the environment, then run the test suite
# the virtualenv tools/setup_env.sh sets up (MMVSSM_VENV, default .venv)
PY ?= $(or $(MMVSSM_VENV),.venv)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test
setup:
	bash tools/setup_env.sh

demo: setup
	bash tools/demo.sh

test: setup
	$(PY) -m pytest tests -q -ra --durations=15 $(PYTEST_ARGS)
