"""What a transport does for a `Communicator`: the interface both transports implement.

A transport is one party's end of the connection to its peer: a server on the party's one listening address,
which answers Hello (through the `Greeter` it is given) and takes the peer's stream, and one outgoing stream to
the peer's server. Every frame of a party, data and control (BYE, ERROR) alike, travels in order on that one
stream; the receiving side files data frames into a mailbox that `recv` reads by (name, step), by the rules
whose texts are in `efl.transport.wire.TEXT`.

Two transports implement it: `efl.transport.grpcio` (pure Python, always available) and `efl.native` (gRPC's
C core, where it builds). The handshake's rules, the names and the settings stay with the communicator.
"""

import collections

# What a transport needs to know of its party: roles and the peer's address for error texts, the TLS and
# keepalive settings (`efl.communicator.settings`), gRPC's message size limits, how often a wait re-checks
# its deadline, and the grpcio server's thread count.
Config = collections.namedtuple(
  'Config',
  [
    'role',
    'peer_role',
    'peer_addr',
    'tls',
    'keepalive',
    'scan_s',
    'server_threads',
    'client_send_limit',
    'client_recv_limit',
    'server_send_limit',
    'server_recv_limit',
    'send_limit_variable',
  ],
)


class Greeter(object):
  """The server side of the handshake, which a transport's server calls (implemented by the communicator)."""

  def answer(self, request):
    """Returns the `Greeting` that answers the peer's `request` (a `Greeting`).

    None means that this party does not take Hellos yet (its connect() has not begun, so its names and info are
    not final): the server answers UNAVAILABLE with `wire.TEXT['HELLO_TOO_EARLY']`, and the caller asks again
    as if the server did not listen yet.
    """
    raise NotImplementedError

  def paired_instance(self):
    """The instance id of the party whose Hello was accepted ('' before one was): only its stream is taken."""
    raise NotImplementedError


class Transport(object):
  """One party's connection to its peer; see the module docstring.

  The life of one: `listen`, `hello` until the peer answered, `open_stream`, then `send`/`recv`; `finish`
  (BYE or ERROR, which also fails waiting receives), `wait_end` for the peer's own end, and `close`. A
  transport connects once; a reconnection takes a new one.
  """

  kind = None  # 'python' or 'native': what the communicator's log and tests name it

  def listen(self, local_addr, greeter):
    """Starts the server on `local_addr` ('host:0' picks a port), answering Hello with `greeter`.

    Returns:
      The port.

    Raises:
      AddressInUseError: it cannot listen there (the text says why).
    """
    raise NotImplementedError

  def set_peer_addr(self, peer_addr):
    """Sets the peer's address, before `hello` (a party that listened first learns it afterwards)."""
    raise NotImplementedError

  def hello(self, greeting, timeout_s):
    """Calls the peer's Hello with `greeting` and returns its answer (a `Greeting`).

    Raises:
      grpc.RpcError: the call failed; its code and details tell the handshake why.
    """
    raise NotImplementedError

  def open_stream(self, timeout_s, instance_id, send_limit, send_limit_variable):
    """Opens the stream to the peer as the party whose Hello carried `instance_id`.

    Messages over `send_limit` bytes are refused; `send_limit_variable` names the setting that raises it.
    """
    raise NotImplementedError

  @property
  def step(self):
    """The run counter that tags sync frames (the native kernels read it here)."""
    raise NotImplementedError

  @step.setter
  def step(self, value):
    raise NotImplementedError

  def set_phase(self, phase):
    """What this party's current runs do; received sync frames of the same step must carry the same."""
    raise NotImplementedError

  def send(self, record, name, step):
    """Queues `record`, one serialized `Frames` message, for the peer; frames arrive in the order sent.

    Raises:
      MessageTooLargeError: the record is over the send limit.
      PeerFailedError, PeerClosedError, ConnectionLostError, ClosedError: nothing can be sent anymore.
    """
    raise NotImplementedError

  def recv(self, name, step, sync, timeout_s):
    """Takes the next frame of `name`, which must carry `step`, and returns its array (see `Communicator.recv`)."""
    raise NotImplementedError

  def finish(self, error, timeout_s):
    """Sends BYE (`error` None) or ERROR with its text as the stream's last frame; waiting receives fail.

    Returns:
      False if delivering what was queued took over `timeout_s`.
    """
    raise NotImplementedError

  def wait_end(self, timeout_s):
    """Waits until the peer's stream ended (BYE, ERROR or loss); False if it did not within `timeout_s`."""
    raise NotImplementedError

  def peer_state(self, wait_for_detail_s=0):
    """(error class name, text) of why nothing more will come from the peer, or None while all is well.

    A lost connection's text waits up to `wait_for_detail_s` for the outgoing stream's account of it (a silent
    peer shows as a ping timeout there).
    """
    raise NotImplementedError

  def close(self):
    """Stops the server and the streams. Safe to call more than once."""
    raise NotImplementedError

  def successor(self):
    """A new transport of this kind and configuration, to connect again after this one was closed."""
    raise NotImplementedError
