"""Writes the MNIST halves of this example into this directory: the same data as the federated MNIST example.

Usage (options as in ../mnist/generate_data.py)::

  cd efl/example/entropy_mnist && python generate_data.py
"""
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
  argv = list(sys.argv[1:] if argv is None else argv)
  if not any(a == '--output_dir' or a.startswith('--output_dir=') for a in argv):
    argv += ['--output_dir', _HERE]
  spec = importlib.util.spec_from_file_location(
      'mnist_generate_data', os.path.join(_HERE, '..', 'mnist', 'generate_data.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.main(argv)


if __name__ == '__main__':
  sys.exit(main())
