"""What a party says when training stops because of its peer: one message, no TensorFlow traceback.

`FederalModel.fit` turns the communicator's errors (raised inside a send/recv op, a data reader's side channel or
the handshake) into a `PeerError` whose message says what happened, to which party, at which step, and what to
do, e.g. "the follower at 10.0.0.2:50052 was lost at step 1234 (its connection closed); restart both parties
with the same --ckpt_dir to resume from step 1200". An uncaught `PeerError` is printed as that message alone
(`sys.excepthook`); the full error and traceback go to the debug log.
"""

import re
import sys
import traceback

import tensorflow.compat.v1 as tf

from efl import compat

# The communicator's errors, as they appear at the start of a failed op's message ("ConnectionLostError: ...").
_KINDS = (
  'ConnectionLostError',
  'PeerFailedError',
  'PeerClosedError',
  'RecvTimeoutError',
  'StepMismatchError',
  'PeerUnreachableError',
  'TLSHandshakeError',
  'HandshakeError',
)
_IN_MESSAGE = re.compile(r'\b(%s): (.*)' % '|'.join(_KINDS))


class PeerError(RuntimeError):
  """Training stopped because of the peer; `kind` is the communicator error behind it."""

  def __init__(self, message, kind):
    super(PeerError, self).__init__(message)
    self.kind = kind


def communicator_cause(error):
  """(kind, text) of the communicator error behind `error` (itself, or inside a TF op's message), or None."""
  from efl.transport import errors  # pylint: disable=g-import-not-at-top

  if isinstance(error, errors.CommunicatorError) and type(error).__name__ in _KINDS:
    return type(error).__name__, str(error)
  text = compat.op_error_text(error) if isinstance(error, tf.errors.OpError) else None
  match = _IN_MESSAGE.search((text or '').split('\n')[0])
  return (match.group(1), match.group(2).strip()) if match else None


def _resume_hint(checkpoint_step, checkpoint_dir):
  if not checkpoint_dir:
    return 'restart both parties (no --ckpt_dir was given, so nothing was saved: training starts again)'
  if checkpoint_step is None:
    return 'restart both parties with the same --ckpt_dir (no checkpoint was saved yet: training starts again)'
  return 'restart both parties with the same --ckpt_dir to resume from step %d' % checkpoint_step


def message(kind, text, role, peer_role, peer_addr, step, checkpoint_step, checkpoint_dir, peer_timeout_s):
  """The one-line account of a stop caused by the peer (see the module doc)."""
  peer = 'the %s at %s' % (peer_role, peer_addr)
  at = 'at step %d' % step if step is not None else 'before the first step'
  resume = _resume_hint(checkpoint_step, checkpoint_dir)
  if kind == 'ConnectionLostError':
    low = text.lower()
    if 'ping timeout' in low or 'keepalive' in low:
      why = 'it answered nothing for %g s: its process is stopped, its host frozen or the network down' % (
        peer_timeout_s
      )
    else:
      why = 'its connection closed: its process died or the network failed'
    return '%s was lost %s (%s); %s' % (peer, at, why, resume)
  if kind == 'PeerFailedError':
    return '%s failed %s (%s); fix that, then %s' % (peer, at, re.sub(r'^the \w+ failed: ', '', text), resume)
  if kind == 'PeerClosedError':
    return (
      '%s finished %s while this %s still waited for it: the parties ran different procedures or data; '
      'give both the same procedure arguments and the same data' % (peer, at, role)
    )
  if kind == 'RecvTimeoutError':
    return '%s sent nothing in time %s (%s); %s' % (peer, at, text, resume)
  if kind == 'StepMismatchError':
    return 'the parties diverged %s: %s' % (at, text)
  # Handshake errors: training never started.
  return 'could not start training with %s: %s' % (peer, text)


_installed = []


def install_excepthook():
  """Prints an uncaught `PeerError` as its message alone (once per process; other errors as before)."""
  if _installed:
    return
  previous = sys.excepthook

  def hook(exc_type, exc, tb):
    if isinstance(exc, PeerError):
      tf.logging.debug('%s', ''.join(traceback.format_exception(exc_type, exc, tb)))
      sys.stderr.write('efl: %s\n' % exc)
      sys.stderr.flush()
    else:
      previous(exc_type, exc, tb)

  sys.excepthook = hook
  _installed.append(hook)
