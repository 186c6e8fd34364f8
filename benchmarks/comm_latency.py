"""Round trips between two processes on this host: efl's communicator against a bare grpcio stream.

The leader sends an array; the follower (a child process started by this script) echoes it back; the leader
waits for the echo before the next send. The same exchange runs over two transports, alternating, `--pairs`
times each:
- `efl`: a `Communicator` pair ("x" out, "y" back), frames encoded and decoded as in training;
- `grpcio`: one client stream per direction carrying the array's raw bytes, queue in and queue out, with no efl
  code: the floor that efl's Python layer adds to.

Prints the medians, `BENCH comm_round_trip_ms_<shape>` and `BENCH grpcio_round_trip_ms_<shape>`, and their ratio
`BENCH comm_overhead_ratio_<shape>` (1.0 would mean efl adds nothing to grpcio).

    python benchmarks/comm_latency.py [--rounds 2000] [--pairs 3] [--shape 256,128] [--dtype float32]
"""
import argparse
import queue
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np

from efl.communicator.communicator import Communicator

WARMUP = 50
_METHOD = '/bench.Echo/Stream'


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class _EflEnd(object):
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


class _GrpcioEnd(object):
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

    handler = grpc.method_handlers_generic_handler('bench.Echo', {'Stream': grpc.stream_unary_rpc_method_handler(
        on_stream, request_deserializer=None, response_serializer=None)})
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
  return _GrpcioEnd(peer_port, local_port, dtype, shape)  # both ends alike: no roles


def _round_trips_ms(args, transport, shape):
  """One run over `transport`: starts the echoing follower, returns the leader's mean round trip in ms."""
  lp, fp = _free_port(), _free_port()
  child = subprocess.Popen([sys.executable, __file__, '--role', 'follower', '--transport', transport,
                            '--rounds', str(args.rounds), '--shape', args.shape, '--dtype', args.dtype,
                            '--peer_port', str(lp), '--local_port', str(fp)])
  try:
    end = _open(transport, 'leader', fp, lp, args.dtype, shape)
    data = np.random.rand(*shape).astype(args.dtype)
    for _ in range(WARMUP):
      end.send(data)
      end.recv()
    start = time.time()
    for _ in range(args.rounds):
      end.send(data)
      end.recv()
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
    end.send(end.recv())
  end.close()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rounds', type=int, default=2000)
  parser.add_argument('--pairs', type=int, default=3, help='alternating runs of each transport')
  parser.add_argument('--shape', default='256,128')
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--role', default='leader', choices=['leader', 'follower'], help=argparse.SUPPRESS)
  parser.add_argument('--transport', default='efl', choices=['efl', 'grpcio'], help=argparse.SUPPRESS)
  parser.add_argument('--peer_port', type=int, help=argparse.SUPPRESS)
  parser.add_argument('--local_port', type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()
  shape = tuple(int(d) for d in args.shape.split(','))
  if args.role == 'follower':
    _follower(args, shape)
    return
  times = {'efl': [], 'grpcio': []}
  for _ in range(args.pairs):
    for transport in ('efl', 'grpcio'):
      times[transport].append(_round_trips_ms(args, transport, shape))
  nbytes = int(np.prod(shape)) * np.dtype(args.dtype).itemsize
  tag = 'x'.join(str(d) for d in shape)
  for transport, runs in sorted(times.items()):
    print('%s, shape %s %s (%d bytes), %d round trips per run: %s ms' % (
        transport, list(shape), args.dtype, nbytes, args.rounds, ', '.join('%.3f' % t for t in runs)))
  efl, bare = statistics.median(times['efl']), statistics.median(times['grpcio'])
  print('BENCH comm_round_trip_ms_%s %.3f' % (tag, efl))
  print('BENCH grpcio_round_trip_ms_%s %.3f' % (tag, bare))
  print('BENCH comm_overhead_ratio_%s %.3f' % (tag, efl / bare), flush=True)


if __name__ == '__main__':
  main()
