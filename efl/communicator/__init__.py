"""The transport between the leader and the follower: `Communicator`, its errors, and the TF `ops`."""

import importlib

from efl.transport.errors import (
  AddressInUseError,
  ClosedError,
  CommunicatorError,
  ConnectionLostError,
  HandshakeError,
  MessageTooLargeError,
  PeerClosedError,
  PeerFailedError,
  PeerUnreachableError,
  RecvTimeoutError,
  StepMismatchError,
  TLSHandshakeError,
  UnknownNameError,
)

# Loaded on first use: `communicator` needs the generated gRPC modules, and `python -m
# efl.communicator.build_proto`, which generates them, imports this package first. `ops` imports TensorFlow.
_LAZY = {
  'Communicator': 'efl.communicator.communicator',
  'PROTOCOL_VERSION': 'efl.communicator.handshake',
  'ROLES': 'efl.communicator.handshake',
  'ops': None,
}


def __getattr__(name):
  if name not in _LAZY:
    raise AttributeError("module 'efl.communicator' has no attribute %r" % name)
  if _LAZY[name] is None:
    value = importlib.import_module('efl.communicator.' + name)
  else:
    value = getattr(importlib.import_module(_LAZY[name]), name)
  globals()[name] = value
  return value
