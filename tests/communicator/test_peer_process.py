"""A peer in a real second process: a SIGKILLed peer is detected from the broken stream within seconds."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import efl.communicator as ec
from comm_helpers import free_port

_HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def echo_peer():
  local, peer = free_port(), free_port()
  proc = subprocess.Popen([sys.executable, os.path.join(_HERE, 'echo_peer.py'), '127.0.0.1:%d' % local,
                           '127.0.0.1:%d' % peer])
  comm = ec.Communicator('leader', '127.0.0.1:%d' % peer, '127.0.0.1:%d' % local)
  comm.register_send('x')
  comm.register_recv('y')
  yield comm, proc
  if proc.poll() is None:
    proc.kill()
  proc.wait(10)
  comm.close()


def test_killed_peer_is_detected_within_seconds(echo_peer, monkeypatch):
  monkeypatch.setenv('EFL_CLOSE_TIMEOUT_S', '2')
  comm, proc = echo_peer
  info = comm.connect(timeout_s=60)
  assert info == {'pid': proc.pid}
  data = np.random.rand(256, 128).astype(np.float32)
  for step in range(5):
    comm.send('x', step, data)
    np.testing.assert_array_equal(comm.recv('y', step, timeout_s=30), data)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait(10)
  start = time.time()
  with pytest.raises(ec.ConnectionLostError, match='follower process died or the network failed'):
    comm.recv('y', 5, timeout_s=60)  # Waiting only: the broken incoming stream must wake it.
  assert time.time() - start < 10
  # Every later call fails the same way at once.
  with pytest.raises(ec.ConnectionLostError):
    comm.send('x', 5, data)
  closing = time.time()
  comm.close()
  assert time.time() - closing < 5
