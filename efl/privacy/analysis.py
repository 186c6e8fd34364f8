"""Privacy accounting for DP-SGD: epsilon from the training parameters.

Each step samples a batch (modelled as Poisson sampling with probability
`batch_size / n`) and releases the Gaussian-noised sum of clipped gradients;
the Renyi-DP accountant of `dp_accounting` composes the steps and converts to
an (epsilon, delta) guarantee.

Orders: `RDP_ORDERS`, the set tensorflow-privacy's `compute_dp_sgd_privacy`
uses (1.1 ... 10.9 by 0.1, then 12 ... 63). RDP is converted to (epsilon,
delta) with `dp_accounting`'s bound, which is tighter than the classic
`rdp - log(delta) / (order - 1)`. For n=60000, batch 256, delta 1e-5:
noise multiplier 1.1 for 60 epochs gives epsilon 2.60 (3.01 with the classic
conversion); 1.3 for 20 epochs gives 1.107 (EFLS documents 1.11).
"""

import math
import numbers

import dp_accounting
from dp_accounting import rdp

RDP_ORDERS = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))


def _check(name, value, allow_zero=False, integral=False):
  ok = (
    isinstance(value, numbers.Real)
    and not isinstance(value, bool)
    and math.isfinite(value)
    and (value >= 0 if allow_zero else value > 0)
  )
  if ok and integral and int(value) != value:
    ok = False
  if not ok:
    kind = 'an integer' if integral else 'a finite number'
    bound = '>= 0' if allow_zero else '> 0'
    raise ValueError('{} must be {} {}. Found {!r}.'.format(name, kind, bound, value))


def epsilon_after_steps(n, batch_size, noise_multiplier, steps, delta=1e-5):
  """Returns epsilon after `steps` DP-SGD steps.

  Args:
    n: the number of training examples (the dataset size).
    batch_size: examples per step; the sampling rate is `batch_size / n`.
    noise_multiplier: noise stddev divided by the clip norm.
    steps: the number of steps taken (0 gives 0.0).
    delta: the target delta.

  Returns:
    epsilon, a float (`inf` when `noise_multiplier` is 0).

  Raises:
    ValueError: if an argument is out of range.
  """
  _check('n', n, integral=True)
  _check('batch_size', batch_size, integral=True)
  if batch_size > n:
    raise ValueError('batch_size must be <= n (the dataset size). Found batch_size={} and n={}.'.format(batch_size, n))
  _check('noise_multiplier', noise_multiplier, allow_zero=True)
  _check('steps', steps, allow_zero=True, integral=True)
  _check('delta', delta)
  if delta >= 1:
    raise ValueError('delta must be < 1. Found {!r}.'.format(delta))
  if steps == 0:
    return 0.0
  if noise_multiplier == 0:
    return float('inf')
  accountant = rdp.RdpAccountant(list(RDP_ORDERS))
  event = dp_accounting.SelfComposedDpEvent(
    dp_accounting.PoissonSampledDpEvent(batch_size / float(n), dp_accounting.GaussianDpEvent(noise_multiplier)),
    int(steps),
  )
  accountant.compose(event)
  return float(accountant.get_epsilon(delta))


def compute_dp_sgd_privacy(n=None, batch_size=None, noise_multiplier=None, epochs=None, delta=1e-5, **kwargs):
  """Returns epsilon after `epochs` epochs of DP-SGD.

  Positional order and keywords follow EFLS, whose names were
  `(mini_batch_size, micro_batch_size, noise_multiplier, epochs, delta)`
  though the first is the dataset size and the second the batch size; those
  two keywords are accepted as aliases of `n` and `batch_size`.

  Args:
    n: the number of training examples (EFLS keyword: `mini_batch_size`).
    batch_size: examples per step (EFLS keyword: `micro_batch_size`).
    noise_multiplier: noise stddev divided by the clip norm.
    epochs: passes over the data; steps = ceil(epochs * n / batch_size).
    delta: the target delta.
    **kwargs: only `mini_batch_size` and `micro_batch_size`.

  Returns:
    epsilon, a float.

  Raises:
    TypeError: for unknown or duplicated arguments.
    ValueError: if an argument is out of range.
  """
  aliases = {'mini_batch_size': 'n', 'micro_batch_size': 'batch_size'}
  values = {'n': n, 'batch_size': batch_size}
  for key, value in kwargs.items():
    if key not in aliases:
      raise TypeError('compute_dp_sgd_privacy got an unexpected keyword argument {!r}.'.format(key))
    if values[aliases[key]] is not None:
      raise TypeError('compute_dp_sgd_privacy got both {!r} and its alias {!r}.'.format(aliases[key], key))
    values[aliases[key]] = value
  n, batch_size = values['n'], values['batch_size']
  for name, value in (('n', n), ('batch_size', batch_size), ('noise_multiplier', noise_multiplier), ('epochs', epochs)):
    if value is None:
      raise TypeError('compute_dp_sgd_privacy is missing {!r}.'.format(name))
  _check('epochs', epochs)
  _check('n', n, integral=True)
  _check('batch_size', batch_size, integral=True)
  steps = int(math.ceil(epochs * n / float(batch_size)))
  return epsilon_after_steps(n, batch_size, noise_multiplier, steps, delta)
