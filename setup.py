"""Packaging for efl.

`pip install .` and `pip wheel .` generate the gRPC code of protos/efl/*.proto into the package at build time
(`BuildPyWithProto`); the generated modules are never kept in git. TensorFlow is not declared: efl runs on
TensorFlow 1.15 (`pip install tensorflow==1.15.5` on Python 3.7) or TensorFlow 2.21 in graph mode (`pip install
tensorflow==2.21.0 tf-keras==2.21.0` on Python 3.10 to 3.13), which the user installs first. The Python version
tells the two stacks apart (TensorFlow 1.15 has no wheels past 3.7), so the dependencies below are split by it.
"""

import importlib.util
import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_PACKAGE_DIR = os.path.join('efl', 'communicator', 'proto')


def _load_codegen():
  # By path: importing the package efl would import TensorFlow, which the build environment lacks.
  path = os.path.join(HERE, PROTO_PACKAGE_DIR, '_codegen.py')
  spec = importlib.util.spec_from_file_location('efl_proto_codegen', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class BuildPyWithProto(build_py):
  """build_py, then generates the gRPC modules from protos/ next to the package's other modules."""

  def run(self):
    super().run()
    # An editable install (setuptools' editable_mode) imports the package from the source tree, so the modules
    # go there, as `make proto` puts them; any other build writes them only into the build directory.
    root = HERE if getattr(self, 'editable_mode', False) else self.build_lib
    for path in _load_codegen().build(os.path.join(root, PROTO_PACKAGE_DIR), os.path.join(HERE, 'protos')):
      self.announce('generated %s' % path, level=2)


def _read(name):
  with open(os.path.join(HERE, name)) as f:
    return f.read()


setup(
  name='efl',
  version='0.1.0',
  description='Vertical (split) federated learning on TensorFlow graph mode (1.15, and 2.x through compat.v1)',
  long_description=_read('README.md'),
  long_description_content_type='text/markdown',
  packages=find_packages(include=['efl', 'efl.*']),
  # The native transport's C++ sources: `python -m efl.native.build` compiles them where the package lies.
  # The libraries it builds (_*.so) are specific to one machine and never packaged.
  package_data={'efl.native': ['*.cc']},
  cmdclass={'build_py': BuildPyWithProto},
  # Tested on Python 3.7 with TensorFlow 1.15 (no wheels for later Pythons) and on Python 3.11 with TensorFlow
  # 2.21 (wheels for 3.10 to 3.13).
  python_requires='>=3.7,!=3.8.*,!=3.9.*',
  # Ranges that each TensorFlow accepts; requirements.txt (TF 1) and requirements-tf2.txt (TF 2) pin the tested
  # versions. TensorFlow itself is left to the user (see the module docstring), and so is tf-keras on TensorFlow
  # 2, which depends on one TensorFlow release.
  install_requires=[
    # TensorFlow 1.15, on Python 3.7.
    'numpy>=1.16,<1.19; python_version < "3.8"',  # TensorFlow 1.15.5 needs numpy<1.19
    # The generated code needs >=3.19 (protoc of grpcio-tools 1.48); TF 1.15 fails on 4.
    'protobuf>=3.19,<4; python_version < "3.8"',
    'grpcio>=1.48,<2; python_version < "3.8"',
    # efl.privacy's DP accountant, dp-accounting, is not declared for TensorFlow 1.15: its metadata pins
    # numpy~=1.21, which TensorFlow 1.15 cannot use. Install it with `pip install --no-deps
    # dp-accounting==0.3.0`; at run time it imports only numpy, scipy and attrs.
    # TensorFlow 2.21, on Python 3.10 and later.
    'numpy>=1.26,<3; python_version >= "3.10"',
    # The generated code of grpcio-tools 1.85 checks for protobuf>=7.35.1 and grpcio>=1.85.1 at import.
    'protobuf>=7.35.1,<8; python_version >= "3.10"',
    'grpcio>=1.85.1,<2; python_version >= "3.10"',
    'dp-accounting>=0.4,<1; python_version >= "3.10"',
    # Both.
    'phe>=1.4,<2',
    'gmpy2>=2.1,<3',  # efl.privacy imports the Paillier cipher, which computes with gmpy2
    'scipy>=1.4,<2',
    'attrs>=21.4',
  ],
  extras_require={'test': ['pytest>=7,<8']},
)
