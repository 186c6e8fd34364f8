"""efl's native transport: the loader of its C++ libraries; `endpoint` is the transport itself.

`transport.cc` and `ops.cc` are built into `_transport.so` and `_ops_tf<TensorFlow major>.so` by `make setup`
(`python -m efl.native.build`) where gRPC's C core and its headers are installed. The transport holds, per
communicator, an `Endpoint`: a C-core server, the party's only one, that serves `PeerService` (it hands each Hello
to Python and files the peer's stream, BYE and ERROR included, into a mailbox in order), and a C-core client
stream to the peer that carries every frame of this party. The kernels `EflNativeSend`/`EflNativeRecv` of the
ops library move tensors between the graph and the endpoint without entering Python; the communicator's own
`send`/`recv` reach the same endpoint through ctypes, so every data frame of one party travels on one stream, in
order.

`EFL_NATIVE_TRANSPORT` chooses: `auto` (default: native where the library loads), `on` (native or an
error), `off` (the Python transport).
"""

import ctypes
import os

from efl import compat
from efl.transport import errors
from efl.transport import wire

_HERE = os.path.dirname(os.path.abspath(__file__))
LIBRARY = os.path.join(_HERE, '_transport.so')
# Kernels are built against one TensorFlow; a checkout holds those of each stack it has set up.
OPS_LIBRARY = os.path.join(_HERE, '_ops_tf%d.so' % compat.TF_MAJOR)

# The C API's result codes (one table for both languages, efl/transport/wire.py).
_ERRORS = {entry.code: getattr(errors, entry.error_class) for entry in wire.RESULT_CODES}
# Result codes of efl_nt_peer_state, by efl error class name.
_PEER_STATES = {wire.code(name): _ERRORS[wire.code(name)].__name__ for name in ('PEER_FAILED', 'PEER_CLOSED', 'LOST')}
_ERROR_SIZE = 8192

_loaded = None  # (ops module, ctypes library) once loaded, or the reason it cannot be.


def _declare(lib):
  i64, c, dbl, i32, p = ctypes.c_int64, ctypes.c_char_p, ctypes.c_double, ctypes.c_int, ctypes.c_void_p
  for name, restype, argtypes in (
    ('efl_nt_create', i64, [c, c, c, c, i64, c, i64, dbl, c, c, c, c, i32, i32]),
    ('efl_nt_lookup', i64, [c]),
    ('efl_nt_listen', i32, [i64, c, c, i32]),
    ('efl_nt_connect', i32, [i64, c, dbl, c, c, i32]),
    ('efl_nt_step', i64, [i64]),
    ('efl_nt_set_step', None, [i64, i64]),
    ('efl_nt_set_peer_addr', None, [i64, c]),
    ('efl_nt_set_phase', None, [i64, c]),
    ('efl_nt_set_send_limit', None, [i64, i64, c]),
    ('efl_nt_send', i32, [i64, c, i64, c, i64, c, i32]),
    ('efl_nt_recv', i32, [i64, c, i64, i32, dbl, ctypes.POINTER(p), c, i32]),
    ('efl_nt_frame_record', p, [p, ctypes.POINTER(i64)]),
    ('efl_nt_frame_free', None, [p]),
    ('efl_nt_finish', i32, [i64, c, dbl]),
    ('efl_nt_wait_end', i32, [i64, dbl]),
    ('efl_nt_wait_detail', None, [i64, dbl]),
    ('efl_nt_peer_state', i32, [i64, c, i32]),
    ('efl_nt_next_hello', i64, [i64, dbl, ctypes.POINTER(p), ctypes.POINTER(i64)]),
    ('efl_nt_hello_free', None, [p]),
    ('efl_nt_answer_hello', None, [i64, i64, c, i64, c, i32, c]),
    ('efl_nt_destroy', None, [i64]),
  ):
    fn = getattr(lib, name)
    fn.restype, fn.argtypes = restype, argtypes


def load():
  """Returns `(ops, lib)`: the TF op module and the ctypes library.

  Raises:
    ImportError: the library is not built or does not load; the message says why and how to build it.
  """
  global _loaded
  if _loaded is None:
    missing = [os.path.basename(p) for p in (LIBRARY, OPS_LIBRARY) if not os.path.exists(p)]
    if missing:
      _loaded = (
        "%s not built: install gRPC's C core (apt-get install libgrpc-dev pkg-config), then run "
        'make setup' % ' and '.join(missing)
      )
    else:
      try:
        import tensorflow.compat.v1 as tf  # pylint: disable=import-outside-toplevel

        # DEEPBIND: gRPC must bind to its own OpenSSL, not to the BoringSSL symbols TF's library exports.
        lib = ctypes.CDLL(LIBRARY, mode=os.RTLD_NOW | os.RTLD_DEEPBIND)
        _declare(lib)
        ops = tf.load_op_library(OPS_LIBRARY)  # Its kernels call the transport loaded above.
        _loaded = (ops, lib)
      except Exception as e:  # pylint: disable=broad-except
        _loaded = 'cannot load %s (%s: %s); rebuild it with make setup' % (LIBRARY, type(e).__name__, e)
  if isinstance(_loaded, str):
    raise ImportError(_loaded)
  return _loaded


def available():
  """Returns (True, '') if the library loads, else (False, why)."""
  try:
    load()
  except ImportError as e:
    return False, str(e)
  return True, ''
