"""Packaging for efl.

`pip install .` and `pip wheel .` generate the gRPC code of protos/efl/*.proto into the package at build time
(`BuildPyWithProto`); the generated modules are never kept in git. TensorFlow is not declared: efl needs
TensorFlow 1.15 (`pip install tensorflow==1.15.5` on Python 3.7), which the user installs first.
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
    description='Vertical (split) federated learning on TensorFlow 1.15 graph mode',
    long_description=_read('README.md'),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['efl', 'efl.*']),
    # The native transport's C++ sources: `python -m efl.native.build` compiles them where the package lies.
    # The libraries it builds (_*.so) are specific to one machine and never packaged.
    package_data={'efl.native': ['*.cc']},
    cmdclass={'build_py': BuildPyWithProto},
    # Tested on Python 3.7 only: TensorFlow 1.15, which efl runs on, has no wheels for later versions.
    python_requires='>=3.7',
    # Ranges that TensorFlow 1.15 accepts; requirements.txt pins the tested versions. TensorFlow itself is
    # left to the user (see the module docstring).
    install_requires=[
        'numpy>=1.16,<1.19',  # TensorFlow 1.15.5 needs numpy<1.19
        'protobuf>=3.19,<4',  # the generated code needs >=3.19 (protoc of grpcio-tools 1.48); TF 1.15 fails on 4
        'grpcio>=1.48,<2',
        'phe>=1.4,<2',
        'gmpy2>=2.1,<3',  # efl.privacy imports the Paillier cipher, which computes with gmpy2
        # efl.privacy's DP accountant, dp-accounting, is not declared: its metadata pins numpy~=1.21, which
        # TensorFlow 1.15 cannot use. Install it with `pip install --no-deps dp-accounting==0.3.0`; at run time it
        # imports only numpy, scipy and attrs.
        'scipy>=1.4,<2',
        'attrs>=21.4',
    ],
    extras_require={'test': ['pytest>=7,<8']},
)
