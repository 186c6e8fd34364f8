"""Round-trip rate of the communicator between two processes on this host.

The leader sends an array as "x"; the follower (a child process started by this script) echoes it back as
"y"; the leader waits for the echo before the next send. Prints round trips per second.

    python benchmarks/comm_latency.py [--rounds 2000] [--shape 256,128] [--dtype float32]
"""
import argparse
import socket
import subprocess
import sys
import time

import numpy as np

from efl.communicator.communicator import Communicator


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _follower(peer_addr, local_addr, rounds):
  comm = Communicator('follower', peer_addr, local_addr)
  comm.register_recv('x')
  comm.register_send('y')
  comm.connect(timeout_s=60)
  for step in range(rounds):
    comm.send('y', step, comm.recv('x', step, timeout_s=60))
  comm.close()


def _leader(args):
  lp, fp = _free_port(), _free_port()
  child = subprocess.Popen([sys.executable, __file__, '--role', 'follower', '--rounds', str(args.rounds + 50),
                            '--peer_addr', '127.0.0.1:%d' % lp, '--local_addr', '127.0.0.1:%d' % fp])
  comm = Communicator('leader', '127.0.0.1:%d' % fp, '127.0.0.1:%d' % lp)
  comm.register_send('x')
  comm.register_recv('y')
  try:
    comm.connect(timeout_s=60)
    shape = tuple(int(d) for d in args.shape.split(','))
    data = np.random.rand(*shape).astype(args.dtype)
    for step in range(50):  # Warm-up.
      comm.send('x', step, data)
      comm.recv('y', step)
    start = time.time()
    for step in range(50, 50 + args.rounds):
      comm.send('x', step, data)
      comm.recv('y', step)
    elapsed = time.time() - start
    print('shape %s %s (%d bytes): %d round trips in %.2f s = %.0f round trips/s, %.3f ms each'
          % (list(shape), args.dtype, data.nbytes, args.rounds, elapsed, args.rounds / elapsed,
             1000 * elapsed / args.rounds))
    print('BENCH comm_round_trip_ms_%s %.3f' % ('x'.join(str(d) for d in shape), 1000 * elapsed / args.rounds),
          flush=True)
  finally:
    comm.close()
    child.wait(30)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rounds', type=int, default=2000)
  parser.add_argument('--shape', default='256,128')
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--role', default='leader', choices=['leader', 'follower'], help=argparse.SUPPRESS)
  parser.add_argument('--peer_addr', help=argparse.SUPPRESS)
  parser.add_argument('--local_addr', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.role == 'follower':
    _follower(args.peer_addr, args.local_addr, args.rounds)
  else:
    _leader(args)


if __name__ == '__main__':
  main()
