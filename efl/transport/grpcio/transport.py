"""The grpcio transport: `efl.transport.base.Transport` on grpcio, in Python.

The server serves `PeerService`: Hello goes to the communicator's `Greeter`; the Stream call of the paired peer
is read frame by frame into the `Mailbox`. The outgoing stream is one long-lived client-streaming call whose
messages come from an outbox: `send` queues serialized frames and returns, and whatever was queued while
gRPC wrote the previous message goes out together, as one message within the size limit.
"""

import logging
import queue
import threading

# Imported before any server exists, so that the interpreter's exit joins its threads after the
# communicator's own atexit handler closed what was left open.
from concurrent.futures import ThreadPoolExecutor

import grpc

from efl.communicator.proto import communicator_pb2 as pb
from efl.transport import base
from efl.transport import errors
from efl.transport import serde
from efl.transport import wire
from efl.transport.grpcio import channel as channels
from efl.transport.grpcio.mailbox import Mailbox

# A child of TF's logger, so efl's log settings (format, verbosity) apply.
_log = logging.getLogger('tensorflow.efl.communicator')

_SERVICE = pb.DESCRIPTOR.services_by_name['PeerService'].full_name
_END_OF_STREAM = object()  # ends the outgoing stream's generator
# The outgoing stream's failure usually says more than the incoming one's end (a closed socket, or a ping that
# got no answer) and comes at about the same moment: it gets this head start.
_LOSS_DETAIL_GRACE_S = 0.5


def _as_is(data):
  return data


class GrpcioTransport(base.Transport):
  """See the module docstring; `config` is an `efl.transport.base.Config`."""

  kind = 'python'

  def __init__(self, config):
    self._cfg = config
    self._mailbox = Mailbox(config.role, config.peer_role, config.peer_addr, config.scan_s)
    self._lock = threading.Lock()
    self._greeter = None
    self._server = None
    self._peer = channels.PeerChannel(config)
    self._incoming = False  # whether the peer's stream is attached to the server
    self._outbox = queue.Queue()
    self._stream_call = None
    self._stream_done = threading.Event()
    self._send_limit = config.client_send_limit
    self._send_limit_variable = config.send_limit_variable
    self._finished = False
    self.step = 0

  @property
  def step(self):
    return self._step

  @step.setter
  def step(self, value):
    self._step = value

  # ------------------------------------------------------------------------------------------ server

  def listen(self, local_addr, greeter):
    self._greeter = greeter
    options = [
      ('grpc.so_reuseport', 0),
      ('grpc.max_send_message_length', self._cfg.server_send_limit),
      ('grpc.max_receive_message_length', self._cfg.server_recv_limit),
    ] + channels.keepalive_options(self._cfg.keepalive, True)
    server = grpc.server(
      ThreadPoolExecutor(max_workers=self._cfg.server_threads, thread_name_prefix='efl-comm-server'),
      options=options,
      maximum_concurrent_rpcs=None,
    )
    server.add_generic_rpc_handlers((self._handlers(),))
    try:
      port, cause = channels.add_port(server, local_addr, self._cfg.tls), 'bind failed'
    except RuntimeError as e:
      port, cause = 0, e
    if not port:
      raise errors.AddressInUseError(str(cause))
    server.start()
    self._server = server
    return port

  def _handlers(self):
    def stream(batches, context):
      self._on_stream(batches, context)
      return pb.StreamEnd()

    return grpc.method_handlers_generic_handler(
      _SERVICE,
      {
        'Hello': grpc.unary_unary_rpc_method_handler(
          self._answer_hello,
          request_deserializer=pb.Greeting.FromString,
          response_serializer=pb.Greeting.SerializeToString,
        ),
        # The stream's messages arrive as the bytes received: serde.parse_frames reads them without copying
        # the tensors inside.
        'Stream': grpc.stream_unary_rpc_method_handler(
          stream, request_deserializer=_as_is, response_serializer=pb.StreamEnd.SerializeToString
        ),
      },
    )

  def _answer_hello(self, request, context):
    reply = self._greeter.answer(request)
    if reply is None:
      context.abort(grpc.StatusCode.UNAVAILABLE, wire.TEXT['HELLO_TOO_EARLY'] % self._cfg.role)
    return reply

  def _on_stream(self, batches, context):
    caller = dict(context.invocation_metadata()).get(wire.INSTANCE_METADATA_KEY)
    paired = self._greeter.paired_instance()
    with self._lock:
      if self._incoming:
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, wire.TEXT['STREAM_TAKEN'])
      if not paired or caller != paired:
        # A stale caller (an earlier process, or one that reached a reused port) must not take the peer's place.
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, wire.TEXT['STREAM_NOT_PAIRED'])
      self._incoming = True
    # A native client waits for the server's metadata before it writes.
    context.send_initial_metadata(())
    peer_role = self._cfg.peer_role
    ended_cleanly = False
    try:
      for message in (m for data in batches for m in serde.parse_frames(data)):
        frame = message.header
        if frame.kind == serde.DATA:
          if _log.isEnabledFor(logging.DEBUG):
            _log.debug('received %r step %d (%s %s)', frame.name, frame.step, frame.dtype, list(frame.shape))
          self._mailbox.file(message)
        elif frame.kind == serde.ERROR:
          # Debug only: the error this raises tells the user (FederalModel.fit: one message).
          _log.debug('the %s failed: %s', peer_role, frame.text)
          self._mailbox.end('ERROR', frame.text)
        else:
          _log.info('the %s closed its communicator (BYE)', peer_role)
          self._mailbox.end('BYE', frame.text)
      ended_cleanly = True
    except grpc.RpcError:
      pass
    except Exception as e:  # pylint: disable=broad-except
      _log.warning('the stream from the %s broke: %r', peer_role, e)
    reason = wire.TEXT['STREAM_FROM_ENDED'] % (
      peer_role,
      self._cfg.peer_addr,
      'ended' if ended_cleanly else 'broke',
      peer_role,
    )
    timer = threading.Timer(_LOSS_DETAIL_GRACE_S, self._mark_lost, [reason])
    timer.daemon = True
    timer.start()

  def _mark_lost(self, reason):
    if self._mailbox.mark_lost(reason):
      # Debug only: while this side closes, a lost connection only ends close()'s wait for the peer; otherwise
      # the error it raises tells the user (FederalModel.fit: one message, efl.framework.failure).
      _log.debug('connection lost: %s', reason)

  # ------------------------------------------------------------------------------------------ client

  def hello(self, greeting, timeout_s):
    return self._peer.hello(greeting, timeout_s)

  def set_peer_addr(self, peer_addr):
    self._cfg = self._cfg._replace(peer_addr=peer_addr)
    self._peer.set_peer_addr(peer_addr)
    self._mailbox.set_peer_addr(peer_addr)

  def open_stream(self, timeout_s, instance_id, send_limit, send_limit_variable):
    del timeout_s  # the call opens asynchronously; a peer that never takes it shows as a lost connection
    self._send_limit, self._send_limit_variable = send_limit, send_limit_variable
    # Frames are serialized by send(); the stream writes the bytes as they are.
    stream = self._peer.get().stream_unary(
      '/%s/Stream' % _SERVICE, request_serializer=_as_is, response_deserializer=pb.StreamEnd.FromString
    )
    self._stream_call = stream.future(self._outgoing_messages(), metadata=((wire.INSTANCE_METADATA_KEY, instance_id),))
    self._stream_call.add_done_callback(self._on_stream_call_done)
    self._mailbox.open()

  def _outgoing_messages(self):
    """Yields the outgoing stream's messages: each is what the outbox held, up to the size limit."""
    carry = None
    outbox = self._outbox
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

  def _on_stream_call_done(self, call):
    error = None if call.cancelled() else call.exception()
    if error is not None:
      detail = '%s: %s' % (error.code().name, error.details()) if isinstance(error, grpc.Call) else error
      peer_role = self._cfg.peer_role
      self._mark_lost(wire.TEXT['STREAM_TO_FAILED'] % (peer_role, self._cfg.peer_addr, detail, peer_role))
    self._mailbox.outgoing_done()  # after the loss: peer_state() may wait for this stream's account
    self._stream_done.set()

  # ---------------------------------------------------------------------------------------- the data

  def set_phase(self, phase):
    self._mailbox.set_phase(phase)

  def send(self, record, name, step):
    if len(record) > self._send_limit:
      raise errors.MessageTooLargeError(
        wire.TEXT['TOO_LARGE'] % (name, step, len(record), self._send_limit, self._send_limit_variable)
      )
    self._mailbox.raise_if_broken()
    self._outbox.put(record)

  def recv(self, name, step, sync, timeout_s):
    return serde.decode(self._mailbox.take(name, step, sync, timeout_s))

  # ------------------------------------------------------------------------------------------ the end

  def finish(self, error, timeout_s):
    self._finished = True
    self._mailbox.close(error)
    if self._stream_call is None:
      return True
    if error is None:
      self._outbox.put(serde.to_record(serde.control(serde.BYE)))
    else:
      self._outbox.put(serde.to_record(serde.control(serde.ERROR, error)))
    self._outbox.put(_END_OF_STREAM)
    return self._stream_done.wait(timeout_s)

  def wait_end(self, timeout_s):
    return self._mailbox.wait_end(timeout_s)

  def peer_state(self, wait_for_detail_s=0):
    return self._mailbox.peer_state(wait_for_detail_s)

  def successor(self):
    return GrpcioTransport(self._cfg)

  def close(self):
    self._mailbox.close(None)  # wakes whatever still waits on this connection
    self._outbox.put(_END_OF_STREAM)
    grace_s = 1.0 if self._finished else 0.0
    if self._stream_call is not None and not self._stream_call.done():
      self._stream_call.cancel()
    if self._server is not None:
      self._server.stop(grace_s).wait(grace_s + 2.0)
    self._peer.close()
