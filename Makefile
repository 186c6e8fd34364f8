# efl: `make demo` runs the federated MNIST example, `make test` the whole suite. Both set up the virtualenv first.
# TF=1: TensorFlow 1.15 on Python 3.7, in .venv from requirements.txt (the reference stack).
# TF=2: TensorFlow 2.21 on Python 3.10 to 3.13 in graph mode, in .venv-tf2 from requirements-tf2.txt.
# Without TF: the stack of $(PYTHON) when it is set, else 1 where a Python 3.7 is found, else 2. Each stack keeps
# its own virtualenv, so switching between them reinstalls neither.
ifeq ($(origin TF),undefined)
  ifneq ($(PYTHON),)
    TF := $(shell '$(PYTHON)' -c 'import sys; print(1 if sys.version_info[:2] == (3, 7) else 2)' 2>/dev/null || echo 1)
  else
    TF := $(shell tools/find_python37.sh >/dev/null 2>&1 && echo 1 || echo 2)
  endif
endif
ifeq ($(TF),1)
  VENV := .venv
  FIND_PYTHON := tools/find_python37.sh
  REQUIREMENTS := requirements.txt
  # dp-accounting's metadata pins a numpy TensorFlow 1.15 cannot use (see requirements-nodeps.txt).
  NODEPS_REQUIREMENTS := requirements-nodeps.txt
  PIP_VERSION := pip<24
else ifeq ($(TF),2)
  VENV := .venv-tf2
  FIND_PYTHON := tools/find_python_tf2.sh
  REQUIREMENTS := requirements-tf2.txt
  NODEPS_REQUIREMENTS :=
  PIP_VERSION := pip<27
else
  $(error TF must be 1 (TensorFlow 1.15, Python 3.7) or 2 (TensorFlow 2.21, Python 3.10 to 3.13), not '$(TF)')
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.efl-installed
SHARED_MNIST := $(abspath ../shared/datasets/mnist.npz)
# The examples read MNIST from this Keras-layout file when set (no download is possible offline).
export EFL_MNIST_NPZ ?= $(if $(wildcard $(SHARED_MNIST)),$(SHARED_MNIST),)

.PHONY: setup proto native test lint demo bench clean

setup: $(STAMP) proto native

# The venv is made anew when its Python is not the minor version the stack's finder picks. The editable install
# builds with this venv's setuptools and grpcio-tools (the requirements file), not in an isolated build
# environment that pip would fill from the index.
$(STAMP): $(REQUIREMENTS) $(NODEPS_REQUIREMENTS) setup.py pyproject.toml
	@py=$$($(FIND_PYTHON)) || exit 1; \
	want=$$($$py -c 'import sys; print(sys.version_info[:2])'); \
	if [ ! -x $(PY) ] || [ "$$($(PY) -c 'import sys; print(sys.version_info[:2])' 2>/dev/null)" != "$$want" ]; then \
	  echo "creating $(VENV) with $$py (TensorFlow $(TF) stack)"; rm -rf $(VENV); $$py -m venv $(VENV) || exit 1; fi
	$(PY) -m pip install -q --disable-pip-version-check --upgrade "$(PIP_VERSION)"
	$(PY) -m pip install -q --disable-pip-version-check -r $(REQUIREMENTS)
	$(if $(NODEPS_REQUIREMENTS),$(PY) -m pip install -q --disable-pip-version-check --no-deps -r $(NODEPS_REQUIREMENTS))
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

proto: $(STAMP)
	@$(PY) -m efl.communicator.build_proto

# The native transport, where gRPC's C core is installed (tools/install_native_deps.sh); else efl runs on
# its Python transport.
native: $(STAMP)
	@$(PY) -m efl.native.build

test: setup
	$(PY) -m pytest -q -rs tests $(PYTEST_ARGS)

# House style (pyproject.toml's [tool.ruff]): pycodestyle, pyflakes and Google-style docstrings.
LINT_PATHS := efl tests benchmarks setup.py
lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

demo: setup
	$(PY) -m efl.launcher efl/example/mnist

bench: setup
	@for f in benchmarks/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

# Both stacks' virtualenvs and everything built into the checkout.
clean:
	rm -rf .venv .venv-tf2 .pytest_cache efl/native/_*.so efl/communicator/proto/protobuf[0-9]*
