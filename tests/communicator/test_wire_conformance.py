"""Both transports put the same bytes on the wire for the same calls.

A scripted peer (a plain grpcio server, not a `Communicator`) answers the handshake and records every message
of the stream a leader opens to it. The same calls run once on each transport; the recorded streams must be
byte for byte the same, and read back as the frames sent.
"""

import threading
from concurrent import futures

import grpc
import numpy as np
import pytest

from efl import native
from efl.communicator import Communicator
from efl.transport import serde
from efl.communicator.communicator import PROTOCOL_VERSION
from efl.communicator.proto import communicator_pb2 as pb
from efl.transport import wire
from ports import call_hello

NATIVE_OK, NATIVE_WHY = native.available()
NAMES = ['f16', 'f32', 'f64', 'i32', 'i64', 'bool', 'u8']
ARRAYS = [
  np.arange(6, dtype=np.float16).reshape(2, 3),
  np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 2, 2),
  np.array([np.pi, -0.0, 1e300]),
  np.array([[1, -2], [3, 2**31 - 1]], np.int32),
  np.array([-(2**62), 0, 7], np.int64),
  np.array([True, False, True]),
  np.zeros((0, 4), np.uint8),  # empty
]


class ScriptedPeer(object):
  """A follower that only answers Hello, says its own Hello back, and records the leader's stream."""

  INSTANCE = 'scripted-follower'

  def __init__(self):
    self.messages = []
    self.stream_metadata = None
    self.ended = threading.Event()
    self.leader_addr = None
    self.leader_listens = threading.Event()
    self._server = grpc.server(futures.ThreadPoolExecutor(4))
    self._server.add_generic_rpc_handlers(
      (
        grpc.method_handlers_generic_handler(
          'efl.PeerService',
          {
            'Hello': grpc.unary_unary_rpc_method_handler(
              self._hello,
              request_deserializer=pb.Greeting.FromString,
              response_serializer=pb.Greeting.SerializeToString,
            ),
            'Stream': grpc.stream_unary_rpc_method_handler(
              self._stream, request_deserializer=lambda b: b, response_serializer=pb.StreamEnd.SerializeToString
            ),
          },
        ),
      )
    )
    self.port = self._server.add_insecure_port('127.0.0.1:0')  # port 0: no race for a free port
    self._server.start()

  def greeting(self):
    return pb.Greeting(role='follower', protocol_version=PROTOCOL_VERSION, recv_names=NAMES, instance_id=self.INSTANCE)

  def _hello(self, request, context):
    # Say Hello back from another thread: the leader's connect() waits for it after this reply.
    threading.Thread(target=self._hello_back, daemon=True).start()
    return self.greeting()

  def _hello_back(self):
    self.leader_listens.wait(10)
    call_hello(self.leader_addr, self.greeting())

  def _stream(self, messages, context):
    self.stream_metadata = dict(context.invocation_metadata())
    context.send_initial_metadata(())  # a native client waits for it before writing
    for message in messages:
      self.messages.append(bytes(message))
    self.ended.set()
    return pb.StreamEnd()

  def stop(self):
    self._server.stop(0)


def _at(array, step):
  """What is sent of `array` at `step`: the values change from step to step."""
  return array if array.dtype == bool else array + np.asarray(step, array.dtype)


def _record(monkeypatch, transport, error=None):
  """The bytes of the leader's stream when it sends ARRAYS at steps 0 and 1, then closes (with `error`)."""
  monkeypatch.setenv('EFL_NATIVE_TRANSPORT', transport)
  monkeypatch.setenv('EFL_CLOSE_TIMEOUT_S', '1')
  peer = ScriptedPeer()
  leader = Communicator('leader', '127.0.0.1:%d' % peer.port, '127.0.0.1:0')
  try:
    assert (leader.native is not None) == (transport == 'on')
    for name in NAMES:
      leader.register_send(name)
    # The scripted peer calls back once the leader's server listens, which connect() starts first.
    connecting = threading.Thread(target=leader.connect, kwargs={'timeout_s': 20})
    connecting.start()
    while leader.local_port is None and connecting.is_alive():
      connecting.join(0.01)
    peer.leader_addr = '127.0.0.1:%d' % leader.local_port
    peer.leader_listens.set()
    connecting.join(30)
    assert leader.connected
    for step in range(2):
      for name, array in zip(NAMES, ARRAYS):
        leader.send(name, step, _at(array, step))
    leader.close(error=error)
    assert peer.ended.wait(20), 'the leader never ended its stream'
  finally:
    leader.close()
    peer.stop()
  assert peer.stream_metadata.get(wire.INSTANCE_METADATA_KEY)  # the caller says who it is
  return b''.join(peer.messages)


@pytest.mark.skipif(not NATIVE_OK, reason='native transport not built: %s' % NATIVE_WHY)
@pytest.mark.parametrize('error', [None, ValueError('loss is NaN at step 2')], ids=['bye', 'error'])
def test_both_transports_send_the_same_bytes(monkeypatch, error):
  python_bytes = _record(monkeypatch, 'off', error)
  native_bytes = _record(monkeypatch, 'on', error)
  frames = serde.parse_frames(python_bytes)
  # Read back: every data frame in order, then the end.
  data = [m for m in frames if m.header.kind == serde.DATA]
  assert [(m.header.name, m.header.step) for m in data] == [(n, s) for s in range(2) for n in NAMES]
  for message, (step, array) in zip(data, [(s, a) for s in range(2) for a in ARRAYS]):
    got = serde.decode(message)
    assert got.dtype == array.dtype and got.shape == array.shape
    assert np.array_equal(got, _at(array, step))
  ends = [m.header for m in frames if m.header.kind != serde.DATA]
  assert len(ends) == 1
  if error is None:
    assert ends[0].kind == serde.BYE
  else:
    assert ends[0].kind == serde.ERROR and 'loss is NaN at step 2' in ends[0].text
  assert native_bytes == python_bytes
