"""Fixtures of the communicator tests."""

import pytest

from efl import native
from comm_helpers import Pairs

NATIVE_OK, NATIVE_WHY = native.available()


@pytest.fixture(params=['native', 'python'])
def transport(request, monkeypatch):
  """Runs a test once per transport (`EFL_NATIVE_TRANSPORT` on / off)."""
  if request.param == 'native' and not NATIVE_OK:
    pytest.skip('native transport not built: %s' % NATIVE_WHY)
  monkeypatch.setenv('EFL_NATIVE_TRANSPORT', 'on' if request.param == 'native' else 'off')
  return request.param


@pytest.fixture
def pairs(monkeypatch, transport):  # pylint: disable=unused-argument,redefined-outer-name
  monkeypatch.setenv('EFL_CLOSE_TIMEOUT_S', '3')
  p = Pairs()
  yield p
  p.close_all()
