"""The handshake: each party calls the other's Hello with its `Greeting`, and both check that they fit.

`Handshake` is the server side (the `Greeter` the transport's server calls) and the state both sides share;
`Handshake.run` is the client side, which calls the peer's Hello until it answers and explains why it does not
(the peer is not up yet, TLS fails, the peer refused). The rules are checked for both directions and worded by
role, so both parties report the same problems.
"""

import json
import logging
import re
import threading
import time

import grpc

from efl.communicator import settings
from efl.communicator.proto import communicator_pb2 as pb
from efl.transport import base
from efl.transport import errors

_log = logging.getLogger('tensorflow.efl.communicator')

PROTOCOL_VERSION = 1
ROLES = ('leader', 'follower')

# gRPC error details that mean the TLS handshake failed rather than "nobody listens yet".
_TLS_ERROR = re.compile(r'ssl|tls|handshake|certificate|tsi_|wrong_version_number', re.IGNORECASE)
# How long a TLS failure must persist before connect() gives up on it (the peer may be restarting).
_TLS_GRACE_S = 4.0
_WAIT_LOG_INTERVAL_S = 5.0
MAX_ERROR_TEXT = 16 * 1024
_ANNOUNCE_TIMEOUT_S = 2.0


def peer_role_of(role):
  return ROLES[1 - ROLES.index(role)]


class Handshake(base.Greeter):
  """This party's Greeting, the peer's, and the rules that decide whether they fit.

  Args:
    role: this party's role.
    app_id: the job's id; both parties must give the same.
    instance_id: this process's id, which tells a retry from a new process.
    recv_limit: the largest message this party's server accepts (the peer sends nothing larger).
    recv_names, send_names: this party's registered names (lists the communicator keeps filling until connect).
  """

  def __init__(self, role, app_id, instance_id, recv_limit, recv_names, send_names):
    self.role = role
    self.peer_role = peer_role_of(role)
    self._app_id = app_id
    self._instance_id = instance_id
    self._recv_limit = recv_limit
    self._recv_names = recv_names
    self._send_names = send_names
    self._cond = threading.Condition()  # guards everything below
    self._info_json = '{}'
    self._begun = False  # connect() began: Hellos are answered from then on
    self._connecting = False
    self._cancelled = False
    self._peer = None  # the accepted peer's Greeting
    self._peer_failure = None  # what the peer said when it failed before the parties connected
    self._refusals_logged = set()  # kinds of refused Hello already logged (a flood is logged once)
    self.listen_port = 0  # this party's server's port, once it listens

  def greeting(self, error=''):
    return pb.Greeting(
      role=self.role,
      protocol_version=PROTOCOL_VERSION,
      recv_names=self._recv_names,
      send_names=self._send_names,
      info=self._info_json,
      instance_id=self._instance_id,
      max_receive_message_size=self._recv_limit,
      error=error,
      app_id=self._app_id,
      listen_port=self.listen_port,
    )

  def begin(self, info_json):
    """connect() starts: a Hello from a replacement process may still take the first one's place."""
    with self._cond:
      self._info_json = info_json
      self._begun = True
      self._connecting = True

  def end(self):
    """connect() ended: the peer is fixed from now on."""
    with self._cond:
      self._connecting = False

  def cancel(self):
    """close() was called: `run` stops waiting."""
    with self._cond:
      self._cancelled = True
      self._connecting = False
      self._cond.notify_all()

  # ------------------------------------------------------------------------------------- server side

  def paired_instance(self):
    with self._cond:
      return self._peer.instance_id if self._peer is not None else ''

  def answer(self, request):
    with self._cond:
      if not self._begun and not request.error:
        return None  # this party's names and info are final only once connect() begins
      if request.error:  # The peer failed before connecting (see announce_failure).
        if self._connecting:
          self._peer_failure = request.error[:MAX_ERROR_TEXT]
          self._cond.notify_all()
        return self.greeting()
      if self._peer is None:
        self._peer = request
        self._cond.notify_all()
        return self.greeting()
      if request.instance_id == self._peer.instance_id:
        return self.greeting()  # A retry of the same peer.
      if self._connecting:
        # The party that said Hello first died before the streams opened; this is its replacement.
        _log.warning('a new %s process replaced the one that said Hello first', request.role)
        self._peer = request
        self._cond.notify_all()
        return self.greeting()
      known = self._peer
    reason = (
      'a new %s (from another process) called Hello while this %s is paired with the %s '
      'that connected first; the first one may have restarted' % (request.role or 'caller', self.role, known.role)
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
    reply = self.greeting(error=reason)
    reply.busy = True
    return reply

  # ------------------------------------------------------------------------------------- client side

  def run(self, transport, peer_addr, local_addr, tls, deadline, timeout_s, peer_timeout_s):
    """Calls the peer's Hello until it answers, then waits for the peer's own Hello.

    A peer still paired with an earlier process of this party's role is asked again for up to `peer_timeout_s`
    (the time it takes to notice that the earlier one is gone).

    Returns:
      The peer's `Greeting`, checked.

    Raises:
      PeerUnreachableError, TLSHandshakeError, HandshakeError, PeerFailedError: see `Communicator.connect`.
      ClosedError: `cancel()` was called meanwhile.
    """
    reply = self._call_hello(transport, peer_addr, tls, deadline, timeout_s)
    busy_until = min(deadline, time.time() + peer_timeout_s)
    while reply.error and reply.busy and time.time() < busy_until:
      # The peer is still paired with this party's predecessor, whose death it notices within its peer
      # timeout (at once for a killed process); a restarted party asks again until then.
      _log.info('the %s at %s is still paired with an earlier %s; asking again', self.peer_role, peer_addr, self.role)
      time.sleep(min(0.5, max(0.0, busy_until - time.time())))
      reply = self._call_hello(transport, peer_addr, tls, deadline, timeout_s)
    if reply.error:
      raise errors.HandshakeError(
        'the %s at %s refused this %s: %s' % (self.peer_role, peer_addr, self.role, reply.error)
      )
    self.check(reply, peer_addr)
    peer = self._wait_for_peer_hello(
      peer_addr,
      deadline,
      "the %s at %s answered, but it did not call this %s's server at %s within %g s; "
      "check the %s's --peer_addr (it must reach %s)"
      % (self.peer_role, peer_addr, self.role, local_addr, timeout_s, self.peer_role, local_addr),
    )
    if peer.instance_id != reply.instance_id:
      raise errors.HandshakeError(
        'the server at %s and the party that called this %s are different processes; is another %s '
        'running with --peer_addr pointing at %s?' % (peer_addr, self.role, self.peer_role, local_addr)
      )
    return peer

  def learn_peer_addr(self, peer_addr, local_addr, deadline, timeout_s):
    """For a `peer_addr` with port 0: waits for the peer's Hello and returns its address, host:listen_port.

    The host stays the one `peer_addr` names (so TLS checks the name given); the port is the one the peer's
    Greeting says its server listens on.

    Raises:
      PeerUnreachableError: no peer called within `timeout_s`.
      HandshakeError, PeerFailedError: the peer does not fit, or failed; its Greeting names no port.
      ClosedError: `cancel()` was called meanwhile.
    """
    port = self._wait_for_peer_hello(
      peer_addr,
      deadline,
      "no %s called this %s's server at %s within %g s; this %s's peer_addr %s has port 0, so it waits for the "
      "%s to call first: start the %s with --peer_addr pointing at this %s's server"
      % (
        self.peer_role,
        self.role,
        local_addr,
        timeout_s,
        self.role,
        peer_addr,
        self.peer_role,
        self.peer_role,
        self.role,
      ),
    ).listen_port
    if not port:
      raise errors.HandshakeError(
        "the %s that called this %s did not say which port it listens on, and this %s's peer_addr %s has "
        "port 0: give this %s the %s's address in --peer_addr, or both parties the same efl version"
        % (self.peer_role, self.role, self.role, peer_addr, self.role, self.peer_role)
      )
    return '%s:%d' % (peer_addr.rsplit(':', 1)[0], port)

  def _wait_for_peer_hello(self, peer_addr, deadline, timed_out_text):
    """The peer's Greeting once its Hello arrived and fits; PeerUnreachableError(timed_out_text) at deadline."""
    with self._cond:
      while self._peer is None and self._peer_failure is None:
        if self._cancelled:
          raise errors.ClosedError('close() was called while connect() waited for the %s' % self.peer_role)
        remaining = deadline - time.time()
        if remaining <= 0:
          raise errors.PeerUnreachableError(timed_out_text)
        self._cond.wait(min(remaining, 1.0))
    self._check_peer_hello_if_any(peer_addr)
    with self._cond:
      return self._peer

  def _call_hello(self, transport, peer_addr, tls, deadline, timeout_s):
    start = time.time()
    next_log = start + _WAIT_LOG_INTERVAL_S
    backoff = 0.05
    last_error = None
    tls_failing_since = None
    tls_error = None  # The last TLS failure seen, if any.
    while True:
      self._check_peer_hello_if_any(peer_addr)
      if self._cancelled:
        raise errors.ClosedError('close() was called while connect() waited for the %s' % self.peer_role)
      now = time.time()
      try:
        return transport.hello(self.greeting(), max(0.05, min(2.0, deadline - now)))
      except grpc.RpcError as e:
        code, details = e.code(), e.details() or ''
      if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        # A peer that already refused this party's Hello shuts down and cancels ours: its own Greeting, if it
        # arrived, names the real problem.
        self._check_peer_hello_if_any(peer_addr)
        raise errors.HandshakeError(
          'the server at peer_addr %s answered Hello with %s: %s; is it an efl party of the same '
          'version?' % (peer_addr, code.name, details)
        )
      last_error = '%s: %s' % (code.name, details)
      _log.debug('Hello to the %s at %s failed: %s', self.peer_role, peer_addr, last_error)
      now = time.time()
      # A TLS server that rejects the client's certificate just closes the connection.
      rejected = tls.peer_ca is not None and 'socket closed' in details.lower()
      if rejected or _TLS_ERROR.search(details):
        tls_error = details + (
          ' (the server closed the connection during the TLS handshake, so it probably rejected the '
          'certificate of this party)'
          if rejected
          else ''
        )
        tls_failing_since = tls_failing_since or now
        if now - tls_failing_since >= _TLS_GRACE_S:
          raise errors.TLSHandshakeError(self._tls_message(peer_addr, tls_error))
      else:
        tls_failing_since = None
      if now >= deadline:
        if tls_error is not None:
          # The peer may have given up on the same handshake and gone away since.
          raise errors.TLSHandshakeError(
            '%s; then the %s stopped answering (%s)'
            % (self._tls_message(peer_addr, tls_error), self.peer_role, last_error)
          )
        raise errors.PeerUnreachableError(self._unreachable_message(peer_addr, tls, timeout_s, last_error))
      if now >= next_log:
        _log.info('waiting for the %s at %s (%ds)', self.peer_role, peer_addr, now - start)
        next_log = now + _WAIT_LOG_INTERVAL_S
      time.sleep(min(backoff, max(0.0, deadline - now)))
      backoff = min(1.0, backoff * 2)

  def _tls_message(self, peer_addr, details):
    return (
      "TLS handshake with the %s at %s failed (%s); check %s on both parties: each party's certificate "
      "must be signed by the CA the other names in EFL_PEER_CERTS_FILENAME, and the certificate's host "
      'name must match peer_addr or EFL_SSL_TARGET_NAME_OVERRIDE'
      % (self.peer_role, peer_addr, details, settings.TLS_VARIABLES)
    )

  def _unreachable_message(self, peer_addr, tls, timeout_s, last_error):
    peer = self.peer_role
    hint = 'start the %s, or check --peer_addr on this party and --local_addr on the %s' % (peer, peer)
    if tls.peer_ca or tls.my_cert:
      hint += '; TLS is on here, so also check that the %s uses TLS (%s)' % (peer, settings.TLS_VARIABLES)
    else:
      hint += '; if the %s uses TLS, set EFL_PEER_CERTS_FILENAME here too' % peer
    return (
      'the %s at peer_addr %s did not answer within %g s (last error: %s): %s; raise the timeout '
      'with EFL_CONNECT_TIMEOUT_S' % (peer, peer_addr, timeout_s, last_error, hint)
    )

  def _check_peer_hello_if_any(self, peer_addr):
    with self._cond:
      peer, failure = self._peer, self._peer_failure
    if failure is not None:
      raise errors.PeerFailedError(
        'the %s at %s failed before the parties connected: %s' % (self.peer_role, peer_addr, failure)
      )
    if peer is not None:
      self.check(peer, peer_addr)

  def check(self, peer, peer_addr):
    """Raises HandshakeError listing every way the peer's Greeting does not fit this party."""
    problems = []
    if peer.app_id != self._app_id:
      problems.append(
        'this %s runs job %r but the %s runs job %r (give both parties the same --app_id)'
        % (self.role, self._app_id, peer.role or 'peer', peer.app_id)
      )
    if peer.protocol_version != PROTOCOL_VERSION:
      problems.append(
        'protocol version %d here, %d at the %s (run the same efl version on both parties)'
        % (PROTOCOL_VERSION, peer.protocol_version, peer.role or 'peer')
      )
    if peer.role == self.role:
      problems.append(
        'both parties are %ss; one must be the leader and the other the follower (check --federal_role)' % self.role
      )
    elif peer.role not in ROLES:
      problems.append("the peer's role is %r, expected %r" % (peer.role, self.peer_role))
    mine = {'send': self._send_names, 'recv': self._recv_names}
    theirs = {'send': list(peer.send_names), 'recv': list(peer.recv_names)}
    sides = [(self.role, mine, self.peer_role, theirs), (self.peer_role, theirs, self.role, mine)]
    if self.role != ROLES[0]:
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
        'the %s at %s does not fit this %s: %s' % (self.peer_role, peer_addr, self.role, '; '.join(problems))
      )

  @staticmethod
  def info(peer):
    """The peer's `info` dict."""
    try:
      return json.loads(peer.info) if peer.info else {}
    except ValueError as e:
      raise errors.HandshakeError('the %s sent an info that is not JSON (%s): %r' % (peer.role, e, peer.info[:200]))

  def announce_failure(self, transport, error):
    """Tells a peer that waits in connect() why this party will not come, so it fails now, not at its timeout.

    Best effort: a peer that is not listening yet learns nothing and times out as before.
    """
    try:
      transport.hello(self.greeting(error=error), _ANNOUNCE_TIMEOUT_S)
    except grpc.RpcError as e:
      _log.debug('could not tell the %s about the failure: %s', self.peer_role, e)
    except Exception as e:  # pylint: disable=broad-except
      _log.debug('could not tell the %s about the failure: %r', self.peer_role, e)
