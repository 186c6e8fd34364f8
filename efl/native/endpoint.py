"""The native transport: `efl.transport.base.Transport` on the C API of `_transport.so`.

The C++ endpoint is the party's only server and its client stream; its kernels (`ops.cc`) reach the same
endpoint, so every data frame of a party travels on one stream, in order. Hello requests wait in the endpoint
for a thread here to answer them with the communicator's `Greeter`; the client side of Hello is a grpcio call.
"""

import ctypes
import itertools
import logging
import threading

import grpc

from efl.communicator.proto import communicator_pb2 as pb
from efl.native import load
from efl.transport import base
from efl.transport import errors
from efl.transport import serde
from efl.transport import wire
from efl.transport.grpcio import channel as channels

_log = logging.getLogger('tensorflow.efl.communicator')

# The C API's result codes (one table for both languages, efl/transport/wire.py).
_ERRORS = {entry.code: getattr(errors, entry.error_class) for entry in wire.RESULT_CODES}
# Result codes of efl_nt_peer_state, by efl error class name.
_PEER_STATES = {wire.code(name): _ERRORS[wire.code(name)].__name__ for name in ('PEER_FAILED', 'PEER_CLOSED', 'LOST')}
_ERROR_SIZE = 8192
# The gRPC status codes a refused Hello gets (see Greeter.answer).
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
_INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def _bytes(text):
  return text.encode('utf-8') if isinstance(text, str) else text


def _raise(code, buf):
  raise _ERRORS.get(code, errors.CommunicatorError)(buf.value.decode('utf-8', 'replace'))


def _decode(frame):
  return serde.decode(serde.parse_frame(frame))


class Endpoint(base.Transport):
  """One communicator's native transport; `config` is an `efl.transport.base.Config`.

  The graph's kernels find the endpoint by its `name`: the role's, numbered if the role has several endpoints
  in this process; `name` asks for that one (the predecessor's, which must be closed).
  """

  kind = 'native'

  def __init__(self, config, name=None):
    self._ops, self._lib = load()
    self._cfg = config
    tls, keepalive = config.tls, config.keepalive
    candidates = [name] if name else (config.role if n == 1 else '%s_%d' % (config.role, n) for n in itertools.count(1))
    handle = 0
    for candidate in candidates:
      handle = self._create(candidate, config, tls, keepalive)
      if handle:
        break
    if not handle:
      raise errors.CommunicatorError('a native endpoint called %r is still open in this process' % name)
    self.name, self.handle = candidate, handle
    self._peer = channels.PeerChannel(config)  # for Hello calls to the peer
    self._hello_thread = None

  def _create(self, name, config, tls, keepalive):
    return self._lib.efl_nt_create(
      _bytes(name),
      _bytes(config.role),
      _bytes(config.peer_role),
      _bytes(config.peer_addr),
      config.client_send_limit,
      _bytes(config.send_limit_variable),
      config.server_recv_limit,
      config.scan_s,
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

  def listen(self, local_addr, greeter):
    buf = ctypes.create_string_buffer(_ERROR_SIZE)
    port = self._lib.efl_nt_listen(self.handle, _bytes(local_addr), buf, _ERROR_SIZE)
    if port <= 0:
      raise errors.AddressInUseError(buf.value.decode('utf-8', 'replace') or 'cannot listen on %s' % local_addr)
    self._hello_thread = threading.Thread(
      target=self._serve_hellos, args=(greeter,), name='efl-comm-hello', daemon=True
    )
    self._hello_thread.start()
    return port

  def _serve_hellos(self, greeter):
    """Answers the server's Hello requests with `greeter` until the endpoint is destroyed.

    The wait for the next request releases the GIL.
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
      reply, status, details = None, 0, ''
      try:
        answer = greeter.answer(pb.Greeting.FromString(data))
      except Exception as e:  # pylint: disable=broad-except
        _log.warning('refused a Hello that is not a Greeting: %r', e)
        status, details = _INVALID_ARGUMENT, wire.TEXT['HELLO_NOT_GREETING']
      else:
        if answer is None:  # see Greeter.answer
          status, details = _UNAVAILABLE, wire.TEXT['HELLO_TOO_EARLY'] % self._cfg.role
        else:
          reply = answer.SerializeToString()
      # The server takes a stream only from the paired party (the one whose Hello was accepted).
      paired = greeter.paired_instance()
      self._lib.efl_nt_answer_hello(handle, hello_id, reply, len(reply or b''), _bytes(paired), status, _bytes(details))

  def hello(self, greeting, timeout_s):
    return self._peer.hello(greeting, timeout_s)

  def set_peer_addr(self, peer_addr):
    self._cfg = self._cfg._replace(peer_addr=peer_addr)
    self._peer.set_peer_addr(peer_addr)
    self._lib.efl_nt_set_peer_addr(self.handle, _bytes(peer_addr))

  def open_stream(self, timeout_s, instance_id, send_limit, send_limit_variable):
    self._lib.efl_nt_set_send_limit(self.handle, send_limit, _bytes(send_limit_variable))
    buf = ctypes.create_string_buffer(_ERROR_SIZE)
    code = self._lib.efl_nt_connect(
      self.handle, _bytes(self._cfg.peer_addr), timeout_s, _bytes(instance_id), buf, _ERROR_SIZE
    )
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

  def send(self, record, name, step):
    buf = ctypes.create_string_buffer(_ERROR_SIZE)
    code = self._lib.efl_nt_send(self.handle, record, len(record), _bytes(name), step, buf, _ERROR_SIZE)
    if code:
      _raise(code, buf)

  def recv(self, name, step, sync, timeout_s):
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
      # The serialized frame in the endpoint's memory, valid until it is freed below.
      return _decode(memoryview((ctypes.c_char * size.value).from_address(start)).cast('B'))
    finally:
      self._lib.efl_nt_frame_free(frame)

  def finish(self, error, timeout_s):
    return bool(self._lib.efl_nt_finish(self.handle, _bytes(error) if error else None, timeout_s))

  def wait_end(self, timeout_s):
    return bool(self._lib.efl_nt_wait_end(self.handle, timeout_s))

  def peer_state(self, wait_for_detail_s=0):
    buf = ctypes.create_string_buffer(_ERROR_SIZE)
    lost = wire.code('LOST')
    if wait_for_detail_s > 0 and self._lib.efl_nt_peer_state(self.handle, buf, _ERROR_SIZE) == lost:
      self._lib.efl_nt_wait_detail(self.handle, wait_for_detail_s)
    buf = ctypes.create_string_buffer(_ERROR_SIZE)
    code = self._lib.efl_nt_peer_state(self.handle, buf, _ERROR_SIZE)
    return (_PEER_STATES[code], buf.value.decode('utf-8', 'replace')) if code in _PEER_STATES else None

  def successor(self):
    return Endpoint(self._cfg, name=self.name)

  def close(self):
    """Stops the transport; kernels still holding it fail with ClosedError."""
    if self.handle:
      self._lib.efl_nt_destroy(self.handle)
      self.handle = 0
    self._peer.close()
    if self._hello_thread is not None and self._hello_thread is not threading.current_thread():
      self._hello_thread.join(5.0)
