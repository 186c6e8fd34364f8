"""Paillier key files: `public_key.json = {"n": int}` and `private_key.json = {"p": int, "q": int}`.

The follower (the active party) generates both files and keeps `private_key.json`; the leader (the passive
party) only ever reads `public_key.json`. The loaders return `phe` key objects, so the keys also work with
python-paillier directly.
"""

import json
import os
import secrets

import gmpy2
from phe import paillier

MIN_KEY_BITS = 512


class PaillierKeyError(ValueError):
  """A key file is missing, malformed, or does not match the other key file."""


def _random_prime(bits):
  # Top two bits set, so that the product of two such primes has exactly 2*bits bits.
  candidate = secrets.randbits(bits) | (3 << (bits - 2)) | 1
  return gmpy2.next_prime(gmpy2.mpz(candidate))


def generate_paillier_key(public_file, private_file, n_length=2048):
  """Generates a Paillier key pair and writes it as two JSON files.

  Args:
      public_file: path of the public key file, written as `{"n": n}`.
      private_file: path of the private key file, written as `{"p": p, "q": q}` (mode 0600).
      n_length: bit length of the modulus n; at least 512 and even. 2048 is the usual choice; 1024 is
          faster but below current recommendations.

  Returns:
      (public_key, private_key) as `phe.paillier.PaillierPublicKey` / `PaillierPrivateKey`.

  Raises:
      ValueError: n_length is odd or below 512.
  """
  if not isinstance(n_length, int) or n_length < MIN_KEY_BITS or n_length % 2:
    raise ValueError('n_length must be an even number of bits >= %d, got %r' % (MIN_KEY_BITS, n_length))
  half = n_length // 2
  while True:
    p = _random_prime(half)
    q = _random_prime(half)
    n = p * q
    if p != q and n.bit_length() == n_length:
      break
  public_key = paillier.PaillierPublicKey(int(n))
  private_key = paillier.PaillierPrivateKey(public_key, int(p), int(q))
  _write_json(public_file, {'n': int(n)}, private=False)
  _write_json(private_file, {'p': int(p), 'q': int(q)}, private=True)
  return public_key, private_key


def _write_json(path, obj, private):
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    os.makedirs(directory)
  tmp = path + '.tmp'
  flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
  fd = os.open(tmp, flags, 0o600 if private else 0o644)
  with os.fdopen(fd, 'w') as f:
    json.dump(obj, f)
  os.replace(tmp, path)


def _read_fields(path, fields, what):
  if not isinstance(path, str) or not path:
    raise PaillierKeyError('the %s key file must be a path, got %r' % (what, path))
  if not os.path.exists(path):
    raise PaillierKeyError(
      '%s key file %r does not exist; generate the pair with generate_paillier_keypair.py (or '
      'efl.privacy.generate_paillier_key) on the follower and copy public_key.json to the leader' % (what, path)
    )
  try:
    with open(path) as f:
      obj = json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise PaillierKeyError(
      '%s key file %r is not valid JSON (%s); regenerate it with generate_paillier_keypair.py' % (what, path, e)
    )
  if not isinstance(obj, dict):
    raise PaillierKeyError(
      '%s key file %r must hold a JSON object with fields %s, got %s; regenerate it '
      'with generate_paillier_keypair.py' % (what, path, fields, type(obj).__name__)
    )
  values = []
  for field in fields:
    value = obj.get(field)
    # bool is an int subclass; a key field is never a bool.
    if not isinstance(value, int) or isinstance(value, bool) or value <= 1:
      raise PaillierKeyError(
        '%s key file %r needs an integer field %r > 1, got %r; regenerate it with '
        'generate_paillier_keypair.py' % (what, path, field, value)
      )
    values.append(value)
  return values


def load_public_key(public_file):
  """Reads `{"n": int}` and returns a `phe.paillier.PaillierPublicKey`.

  Raises:
      PaillierKeyError: the file is missing or malformed, or n is too small / even.
  """
  (n,) = _read_fields(public_file, ['n'], 'public')
  if n.bit_length() < MIN_KEY_BITS or n % 2 == 0:
    raise PaillierKeyError(
      'public key file %r holds n of %d bits%s; a Paillier modulus is an odd number of '
      'at least %d bits; regenerate the pair'
      % (public_file, n.bit_length(), ' (even)' if n % 2 == 0 else '', MIN_KEY_BITS)
    )
  return paillier.PaillierPublicKey(n)


def load_private_key(private_file, public_key):
  """Reads `{"p": int, "q": int}` and returns a `phe.paillier.PaillierPrivateKey` for `public_key`.

  Args:
      private_file: path of the private key file.
      public_key: a `PaillierPublicKey` (e.g. from `load_public_key`), or the path of the public key file.

  Raises:
      PaillierKeyError: the file is missing or malformed, or p*q is not the public key's n.
  """
  public_file = None
  if isinstance(public_key, str):
    public_file = public_key
    public_key = load_public_key(public_key)
  p, q = _read_fields(private_file, ['p', 'q'], 'private')
  if p * q != public_key.n or p == q:
    raise PaillierKeyError(
      'private key file %r does not belong to the public key%s: p*q != n; the two files come from '
      'different runs of generate_paillier_keypair.py: copy the public_key.json generated together with '
      'this private key (or regenerate both)' % (private_file, ' in %r' % public_file if public_file else '')
    )
  return paillier.PaillierPrivateKey(public_key, p, q)


def load_keypair(public_file, private_file):
  """Loads both files and checks that they belong together. Returns (public_key, private_key)."""
  private_key = load_private_key(private_file, public_file)
  return private_key.public_key, private_key
