"""Paillier arithmetic on gmpy2 integers, run inside the worker processes of `PaillierCipher`.

Imports nothing but gmpy2 and the standard library, so that a worker starts fast. Every function takes
and returns plain lists, so that a batch can be split across processes. The key material of the process
is installed once by `install`.
"""

import os
import secrets

import gmpy2
from gmpy2 import mpz

WINDOW = 4  # bits per window of the multi-exponentiations (tables of 2**WINDOW entries)


def djn_window(n_bits):
  """Bits per window of the fixed-base table of h_s.

  2**w entries per window; 45 MB (1024-bit n) and 98 MB (2048-bit n) per process, for ~25% fewer
  multiplications than 8-bit windows.
  """
  if n_bits <= 768:
    return 8
  return 12 if n_bits <= 1024 else 11


_KEY = {}


class _Key(object):
  """The arithmetic of one key: public part always, private part when p and q are given."""

  def __init__(self, n, p=None, q=None, hs=None, djn_bits=0):
    self.n = mpz(n)
    self.nsq = self.n * self.n
    self.half_n = self.n // 2
    self.p = self.q = None
    if p is not None:
      self.p, self.q = mpz(p), mpz(q)
      self.psq, self.qsq = self.p * self.p, self.q * self.q
      g = self.n + 1
      self.hp = gmpy2.invert((gmpy2.powmod(g, self.p - 1, self.psq) - 1) // self.p, self.p)
      self.hq = gmpy2.invert((gmpy2.powmod(g, self.q - 1, self.qsq) - 1) // self.q, self.q)
      self.q_inv_p = gmpy2.invert(self.q, self.p)
    self.djn_bits = djn_bits
    self.table = None
    self.window = djn_window(int(self.n.bit_length()))
    if hs is not None:
      self.table = _fixed_base_table(mpz(hs), self.nsq, djn_bits, self.window)

  # ------------------------------------------------------------------------------------ obfuscation

  def obfuscator(self):
    """A fresh random n-th residue r^n mod n^2 (DJN form h_s^a when a table is installed)."""
    if self.table is None:
      while True:
        r = mpz(secrets.randbelow(int(self.n)))
        if r > 1 and gmpy2.gcd(r, self.n) == 1:
          return gmpy2.powmod(r, self.n, self.nsq)
    a = secrets.randbits(self.djn_bits)
    acc = mpz(1)
    nsq = self.nsq
    window = self.window
    mask = (1 << window) - 1
    for row in self.table:
      d = a & mask
      if d:
        acc = acc * row[d] % nsq
      a >>= window
      if not a:
        break
    return acc

  # ---------------------------------------------------------------------------------- encrypt/decrypt

  def raw_encrypt(self, m, obf):
    # (1+n)^m = 1 + m*n mod n^2: no exponentiation needed for the message part.
    return (1 + (m % self.n) * self.n) % self.nsq * obf % self.nsq

  def decrypt(self, c):
    """CRT decryption; returns the plaintext as a signed integer in (-n/2, n/2]."""
    c = mpz(c)
    mp = (gmpy2.powmod(c, self.p - 1, self.psq) - 1) // self.p * self.hp % self.p
    mq = (gmpy2.powmod(c, self.q - 1, self.qsq) - 1) // self.q * self.hq % self.q
    m = mq + ((mp - mq) * self.q_inv_p % self.p) * self.q
    return int(m - self.n) if m > self.half_n else int(m)


def _fixed_base_table(hs, nsq, bits, window):
  rows = []
  base = hs
  for _ in range((bits + window - 1) // window):
    row = [mpz(1), base]
    for _ in range(2, 1 << window):
      row.append(row[-1] * base % nsq)
    rows.append(row)
    base = row[-1] * base % nsq  # base^(2^window)
  return rows


def init_worker_process(*install_args):
  """Initializer of a worker process: lower priority, then `install`."""
  try:
    # The party's own process (gRPC keepalives, TensorFlow) must stay responsive while workers compute.
    os.nice(5)
  except OSError:
    pass
  install(*install_args)


def install(key_id, n, p=None, q=None, hs=None, djn_bits=0):
  """Installs a key in this process (idempotent per key_id)."""
  if key_id not in _KEY:
    _KEY[key_id] = _Key(n, p, q, hs, djn_bits)
  return True


def uninstall(key_id):
  """Forgets a key installed in this process (its tables can be large)."""
  _KEY.pop(key_id, None)


def key(key_id):
  return _KEY[key_id]


# ------------------------------------------------------------------------------------------ batch tasks


def obfuscators(key_id, count):
  k = _KEY[key_id]
  return [k.obfuscator() for _ in range(count)]


def encrypt(key_id, plains, obfs):
  """Encrypts signed integers; `obfs` may be shorter than `plains` (the rest is computed here)."""
  k = _KEY[key_id]
  out = []
  for i, m in enumerate(plains):
    obf = obfs[i] if i < len(obfs) else k.obfuscator()
    out.append(k.raw_encrypt(m, obf))
  return out


def decrypt(key_id, cts):
  k = _KEY[key_id]
  return [k.decrypt(c) for c in cts]


def scale_add(key_id, cts, scalars, adds, obfs):
  """[m] -> [m*scalar + add], freshly re-randomised; scalars are non-negative integers."""
  k = _KEY[key_id]
  n, nsq = k.n, k.nsq
  out = []
  for i, c in enumerate(cts):
    obf = obfs[i] if i < len(obfs) else k.obfuscator()
    v = gmpy2.powmod(c, scalars[i], nsq)
    v = v * ((1 + (adds[i] % n) * n) % nsq) % nsq
    out.append(v * obf % nsq)
  return out


def _window_table(base, nsq):
  table = [mpz(1), base]
  for _ in range(2, 1 << WINDOW):
    table.append(table[-1] * base % nsq)
  return table


def multi_pow(tables, exps, nsq, bits):
  """prod(base_i ** e_i) mod nsq by Straus' interleaved windows; e_i >= 0 and < 2**bits.

  Args:
      tables: per base, [base**0, ..., base**(2**WINDOW - 1)].
      exps: one non-negative exponent per base.
      nsq: the modulus, n**2.
      bits: bit length bound of the exponents.
  """
  acc = mpz(1)
  mask = (1 << WINDOW) - 1
  for shift in range(((bits + WINDOW - 1) // WINDOW - 1) * WINDOW, -1, -WINDOW):
    if acc != 1:
      for _ in range(WINDOW):
        acc = acc * acc % nsq
    for table, e in zip(tables, exps):
      d = (e >> shift) & mask
      if d:
        acc = acc * table[d] % nsq
  return acc


def _pow2_inverse(c, shift, nsq):
  # c ** (-(2**shift)) mod nsq: the correction for exponents made non-negative by an offset of 2**shift.
  v = gmpy2.invert(c, nsq)
  for _ in range(shift):
    v = v * v % nsq
  return v


def column_products(key_id, columns, offset_bits, exp_bits):
  """For each column: prod_t base_t ** (e_{t,o} - 2**offset_bits), one output per o, re-randomised.

  Computes, for every output o of a column, `prod_t bases[t] ** exps[o][t] * [add_o]` where the exponents
  were offset by 2**offset_bits to be non-negative; the offset is removed with one inversion per column.

  Args:
      key_id: the id of a key loaded into this worker.
      columns: list of (bases, exps, adds, obfs): bases are ciphertexts, exps[o][t] non-negative ints,
          adds[o] a plaintext added to output o, obfs up to one obfuscator per output.
      offset_bits: the exponents carry an offset of 2**offset_bits.
      exp_bits: bit length bound of the (offset) exponents.

  Returns:
      One list of output ciphertexts per column.
  """
  k = _KEY[key_id]
  n, nsq = k.n, k.nsq
  result = []
  for bases, exps, adds, obfs in columns:
    tables = [_window_table(mpz(b), nsq) for b in bases]
    prod = mpz(1)
    for b in bases:
      prod = prod * b % nsq
    correction = _pow2_inverse(prod, offset_bits, nsq)
    outs = []
    for o, row in enumerate(exps):
      v = multi_pow(tables, row, nsq, exp_bits) * correction % nsq
      v = v * ((1 + (adds[o] % n) * n) % nsq) % nsq
      obf = obfs[o] if o < len(obfs) else k.obfuscator()
      outs.append(v * obf % nsq)
    result.append(outs)
  return result
