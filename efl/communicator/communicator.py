"""The transport between the two parties of an efl job.

Each party runs a gRPC server on its `local_addr` and a client to the peer's `peer_addr`. `connect()` exchanges
a `Hello` in both directions and checks that the parties fit together. Afterwards each party writes all its
frames, in order, to one long-lived client stream into the peer's server; there is no per-message reply. The
server files arriving frames into a mailbox (one FIFO per name) that `recv()` reads.

The last frame of a stream is BYE (normal close) or ERROR (with the failure's text). A stream that ends
without either means the peer died or the network failed; gRPC keepalive pings detect a silent network
within seconds. Each of these wakes every waiting `recv()` with an error that names what happened.

Two transports serve this same protocol on the party's one address, so either can talk to the other: grpcio
(this module) and, where it is built, the native one (`efl.native`, gRPC's C core), whose endpoint is then the
party's only server and client. Its stream carries every frame, BYE and ERROR included, in order; it hands each
Hello to `_on_hello` here, so the handshake's rules are the same on both.
"""

import atexit
import collections
import json
import logging
import queue
import re
import sys
import threading
import time
import uuid
import weakref

# Imported here, before atexit.register below, so that close() at exit runs before this module joins the
# server's threads.
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np

from efl import native
from efl.transport import errors
from efl.transport import wire
from efl.communicator import serde
from efl.communicator import settings
from efl.communicator.proto import communicator_pb2 as pb
from efl.communicator.proto import communicator_pb2_grpc as pb_grpc

# A child of TF's logger, so efl's log settings (format, verbosity) apply.
_log = logging.getLogger('tensorflow.efl.communicator')

PROTOCOL_VERSION = 1
ROLES = ('leader', 'follower')

_CREATED, _CONNECTING, _CONNECTED, _CLOSING, _CLOSED = 'created', 'connecting', 'connected', 'closing', 'closed'
# Signals the end of the outgoing stream to its generator.
_END_OF_STREAM = object()
# gRPC error details that mean the TLS handshake failed rather than "nobody listens yet".
_TLS_ERROR = re.compile(r'ssl|tls|handshake|certificate|tsi_|wrong_version_number', re.IGNORECASE)
# How long a TLS failure must persist before connect() gives up on it (the peer may be restarting).
_TLS_GRACE_S = 4.0
_WAIT_LOG_INTERVAL_S = 5.0
_MAX_ERROR_TEXT = 16 * 1024
_ANNOUNCE_TIMEOUT_S = 2.0

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


_LOSS_DETAIL_GRACE_S = 0.5


def _keepalive_options(keepalive, server):
  # Pings every keepalive.time_ms; a peer that does not answer within keepalive.timeout_ms more is dead
  # (settings.keepalive, EFL_PEER_TIMEOUT_S). The server must accept the client's pings. (gRPC also bounds the
  # wait for a ping's ack by ping_timeout.)
  options = [
    ('grpc.keepalive_time_ms', keepalive.time_ms),
    ('grpc.keepalive_timeout_ms', keepalive.timeout_ms),
    ('grpc.http2.ping_timeout_ms', keepalive.timeout_ms),
    ('grpc.keepalive_permit_without_calls', 1),
    ('grpc.http2.max_pings_without_data', 0),
  ]
  if server:
    options += [
      ('grpc.http2.min_ping_interval_without_data_ms', min(5000, keepalive.time_ms)),
      ('grpc.http2.max_ping_strikes', 0),
    ]
  return options


_SERVICE = pb.DESCRIPTOR.services_by_name['PeerService'].full_name


def _as_is(data):
  return data


def _decode_frame(data):
  return serde.decode(serde.parse_frame(data))


def _handlers(comm):
  """The server side of `PeerService`, handing the peer's RPCs to `comm`.

  The stream's messages reach `comm` as the bytes received: `serde.parse_frames` reads them without copying
  the tensors inside.
  """

  # pylint: disable=protected-access
  def stream(batches, context):
    comm._on_stream(batches, context)
    return pb.StreamEnd()

  return grpc.method_handlers_generic_handler(
    _SERVICE,
    {
      'Hello': grpc.unary_unary_rpc_method_handler(
        lambda request, context: comm._on_hello(request),
        request_deserializer=pb.Greeting.FromString,
        response_serializer=pb.Greeting.SerializeToString,
      ),
      'Stream': grpc.stream_unary_rpc_method_handler(
        stream, request_deserializer=_as_is, response_serializer=pb.StreamEnd.SerializeToString
      ),
    },
  )


class Communicator(object):
  """Sends and receives named numpy arrays to and from the peer party.

  Usage: `register_recv`/`register_send` every name while the graph is built, `connect()` once, then
  `send`/`recv`, and `close()` at the end (also after a failure, with `error=`, so the peer learns why).

  Args:
    federal_role: 'leader' or 'follower'.
    peer_addr: host:port of the peer's server.
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
    self._app_id = app_id or ''
    self._refusals_logged = set()  # kinds of refused Hello already logged (a flood is logged once)
    self._peer_role = ROLES[1 - ROLES.index(federal_role)]
    self._peer_addr = peer_addr
    self._local_addr = local_addr
    self._local_port = None
    self._server_threads = max(4, int(server_thread_num or 0))
    self._scan_s = (scanning_interval_milliseconds or 1000) / 1000.0
    # Read once: recv() runs every step, and reading the environment there costs as much as the rest of it.
    self._recv_timeout_s = settings.recv_timeout_s(default_timeout_milliseconds)
    self._tls = settings.tls_config()
    self._keepalive = settings.keepalive()
    self._client_send_limit = settings.message_size('CLIENT', 'SEND')
    self._client_recv_limit = settings.message_size('CLIENT', 'RECEIVE')
    self._server_send_limit = settings.message_size('SERVER', 'SEND')
    self._server_recv_limit = settings.message_size('SERVER', 'RECEIVE')
    self._instance_id = uuid.uuid4().hex
    self._native = self._make_native()
    self._hello_thread = None  # answers the native server's Hello requests

    self._recv_names = []
    self._send_names = []
    self._step = 0

    # Guards everything below; waiting recv() calls sleep on it.
    self._cond = threading.Condition()
    self._state = _CREATED
    self._info_json = '{}'
    self._peer_hello = None
    self._peer_recv_names = frozenset()
    # The largest message the stream may carry: this client's send limit or the peer server's receive limit.
    self._send_limit = self._client_send_limit
    self._send_limit_variable = settings.message_size_variable('CLIENT', 'SEND')
    self._mailbox = collections.defaultdict(collections.deque)
    self._peer_sync_step = None  # Highest step of a sync frame received.
    self._peer_sync_phase = ''  # Phase of that frame.
    self._phase = ''  # What this party's current run does; tags its sync frames.
    self._peer_end = None  # (kind, text) once the peer's BYE or ERROR arrived.
    self._lost = None  # Why the connection broke, once it did.
    self._lost_detail = None  # What the other direction's stream said about it, if it broke later.
    self._close_error = None  # The error this side closed with.
    self._incoming = False  # Whether the peer's stream is attached to our server.

    self._server = None
    self._channel = None
    self._stub = None
    self._outbox = queue.Queue()
    self._epoch = 0  # counts reset()s: callbacks of an older connection must not touch the new one
    self._reset_callbacks = []
    self._stream_call = None
    self._stream_done = threading.Event()
    self._peer_failure = None  # What the peer said when it failed before the parties connected.
    _OPEN.add(self)

  def _make_native(self):
    """The native transport's endpoint, or None where the Python transport carries the data frames."""
    mode = settings.native_transport()
    if mode == 'off':
      return None
    if settings.recovery_timeout_s() is not None:
      # reset() reconnects in place, which the native endpoint (fixed in the graph's kernels) cannot.
      if mode == 'on':
        raise errors.CommunicatorError(
          'EFL_RECOVERY_TIMEOUT_S needs the Python transport, but '
          'EFL_NATIVE_TRANSPORT=on; set it to auto or off on both parties'
        )
      _log.info('recovery is on (EFL_RECOVERY_TIMEOUT_S): the Python transport carries the data')
      return None
    ok, why = native.available()
    if not ok:
      if mode == 'on':
        raise errors.CommunicatorError(
          'EFL_NATIVE_TRANSPORT=on, but %s; set EFL_NATIVE_TRANSPORT=auto or off on both parties' % why
        )
      _log.debug('native transport off: %s', why)
      return None
    return native.Endpoint(
      self._role,
      self._peer_role,
      self._peer_addr,
      self._client_send_limit,
      settings.message_size_variable('CLIENT', 'SEND'),
      self._server_recv_limit,
      self._scan_s,
      self._tls,
      self._keepalive,
    )

  # ----------------------------------------------------------------------------------------- properties

  @property
  def federal_role(self):
    """'leader' or 'follower'."""
    return self._role

  @property
  def peer_addr(self):
    return self._peer_addr

  @property
  def local_addr(self):
    return self._local_addr

  @property
  def local_port(self):
    """The port the server listens on (known after `connect()` started it), else None."""
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
  def native(self):
    """The `efl.native.Endpoint` that carries the data frames, or None (the Python transport does)."""
    return self._native

  @property
  def step(self):
    """The run counter that tags sync messages; both parties advance it once per session run."""
    return self._step

  def advance_step(self, n=1):
    """Adds `n` to `step` and returns the new value."""
    self._step += n
    if self._native is not None:
      self._native.step = self._step  # The native kernels read it there.
    return self._step

  @property
  def connected(self):
    return self._state == _CONNECTED

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
    with self._cond:
      if self._state != _CREATED:
        raise errors.CommunicatorError(
          '%s(%r) after connect(): the peer checked the names at connect(); declare every name '
          'while the graph is built, before connect()' % (what, name)
        )
      if name not in names:
        names.append(name)

  # ------------------------------------------------------------------------------------------- connect

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
    with self._cond:
      if self._state != _CREATED:
        raise errors.CommunicatorError('connect() may be called once; this communicator is %s' % self._state)
      self._state = _CONNECTING
      self._info_json = info_json
    _log.info(
      '%s connecting: local %s, peer %s, TLS %s, %s transport; receives %s; sends %s',
      self._role,
      self._local_addr,
      self._peer_addr,
      self._tls_summary(),
      'native' if self._native is not None else 'Python',
      self._recv_names,
      self._send_names,
    )
    _OPEN.add(self)
    try:
      self._start_server()
      self._open_channel()
      deadline = time.time() + timeout_s
      peer = self._handshake(deadline, timeout_s)
      if self._native is not None:
        self._native.set_send_limit(self._send_limit, self._send_limit_variable)
        self._native.connect(self._peer_addr, max(5.0, deadline - time.time()), self._instance_id)
    except BaseException:
      with self._cond:
        self._state = _CLOSED
        self._cond.notify_all()
      self._shutdown_transport(grace_s=0)
      raise
    if self._native is None:
      # Frames are serialized by send(); the stream writes the bytes as they are.
      method = '/%s/Stream' % _SERVICE
      stream = self._channel.stream_unary(
        method, request_serializer=_as_is, response_deserializer=pb.StreamEnd.FromString
      )
      self._stream_call = stream.future(
        self._outgoing_batches(), metadata=((wire.INSTANCE_METADATA_KEY, self._instance_id),)
      )
      epoch = self._epoch
      self._stream_call.add_done_callback(lambda call: self._on_stream_call_done(call, epoch))
    with self._cond:
      closed_meanwhile = self._state != _CONNECTING
      if not closed_meanwhile:
        self._state = _CONNECTED
        self._cond.notify_all()
    if closed_meanwhile:
      self._outbox.put(_END_OF_STREAM)
      self._shutdown_transport(grace_s=0)
      raise errors.ClosedError('close() was called while connect() ran')
    _log.info('%s connected to the %s at %s', self._role, self._peer_role, self._peer_addr)
    return peer

  def _tls_summary(self):
    client = 'on' if self._tls.peer_ca else 'off'
    server = 'on' if self._tls.my_cert else 'off'
    return 'client %s / server %s' % (client, server)

  def _start_server(self):
    if self._native is not None:
      try:
        self._local_port = self._native.listen(self._local_addr)
      except errors.AddressInUseError as e:
        raise errors.AddressInUseError(
          'cannot listen on local_addr %s (%s); another process may use the port: stop it or pass '
          'another --local_addr' % (self._local_addr, e)
        )
      self._hello_thread = threading.Thread(
        target=self._native.serve_hellos, args=(self._answer_hello,), name='efl-comm-hello', daemon=True
      )
      self._hello_thread.start()
      return
    options = [
      ('grpc.so_reuseport', 0),
      ('grpc.max_send_message_length', self._server_send_limit),
      ('grpc.max_receive_message_length', self._server_recv_limit),
    ] + _keepalive_options(self._keepalive, True)
    server = grpc.server(
      ThreadPoolExecutor(max_workers=self._server_threads, thread_name_prefix='efl-comm-server'),
      options=options,
      maximum_concurrent_rpcs=None,
    )
    server.add_generic_rpc_handlers((_handlers(self),))
    try:
      if self._tls.my_cert:
        creds = grpc.ssl_server_credentials(
          [(self._tls.my_key, self._tls.my_cert)],
          root_certificates=self._tls.peer_ca,
          require_client_auth=bool(self._tls.peer_ca),
        )
        port = server.add_secure_port(self._local_addr, creds)
      else:
        port = server.add_insecure_port(self._local_addr)
    except RuntimeError as e:
      port, cause = 0, e
    else:
      cause = None
    if not port:
      raise errors.AddressInUseError(
        'cannot listen on local_addr %s (%s); another process may use the port: stop it or pass '
        'another --local_addr' % (self._local_addr, cause or 'bind failed')
      )
    server.start()
    self._server = server
    self._local_port = port

  def _open_channel(self):
    options = [
      ('grpc.max_send_message_length', self._client_send_limit),
      ('grpc.max_receive_message_length', self._client_recv_limit),
      # Retry a refused connection quickly while the peer starts.
      ('grpc.initial_reconnect_backoff_ms', 100),
      ('grpc.min_reconnect_backoff_ms', 100),
      ('grpc.max_reconnect_backoff_ms', 1000),
    ] + _keepalive_options(self._keepalive, False)
    if self._tls.peer_ca:
      if self._tls.target_name_override:
        options.append(('grpc.ssl_target_name_override', self._tls.target_name_override))
      creds = grpc.ssl_channel_credentials(
        root_certificates=self._tls.peer_ca, private_key=self._tls.my_key, certificate_chain=self._tls.my_cert
      )
      self._channel = grpc.secure_channel(self._peer_addr, creds, options=options)
    else:
      self._channel = grpc.insecure_channel(self._peer_addr, options=options)
    self._stub = pb_grpc.PeerServiceStub(self._channel)

  def _my_greeting(self, error=''):
    return pb.Greeting(
      role=self._role,
      protocol_version=PROTOCOL_VERSION,
      recv_names=self._recv_names,
      send_names=self._send_names,
      info=self._info_json,
      instance_id=self._instance_id,
      max_receive_message_size=self._server_recv_limit,
      error=error,
      app_id=self._app_id,
    )

  def _handshake(self, deadline, timeout_s):
    """Calls the peer's Hello until it answers, then waits for the peer's own Hello."""
    start = time.time()
    next_log = start + _WAIT_LOG_INTERVAL_S
    backoff = 0.05
    last_error = None
    tls_failing_since = None
    tls_error = None  # The last TLS failure seen, if any.
    reply = None
    while reply is None:
      self._check_peer_hello_if_any()
      if self._state != _CONNECTING:
        raise errors.ClosedError('close() was called while connect() waited for the %s' % self._peer_role)
      now = time.time()
      try:
        reply = self._stub.Hello(self._my_greeting(), timeout=max(0.05, min(2.0, deadline - now)))
      except grpc.RpcError as e:
        code, details = e.code(), e.details() or ''
        if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
          # A peer that already refused this party's Hello shuts down and cancels ours: its own Greeting,
          # if it arrived, names the real problem.
          self._check_peer_hello_if_any()
          raise errors.HandshakeError(
            'the server at peer_addr %s answered Hello with %s: %s; is it an efl party of the same '
            'version?' % (self._peer_addr, code.name, details)
          )
        last_error = '%s: %s' % (code.name, details)
        _log.debug('Hello to the %s at %s failed: %s', self._peer_role, self._peer_addr, last_error)
        now = time.time()
        # A TLS server that rejects the client's certificate just closes the connection.
        rejected = self._tls.peer_ca is not None and 'socket closed' in details.lower()
        if rejected or _TLS_ERROR.search(details):
          tls_error = details + (
            ' (the server closed the connection during the TLS handshake, so it probably '
            'rejected the certificate of this party)'
            if rejected
            else ''
          )
          tls_failing_since = tls_failing_since or now
          if now - tls_failing_since >= _TLS_GRACE_S:
            raise errors.TLSHandshakeError(self._tls_message(tls_error))
        else:
          tls_failing_since = None
        if now >= deadline:
          if tls_error is not None:
            # The peer may have given up on the same handshake and gone away since.
            raise errors.TLSHandshakeError(
              '%s; then the %s stopped answering (%s)' % (self._tls_message(tls_error), self._peer_role, last_error)
            )
          raise errors.PeerUnreachableError(self._unreachable_message(timeout_s, last_error))
        if now >= next_log:
          _log.info('waiting for the %s at %s (%ds)', self._peer_role, self._peer_addr, now - start)
          next_log = now + _WAIT_LOG_INTERVAL_S
        time.sleep(min(backoff, max(0.0, deadline - now)))
        backoff = min(1.0, backoff * 2)
    if reply.error:
      raise errors.HandshakeError(
        'the %s at %s refused this %s: %s' % (self._peer_role, self._peer_addr, self._role, reply.error)
      )
    self._check_peer(reply)
    with self._cond:
      while self._peer_hello is None:
        if self._peer_failure is not None:
          break  # Reported below.
        remaining = deadline - time.time()
        if remaining <= 0:
          raise errors.PeerUnreachableError(
            "the %s at %s answered, but it did not call this %s's server at %s within %g s; "
            "check the %s's --peer_addr (it must reach %s)"
            % (
              self._peer_role,
              self._peer_addr,
              self._role,
              self._local_addr,
              timeout_s,
              self._peer_role,
              self._local_addr,
            )
          )
        self._cond.wait(min(remaining, 1.0))
    self._check_peer_hello_if_any()
    with self._cond:
      peer = self._peer_hello
    if peer.instance_id != reply.instance_id:
      raise errors.HandshakeError(
        'the server at %s and the party that called this %s are different processes; is another %s '
        'running with --peer_addr pointing at %s?' % (self._peer_addr, self._role, self._peer_role, self._local_addr)
      )
    self._peer_recv_names = frozenset(peer.recv_names)
    if peer.max_receive_message_size and peer.max_receive_message_size < self._send_limit:
      self._send_limit = peer.max_receive_message_size
      self._send_limit_variable = '%s (on the %s)' % (
        settings.message_size_variable('SERVER', 'RECEIVE'),
        self._peer_role,
      )
    try:
      return json.loads(peer.info) if peer.info else {}
    except ValueError as e:
      raise errors.HandshakeError(
        'the %s sent an info that is not JSON (%s): %r' % (self._peer_role, e, peer.info[:200])
      )

  def _tls_message(self, details):
    return (
      "TLS handshake with the %s at %s failed (%s); check %s on both parties: each party's certificate "
      "must be signed by the CA the other names in EFL_PEER_CERTS_FILENAME, and the certificate's host "
      'name must match peer_addr or EFL_SSL_TARGET_NAME_OVERRIDE'
      % (self._peer_role, self._peer_addr, details, settings.TLS_VARIABLES)
    )

  def _unreachable_message(self, timeout_s, last_error):
    hint = 'start the %s, or check --peer_addr on this party and --local_addr on the %s' % (
      self._peer_role,
      self._peer_role,
    )
    if self._tls.peer_ca or self._tls.my_cert:
      hint += '; TLS is on here, so also check that the %s uses TLS (%s)' % (self._peer_role, settings.TLS_VARIABLES)
    else:
      hint += '; if the %s uses TLS, set EFL_PEER_CERTS_FILENAME here too' % self._peer_role
    return (
      'the %s at peer_addr %s did not answer within %g s (last error: %s): %s; raise the timeout '
      'with EFL_CONNECT_TIMEOUT_S' % (self._peer_role, self._peer_addr, timeout_s, last_error, hint)
    )

  def _check_peer_hello_if_any(self):
    with self._cond:
      peer, failure = self._peer_hello, self._peer_failure
    if failure is not None:
      raise errors.PeerFailedError(
        'the %s at %s failed before the parties connected: %s' % (self._peer_role, self._peer_addr, failure)
      )
    if peer is not None:
      self._check_peer(peer)

  def _check_peer(self, peer):
    """Raises HandshakeError listing every way the peer's Greeting does not fit this party."""
    problems = []
    if peer.app_id != self._app_id:
      problems.append(
        'this %s runs job %r but the %s runs job %r (give both parties the same --app_id)'
        % (self._role, self._app_id, peer.role or 'peer', peer.app_id)
      )
    if peer.protocol_version != PROTOCOL_VERSION:
      problems.append(
        'protocol version %d here, %d at the %s (run the same efl version on both parties)'
        % (PROTOCOL_VERSION, peer.protocol_version, peer.role or 'peer')
      )
    if peer.role == self._role:
      problems.append(
        'both parties are %ss; one must be the leader and the other the follower (check --federal_role)' % self._role
      )
    elif peer.role not in ROLES:
      problems.append("the peer's role is %r, expected %r" % (peer.role, self._peer_role))
    # Checked for both directions and worded by role, so both parties report the same problems.
    mine = {'send': self._send_names, 'recv': self._recv_names}
    theirs = {'send': list(peer.send_names), 'recv': list(peer.recv_names)}
    sides = [(self._role, mine, self._peer_role, theirs), (self._peer_role, theirs, self._role, mine)]
    if self._role != ROLES[0]:
      sides.reverse()
    for role, names, other, other_names in sides:
      unreceived = [n for n in names['send'] if n not in set(other_names['recv'])]
      if unreceived:
        problems.append(
          'the %s sends %s, which the %s does not receive (add the recv there)' % (role, unreceived, other)
        )
    for role, names, other, other_names in sides:
      unsent = [n for n in names['recv'] if n not in set(other_names['send'])]
      if unsent:
        problems.append('the %s receives %s, which the %s does not send (add the send there)' % (role, unsent, other))
    if problems:
      raise errors.HandshakeError(
        'the %s at %s does not fit this %s: %s' % (self._peer_role, self._peer_addr, self._role, '; '.join(problems))
      )

  def _answer_hello(self, data):
    """The native server's Hello: (reply, paired instance id).

    The reply is the serialized answer to a serialized Greeting, None to refuse it; the paired instance id is the
    peer's this party is paired with ('' for none yet), whose stream alone the server takes.
    """
    try:
      reply = self._on_hello(pb.Greeting.FromString(data)).SerializeToString()
    except Exception as e:  # pylint: disable=broad-except
      _log.warning('refused a Hello that is not a Greeting: %r', e)
      reply = None
    with self._cond:
      return reply, self._peer_hello.instance_id if self._peer_hello is not None else ''

  def _on_hello(self, request):
    with self._cond:
      if request.error:  # The peer failed before connecting (see _announce_failure).
        if self._state == _CONNECTING:
          self._peer_failure = request.error[:_MAX_ERROR_TEXT]
          self._cond.notify_all()
        return self._my_greeting()
      if self._peer_hello is None:
        self._peer_hello = request
        self._cond.notify_all()
        return self._my_greeting()
      if request.instance_id == self._peer_hello.instance_id:
        return self._my_greeting()  # A retry of the same peer.
      if self._state == _CONNECTING:
        # The party that said Hello first died before the streams opened; this is its replacement.
        _log.warning('a new %s process replaced the one that said Hello first', request.role)
        self._peer_hello = request
        self._cond.notify_all()
        return self._my_greeting()
      known = self._peer_hello
    reason = (
      'a new %s (from another process) called Hello while this %s is paired with the %s '
      'that connected first; the first one may have restarted' % (request.role or 'caller', self._role, known.role)
    )
    kind = (request.role, request.protocol_version, request.app_id)
    if kind not in self._refusals_logged:  # a flood of them is logged once
      self._refusals_logged.add(kind)
      _log.warning(
        'refused: %s (role %r, protocol version %d, job %r)',
        reason,
        request.role,
        request.protocol_version,
        request.app_id,
      )
    return self._my_greeting(error=reason)

  # --------------------------------------------------------------------------------------------- streams

  def _outgoing_batches(self):
    """Yields the serialized `Frames` messages of the outgoing stream.

    gRPC takes the next message only when the previous write is done; whatever was queued meanwhile goes out
    together, as one message within the size limit.
    """
    carry = None
    outbox = self._outbox  # this connection's: reset() gives the next connection its own
    while True:
      record = carry if carry is not None else outbox.get()
      carry = None
      if record is _END_OF_STREAM:
        return
      batch, size = [record], len(record)
      while True:
        try:
          record = outbox.get_nowait()
        except queue.Empty:
          break
        if record is _END_OF_STREAM or size + len(record) > self._send_limit:
          carry = record
          break
        batch.append(record)
        size += len(record)
      yield batch[0] if len(batch) == 1 else b''.join(batch)

  def _on_stream_call_done(self, call, epoch):
    if epoch != self._epoch:
      return
    error = None if call.cancelled() else call.exception()
    if error is not None:
      detail = '%s: %s' % (error.code().name, error.details()) if isinstance(error, grpc.Call) else error
      self._mark_lost(
        'the stream to the %s at %s failed (%s): the %s process died or the network '
        'failed' % (self._peer_role, self._peer_addr, detail, self._peer_role),
        epoch,
      )
    with self._cond:  # after _mark_lost: failure() may wait for this stream's account
      self._stream_done.set()
      self._cond.notify_all()

  def _on_stream(self, batches, context):
    epoch = self._epoch
    caller = dict(context.invocation_metadata()).get(wire.INSTANCE_METADATA_KEY)
    with self._cond:
      if self._incoming:
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, wire.STREAM_TAKEN)
      if self._peer_hello is None or caller != self._peer_hello.instance_id:
        # A stale caller (an earlier process, or one that reached a reused port) must not take the peer's place.
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, wire.STREAM_NOT_PAIRED)
      self._incoming = True
    # A native client waits for the server's metadata before it writes.
    context.send_initial_metadata(())
    ended_cleanly = False
    try:
      for message in (m for data in batches for m in serde.parse_frames(data)):
        frame = message.header
        if frame.kind == serde.DATA:
          if _log.isEnabledFor(logging.DEBUG):
            _log.debug('received %r step %d (%s %s)', frame.name, frame.step, frame.dtype, list(frame.shape))
          with self._cond:
            self._mailbox[frame.name].append(message)
            if frame.sync and (self._peer_sync_step is None or frame.step >= self._peer_sync_step):
              self._peer_sync_step = frame.step
              self._peer_sync_phase = frame.phase
            self._cond.notify_all()
        else:
          kind = 'BYE' if frame.kind == serde.BYE else 'ERROR'
          if kind == 'ERROR':
            # Debug only: the error this raises tells the user (FederalModel.fit: one message).
            _log.debug('the %s failed: %s', self._peer_role, frame.text)
          else:
            _log.info('the %s closed its communicator (BYE)', self._peer_role)
          with self._cond:
            if self._peer_end is None:
              self._peer_end = (kind, frame.text)
            self._cond.notify_all()
      ended_cleanly = True
    except grpc.RpcError:
      pass
    except Exception as e:  # pylint: disable=broad-except
      _log.warning('the stream from the %s broke: %r', self._peer_role, e)
    if self._peer_end is None:
      how = 'ended' if ended_cleanly else 'broke'
      reason = 'the stream from the %s at %s %s without BYE or ERROR: the %s process died or the network failed' % (
        self._peer_role,
        self._peer_addr,
        how,
        self._peer_role,
      )
      # The outgoing stream's failure says more (a closed socket, or a ping that got no answer): it usually
      # comes at the same moment, so give it a short head start.
      timer = threading.Timer(_LOSS_DETAIL_GRACE_S, self._mark_lost, [reason, epoch])
      timer.daemon = True
      timer.start()

  def _mark_lost(self, reason, epoch=None):
    with self._cond:
      if epoch is not None and epoch != self._epoch:
        return
      if self._lost is not None and self._lost_detail is None and reason != self._lost:
        self._lost_detail = reason  # the other stream's account, often more telling (e.g. a ping timeout)
        self._cond.notify_all()
      if self._lost is not None or self._peer_end is not None or self._state == _CLOSED:
        return
      self._lost = reason
      closing = self._state == _CLOSING
      self._cond.notify_all()
    # Debug only: while this side closes, a lost connection only ends close()'s wait for the peer; otherwise the
    # error it raises tells the user (FederalModel.fit: one message, efl.framework.failure).
    _log.debug('connection lost%s: %s', ' while closing' if closing else '', reason)

  def failure(self, wait_for_detail_s=0):
    """(error class name, text) of why nothing more will come from the peer, or None while all is well.

    Args:
      wait_for_detail_s: when the connection was lost, wait up to this long for the other direction's stream
        to break too and say why (a silent peer shows as a ping timeout there).
    """
    if self._native is not None:
      return self._native.peer_state(wait_for_detail_s) if self._state != _CREATED else None
    with self._cond:
      if self._peer_end is not None:
        kind, text = self._peer_end
        if kind == 'ERROR':
          return 'PeerFailedError', 'the %s failed: %s' % (self._peer_role, text)
        return 'PeerClosedError', 'the %s closed its communicator' % self._peer_role
      if self._lost is None:
        return None
      deadline = time.time() + wait_for_detail_s
      while self._lost_detail is None and not self._stream_done.is_set() and time.time() < deadline:
        self._cond.wait(min(0.1, max(deadline - time.time(), 0.001)))
      return 'ConnectionLostError', '; '.join(r for r in (self._lost, self._lost_detail) if r)

  @property
  def peer_timeout_s(self):
    """How long a peer may answer nothing before it counts as lost (EFL_PEER_TIMEOUT_S)."""
    return self._keepalive.timeout_s

  def _raise_if_broken(self):
    """Raises the error that explains why nothing more will come from the peer (caller holds the lock)."""
    if self._state in (_CLOSING, _CLOSED):
      why = ' with error: %s' % self._close_error if self._close_error else ''
      raise errors.ClosedError("this %s's communicator is closed%s" % (self._role, why))
    if self._peer_end is not None:
      kind, text = self._peer_end
      if kind == 'ERROR':
        raise errors.PeerFailedError('the %s failed: %s' % (self._peer_role, text))
      raise errors.PeerClosedError(
        'the %s closed its communicator (it finished) and sends nothing more' % self._peer_role
      )
    if self._lost is not None:
      raise errors.ConnectionLostError(self._lost)
    if self._state != _CONNECTED:
      raise errors.ClosedError("this %s's communicator is not connected; call connect() first" % self._role)

  # -------------------------------------------------------------------------------------- send and recv

  def send(self, name, step, array, sync=True):
    """Queues `array` for the peer and returns at once; frames reach the peer in the order sent.

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
    with self._cond:
      self._raise_if_broken()
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
    if len(record) > self._send_limit:
      raise errors.MessageTooLargeError(
        'message %r at step %d is %d bytes, over the limit of %d bytes; raise %s (at most 2147483647) '
        'or send smaller tensors' % (name, step, len(record), self._send_limit, self._send_limit_variable)
      )
    if _log.isEnabledFor(logging.DEBUG):
      _log.debug('send %r step %d (%s %s, %d bytes)', name, step, array.dtype, list(array.shape), len(record))
    if self._native is not None:
      self._native.send(record, name, step)
    else:
      self._outbox.put(record)

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
    if timeout_s is None:
      timeout_s = self.recv_timeout_s
    if self._state == _CREATED:
      raise errors.ClosedError('recv(%r) before connect(); connect the communicator first' % name)
    if self._native is not None:
      if self._state in (_CLOSING, _CLOSED):
        with self._cond:
          self._raise_if_broken()
      return self._native.recv(name, step, sync, timeout_s, _decode_frame)
    deadline = time.time() + timeout_s
    with self._cond:
      fifo = self._mailbox[name]
      while not fifo:
        self._raise_if_broken()
        if sync and self._peer_sync_step is not None and self._peer_sync_step > step:
          raise errors.StepMismatchError(
            'the %s finished step %d without sending %r: it already sent messages of step %d; '
            'the parties disagree on which runs send %r' % (self._peer_role, step, name, self._peer_sync_step, name)
          )
        if sync and self._peer_sync_step == step:
          self._check_phase(name, step, self._peer_sync_phase)
        remaining = deadline - time.time()
        if remaining <= 0:
          raise errors.RecvTimeoutError(
            'deadline exceeded: recv of %r at step %d waited %.1f s for the %s at %s; raise '
            'default_timeout_milliseconds or EFL_RECV_TIMEOUT_S if the %s is just slow'
            % (name, step, timeout_s, self._peer_role, self._peer_addr, self._peer_role)
          )
        self._cond.wait(min(remaining, self._scan_s))
      head = fifo[0].header
      if sync and head.step == step:
        self._check_phase(name, step, head.phase)
      if head.step != step or head.sync != sync:
        raise errors.StepMismatchError(
          "recv of %r expects step %d (%s) but the %s's next %r message has step %d (%s)"
          % (
            name,
            step,
            'sync' if sync else 'unsynced',
            self._peer_role,
            name,
            head.step,
            'sync' if head.sync else 'unsynced',
          )
        )
      message = fifo.popleft()
    if _log.isEnabledFor(logging.DEBUG):
      _log.debug('recv %r step %d', name, step)
    return serde.decode(message)

  def set_phase(self, phase):
    """Names what this party's next runs do (e.g. 'train', 'eval'); sync frames carry it to the peer."""
    self._phase = phase or ''
    if self._native is not None:
      self._native.set_phase(self._phase)

  @property
  def phase(self):
    return self._phase

  def _check_phase(self, name, step, peer_phase):
    # Caller holds the lock. Both parties run the same procedure, so at one step they run the same phase.
    if peer_phase and self._phase and peer_phase != self._phase:
      raise errors.StepMismatchError(
        "at step %d the %s runs a %r step but this %s runs a %r step (waiting for %r): the parties' "
        'procedures diverged; give both the same procedure arguments (e.g. train_step, eval_step, '
        'max_iter) and the same amount of data' % (step, self._peer_role, peer_phase, self._role, self._phase, name)
      )

  # ---------------------------------------------------------------------------------------------- close

  def close(self, error=None):
    """Tells the peer this party is done, delivers what is in flight both ways, and stops the transport.

    Sends BYE (or ERROR with `error`'s text), waits at most `EFL_CLOSE_TIMEOUT_S` (10 s) for this party's
    frames to be delivered and for the peer's own BYE/ERROR, then stops the server and the channel. Safe to
    call more than once and from any state; never raises for the peer's state.

    Args:
      error: None for a normal end, else an exception or text sent to the peer as the reason.
    """
    with self._cond:
      if self._state in (_CLOSING, _CLOSED):
        return
      was_connected = self._state == _CONNECTED
      never_connected = self._state == _CREATED
      self._state = _CLOSING
      if error is not None:
        self._close_error = (
          '%s: %s' % (type(error).__name__, error) if isinstance(error, BaseException) else str(error)
        )[:_MAX_ERROR_TEXT]
      self._cond.notify_all()
    timeout_s = settings.close_timeout_s()
    deadline = time.time() + timeout_s
    if self._native is not None:
      # BYE or ERROR follows the last data frame on the one stream.
      if not self._native.finish(self._close_error, timeout_s) and was_connected:
        _log.warning('close: the last frames to the %s were not delivered within %.0f s', self._peer_role, timeout_s)
      if was_connected and not self._native.wait_end(max(0.0, deadline - time.time())):
        _log.warning('close: the %s did not close within %.0f s; stopping anyway', self._peer_role, timeout_s)
      if never_connected and self._close_error is not None:
        self._announce_failure()
    elif was_connected:
      if self._close_error is None:
        self._outbox.put(serde.to_record(serde.control(serde.BYE)))
      else:
        self._outbox.put(serde.to_record(serde.control(serde.ERROR, self._close_error)))
      self._outbox.put(_END_OF_STREAM)
      if not self._stream_done.wait(timeout_s):
        _log.warning('close: the last frames to the %s were not delivered within %.0f s', self._peer_role, timeout_s)
      with self._cond:
        while self._peer_end is None and self._lost is None:
          remaining = deadline - time.time()
          if remaining <= 0:
            _log.warning('close: the %s did not close within %.0f s; stopping anyway', self._peer_role, timeout_s)
            break
          self._cond.wait(min(remaining, 0.5))
    else:
      self._outbox.put(_END_OF_STREAM)
      if never_connected and self._close_error is not None:
        self._announce_failure()
    with self._cond:
      self._state = _CLOSED
      self._cond.notify_all()
    self._shutdown_transport(grace_s=1.0)
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

    Then connect() pairs this party with the peer's new process (recovery without a restart). Only the
    Python transport can: the native transport's endpoint is fixed in the graph's kernels.
    """
    if self._native is not None:
      raise errors.CommunicatorError(
        'recovery needs the Python transport (the native endpoint cannot reconnect in place): set '
        'EFL_NATIVE_TRANSPORT=off on both parties'
      )
    with self._cond:
      if self._state in (_CLOSING, _CLOSED) and self._close_error is None and self._lost is None:
        raise errors.ClosedError("this %s's communicator was closed; it cannot reconnect" % self._role)
      self._epoch += 1
      self._state = _CLOSING  # wakes and fails whatever still waits on the old connection
      self._cond.notify_all()
    self._outbox.put(_END_OF_STREAM)
    self._shutdown_transport(grace_s=0)
    with self._cond:
      self._state = _CREATED
      self._step = 0
      self._peer_hello = None
      self._peer_failure = None
      self._peer_recv_names = frozenset()
      self._send_limit = self._client_send_limit
      self._mailbox.clear()
      self._peer_sync_step = None
      self._peer_sync_phase = ''
      self._phase = ''
      self._peer_end = None
      self._lost = self._lost_detail = None
      self._close_error = None
      self._incoming = False
      self._server = self._channel = self._stub = self._stream_call = None
      self._outbox = queue.Queue()
      self._stream_done = threading.Event()
      self._cond.notify_all()
    for fn in self._reset_callbacks:
      fn()
    _log.info('%s communicator reset: waiting for the %s to connect again', self._role, self._peer_role)

  def _announce_failure(self):
    """Tells a peer that waits in connect() why this party will not come, so it fails now, not at its timeout.

    Best effort: a peer that is not listening yet learns nothing and times out as before.
    """
    try:
      self._open_channel()
      self._stub.Hello(self._my_greeting(error=self._close_error), timeout=_ANNOUNCE_TIMEOUT_S)
    except grpc.RpcError as e:
      _log.debug('could not tell the %s at %s about the failure: %s', self._peer_role, self._peer_addr, e)
    except Exception as e:  # pylint: disable=broad-except
      _log.debug('could not tell the %s about the failure: %r', self._peer_role, e)

  def _shutdown_transport(self, grace_s):
    if self._stream_call is not None and not self._stream_call.done():
      self._stream_call.cancel()
    if self._server is not None:
      self._server.stop(grace_s).wait(grace_s + 2.0)
    if self._channel is not None:
      self._channel.close()
    if self._native is not None:
      self._native.destroy()
      if self._hello_thread is not None and self._hello_thread is not threading.current_thread():
        self._hello_thread.join(5.0)

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    self.close(error=exc)
    return False

  def __repr__(self):
    return 'Communicator(%s, peer %s, local %s, %s, step %d)' % (
      self._role,
      self._peer_addr,
      self._local_addr,
      self._state,
      self._step,
    )
