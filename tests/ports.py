"""Addresses of test parties: `listening_pair` for two in this process, `free_port` for parties in others.

In one process each party listens on a port it picks itself (port 0), so no other program can take it first.
Parties in child processes need their addresses on the command line before they start: `free_port` finds one
that was free a moment ago.
"""

import socket

ANY_PORT = '127.0.0.1:0'


def free_port():
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def listening_pair(make_first, make_second):
  """Two unconnected communicators listening on ports they picked, each knowing the other's address.

  `make_first`/`make_second` take (peer_addr, local_addr) and return a `Communicator`; they are called in
  this order, so each may set its own environment first.
  """
  first = make_first(ANY_PORT, ANY_PORT)
  first_addr = '127.0.0.1:%d' % first.listen()
  second = make_second(first_addr, ANY_PORT)
  first.set_peer_addr('127.0.0.1:%d' % second.listen())
  return first, second


def pair(roles=('leader', 'follower'), **kwargs):
  """`listening_pair` of two `efl.Communicator(role, ..., **kwargs)`."""
  from efl.communicator import Communicator  # pylint: disable=import-outside-toplevel

  return listening_pair(*(lambda peer, local, r=r: Communicator(r, peer, local, **kwargs) for r in roles))
