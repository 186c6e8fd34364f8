"""Writes the data of this example into the directory it is run from: the federated MNIST example's data.

Usage (options as in ../mnist/generate_data.py)::

  cd efl/example/multitask && python generate_data.py
"""

import sys

from efl.example.mnist.generate_data import main

if __name__ == '__main__':
  sys.exit(main())
