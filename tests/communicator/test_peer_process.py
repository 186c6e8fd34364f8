"""A peer in a real second process: a SIGKILLed peer is detected from the broken stream within seconds."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import efl.communicator as ec
from comm_helpers import echo_peer_process
from ports import ANY_PORT

_HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def echo_peer():
  with echo_peer_process() as peer:
    yield peer


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


_FAILING_LEADER = """
import sys
import threading
from efl.communicator import Communicator
comm = Communicator('leader', sys.argv[1], sys.argv[2])
comm.register_send('x')
raise ValueError('model_fn has a bug')  # before connect(), as a graph-building error would
"""


@pytest.mark.parametrize('waiting_role', ['follower', 'leader'])
def test_peer_failing_before_connect_is_reported_at_once(waiting_role):
  """A party that dies before connecting tells the waiting peer why, instead of leaving it to its timeout."""
  comm = ec.Communicator(waiting_role, ANY_PORT, ANY_PORT)  # it learns the peer's port from its Hello
  comm.register_recv('x')
  port = comm.listen()
  script = _FAILING_LEADER.replace("'leader'", repr('follower' if waiting_role == 'leader' else 'leader'))
  outcome = []

  def connect():
    try:
      comm.connect(timeout_s=60)
      outcome.append(None)
    except Exception as e:  # pylint: disable=broad-except
      outcome.append(e)

  waiter = threading.Thread(target=connect)
  waiter.start()
  try:
    start = time.time()
    failed = subprocess.run(
      [sys.executable, '-c', script, '127.0.0.1:%d' % port, ANY_PORT], stderr=subprocess.PIPE, timeout=60
    )
    waiter.join(30)
    elapsed = time.time() - start
  finally:
    comm.close()
  assert failed.returncode == 1 and b'model_fn has a bug' in failed.stderr
  assert len(outcome) == 1 and isinstance(outcome[0], ec.PeerFailedError), outcome
  assert 'failed before the parties connected' in str(outcome[0]), outcome[0]
  assert 'ValueError: model_fn has a bug' in str(outcome[0]), outcome[0]
  assert elapsed < 20, elapsed  # Not the 60 s connect timeout.
