"""Writes the MNIST halves of this example: the same data as the federated MNIST example.

Like every example's `generate_data.py`, it writes into the directory it is run from, where the example's
readers look for `./leader_train` .... Usage (options as in ../mnist/generate_data.py)::

  cd efl/example/entropy_mnist && python generate_data.py
"""

import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
  spec = importlib.util.spec_from_file_location(
    'mnist_generate_data', os.path.join(_HERE, '..', 'mnist', 'generate_data.py')
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.main(sys.argv[1:] if argv is None else argv)


if __name__ == '__main__':
  sys.exit(main())
