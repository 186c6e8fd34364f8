"""Regenerates efl's gRPC code in a source checkout.

`python -m efl.communicator.build_proto` (`protos/efl/*.proto` -> `efl/communicator/proto/`); `make proto` runs it.
"""

import importlib.util
import os
import sys


def load_codegen():
  """Returns `efl/communicator/proto/_codegen.py` as a module, loaded by path.

  Importing the package `efl.communicator.proto` needs the very modules it generates.
  """
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'proto', '_codegen.py')
  spec = importlib.util.spec_from_file_location('efl_proto_codegen', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def main():
  print('generated: ' + ', '.join(load_codegen().build()))
  return 0


if __name__ == '__main__':
  sys.exit(main())
