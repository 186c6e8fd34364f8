"""Fixtures of the data reader tests (the helpers live in data_helpers.py)."""

import pytest
import tensorflow.compat.v1 as tf

from data_helpers import CommPairs


@pytest.fixture
def comm_pairs(monkeypatch):
  monkeypatch.setenv('EFL_CLOSE_TIMEOUT_S', '3')
  monkeypatch.setenv('EFL_RECV_TIMEOUT_S', '30')
  pairs = CommPairs()
  yield pairs
  pairs.close_all()


@pytest.fixture(autouse=True)
def fresh_graph():
  """Each test starts with an empty default graph."""
  with tf.Graph().as_default() as graph:
    yield graph
