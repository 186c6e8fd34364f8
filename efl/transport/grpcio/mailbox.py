"""The receiving side of the grpcio transport: frames by name, the peer's end, and the rules of `recv`.

The native transport applies the same rules in C++ (`efl/native/transport.cc`); both take their texts from
`efl.transport.wire.TEXT`, and the conformance tests run every rule on both.
"""

import collections
import threading
import time

from efl.transport import errors
from efl.transport import wire

_T = wire.TEXT


class Mailbox(object):
  """Frames received from the peer, one FIFO per name, and what is known of the peer's stream.

  Args:
    role, peer_role, peer_addr: for error texts.
    scan_s: how often a waiting `take` re-checks its deadline.
  """

  def __init__(self, role, peer_role, peer_addr, scan_s):
    self._role, self._peer_role, self._peer_addr = role, peer_role, peer_addr
    self._scan_s = scan_s
    self._cond = threading.Condition()  # guards everything below; waiting takes sleep on it
    self._fifos = collections.defaultdict(collections.deque)
    self._peer_sync_step = None  # highest step of a sync frame received
    self._peer_sync_phase = ''  # the phase of that frame
    self._phase = ''
    self._open = False  # whether this party's stream is open (before, nothing is connected)
    self._close_error = None  # None while open; '' after a normal close, else the error's text
    self._peer_end = None  # (kind, text) once the peer's BYE or ERROR arrived
    self._lost = None  # why the connection broke, once it did
    self._lost_detail = None  # what the other direction's stream said about it, if it broke later
    self._outgoing_done = False  # whether this party's stream has ended

  # ------------------------------------------------------------------------------ the stream's events

  def open(self):
    with self._cond:
      self._open = True

  def set_peer_addr(self, peer_addr):
    with self._cond:
      self._peer_addr = peer_addr

  def set_phase(self, phase):
    with self._cond:
      self._phase = phase

  def file(self, message):
    """Files a DATA frame (a `serde` message) under its name."""
    frame = message.header
    with self._cond:
      self._fifos[frame.name].append(message)
      if frame.sync and (self._peer_sync_step is None or frame.step >= self._peer_sync_step):
        self._peer_sync_step = frame.step
        self._peer_sync_phase = frame.phase
      self._cond.notify_all()

  def end(self, kind, text):
    """The peer's stream ended with `kind` 'BYE' or 'ERROR'."""
    with self._cond:
      if self._peer_end is None:
        self._peer_end = (kind, text)
      self._cond.notify_all()

  def mark_lost(self, reason):
    """The connection broke for `reason`; a second account (the other direction's) is kept as its detail.

    Returns:
      Whether `reason` is news: not after the peer's end or this side's close.
    """
    with self._cond:
      if self._lost is not None and self._lost_detail is None and reason != self._lost:
        self._lost_detail = reason  # the other stream's account, often more telling (e.g. a ping timeout)
        self._cond.notify_all()
      if self._lost is not None or self._peer_end is not None or self._close_error is not None:
        return False
      self._lost = reason
      self._cond.notify_all()
      return True

  def outgoing_done(self):
    with self._cond:
      self._outgoing_done = True
      self._cond.notify_all()

  def close(self, error):
    """This side closes (`error`: its text, or None): waiting takes fail from now on."""
    with self._cond:
      if self._close_error is None:
        self._close_error = error or ''
      self._cond.notify_all()

  @property
  def closing(self):
    return self._close_error is not None

  # -------------------------------------------------------------------------------------------- reading

  def raise_if_broken(self):
    with self._cond:
      self._raise_if_broken()

  def _raise_if_broken(self):
    """Raises the error that explains why nothing more will come from the peer (caller holds the lock)."""
    if self._close_error is not None:
      raise errors.ClosedError(wire.closed_text(self._role, self._close_error))
    state = self._peer_state()
    if state is not None:
      raise getattr(errors, state[0])(state[1])
    if not self._open:
      raise errors.ClosedError(_T['NOT_CONNECTED'] % self._role)

  def _peer_state(self):
    if self._peer_end is not None:
      kind, text = self._peer_end
      if kind == 'ERROR':
        return 'PeerFailedError', _T['PEER_FAILED'] % (self._peer_role, text)
      return 'PeerClosedError', _T['PEER_CLOSED'] % self._peer_role
    if self._lost is not None:
      return 'ConnectionLostError', '; '.join(r for r in (self._lost, self._lost_detail) if r)
    return None

  def peer_state(self, wait_for_detail_s=0):
    """See `Transport.peer_state`."""
    with self._cond:
      if self._lost is not None and self._peer_end is None:
        deadline = time.time() + wait_for_detail_s
        while self._lost_detail is None and not self._outgoing_done and time.time() < deadline:
          self._cond.wait(min(0.1, max(deadline - time.time(), 0.001)))
      return self._peer_state()

  def wait_end(self, timeout_s):
    """Waits for the peer's BYE, ERROR or the connection's loss; False if none came within `timeout_s`."""
    deadline = time.time() + timeout_s
    with self._cond:
      while self._peer_end is None and self._lost is None:
        remaining = deadline - time.time()
        if remaining <= 0:
          return False
        self._cond.wait(min(remaining, 0.5))
      return True

  def take(self, name, step, sync, timeout_s):
    """Removes and returns the head message of `name`, which must carry `step`; see `Communicator.recv`.

    Once the peer sent a sync frame of a later step, a missing sync (name, step) can no longer come: that is
    an error at once, not a wait until the deadline (the stream is in order).
    """
    deadline = time.time() + timeout_s
    with self._cond:
      fifo = self._fifos[name]
      while not fifo:
        self._raise_if_broken()
        if sync and self._peer_sync_step is not None and self._peer_sync_step > step:
          raise errors.StepMismatchError(_T['STEP_PASSED'] % (self._peer_role, step, name, self._peer_sync_step, name))
        if sync and self._peer_sync_step == step:
          self._check_phase(name, step, self._peer_sync_phase)
        remaining = deadline - time.time()
        if remaining <= 0:
          raise errors.RecvTimeoutError(
            _T['RECV_TIMEOUT'] % (name, step, timeout_s, self._peer_role, self._peer_addr, self._peer_role)
          )
        self._cond.wait(min(remaining, self._scan_s))
      head = fifo[0].header
      if sync and head.step == step:
        self._check_phase(name, step, head.phase)
      if head.step != step or head.sync != sync:
        raise errors.StepMismatchError(
          _T['STEP_MISMATCH']
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
      return fifo.popleft()

  def _check_phase(self, name, step, peer_phase):
    # Caller holds the lock. Both parties run the same procedure, so at one step they run the same phase.
    if peer_phase and self._phase and peer_phase != self._phase:
      raise errors.StepMismatchError(
        _T['PHASE_MISMATCH'] % (step, self._peer_role, peer_phase, self._role, self._phase, name)
      )
