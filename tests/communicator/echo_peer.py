"""A follower process for the tests: echoes every 'x' of step i back as 'y' of step i until killed.

Usage: python echo_peer.py PEER_ADDR LOCAL_ADDR
"""

import sys

from efl.communicator.communicator import Communicator


def main(peer_addr, local_addr):
  comm = Communicator('follower', peer_addr, local_addr)
  comm.register_recv('x')
  comm.register_send('y')
  comm.connect(timeout_s=30, info={'pid': __import__('os').getpid()})
  step = 0
  while True:
    comm.send('y', step, comm.recv('x', step, timeout_s=60))
    step += 1


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2])
