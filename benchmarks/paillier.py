"""Times one forward+backward step of the Paillier layer pair (batch x dim), both parties on this machine.

Prints
    BENCH paillier_step_s_<bits> <seconds>      efl's step (both parties, real gRPC communicators)
    BENCH paillier_speedup_<bits> <x>           against the same step done with per-element `phe` calls
The per-element `phe` step is estimated from a timed sample of elements (a full run takes minutes); the
output says so. Usage:
    python benchmarks/paillier.py [--bits 1024 2048] [--batch 256] [--dim 128] [--steps 2] [--naive_sample 48]
"""

import argparse
import os
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from efl.communicator import Communicator, CommunicatorError  # noqa: E402
from efl.privacy.paillier import encoding, generate_paillier_key  # noqa: E402
from efl.privacy.paillier.protocol import ActiveParty, PassiveParty  # noqa: E402


def _load():
  return '%.2f %.2f %.2f' % os.getloadavg()


def _cpu_s(ciphers):
  """CPU seconds used so far by this process and by the worker processes of `ciphers`."""
  total = time.process_time()
  ticks = os.sysconf('SC_CLK_TCK')
  for cipher in ciphers:
    for pid in list(getattr(cipher._pool, '_processes', None) or {}):  # pylint: disable=protected-access
      try:
        with open('/proc/%d/stat' % pid) as f:
          fields = f.read().rsplit(')', 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / float(ticks)
      except (IOError, OSError, IndexError, ValueError):
        pass
  return total


def efl_step(pub, priv, batch, dim, steps, precomputed):
  """Returns [(wall seconds, CPU seconds of both parties)] for each step (forward + backward)."""
  leader = Communicator('leader', '127.0.0.1:0', '127.0.0.1:0')  # learns the follower's port from its Hello
  follower = Communicator('follower', '127.0.0.1:%d' % leader.listen(), '127.0.0.1:0')
  active = ActiveParty(follower, dim, pub, priv, 0.01)
  passive = PassiveParty(leader, dim, dim, pub, 0.01)
  t = threading.Thread(target=leader.connect)
  t.start()
  follower.connect()
  t.join()
  rng = np.random.RandomState(0)
  x = rng.randn(batch, dim).astype(np.float32)
  dy = (rng.randn(batch, dim) * 1e-3).astype(np.float32)
  fn = encoding.weight_to_ring(rng.uniform(-0.5, 0.5, dim))
  wa = encoding.weight_to_ring(np.ones(dim))
  times = []
  try:
    for step in range(steps):
      if precomputed:
        # What the background threads reach when the parties have a moment between steps: the
        # obfuscators one step needs.
        groups = -(-batch // active.slots)
        active.cipher.fill_stock((groups + active.slots) * dim)
        passive.cipher.fill_stock((2 * groups + passive.slots) * dim)
      errors = []

      def run_leader(step=step):
        try:
          passive.forward(wa, step)
          passive.backward(dy, wa, step)
        except Exception as e:  # pylint: disable=broad-except
          errors.append(e)

      th = threading.Thread(target=run_leader)
      cpu = _cpu_s([active.cipher, passive.cipher])
      start = time.time()
      th.start()
      active.forward(x, fn, step)
      active.backward(fn, step)
      th.join()
      times.append((time.time() - start, _cpu_s([active.cipher, passive.cipher]) - cpu))
      if errors:
        raise errors[0]
  finally:
    closers = [threading.Thread(target=c.close) for c in (leader, follower)]
    for c in closers:
      c.start()
    for c in closers:
      c.join()
    active.close()
    passive.close()
  return times


def naive_step_estimate(pub, priv, batch, dim, sample):
  """Seconds of the same step with per-element `phe` calls, extrapolated from `sample` elements.

  Per element the step needs: encrypt x; w*[x] + Enc(u); decrypt; [fn]*dy + Enc(mask); decrypt;
  [x]*dy accumulated into the column sum. Per column: encrypt fn, encrypt the sum's mask, decrypt it.
  """
  rng = np.random.RandomState(1)
  xs = rng.randn(sample)
  start = time.time()
  for v in xs:
    cx = pub.encrypt(float(v))  # A: Enc(x)
    cz = cx * 1.25 + pub.encrypt(float(rng.rand()))  # P: w*[x] + Enc(u)
    priv.decrypt(cz)  # A: decrypt
    cfn = pub.encrypt(0.3)
    cd = cfn * float(v) + pub.encrypt(0.7)  # P: [fn]*dy + Enc(dy*w_a + mask)
    priv.decrypt(cd)  # A: decrypt dx
    _ = cx * float(v) + cz  # P: [x]*dy into the column sum
  per_element = (time.time() - start) / sample
  # The per-column work (one encryption of fn, the column sum's mask and its decryption) is counted once
  # per element above already, an over-count of (batch-1)/batch of it; leave it as a small upper bound.
  return per_element * batch * dim


def _retry(measure, attempts=3):
  # A saturated shared machine can starve a gRPC keepalive; such a run says nothing about the cipher.
  for attempt in range(attempts):
    try:
      return measure()
    except CommunicatorError as e:
      if attempt == attempts - 1:
        raise
      print('retrying the measurement after a transport failure: %s' % e)
  return None


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--bits', type=int, nargs='+', default=[1024, 2048])
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--dim', type=int, default=128)
  parser.add_argument('--steps', type=int, default=2)
  parser.add_argument('--naive_sample', type=int, default=48)
  args = parser.parse_args()
  tmp = tempfile.mkdtemp(prefix='paillier_bench_')
  print('cores %d, load before %s' % (os.cpu_count(), _load()))
  for bits in args.bits:
    pub, priv = generate_paillier_key(
      os.path.join(tmp, 'pk%d.json' % bits), os.path.join(tmp, 'sk%d.json' % bits), bits
    )
    cold = _retry(lambda: efl_step(pub, priv, args.batch, args.dim, args.steps, precomputed=False))
    warm = _retry(lambda: efl_step(pub, priv, args.batch, args.dim, 1, precomputed=True))
    best = min(t for t, _ in cold)
    print(
      'efl %d-bit, batch %d x dim %d: steps %s s wall (CPU of both parties: %s s) without precomputed '
      'randomness; %.2f s wall (CPU %.2f s) with the obfuscator stock filled between steps; load %s'
      % (
        bits,
        args.batch,
        args.dim,
        ', '.join('%.2f' % t for t, _ in cold),
        ', '.join('%.2f' % c for _, c in cold),
        warm[0][0],
        warm[0][1],
        _load(),
      )
    )
    print('BENCH paillier_step_s_%d %.3f' % (bits, best))
    if bits == 1024 or bits == args.bits[0]:
      naive = naive_step_estimate(pub, priv, args.batch, args.dim, args.naive_sample)
      print(
        'naive per-element phe %d-bit: %.1f s estimated from a timed sample of %d elements '
        '(extrapolated to %d elements, one core)' % (bits, naive, args.naive_sample, args.batch * args.dim)
      )
      print('BENCH paillier_speedup_%d %.1f' % (bits, naive / best))


if __name__ == '__main__':
  main()
