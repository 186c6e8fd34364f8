# efl: `make demo` runs the federated MNIST example, `make test` the whole suite. Both set up .venv first.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.efl-installed
SHARED_MNIST := $(abspath ../shared/datasets/mnist.npz)
# The examples read MNIST from this Keras-layout file when set (no download is possible offline).
export EFL_MNIST_NPZ ?= $(if $(wildcard $(SHARED_MNIST)),$(SHARED_MNIST),)

.PHONY: setup proto native test demo bench clean

setup: $(STAMP) proto native

# The editable install builds with this venv's setuptools and grpcio-tools (requirements.txt), not in an
# isolated build environment that pip would fill from the index.
$(STAMP): requirements.txt requirements-nodeps.txt setup.py pyproject.toml
	@py=$$(tools/find_python37.sh) || exit 1; \
	if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 7))'; then \
	  echo "creating $(VENV) with $$py"; rm -rf $(VENV); $$py -m venv $(VENV) || exit 1; fi
	$(PY) -m pip install -q --disable-pip-version-check --upgrade "pip<24"
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

proto: $(STAMP)
	@$(PY) -m efl.communicator.build_proto

# The native transport, where gRPC's C core is installed (tools/install_native_deps.sh); else efl runs on
# its Python transport.
native: $(STAMP)
	@$(PY) -m efl.native.build

test: setup
	$(PY) -m pytest -q -rs tests

demo: setup
	$(PY) -m efl.launcher efl/example/mnist

bench: setup
	@for f in benchmarks/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache efl/native/_*.so
