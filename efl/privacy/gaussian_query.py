"""Gaussian sum queries: clip each record, sum, add Gaussian noise."""

import collections
import math
import numbers

import tensorflow.compat.v1 as tf

from efl.privacy import dp_query


def _check_number(name, value, allow_zero):
  """Raises ValueError unless `value` is a finite number > 0 (or >= 0)."""
  if (
    not isinstance(value, numbers.Real)
    or isinstance(value, bool)
    or not math.isfinite(value)
    or value < 0
    or (value == 0 and not allow_zero)
  ):
    bound = '>= 0' if allow_zero else '> 0'
    raise ValueError('{} must be a finite number {}. Found {!r}.'.format(name, bound, value))
  return float(value)


class GaussianSumQuery(dp_query.SumAggregationDPQuery):
  """Clips each record to a global L2 norm and adds N(0, stddev^2) to the sum.

  The sum has L2 sensitivity `l2_norm_clip` (adding or removing one record
  moves it by at most that much), so the Gaussian mechanism's guarantee is
  governed by `stddev / l2_norm_clip`, the noise multiplier.
  """

  # Python numbers, not tensors: an optimizer is often built before the graph
  # it will be used in.
  _GlobalState = collections.namedtuple('_GlobalState', ['l2_norm_clip', 'stddev'])

  def __init__(self, l2_norm_clip, stddev):
    """Creates the query.

    Args:
      l2_norm_clip: `float` > 0, the bound on the global L2 norm of a record.
      stddev: `float` >= 0, the standard deviation of the noise added to each
        coordinate of the sum.

    Raises:
      ValueError: if an argument is out of range.
    """
    self._l2_norm_clip = _check_number('l2_norm_clip', l2_norm_clip, False)
    self._stddev = _check_number('stddev', stddev, True)

  @property
  def l2_norm_clip(self):
    return self._l2_norm_clip

  @property
  def stddev(self):
    return self._stddev

  def initial_global_state(self):
    """Implements `efl.privacy.DPQuery.initial_global_state`."""
    return self._GlobalState(self._l2_norm_clip, self._stddev)

  def derive_sample_params(self, global_state):
    """Implements `efl.privacy.DPQuery.derive_sample_params`."""
    return global_state.l2_norm_clip

  def preprocess_record(self, params, record):
    """Implements `efl.privacy.DPQuery.preprocess_record`.

    Scales the record so that the L2 norm of all its tensors together is at
    most `params` (the clip).
    """
    flat = tf.nest.flatten(record)
    # Written out rather than tf.clip_by_global_norm: its L2Loss op has no
    # tf.vectorized_map converter in TF 1.15.
    norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(t)) for t in flat]))
    scale = self.record_scales(params, norm)
    clipped = [t * tf.cast(scale, t.dtype) for t in flat]
    return tf.nest.pack_sequence_as(record, clipped)

  def record_scales(self, params, record_norms):
    """Implements `efl.privacy.DPQuery.record_scales`: clipping to the norm `params`."""
    return tf.minimum(1.0, params / tf.maximum(record_norms, 1e-30))

  def get_noised_result(self, sample_state, global_state):
    """Implements `efl.privacy.DPQuery.get_noised_result`."""
    stddev = global_state.stddev

    def add_noise(t):
      if stddev == 0:
        return tf.identity(t)
      return t + tf.random.normal(tf.shape(t), stddev=stddev, dtype=t.dtype)

    return tf.nest.map_structure(add_noise, sample_state), global_state

  def derive_metrics(self, global_state):
    """Implements `efl.privacy.DPQuery.derive_metrics`."""
    return collections.OrderedDict([('l2_norm_clip', global_state.l2_norm_clip), ('stddev', global_state.stddev)])


class MultiplicativeGaussianSumQuery(dp_query.SumAggregationDPQuery):
  """Sums records unclipped and scales each coordinate by `1 + N(0, sigma^2)`.

  This is EFLS's behaviour for a DP optimizer without `l2_norm_clip`. It is
  **not** differential privacy: without a bound on a record's norm the noise
  is not calibrated to any sensitivity, and a zero gradient stays exactly zero.
  No epsilon can be computed for it.
  """

  _GlobalState = collections.namedtuple('_GlobalState', ['noise_multiplier'])

  def __init__(self, noise_multiplier):
    """Creates the query.

    Args:
      noise_multiplier: `float` >= 0, the standard deviation of the relative
        noise.

    Raises:
      ValueError: if `noise_multiplier` is out of range.
    """
    self._noise_multiplier = _check_number('noise_multiplier', noise_multiplier, True)

  def initial_global_state(self):
    """Implements `efl.privacy.DPQuery.initial_global_state`."""
    return self._GlobalState(self._noise_multiplier)

  def record_scales(self, params, record_norms):
    """Implements `efl.privacy.DPQuery.record_scales`: records are summed unscaled."""
    del params
    return tf.ones_like(record_norms)

  def get_noised_result(self, sample_state, global_state):
    """Implements `efl.privacy.DPQuery.get_noised_result`."""
    sigma = global_state.noise_multiplier

    def add_noise(t):
      if sigma == 0:
        return tf.identity(t)
      return t + t * tf.random.normal(tf.shape(t), stddev=sigma, dtype=t.dtype)

    return tf.nest.map_structure(add_noise, sample_state), global_state
