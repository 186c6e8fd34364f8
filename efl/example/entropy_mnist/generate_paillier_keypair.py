"""Generates the Paillier key pair of the forward-encryption example (run it on the follower).

Writes `public_key.json` ({"n": ...}) and `private_key.json` ({"p": ..., "q": ...}) into the current
directory unless told otherwise. The follower keeps both files; copy only `public_key.json` to the leader.

Usage::

  python generate_paillier_keypair.py
  python generate_paillier_keypair.py --n_length 1024 --public_file /tmp/pk.json --private_file /tmp/sk.json
"""

from __future__ import print_function

import argparse
import os
import sys

from efl.privacy.paillier.keys import generate_paillier_key


def main(argv=None):
  parser = argparse.ArgumentParser(description='Generates public_key.json and private_key.json.')
  parser.add_argument(
    '--public_file', default='public_key.json', help='path of the public key file (default: ./public_key.json)'
  )
  parser.add_argument(
    '--private_file', default='private_key.json', help='path of the private key file (default: ./private_key.json)'
  )
  parser.add_argument(
    '--n_length', type=int, default=2048, help='bit length of the modulus n (default 2048; 1024 is faster but weaker)'
  )
  args = parser.parse_args(argv)
  try:
    public_key, _ = generate_paillier_key(args.public_file, args.private_file, args.n_length)
  except ValueError as e:
    parser.error(str(e))
  print(
    'wrote %s (%d-bit n) and %s; copy only %s to the leader'
    % (
      os.path.abspath(args.public_file),
      public_key.n.bit_length(),
      os.path.abspath(args.private_file),
      os.path.basename(args.public_file),
    )
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
