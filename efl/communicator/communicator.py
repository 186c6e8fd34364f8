"""The connection between the two parties of an efl job: `Communicator`.

Each party listens on its one `local_addr` and connects to the peer's `peer_addr`. `connect()` exchanges a
`Hello` in both directions and checks that the parties fit together (`handshake`). Afterwards each party writes
all its frames, in order, to one long-lived stream into the peer's server; there is no per-message reply. The
peer files arriving frames into a mailbox (one FIFO per name) that `recv()` reads.

The last frame of a stream is BYE (normal close) or ERROR (with the failure's text). A stream that ends
without either means the peer died or the network failed; gRPC keepalive pings detect a silent network
within seconds. Each of these wakes every waiting `recv()` with an error that names what happened.

The stream itself is a transport's (`efl.transport.base.Transport`): grpcio's in Python, or the native one on
gRPC's C core where it is built (`EFL_NATIVE_TRANSPORT`). Either talks to the other. This class keeps the names,
the settings and the life cycle, and delegates the rest.
"""

import atexit
import json
import logging
import sys
import threading
import time
import uuid
import weakref

import numpy as np

from efl import native
from efl.communicator import handshake
from efl.communicator import settings
from efl.communicator.handshake import PROTOCOL_VERSION, ROLES  # noqa: F401 (re-exported)
from efl.transport import base
from efl.transport import errors
from efl.transport import serde
from efl.transport import wire
from efl.transport.grpcio import GrpcioTransport

# A child of TF's logger, so efl's log settings (format, verbosity) apply.
_log = logging.getLogger('tensorflow.efl.communicator')

_CREATED, _CONNECTING, _CONNECTED, _CLOSING, _CLOSED = 'created', 'connecting', 'connected', 'closing', 'closed'

# Communicators not closed yet. At exit the thread pool of a server with a live stream would be joined
# forever, so whatever the program forgot to close is closed first (atexit runs the newest first).
_OPEN = weakref.WeakSet()


def _close_forgotten():
  # By the time atexit handlers run, an uncaught exception that ends the program is in sys.last_value.
  failure = getattr(sys, 'last_value', None)
  for comm in list(_OPEN):
    if failure is not None:
      comm.close(error='the %s process failed: %s: %s' % (comm.federal_role, type(failure).__name__, failure))
    elif comm._state == _CREATED:  # pylint: disable=protected-access
      comm.close()  # Never connected, nothing went wrong: the peer need not hear of it.
    else:
      comm.close(error='the %s process exited without closing its communicator' % comm.federal_role)


atexit.register(_close_forgotten)


def _port_of(addr):
  """The port of a 'host:port' address, None if it is not a number."""
  try:
    return int(addr.rsplit(':', 1)[1])
  except ValueError:
    return None


def _transport_class():
  """The transport class `EFL_NATIVE_TRANSPORT` asks for and this installation has."""
  mode = settings.native_transport()
  if mode == 'off':
    return GrpcioTransport
  ok, why = native.available()
  if not ok:
    if mode == 'on':
      raise errors.CommunicatorError(
        'EFL_NATIVE_TRANSPORT=on, but %s; set EFL_NATIVE_TRANSPORT=auto or off on both parties' % why
      )
    _log.debug('native transport off: %s', why)
    return GrpcioTransport
  from efl.native.endpoint import Endpoint  # pylint: disable=import-outside-toplevel

  return Endpoint


class Communicator(object):
  """Sends and receives named numpy arrays to and from the peer party.

  Usage: `register_recv`/`register_send` every name while the graph is built, `connect()` once, then
  `send`/`recv`, and `close()` at the end (also after a failure, with `error=`, so the peer learns why).

  Args:
    federal_role: 'leader' or 'follower'.
    peer_addr: host:port of the peer's server. With port 0, this party waits for the peer to call first and
        takes the port from the peer's Hello (the peer must be given this party's address).
    local_addr: host:port this party's server listens on (port 0 picks a free port; see `local_port`).
    client_thread_num: accepted for compatibility; the client needs no thread pool.
    server_thread_num: size of the server's thread pool (at least 4).
    scanning_interval_milliseconds: how often a waiting `recv` re-checks its deadline (default 1000).
    default_timeout_milliseconds: how long `recv` waits by default (600000); env `EFL_RECV_TIMEOUT_S`
        overrides it.
    worker_index, worker_num: accepted for compatibility with EFLS; efl runs one worker per party.

  Raises:
    ValueError: for a role other than 'leader'/'follower', or an inconsistent TLS setting.
  """

  def __init__(
    self,
    federal_role,
    peer_addr,
    local_addr,
    client_thread_num=None,
    server_thread_num=None,
    scanning_interval_milliseconds=None,
    default_timeout_milliseconds=None,
    worker_index=0,
    worker_num=1,
    app_id=None,
  ):
    if isinstance(peer_addr, int) and isinstance(local_addr, int):
      # EFLS order: (role, worker_index, worker_num, peer_addr, local_addr, client_thread_num, ...).
      worker_index, worker_num = peer_addr, local_addr
      peer_addr, local_addr = client_thread_num, server_thread_num
      client_thread_num, server_thread_num = scanning_interval_milliseconds, default_timeout_milliseconds
      scanning_interval_milliseconds = default_timeout_milliseconds = None
    if federal_role not in ROLES:
      raise ValueError('federal_role must be one of %s, got %r' % (', '.join(repr(r) for r in ROLES), federal_role))
    for arg, value in (('peer_addr', peer_addr), ('local_addr', local_addr)):
      if not isinstance(value, str) or ':' not in value:
        raise ValueError("%s must be a 'host:port' string, got %r" % (arg, value))
    if worker_num not in (None, 1) or worker_index not in (None, 0):
      _log.warning(
        'efl runs one worker per party; worker_index=%s, worker_num=%s are ignored', worker_index, worker_num
      )
    self._role = federal_role
    self._peer_role = handshake.peer_role_of(federal_role)
    self._given_peer_addr = peer_addr  # port 0: learned from the peer's Hello at each connect()
    self._local_addr = local_addr
    self._local_port = None
    # Read once: recv() runs every step, and reading the environment there costs as much as the rest of it.
    self._recv_timeout_s = settings.recv_timeout_s(default_timeout_milliseconds)
    self._tls = settings.tls_config()
    self._keepalive = settings.keepalive()
    self._config = base.Config(
      role=federal_role,
      peer_role=self._peer_role,
      peer_addr=peer_addr,
      tls=self._tls,
      keepalive=self._keepalive,
      scan_s=(scanning_interval_milliseconds or 1000) / 1000.0,
      server_threads=max(4, int(server_thread_num or 0)),
      client_send_limit=settings.message_size('CLIENT', 'SEND'),
      client_recv_limit=settings.message_size('CLIENT', 'RECEIVE'),
      server_send_limit=settings.message_size('SERVER', 'SEND'),
      server_recv_limit=settings.message_size('SERVER', 'RECEIVE'),
      send_limit_variable=settings.message_size_variable('CLIENT', 'SEND'),
    )
    self._app_id = app_id or ''
    self._instance_id = uuid.uuid4().hex
    self._recv_names = []
    self._send_names = []
    self._handshake = self._new_handshake()
    self._transport = _transport_class()(self._config)

    self._lock = threading.Lock()  # guards the state and what is set with it
    self._state = _CREATED
    self._close_error = None  # the error this side closed with
    self._phase = ''  # what this party's current run does; tags its sync frames
    self._peer_recv_names = frozenset()
    self._reset_callbacks = []
    _OPEN.add(self)

  def _new_handshake(self):
    return handshake.Handshake(
      self._role,
      self._app_id,
      self._instance_id,
      self._config.server_recv_limit,
      self._recv_names,
      self._send_names,
    )

  # ----------------------------------------------------------------------------------------- properties

  @property
  def federal_role(self):
    """'leader' or 'follower'."""
    return self._role

  @property
  def peer_addr(self):
    return self._config.peer_addr

  @property
  def local_addr(self):
    return self._local_addr

  @property
  def local_port(self):
    """The port the server listens on (known after `listen()` or `connect()` started it), else None."""
    return self._local_port

  @property
  def recv_names(self):
    return tuple(self._recv_names)

  @property
  def send_names(self):
    return tuple(self._send_names)

  @property
  def recv_timeout_s(self):
    """Seconds `recv` waits by default: env `EFL_RECV_TIMEOUT_S`, else `default_timeout_milliseconds`/1000."""
    return self._recv_timeout_s

  @property
  def peer_timeout_s(self):
    """How long a peer may answer nothing before it counts as lost (EFL_PEER_TIMEOUT_S)."""
    return self._keepalive.timeout_s

  @property
  def transport(self):
    """The `efl.transport.base.Transport` that carries the frames."""
    return self._transport

  @property
  def native(self):
    """The `efl.native.endpoint.Endpoint` that carries the frames, or None (the grpcio transport does)."""
    return self._transport if self._transport.kind == 'native' else None

  @property
  def step(self):
    """The run counter that tags sync messages; both parties advance it once per session run."""
    return self._transport.step

  def advance_step(self, n=1):
    """Adds `n` to `step` and returns the new value."""
    step = self._transport.step + n
    self._transport.step = step
    return step

  @property
  def connected(self):
    return self._state == _CONNECTED

  @property
  def phase(self):
    return self._phase

  def set_phase(self, phase):
    """Names what this party's next runs do (e.g. 'train', 'eval'); sync frames carry it to the peer."""
    self._phase = phase or ''
    self._transport.set_phase(self._phase)

  # --------------------------------------------------------------------------------------- registration

  def register_recv(self, name):
    """Declares a name this party receives. Call it before `connect()`; repeats are ignored."""
    self._register(self._recv_names, name, 'register_recv')

  def register_send(self, name):
    """Declares a name this party sends. Call it before `connect()`; repeats are ignored."""
    self._register(self._send_names, name, 'register_send')

  def _register(self, names, name, what):
    if not isinstance(name, str) or not name:
      raise ValueError('%s needs a non-empty string name, got %r' % (what, name))
    with self._lock:
      if self._state != _CREATED:
        raise errors.CommunicatorError(
          '%s(%r) after connect(): the peer checked the names at connect(); declare every name '
          'while the graph is built, before connect()' % (what, name)
        )
      if name not in names:
        names.append(name)

  # ------------------------------------------------------------------------------------------- connect

  def listen(self):
    """Starts this party's server now rather than in `connect()`, and returns its port.

    With `local_addr` on port 0, the port is known before the peer starts: two parties in one process listen
    first, then each learns the other's address (`set_peer_addr`), then both connect.
    """
    with self._lock:
      if self._state != _CREATED:
        raise errors.CommunicatorError('listen() before connect(); this communicator is %s' % self._state)
      if self._local_port is None:
        self._listen()
      return self._local_port

  def set_peer_addr(self, peer_addr):
    """Sets the peer's 'host:port' before `connect()` (for a peer whose port was picked when it listened)."""
    if not isinstance(peer_addr, str) or ':' not in peer_addr:
      raise ValueError("peer_addr must be a 'host:port' string, got %r" % (peer_addr,))
    with self._lock:
      if self._state != _CREATED:
        raise errors.CommunicatorError('set_peer_addr() before connect(); this communicator is %s' % self._state)
      self._given_peer_addr = peer_addr
      self._use_peer_addr(peer_addr)

  def _use_peer_addr(self, peer_addr):
    self._config = self._config._replace(peer_addr=peer_addr)
    self._transport.set_peer_addr(peer_addr)

  def connect(self, timeout_s=None, info=None):
    """Starts the server, waits for the peer and checks that both parties fit together.

    Args:
      timeout_s: how long to wait for the peer (default env `EFL_CONNECT_TIMEOUT_S`, 120 s).
      info: a JSON-serialisable dict handed to the peer.

    Returns:
      The peer's `info` dict.

    Raises:
      AddressInUseError: the server cannot listen on `local_addr`.
      PeerUnreachableError: the peer did not answer within `timeout_s`.
      TLSHandshakeError: the TLS handshake with the peer keeps failing.
      HandshakeError: both parties have the same role, a name is not registered on the other side,
          or the protocol versions differ.
    """
    if timeout_s is None:
      timeout_s = settings.connect_timeout_s()
    info_json = json.dumps(info if info is not None else {}, sort_keys=True)
    with self._lock:
      if self._state != _CREATED:
        raise errors.CommunicatorError('connect() may be called once; this communicator is %s' % self._state)
      self._state = _CONNECTING
    self._handshake.begin(info_json)
    _log.info(
      '%s connecting: local %s, peer %s, TLS %s, %s transport; receives %s; sends %s',
      self._role,
      self._local_addr,
      self._config.peer_addr,
      self._tls_summary(),
      'native' if self._transport.kind == 'native' else 'Python',
      self._recv_names,
      self._send_names,
    )
    _OPEN.add(self)
    try:
      if self._local_port is None:
        self._listen()
      deadline = time.time() + timeout_s
      if _port_of(self._given_peer_addr) == 0:
        learned = self._handshake.learn_peer_addr(self._given_peer_addr, self._bound_local_addr(), deadline, timeout_s)
        with self._lock:
          self._use_peer_addr(learned)
        _log.info("%s: the %s's Hello says it listens on %s", self._role, self._peer_role, learned)
      peer = self._handshake.run(
        self._transport, self._config.peer_addr, self._local_addr, self._tls, deadline, timeout_s, self.peer_timeout_s
      )
      info = self._handshake.info(peer)
      self._peer_recv_names = frozenset(peer.recv_names)
      # The largest message the stream may carry: this client's send limit or the peer server's receive limit.
      send_limit, variable = self._config.client_send_limit, self._config.send_limit_variable
      if peer.max_receive_message_size and peer.max_receive_message_size < send_limit:
        send_limit = peer.max_receive_message_size
        variable = '%s (on the %s)' % (settings.message_size_variable('SERVER', 'RECEIVE'), self._peer_role)
      self._transport.open_stream(max(5.0, deadline - time.time()), self._instance_id, send_limit, variable)
    except BaseException:
      with self._lock:
        self._state = _CLOSED
      self._handshake.end()
      self._transport.close()
      raise
    self._handshake.end()
    with self._lock:
      closed_meanwhile = self._state != _CONNECTING
      if not closed_meanwhile:
        self._state = _CONNECTED
    if closed_meanwhile:
      self._transport.close()
      raise errors.ClosedError('close() was called while connect() ran')
    _log.info('%s connected to the %s at %s', self._role, self._peer_role, self._config.peer_addr)
    return info

  def _tls_summary(self):
    client = 'on' if self._tls.peer_ca else 'off'
    server = 'on' if self._tls.my_cert else 'off'
    return 'client %s / server %s' % (client, server)

  def _listen(self):
    address = self._local_addr
    if self._local_port:  # after reset(): the peer's new process finds this party where it was (port 0 too)
      address = '%s:%d' % (address.rsplit(':', 1)[0], self._local_port)
    try:
      self._local_port = self._transport.listen(address, self._handshake)
    except errors.AddressInUseError as e:
      raise errors.AddressInUseError(
        'cannot listen on local_addr %s (%s); another process may use the port: stop it or pass '
        'another --local_addr' % (self._local_addr, e)
      )
    self._handshake.listen_port = self._local_port
    _log.info('%s listening on %s', self._role, self._bound_local_addr())

  def _bound_local_addr(self):
    return '%s:%d' % (self._local_addr.rsplit(':', 1)[0], self._local_port)

  # -------------------------------------------------------------------------------------- send and recv

  def _raise_unless_connected(self, what):
    state = self._state
    if state == _CREATED:
      raise errors.ClosedError('%s before connect(); connect the communicator first' % what)
    if state in (_CLOSING, _CLOSED):
      raise errors.ClosedError(wire.closed_text(self._role, self._close_error))
    if state != _CONNECTED:
      raise errors.ClosedError(wire.TEXT['NOT_CONNECTED'] % self._role)

  def send(self, name, step, array, sync=True):
    """Queues `array` for the peer and returns at once; frames reach the peer in the order sent.

    Queued frames are delivered unless the connection breaks; `close()` waits for them. A broken connection
    shows at the next `send` or `recv`, not at the one whose frame it lost.

    Args:
      name: a name registered with `register_send` here and `register_recv` at the peer.
      step: the run counter (`self.step`) for sync messages, or the channel's own sequence number.
      array: a numeric/bool array, or an array of byte strings.
      sync: whether `step` is the run counter (see `recv`).

    Raises:
      UnknownNameError: `name` is not registered on both sides.
      MessageTooLargeError: the encoded message exceeds the gRPC limit.
      PeerFailedError, PeerClosedError, ConnectionLostError, ClosedError: nothing can be sent anymore.
      TypeError: the dtype cannot be sent.
    """
    self._raise_unless_connected('send(%r)' % name)
    if name not in self._peer_recv_names:
      raise errors.UnknownNameError(
        "cannot send %r: the %s does not receive it (its names: %s); add a recv of %r to the %s's model"
        % (name, self._peer_role, sorted(self._peer_recv_names), name, self._peer_role)
      )
    if name not in self._send_names:
      raise errors.UnknownNameError(
        'cannot send %r: it was not declared with register_send before '
        'connect() (sent names: %s)' % (name, self._send_names)
      )
    array = np.asarray(array)
    record = serde.encode_record(name, step, array, sync, self._phase)
    if _log.isEnabledFor(logging.DEBUG):
      _log.debug('send %r step %d (%s %s, %d bytes)', name, step, array.dtype, list(array.shape), len(record))
    self._transport.send(record, name, step)

  def recv(self, name, step, timeout_s=None, sync=True):
    """Returns the next message of `name`, waiting for it if needed.

    Messages of one name form a FIFO; the head must carry `step`. For sync messages the stream order
    also tells when a message can no longer come: once the peer sent a sync message of a later step,
    a missing `(name, step)` is an error at once rather than a wait until the deadline.

    Args:
      name: a name registered with `register_recv`.
      step: the expected step (the run counter for sync messages).
      timeout_s: how long to wait (default: `default_timeout_milliseconds`, env `EFL_RECV_TIMEOUT_S`).
      sync: whether `step` is the run counter.

    Returns:
      The array, writable; string arrays as object arrays of `bytes`.

    Raises:
      UnknownNameError: `name` was not registered with `register_recv`.
      StepMismatchError: the head message has another step, or the peer moved past `step`.
      PeerFailedError: the peer sent ERROR (its text is included).
      PeerClosedError: the peer sent BYE.
      ConnectionLostError: the peer died or the network failed.
      RecvTimeoutError: nothing arrived within the timeout.
      ClosedError: this side is not connected or closed.
    """
    if name not in self._recv_names:
      raise errors.UnknownNameError(
        'cannot recv %r: it was not declared with register_recv before '
        'connect() (received names: %s)' % (name, self._recv_names)
      )
    self._raise_unless_connected('recv(%r)' % name)
    value = self._transport.recv(name, step, sync, self.recv_timeout_s if timeout_s is None else timeout_s)
    if _log.isEnabledFor(logging.DEBUG):
      _log.debug('recv %r step %d', name, step)
    return value

  def failure(self, wait_for_detail_s=0):
    """(error class name, text) of why nothing more will come from the peer, or None while all is well.

    Args:
      wait_for_detail_s: when the connection was lost, wait up to this long for the other direction's stream
        to break too and say why (a silent peer shows as a ping timeout there).
    """
    if self._state == _CREATED:
      return None
    return self._transport.peer_state(wait_for_detail_s)

  # ---------------------------------------------------------------------------------------------- close

  def close(self, error=None):
    """Tells the peer this party is done, delivers what is in flight both ways, and stops the transport.

    Sends BYE (or ERROR with `error`'s text), waits at most `EFL_CLOSE_TIMEOUT_S` (10 s) for this party's
    frames to be delivered and for the peer's own BYE/ERROR, then stops the server and the stream. Safe to
    call more than once and from any state; never raises for the peer's state.

    Args:
      error: None for a normal end, else an exception or text sent to the peer as the reason.
    """
    with self._lock:
      if self._state in (_CLOSING, _CLOSED):
        return
      was_connected = self._state == _CONNECTED
      never_connected = self._state == _CREATED
      self._state = _CLOSING
      if error is not None:
        self._close_error = (
          '%s: %s' % (type(error).__name__, error) if isinstance(error, BaseException) else str(error)
        )[: handshake.MAX_ERROR_TEXT]
    self._handshake.cancel()
    timeout_s = settings.close_timeout_s()
    deadline = time.time() + timeout_s
    # BYE or ERROR follows the last data frame on the one stream.
    if not self._transport.finish(self._close_error, timeout_s) and was_connected:
      _log.warning('close: the last frames to the %s were not delivered within %.0f s', self._peer_role, timeout_s)
    if was_connected and not self._transport.wait_end(max(0.0, deadline - time.time())):
      _log.warning('close: the %s did not close within %.0f s; stopping anyway', self._peer_role, timeout_s)
    if never_connected and self._close_error is not None:
      self._handshake.announce_failure(self._transport, self._close_error)
    with self._lock:
      self._state = _CLOSED
    self._transport.close()
    _OPEN.discard(self)
    _log.info('%s communicator closed%s', self._role, ' after an error' if self._close_error else '')
    if self._close_error:  # the error itself reached whoever called close(); the peer got it too
      _log.debug('%s communicator closed with error: %s', self._role, self._close_error)

  def add_reset_callback(self, fn):
    """Calls `fn()` after every reset().

    State kept per connection elsewhere (e.g. a reader's side channel) then starts afresh with the peer's new
    process.
    """
    self._reset_callbacks.append(fn)

  def reset(self):
    """Drops the connection to a lost peer and returns to the state before connect(), step 0, the same names.

    Then connect() pairs this party with the peer's new process (recovery without a restart). The old transport
    stops and a new one takes its place (the native kernels find it by the old one's name); it listens at once on
    the port the old one had, where the peer's new process looks for this party.
    """
    with self._lock:
      lost = (self._transport.peer_state() or ('',))[0] == 'ConnectionLostError'
      if self._state in (_CLOSING, _CLOSED) and self._close_error is None and not lost:
        raise errors.ClosedError("this %s's communicator was closed; it cannot reconnect" % self._role)
      self._state = _CLOSING  # what still runs against the old connection fails from here on
    self._handshake.cancel()
    self._transport.close()  # wakes and fails whatever still waits on the old connection
    with self._lock:
      self._transport = self._transport.successor()
      self._handshake = self._new_handshake()
      if self._config.peer_addr != self._given_peer_addr:
        self._use_peer_addr(self._given_peer_addr)  # the peer's new process may listen on another port
      if self._local_port is not None:
        self._listen()
      self._state = _CREATED
      self._phase = ''
      self._peer_recv_names = frozenset()
      self._close_error = None
    for fn in self._reset_callbacks:
      fn()
    _log.info('%s communicator reset: waiting for the %s to connect again', self._role, self._peer_role)

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    self.close(error=exc)
    return False

  def __repr__(self):
    return 'Communicator(%s, peer %s, local %s, %s, step %d)' % (
      self._role,
      self._config.peer_addr,
      self._local_addr,
      self._state,
      self.step,
    )
