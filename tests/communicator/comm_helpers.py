"""Helpers for the communicator tests: pairs of connected communicators in one process, on ports they pick.

A uniquely named module rather than conftest.py, which other test directories also have.
"""

import contextlib
import os
import subprocess
import sys
import threading

from efl.communicator import Communicator
from ports import ANY_PORT, pair


def connect_both(first, second, timeout_s=10.0, infos=(None, None)):
  """Connects two communicators concurrently; returns (first's result, second's result), each a dict or
  the exception connect raised."""
  results = [None, None]

  def run(i, comm):
    try:
      results[i] = comm.connect(timeout_s=timeout_s, info=infos[i])
    except Exception as e:  # pylint: disable=broad-except
      results[i] = e

  threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate((first, second))]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout_s + 15)
  return results


class Pairs(object):
  """Creates leader/follower pairs on ports they pick and closes them all at teardown."""

  def __init__(self):
    self.comms = []

  def make(self, leader_send=(), follower_send=(), roles=('leader', 'follower'), **kwargs):
    """Returns an unconnected pair; names the leader sends are registered as recv at the follower and
    vice versa."""
    leader, follower = pair(roles, **kwargs)
    for name in leader_send:
      leader.register_send(name)
      follower.register_recv(name)
    for name in follower_send:
      follower.register_send(name)
      leader.register_recv(name)
    self.comms += [leader, follower]
    return leader, follower

  def connected(self, leader_send=(), follower_send=(), **kwargs):
    leader, follower = self.make(leader_send, follower_send, **kwargs)
    results = connect_both(leader, follower)
    for r in results:
      if isinstance(r, Exception):
        raise r
    return leader, follower

  def close_all(self):
    close_all(*self.comms)


def close_all(*comms):
  """Closes communicators concurrently, as two processes would."""
  threads = [threading.Thread(target=c.close) for c in comms]
  for t in threads:
    t.start()
  for t in threads:
    t.join(30)


@contextlib.contextmanager
def echo_peer_process():
  """A leader `Communicator` (sends 'x', receives 'y') and a child process echoing 'x' back as 'y' (echo_peer.py).

  Yields (comm, child Popen); the child inherits this process's environment. Both listen on ports they pick:
  the leader first, then the child, given the leader's address; the leader learns the child's port from its
  Hello (its peer_addr has port 0).
  """
  comm = Communicator('leader', ANY_PORT, ANY_PORT)
  comm.register_send('x')
  comm.register_recv('y')
  port = comm.listen()
  proc = subprocess.Popen(
    [
      sys.executable,
      os.path.join(os.path.dirname(os.path.abspath(__file__)), 'echo_peer.py'),
      '127.0.0.1:%d' % port,
      ANY_PORT,
    ]
  )
  try:
    yield comm, proc
  finally:
    if proc.poll() is None:
      proc.kill()
    proc.wait(10)
    comm.close()
