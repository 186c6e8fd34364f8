"""Exceptions of the communicator.

Every error a `Communicator` raises is a `CommunicatorError`. Inside a TF `send`/`recv` op they surface as a
`tf.errors.UnknownError` whose message starts with the class name, e.g. "PeerFailedError: ..." (those that are
also a ValueError or TypeError, such as `UnknownNameError`, as `tf.errors.InvalidArgumentError`).
"""


class CommunicatorError(RuntimeError):
  """Base class of the communicator's errors."""


class PeerUnreachableError(CommunicatorError):
  """`connect()` gave up: the peer's server did not answer within the timeout."""


class HandshakeError(CommunicatorError):
  """The two parties do not fit together (same role, missing names, other protocol version)."""


class TLSHandshakeError(HandshakeError):
  """The TLS handshake with the peer failed (certificates from another CA, a wrong target name, ...)."""


class AddressInUseError(CommunicatorError):
  """The server could not listen on `local_addr`."""


class UnknownNameError(CommunicatorError, ValueError):
  """A name was sent or received that is not registered on the side that must handle it."""


class PeerFailedError(CommunicatorError):
  """The peer closed with an error (an ERROR frame); the message includes the peer's text."""


class PeerClosedError(CommunicatorError):
  """The peer finished normally (a BYE frame) and will send nothing more."""


class ConnectionLostError(CommunicatorError):
  """The connection broke without BYE or ERROR: the peer process died or the network failed."""


class StepMismatchError(CommunicatorError):
  """A message's step is not the one the receiver expects, or the peer moved past it without sending."""


class RecvTimeoutError(CommunicatorError, TimeoutError):
  """Deadline exceeded: a message did not arrive in time."""


class MessageTooLargeError(CommunicatorError, ValueError):
  """An encoded message is larger than the gRPC message size limit."""


class ClosedError(CommunicatorError):
  """This side's communicator is closed or not connected yet."""
