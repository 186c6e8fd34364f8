"""The transport between the leader and the follower: `Communicator`, its errors, and the TF `ops`."""
import importlib

from efl.communicator.communicator import Communicator, PROTOCOL_VERSION, ROLES
from efl.communicator.errors import (AddressInUseError, ClosedError, CommunicatorError, ConnectionLostError,
                                     HandshakeError, MessageTooLargeError, PeerClosedError, PeerFailedError,
                                     PeerUnreachableError, RecvTimeoutError, StepMismatchError,
                                     TLSHandshakeError, UnknownNameError)


def __getattr__(name):
  # `ops` imports TensorFlow; load it on first use so the transport alone starts fast.
  if name == 'ops':
    return importlib.import_module('efl.communicator.ops')
  raise AttributeError("module 'efl.communicator' has no attribute %r" % name)
