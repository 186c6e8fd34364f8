"""Fixtures of the communicator tests."""
import pytest

from comm_helpers import Pairs


@pytest.fixture
def pairs(monkeypatch):
  monkeypatch.setenv('EFL_CLOSE_TIMEOUT_S', '3')
  p = Pairs()
  yield p
  p.close_all()
