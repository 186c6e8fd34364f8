"""efl's native transport: a `Communicator`'s data frames over gRPC's C core, and TF send/recv kernels.

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
    ('efl_nt_create', i64, [c, c, c, i64, c, i64, dbl, c, c, c, c, i32, i32]),
    ('efl_nt_listen', i32, [i64, c, c, i32]),
    ('efl_nt_connect', i32, [i64, c, dbl, c, c, i32]),
    ('efl_nt_step', i64, [i64]),
    ('efl_nt_set_step', None, [i64, i64]),
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
    ('efl_nt_answer_hello', None, [i64, i64, c, i64, c]),
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


def _bytes(text):
  return text.encode('utf-8') if isinstance(text, str) else text


def _raise(code, buf):
  raise _ERRORS.get(code, errors.CommunicatorError)(buf.value.decode('utf-8', 'replace'))


class Endpoint(object):
  """One communicator's native transport; see the module docstring.

  Args:
    role, peer_role, peer_addr: for error messages.
    send_limit: the largest message it sends, in bytes; `send_limit_variable` names the setting.
    recv_limit: the largest message its server accepts.
    scan_s: how often waits re-check their deadline and the connection.
    tls: an `efl.communicator.settings.TLSConfig`; used as by the Python transport.
    keepalive: an `efl.communicator.settings.Keepalive`; likewise.
  """

  def __init__(self, role, peer_role, peer_addr, send_limit, send_limit_variable, recv_limit, scan_s, tls, keepalive):
    self._ops, self._lib = load()
    self.handle = self._lib.efl_nt_create(
      _bytes(role),
      _bytes(peer_role),
      _bytes(peer_addr),
      send_limit,
      _bytes(send_limit_variable),
      recv_limit,
      scan_s,
      tls.peer_ca,
      tls.my_cert,
      tls.my_key,
      _bytes(tls.target_name_override) if tls.target_name_override else None,
      keepalive.time_ms,
      keepalive.timeout_ms,
    )

  @property
  def ops(self):
    """The TF op module (`efl_native_send`, `efl_native_recv`)."""
    return self._ops

  def listen(self, addr):
    """Starts the server on `addr` ('host:0' picks a port) and returns the port."""
    buf = ctypes.create_string_buffer(_ERROR_SIZE)
    port = self._lib.efl_nt_listen(self.handle, _bytes(addr), buf, _ERROR_SIZE)
    if port <= 0:
      raise errors.AddressInUseError(buf.value.decode('utf-8', 'replace') or 'cannot listen on %s' % addr)
    return port

  def connect(self, target, timeout_s, instance_id):
    """Opens the stream to `target`, as the party whose Hello carried `instance_id`."""
    buf = ctypes.create_string_buffer(_ERROR_SIZE)
    code = self._lib.efl_nt_connect(self.handle, _bytes(target), timeout_s, _bytes(instance_id), buf, _ERROR_SIZE)
    if code:
      _raise(code, buf)

  @property
  def step(self):
    return self._lib.efl_nt_step(self.handle)

  @step.setter
  def step(self, value):
    self._lib.efl_nt_set_step(self.handle, value)

  def set_phase(self, phase):
    self._lib.efl_nt_set_phase(self.handle, _bytes(phase))

  def set_send_limit(self, limit, variable):
    self._lib.efl_nt_set_send_limit(self.handle, limit, _bytes(variable))

  def send(self, message, name, step):
    """Writes `message`, a serialized `Frames` message, to the peer."""
    buf = ctypes.create_string_buffer(_ERROR_SIZE)
    code = self._lib.efl_nt_send(self.handle, message, len(message), _bytes(name), step, buf, _ERROR_SIZE)
    if code:
      _raise(code, buf)

  def recv(self, name, step, sync, timeout_s, read):
    """Takes the next frame of `name` by the rules of `Communicator.recv`, and returns `read(frame)`.

    `frame` is a memoryview of the serialized `efl.Frame` in the endpoint's memory, valid only during `read`.
    """
    buf = ctypes.create_string_buffer(_ERROR_SIZE)
    frame = ctypes.c_void_p()
    code = self._lib.efl_nt_recv(
      self.handle, _bytes(name), step, int(sync), timeout_s, ctypes.byref(frame), buf, _ERROR_SIZE
    )
    if code:
      _raise(code, buf)
    try:
      size = ctypes.c_int64()
      start = self._lib.efl_nt_frame_record(frame, ctypes.byref(size))
      return read(memoryview((ctypes.c_char * size.value).from_address(start)).cast('B'))
    finally:
      self._lib.efl_nt_frame_free(frame)

  def finish(self, error, timeout_s):
    """Sends BYE (`error` None) or ERROR with its text as the stream's last frame and half-closes the stream.

    Waiting receives fail from now on. False if that took over `timeout_s`.
    """
    return bool(self._lib.efl_nt_finish(self.handle, _bytes(error) if error else None, timeout_s))

  def wait_end(self, timeout_s):
    """Waits until the peer's stream ended (BYE, ERROR or loss); False if it did not within `timeout_s`."""
    return bool(self._lib.efl_nt_wait_end(self.handle, timeout_s))

  def peer_state(self, wait_for_detail_s=0):
    """(error class name, text) of why nothing more will come from the peer, or None while all is well.

    A lost connection's text waits up to `wait_for_detail_s` for the outgoing call's account of it (a silent
    peer shows as a ping timeout there).
    """
    buf = ctypes.create_string_buffer(_ERROR_SIZE)
    if wait_for_detail_s > 0 and self._lib.efl_nt_peer_state(self.handle, buf, _ERROR_SIZE) == 4:
      self._lib.efl_nt_wait_detail(self.handle, wait_for_detail_s)
    buf = ctypes.create_string_buffer(_ERROR_SIZE)
    code = self._lib.efl_nt_peer_state(self.handle, buf, _ERROR_SIZE)
    return (_PEER_STATES[code], buf.value.decode('utf-8', 'replace')) if code in _PEER_STATES else None

  def serve_hellos(self, answer):
    """Answers the server's Hello requests with `answer(request bytes) -> (reply bytes, paired instance id)`.

    A reply of None refuses the request; the paired instance id ('' for none yet) is the one peer whose stream the
    server takes.

    Serves until the endpoint is destroyed. Runs in a thread of its own; the wait releases the GIL.
    """
    request, size = ctypes.c_void_p(), ctypes.c_int64()
    while True:
      handle = self.handle
      if not handle:
        return
      hello_id = self._lib.efl_nt_next_hello(handle, 1.0, ctypes.byref(request), ctypes.byref(size))
      if hello_id < 0:
        return
      if hello_id == 0:
        continue
      try:
        data = ctypes.string_at(request, size.value)
      finally:
        self._lib.efl_nt_hello_free(request)
      reply, paired = answer(data)
      self._lib.efl_nt_answer_hello(handle, hello_id, reply, len(reply) if reply is not None else 0, _bytes(paired))

  def destroy(self):
    """Stops the transport; kernels still holding it fail with ClosedError."""
    if self.handle:
      self._lib.efl_nt_destroy(self.handle)
      self.handle = 0
