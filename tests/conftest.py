"""Test configuration: makes tests/ importable (proc_helpers) and provides the real-MNIST fixture."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from proc_helpers import ROOT  # noqa: E402


@pytest.fixture
def mnist_npz():
  path = os.environ.get('EFL_MNIST_NPZ')
  if not path:
    cand = os.path.join(ROOT, '..', 'shared', 'datasets', 'mnist.npz')
    path = cand if os.path.exists(cand) else None
  if not path or not os.path.exists(path):
    pytest.skip('real MNIST not available: set EFL_MNIST_NPZ to a Keras-layout mnist.npz')
  return os.path.abspath(path)
