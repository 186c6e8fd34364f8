"""Round trips between two processes on this host: efl's communicator and TF ops against a bare grpcio stream.

The leader sends an array; the follower (a child process started by this script) echoes it back; the leader
waits for the echo before the next send. The same exchange runs over these variants, alternating, `--pairs`
times each:
- `efl`: a `Communicator` pair ("x" out, "y" back) used from Python, frames encoded and decoded as in training;
- `ops`: the same through efl's TF `send`/`recv` ops, one `session.run` per round trip on each side, as in
  training;
- `grpcio`: one client stream per direction carrying the array's raw bytes, queue in and queue out, with no efl
  code: the floor of gRPC's Python layer.
Where the native transport is built, `efl` and `ops` run on both transports (`EFL_NATIVE_TRANSPORT=on/off`).

Prints the medians, `BENCH comm_round_trip_ms_<shape>` (the communicator on the default transport),
`BENCH grpcio_round_trip_ms_<shape>` and their ratio `BENCH comm_overhead_ratio_<shape>`; and
`BENCH ops_round_trip_ms_<shape>` (the ops on the default transport). With the native transport also
`BENCH ops_python_round_trip_ms_<shape>` and `BENCH ops_native_speedup_<shape>` (Python over native).

    python benchmarks/comm_latency.py [--rounds 2000] [--pairs 3] [--shape 256,128] [--dtype float32]
"""

import argparse
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np

# The checkout this script is in, not an installed efl: side-by-side runs of two checkouts measure each.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from efl import native  # noqa: E402
from efl.communicator.communicator import Communicator  # noqa: E402
from efl.launcher import free_port  # noqa: E402

WARMUP = 50
_MODES = {'native': 'on', 'python': 'off'}  # EFL_NATIVE_TRANSPORT of each transport
_METHOD = '/bench.Echo/Stream'


class _SendRecvEnd(object):
  """An end with `send(array)` and `recv()`: a round trip is one of each, an echo sends back what arrives."""

  def round_trip(self, array):
    self.send(array)
    return self.recv()

  def echo(self):
    self.send(self.recv())


class _EflEnd(_SendRecvEnd):
  """One party of the efl exchange."""

  def __init__(self, role, peer_port, local_port):
    self._comm = Communicator(role, '127.0.0.1:%d' % peer_port, '127.0.0.1:%d' % local_port)
    self._out, self._in = ('x', 'y') if role == 'leader' else ('y', 'x')
    self._comm.register_send(self._out)
    self._comm.register_recv(self._in)
    self._comm.connect(timeout_s=60)
    self._sent = self._received = 0  # The n-th message of each name has step n.

  def send(self, array):
    self._comm.send(self._out, self._sent, array)
    self._sent += 1

  def recv(self):
    value = self._comm.recv(self._in, self._received, timeout_s=60)
    self._received += 1
    return value

  def close(self):
    self._comm.close()


class _OpsEnd(object):
  """One party of the exchange through efl's TF ops: the leader's run sends and then receives, the follower's
  receives and sends back."""

  def __init__(self, role, peer_port, local_port, dtype, shape):
    import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
    from efl.communicator import ops  # pylint: disable=g-import-not-at-top

    self._comm = Communicator(role, '127.0.0.1:%d' % peer_port, '127.0.0.1:%d' % local_port)
    self._graph = tf.Graph()
    with self._graph.as_default():
      if role == 'leader':
        self._data = tf.placeholder(dtype, shape)
        with tf.control_dependencies([ops.send(self._comm, 'x', self._data)]):
          self._fetch = tf.identity(ops.recv(self._comm, 'y', dtype))
      else:
        self._fetch = ops.send(self._comm, 'y', ops.recv(self._comm, 'x', dtype))
    self._comm.connect(timeout_s=60)
    self._sess = tf.Session(graph=self._graph, config=ops.session_config(comm=self._comm))

  def round_trip(self, array):
    value = self._sess.run(self._fetch, {self._data: array})
    self._comm.advance_step()
    return value

  def echo(self):
    self._sess.run(self._fetch)
    self._comm.advance_step()

  def close(self):
    self._sess.close()
    self._comm.close()


class _GrpcioEnd(_SendRecvEnd):
  """One party of the bare grpcio exchange: a server for the peer's stream, a client stream to the peer."""

  def __init__(self, peer_port, local_port, dtype, shape):
    self._dtype, self._shape = dtype, shape
    self._inbox, self._outbox = queue.Queue(), queue.Queue()
    self._peer_done = threading.Event()

    def on_stream(requests, context):
      del context
      for data in requests:
        self._inbox.put(data)
      self._peer_done.set()
      return b''

    handler = grpc.method_handlers_generic_handler(
      'bench.Echo',
      {'Stream': grpc.stream_unary_rpc_method_handler(on_stream, request_deserializer=None, response_serializer=None)},
    )
    self._server = grpc.server(ThreadPoolExecutor(max_workers=4))
    self._server.add_generic_rpc_handlers((handler,))
    self._server.add_insecure_port('127.0.0.1:%d' % local_port)
    self._server.start()
    self._channel = grpc.insecure_channel('127.0.0.1:%d' % peer_port)
    grpc.channel_ready_future(self._channel).result(timeout=60)

    def outgoing():
      while True:
        data = self._outbox.get()
        if data is None:
          return
        yield data

    self._call = self._channel.stream_unary(_METHOD).future(outgoing())

  def send(self, array):
    self._outbox.put(np.ascontiguousarray(array).tobytes())

  def recv(self):
    return np.frombuffer(self._inbox.get(timeout=60), dtype=self._dtype).reshape(self._shape)

  def close(self):
    # Half-close, then wait for the peer's stream to end too before the server stops and cancels it.
    self._outbox.put(None)
    self._call.result(timeout=30)
    self._peer_done.wait(timeout=30)
    self._channel.close()
    self._server.stop(grace=1)


def _open(transport, role, peer_port, local_port, dtype, shape):
  if transport == 'efl':
    return _EflEnd(role, peer_port, local_port)
  if transport == 'ops':
    return _OpsEnd(role, peer_port, local_port, dtype, shape)
  return _GrpcioEnd(peer_port, local_port, dtype, shape)  # both ends alike: no roles


def _round_trips_ms(args, transport, shape, native_mode):
  """One run over `transport` (efl's on `native_mode`, an EFL_NATIVE_TRANSPORT value): starts the echoing
  follower, returns the leader's mean round trip in ms."""
  os.environ['EFL_NATIVE_TRANSPORT'] = native_mode  # Read by the communicators of both processes.
  lp, fp = free_port(), free_port()
  child = subprocess.Popen(
    [
      sys.executable,
      __file__,
      '--role',
      'follower',
      '--transport',
      transport,
      '--rounds',
      str(args.rounds),
      '--shape',
      args.shape,
      '--dtype',
      args.dtype,
      '--peer_port',
      str(lp),
      '--local_port',
      str(fp),
    ]
  )
  try:
    end = _open(transport, 'leader', fp, lp, args.dtype, shape)
    data = np.random.rand(*shape).astype(args.dtype)
    for _ in range(WARMUP):
      end.round_trip(data)
    start = time.time()
    for _ in range(args.rounds):
      end.round_trip(data)
    elapsed = time.time() - start
    end.close()
    if child.wait(60) != 0:
      raise RuntimeError('the %s echo process failed with exit code %d' % (transport, child.returncode))
  finally:
    if child.poll() is None:
      child.kill()
  return 1000 * elapsed / args.rounds


def _follower(args, shape):
  end = _open(args.transport, 'follower', args.peer_port, args.local_port, args.dtype, shape)
  for _ in range(WARMUP + args.rounds):
    end.echo()
  end.close()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rounds', type=int, default=2000)
  parser.add_argument('--pairs', type=int, default=3, help='alternating runs of each transport')
  parser.add_argument('--shape', default='256,128')
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--role', default='leader', choices=['leader', 'follower'], help=argparse.SUPPRESS)
  parser.add_argument('--transport', default='efl', choices=['efl', 'ops', 'grpcio'], help=argparse.SUPPRESS)
  parser.add_argument('--peer_port', type=int, help=argparse.SUPPRESS)
  parser.add_argument('--local_port', type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # The ops variant's processes start TF.
  shape = tuple(int(d) for d in args.shape.split(','))
  if args.role == 'follower':
    _follower(args, shape)
    return
  has_native = native.available()[0]
  default = 'native' if has_native else 'python'
  variants = [('efl', 'python'), ('ops', 'python'), ('grpcio', 'python')]
  if has_native:
    variants += [('efl', 'native'), ('ops', 'native')]
  times = {v: [] for v in variants}
  for _ in range(args.pairs):
    for transport, mode in variants:
      times[(transport, mode)].append(_round_trips_ms(args, transport, shape, _MODES[mode]))
  nbytes = int(np.prod(shape)) * np.dtype(args.dtype).itemsize
  tag = 'x'.join(str(d) for d in shape)
  for (transport, mode), runs in sorted(times.items()):
    print(
      '%s%s, shape %s %s (%d bytes), %d round trips per run: %s ms'
      % (
        transport,
        '' if transport == 'grpcio' else ' on the %s transport' % mode,
        list(shape),
        args.dtype,
        nbytes,
        args.rounds,
        ', '.join('%.3f' % t for t in runs),
      )
    )
  median = {v: statistics.median(runs) for v, runs in times.items()}
  efl, bare = median[('efl', default)], median[('grpcio', 'python')]
  print('BENCH comm_round_trip_ms_%s %.3f' % (tag, efl))
  print('BENCH grpcio_round_trip_ms_%s %.3f' % (tag, bare))
  print('BENCH comm_overhead_ratio_%s %.3f' % (tag, efl / bare))
  print('BENCH ops_round_trip_ms_%s %.3f' % (tag, median[('ops', default)]))
  if has_native:
    print('BENCH ops_python_round_trip_ms_%s %.3f' % (tag, median[('ops', 'python')]))
    print('BENCH ops_native_speedup_%s %.3f' % (tag, median[('ops', 'python')] / median[('ops', 'native')]))
  sys.stdout.flush()


if __name__ == '__main__':
  main()
