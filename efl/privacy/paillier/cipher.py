"""A fast Paillier core: gmpy2 arithmetic, batches split over worker processes, precomputed randomness.

`PaillierCipher` encrypts, decrypts and combines whole batches of ciphertexts. Speed comes from:

* gmpy2 (GMP) big-integer arithmetic, and `(1+n)^m = 1 + m*n mod n^2` instead of an exponentiation;
* CRT decryption (two half-size exponentiations modulo p^2 and q^2);
* every batch split over a pool of worker processes (by default one per core);
* the random factor r^n of each encryption ("obfuscator") taken from a stock that a background thread
  refills while the pool is idle;
* by default, the Damgard-Jurik-Nielsen form of the obfuscator, `h_s^a mod n^2` with `h_s = (-x^2)^n`
  fixed per cipher and `a` a fresh uniform integer of ceil(bits(n)/2) bits, computed with a fixed-base
  table of 11- or 12-bit windows (about bits(n)/23 multiplications instead of a bits(n)-bit exponentiation).
  Assumption: its semantic security rests on the decisional composite residuosity assumption together
  with the assumption that h_s^a with such half-length exponents is indistinguishable from a uniform
  n-th residue (Damgard, Jurik, Nielsen, "A generalization of Paillier's public-key system with
  applications to electronic voting", 2010). Pass `djn=False` to draw r uniformly and compute r^n in full
  (about 10x slower to encrypt).

Every encryption is randomised: there is no deterministic encryption path.
"""

import atexit
import collections
import concurrent.futures
import itertools
import multiprocessing
import os
import secrets
import threading
import weakref

import gmpy2
import numpy as np
from gmpy2 import mpz

from efl.privacy.paillier import _worker

_KEY_IDS = itertools.count()
_LIVE = weakref.WeakSet()


@atexit.register
def _close_all():
  for cipher in list(_LIVE):
    cipher.close()


def _split(count, parts):
  """Boundaries that cut range(count) into at most `parts` nearly equal consecutive pieces."""
  parts = max(1, min(parts, count))
  step, extra = divmod(count, parts)
  bounds, start = [], 0
  for i in range(parts):
    end = start + step + (1 if i < extra else 0)
    bounds.append((start, end))
    start = end
  return bounds


class PaillierCipher(object):
  """Batch Paillier operations for one key.

  Args:
      public_key: a `phe.paillier.PaillierPublicKey` (or anything with an integer `n`).
      private_key: a `phe.paillier.PaillierPrivateKey` to decrypt, or None (encrypt/compute only).
      processes: worker processes; None = one per core; 0 = compute in this process.
      djn: use the DJN short-exponent obfuscators (see the module docstring) instead of full r^n.
      precompute: how many obfuscators the background thread keeps in stock (0 disables it).
  """

  def __init__(self, public_key, private_key=None, processes=None, djn=True, precompute=16384):
    self.n = mpz(public_key.n)
    self.nsq = self.n * self.n
    self.n_bits = int(self.n.bit_length())
    self.ct_bytes = (int(self.nsq.bit_length()) + 7) // 8
    self.can_decrypt = private_key is not None
    p = q = None
    if private_key is not None:
      p, q = int(private_key.p), int(private_key.q)
    hs, djn_bits = None, 0
    if djn:
      while True:
        x = mpz(secrets.randbelow(int(self.n)))
        if x > 1 and gmpy2.gcd(x, self.n) == 1:
          break
      hs = int(gmpy2.powmod((-x * x) % self.n, self.n, self.nsq))
      djn_bits = (self.n_bits + 1) // 2
    self._key_id = '%d-%d' % (os.getpid(), next(_KEY_IDS))
    self._install_args = (self._key_id, int(self.n), p, q, hs, djn_bits)
    if processes is None:
      processes = os.cpu_count() or 1
    self.processes = int(processes)
    self._pool = None
    if self.processes > 0:
      self._pool = concurrent.futures.ProcessPoolExecutor(
        self.processes,
        mp_context=multiprocessing.get_context('fork'),
        initializer=_worker.init_worker_process,
        initargs=self._install_args,
      )
    else:
      _worker.install(*self._install_args)
    # Background stock of obfuscators; foreground work has priority over refills.
    self._stock = collections.deque()
    self._target = int(precompute)
    self._cond = threading.Condition()
    self._busy = 0
    self._closed = False
    self._refill_thread = None
    if self._target > 0 and self._pool is not None:
      self._refill_thread = threading.Thread(target=self._refill, name='paillier-obfuscators', daemon=True)
      self._refill_thread.start()
    _LIVE.add(self)

  # ------------------------------------------------------------------------------------------ plumbing

  def close(self):
    """Stops the background thread and the worker processes. Safe to call twice."""
    with self._cond:
      if self._closed:
        return
      self._closed = True
      self._cond.notify_all()
    if self._refill_thread is not None:
      self._refill_thread.join(timeout=30)
    if self._pool is not None:
      self._pool.shutdown(wait=True)
    else:
      _worker.uninstall(self._key_id)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def _refill(self):
    chunk = 64
    while True:
      with self._cond:
        while not self._closed and (self._busy or len(self._stock) >= self._target):
          self._cond.wait(0.5)
        if self._closed:
          return
      try:
        futures = [self._pool.submit(_worker.obfuscators, self._key_id, chunk) for _ in range(self.processes)]
        fresh = [o for f in futures for o in f.result()]
      except Exception:  # pylint: disable=broad-except
        # The pool is shutting down; foreground calls report real failures themselves.
        return
      with self._cond:
        self._stock.extend(fresh)

  def stock(self):
    """How many precomputed obfuscators are ready."""
    return len(self._stock)

  def fill_stock(self, count=None):
    """Blocks until at least `count` (default: the precompute target) obfuscators are in stock."""
    count = self._target if count is None else int(count)
    missing = count - len(self._stock)
    if missing > 0:
      workers = max(1, self.processes)
      fresh = self._run(_worker.obfuscators, [(-(-missing // workers),)] * workers, flatten=True)
      with self._cond:
        self._stock.extend(fresh)

  def _take(self, count):
    with self._cond:
      take = min(count, len(self._stock))
      out = [self._stock.popleft() for _ in range(take)]
      self._cond.notify_all()
    return out

  def _run(self, fn, arg_tuples, flatten=False):
    """Runs fn(key_id, *args) for every args tuple, in the pool, preserving order."""
    with self._cond:
      self._busy += 1
    try:
      if self._pool is None:
        results = [fn(self._key_id, *args) for args in arg_tuples]
      else:
        futures = [self._pool.submit(fn, self._key_id, *args) for args in arg_tuples]
        results = [f.result() for f in futures]
    finally:
      with self._cond:
        self._busy -= 1
        self._cond.notify_all()
    if flatten:
      return [x for r in results for x in r]
    return results

  def _parts(self, count):
    # A few pieces per process, so that uneven pieces still keep every core busy.
    return _split(count, max(1, self.processes) * 3)

  # ---------------------------------------------------------------------------------------- operations

  def encrypt(self, plaintexts):
    """Encrypts a list of signed integers (|m| < n/2); returns a list of gmpy2 ciphertexts."""
    plaintexts = [int(m) for m in plaintexts]
    obfs = self._take(len(plaintexts))
    tasks = [(plaintexts[a:b], obfs[a:b]) for a, b in self._parts(len(plaintexts))]
    return self._run(_worker.encrypt, tasks, flatten=True)

  def decrypt(self, ciphertexts):
    """Decrypts a list of ciphertexts into signed Python integers in (-n/2, n/2]."""
    if not self.can_decrypt:
      raise ValueError('this PaillierCipher holds only the public key and cannot decrypt')
    ciphertexts = list(ciphertexts)
    tasks = [(ciphertexts[a:b],) for a, b in self._parts(len(ciphertexts))]
    return self._run(_worker.decrypt, tasks, flatten=True)

  def scale_add(self, ciphertexts, scalars, adds):
    """Element-wise [m] -> [m * scalar + add], each result freshly re-randomised.

    Args:
        ciphertexts: list of ciphertexts.
        scalars: non-negative integers, one per ciphertext.
        adds: signed integers added to the plaintexts, one per ciphertext.
    """
    count = len(ciphertexts)
    if not (len(scalars) == len(adds) == count):
      raise ValueError(
        'scale_add needs one scalar and one add per ciphertext: %d ciphertexts, %d scalars, '
        '%d adds' % (count, len(scalars), len(adds))
      )
    scalars = [int(s) for s in scalars]
    if any(s < 0 for s in scalars):
      raise ValueError('scale_add takes non-negative scalars; fold the sign into the plaintext encoding')
    adds = [int(a) for a in adds]
    obfs = self._take(count)
    tasks = [(ciphertexts[a:b], scalars[a:b], adds[a:b], obfs[a:b]) for a, b in self._parts(count)]
    return self._run(_worker.scale_add, tasks, flatten=True)

  def column_products(self, columns, offset_bits, exp_bits):
    """Per column, several re-randomised multi-exponentiations of the same bases.

    Implements `_worker.column_products` over the pool: `columns` is a list of (bases, exps, adds) with
    exps[o][t] = e_{o,t} + 2**offset_bits >= 0; output o of a column is
    [sum_t m_t * e_{o,t} + adds[o]] where m_t is the plaintext of bases[t].

    Returns:
        A list (one per column) of lists of ciphertexts (one per output).
    """
    outputs = sum(len(c[1]) for c in columns)
    obfs = self._take(outputs)
    full, used = [], 0
    for bases, exps, adds in columns:
      full.append((bases, exps, adds, obfs[used : used + len(exps)]))
      used += len(exps)
    tasks = [(full[a:b], offset_bits, exp_bits) for a, b in self._parts(len(full))]
    return self._run(_worker.column_products, tasks, flatten=True)

  # ----------------------------------------------------------------------------------------- wire form

  def to_wire(self, ciphertexts):
    """Ciphertexts -> one uint8 array of fixed-width big-endian integers."""
    width = self.ct_bytes
    blob = b''.join(int(c).to_bytes(width, 'big') for c in ciphertexts)
    return np.frombuffer(blob, dtype=np.uint8).copy()

  def from_wire(self, array, expected=None, what='ciphertexts'):
    """The inverse of `to_wire`; checks the size and that every value is a valid ciphertext (< n^2)."""
    data = np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    width = self.ct_bytes
    if len(data) % width:
      raise ValueError(
        '%s: %d bytes is not a whole number of %d-byte ciphertexts; the peer uses another '
        'key size' % (what, len(data), width)
      )
    count = len(data) // width
    if expected is not None and count != expected:
      raise ValueError('%s: expected %d ciphertexts, received %d' % (what, expected, count))
    out = [mpz(int.from_bytes(data[i * width : (i + 1) * width], 'big')) for i in range(count)]
    nsq = self.nsq
    for c in out:
      if not 0 < c < nsq:
        raise ValueError('%s: received a value outside (0, n^2): not a ciphertext of this key' % what)
    return out
