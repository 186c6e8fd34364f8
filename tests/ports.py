"""Addresses of test parties: `listening_pair` for two in this process, `free_port` for two child processes; and
`call_hello`, which says Hello to a party as a stranger would.

In one process each party listens on a port it picks itself (port 0), so no other program can take it first.
A party here and one in a child process do the same: this one listens first, the child is given its address,
and this one learns the child's port from its Hello (peer_addr with port 0). Two child processes started at
once both need their addresses on the command line: `free_port` finds one that was free a moment ago.
"""

import time

from efl.launcher import free_port  # noqa: F401  (re-exported: the one definition)

ANY_PORT = '127.0.0.1:0'


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


def call_hello(address, greeting, timeout_s=10.0):
  """Calls the Hello of the party at `address` with `greeting` and returns its reply.

  Asks again while the party answers UNAVAILABLE, as efl's own client does: its server may not listen yet, or
  its connect() may not have begun (it takes Hellos only from then on).
  """
  import grpc  # pylint: disable=import-outside-toplevel

  from efl.communicator.proto import communicator_pb2_grpc as pb_grpc  # pylint: disable=import-outside-toplevel

  deadline = time.time() + timeout_s
  with grpc.insecure_channel(address) as channel:
    while True:
      try:
        return pb_grpc.PeerServiceStub(channel).Hello(greeting, timeout=max(0.1, deadline - time.time()))
      except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNAVAILABLE or time.time() > deadline:
          raise
      time.sleep(0.05)
