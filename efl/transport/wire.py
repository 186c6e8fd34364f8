"""The tables both languages of the transport share, written once.

Python reads them here; `python -m efl.native.build` writes them into `efl/native/_wire.h` for the C++ transport
and kernels, together with the field numbers and frame kinds of `efl.Frame`, which it takes from the compiled
protocol (`protos/efl/communicator.proto`). An edit to either source therefore reaches both languages at the
next build; nothing is kept in step by hand.
"""

import collections
import json

# Result codes of the native transport's C API, and the `efl.transport.errors` class each one raises (in
# Python, and in the kernels' TF error messages). 0 is success.
ResultCode = collections.namedtuple('ResultCode', 'code name error_class')
RESULT_CODES = (
  ResultCode(1, 'STEP_MISMATCH', 'StepMismatchError'),
  ResultCode(2, 'PEER_FAILED', 'PeerFailedError'),
  ResultCode(3, 'PEER_CLOSED', 'PeerClosedError'),
  ResultCode(4, 'LOST', 'ConnectionLostError'),
  ResultCode(5, 'TIMEOUT', 'RecvTimeoutError'),
  ResultCode(6, 'CLOSED', 'ClosedError'),
  ResultCode(7, 'TOO_LARGE', 'MessageTooLargeError'),
  ResultCode(8, 'UNREACHABLE', 'PeerUnreachableError'),
)
# Errors a TF kernel reports as InvalidArgument (ValueErrors in Python); the others are Unknown.
INVALID_ARGUMENT_CODES = ('TOO_LARGE',)

# Dtypes the native kernels carry: (TF type name of the ops' attribute, name on the wire). Strings travel on
# the Python ops.
NATIVE_DTYPES = (
  ('half', 'float16'),
  ('float', 'float32'),
  ('double', 'float64'),
  ('int32', 'int32'),
  ('int64', 'int64'),
  ('bool', 'bool'),
  ('uint8', 'uint8'),
)

# The Stream call's metadata key that carries the caller's instance id (`Greeting.instance_id` of its Hello):
# a server takes a stream only from the party whose Hello it accepted, never from a stale or foreign caller.
INSTANCE_METADATA_KEY = 'efl-instance'

# The texts of the transport's rules, as printf templates both languages fill in (C++ gets `%d` as `%lld` and
# passes 64-bit integers). Each names the rule that broke and the value that broke it.
TEXT = {
  # This side closed (with an error) or never connected.
  'CLOSED': "this %s's communicator is closed",
  'CLOSED_WITH_ERROR': "this %s's communicator is closed with error: %s",
  'NOT_CONNECTED': "this %s's communicator is not connected; call connect() first",
  # The peer's stream ended with ERROR or BYE.
  'PEER_FAILED': 'the %s failed: %s',
  'PEER_CLOSED': 'the %s closed its communicator (it finished) and sends nothing more',
  # The receive rules: a (name, step) that can no longer come, the phases of both parties, the head's step.
  'STEP_PASSED': "the %s finished step %d without sending '%s': it already sent messages of step %d; the parties "
  "disagree on which runs send '%s'",
  'PHASE_MISMATCH': "at step %d the %s runs a '%s' step but this %s runs a '%s' step (waiting for '%s'): the "
  "parties' procedures diverged; give both the same procedure arguments (e.g. train_step, eval_step, max_iter) "
  'and the same amount of data',
  'STEP_MISMATCH': "recv of '%s' expects step %d (%s) but the %s's next '%s' message has step %d (%s)",
  'RECV_TIMEOUT': "deadline exceeded: recv of '%s' at step %d waited %.1f s for the %s at %s; raise "
  'default_timeout_milliseconds or EFL_RECV_TIMEOUT_S if the %s is just slow',
  'TOO_LARGE': "message '%s' at step %d is %d bytes, over the limit of %d bytes; raise %s (at most 2147483647) "
  'or send smaller tensors',
  # A stream that broke: the peer's ('ended' or 'broke'), or this party's (with gRPC's account).
  'STREAM_FROM_ENDED': 'the stream from the %s at %s %s without BYE or ERROR: the %s process died or the network '
  'failed',
  'STREAM_TO_FAILED': 'the stream to the %s at %s failed (%s): the %s process died or the network failed',
  'SEND_FAILED': "sending '%s' at step %d to the %s at %s failed: the %s process died or the network failed",
  'STREAM_NOT_OPENED': 'the %s at %s did not open its stream within %g s; is it still running?',
  # Why a server refuses a Hello: UNAVAILABLE (the caller asks again, as if the server did not listen yet) or
  # INVALID_ARGUMENT.
  'HELLO_TOO_EARLY': 'this %s has not begun connect() yet; ask again',
  'HELLO_NOT_GREETING': 'the request is not a Greeting',
  # Why a server refuses a Stream call (FAILED_PRECONDITION).
  'STREAM_TAKEN': 'this party already has a stream from its peer',
  'STREAM_NOT_PAIRED': "the stream's caller is not the party that said Hello to this one",
}


def closed_text(role, error):
  """Why a party closed, for what still runs against it: `error` is its close error ('' or None for none)."""
  return TEXT['CLOSED_WITH_ERROR'] % (role, error) if error else TEXT['CLOSED'] % role


def code(name):
  """The result code called `name` ('TIMEOUT', ...)."""
  for entry in RESULT_CODES:
    if entry.name == name:
      return entry.code
  raise KeyError('no result code %r; the codes are %s' % (name, ', '.join(e.name for e in RESULT_CODES)))


def _camel(name):
  return ''.join(part.capitalize() for part in name.lower().split('_'))


def _c_string(text):
  # JSON's escapes of an ASCII text are C's.
  text.encode('ascii')
  return json.dumps(text)


def c_header(frame_descriptor):
  """The text of `_wire.h`: these tables and `frame_descriptor`'s (the `efl.Frame` message's) fields and kinds."""
  lines = [
    '// Generated by efl/native/build.py from efl/transport/wire.py and protos/efl/communicator.proto.',
    '// Do not edit: edit those and rebuild.',
    '#pragma once',
    '',
    'namespace efl_native {',
    '',
    '// Result codes of the C API.',
    'enum Code {',
    '  kOk = 0,',
  ]
  lines += ['  k%s = %d,' % (_camel(e.name), e.code) for e in RESULT_CODES]
  lines += [
    '};',
    '',
    '// The exception class of each code, by code (index 0: success).',
    'const char* const kErrorClass[] = {""%s};'
    % ''.join(', "%s"' % e.error_class for e in sorted(RESULT_CODES, key=lambda e: e.code)),
    'const int kNumCodes = %d;' % (max(e.code for e in RESULT_CODES) + 1),
    'inline bool IsInvalidArgument(int code) { return %s; }'
    % ' || '.join('code == k%s' % _camel(n) for n in INVALID_ARGUMENT_CODES),
    '',
    '// Field numbers of efl.Frame.',
    'enum FrameField { %s };'
    % ', '.join(
      'k%s = %d' % (_camel(f.name), f.number) for f in sorted(frame_descriptor.fields, key=lambda f: f.number)
    ),
    '// Kinds of efl.Frame.',
    'enum FrameKind { %s };'
    % ', '.join('k%s = %d' % (_camel(v.name), v.number) for v in frame_descriptor.enum_types_by_name['Kind'].values),
    '',
    "// The kernels' dtypes: the ops' type list, and each TF dtype's name on the wire.",
    '#define EFL_NATIVE_TYPES "{%s}"' % ', '.join(t for t, _ in NATIVE_DTYPES),
    '#define EFL_FOR_NATIVE_DTYPES(X) %s'
    % ' '.join('X(tensorflow::DT_%s, "%s")' % (t.upper(), w) for t, w in NATIVE_DTYPES),
    '',
    "// The Stream call's metadata key for the caller's instance id.",
    'const char* const kInstanceKey = "%s";' % INSTANCE_METADATA_KEY,
    '',
    "// The rules' texts (printf templates; integers are long long).",
  ]
  lines += ['#define EFL_TEXT_%s %s' % (name, _c_string(TEXT[name].replace('%d', '%lld'))) for name in sorted(TEXT)]
  lines += [
    '',
    '}  // namespace efl_native',
    '',
  ]
  return '\n'.join(lines)
