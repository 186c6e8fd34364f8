"""Tests of the DPQuery interface and the Gaussian sum queries (graph mode)."""

import numpy as np
import tensorflow.compat.v1 as tf

from efl.privacy import dp_query
from efl.privacy import gaussian_query


def _run_query(query, records):
  """Accumulates `records` one by one and returns the noised result."""
  global_state = query.initial_global_state()
  params = query.derive_sample_params(global_state)
  state = query.initial_sample_state(records[0])
  for record in records:
    state = query.accumulate_record(params, state, record)
  result, _ = query.get_noised_result(state, global_state)
  return result


class _SumOnly(dp_query.SumAggregationDPQuery):
  """A query that keeps the base class's defaults except the noise."""

  def get_noised_result(self, sample_state, global_state):
    return sample_state, global_state


class GaussianSumQueryTest(tf.test.TestCase):
  @classmethod
  def setUpClass(cls):
    super(GaussianSumQueryTest, cls).setUpClass()
    tf.disable_eager_execution()

  def test_clips_each_record_to_the_global_norm(self):
    with tf.Graph().as_default(), self.cached_session() as sess:
      # Global norm of record 1 is 5 (clipped to 2); record 2's is 1 (kept).
      r1 = [tf.constant([3.0, 0.0]), tf.constant([[4.0]])]
      r2 = [tf.constant([0.0, 1.0]), tf.constant([[0.0]])]
      query = gaussian_query.GaussianSumQuery(l2_norm_clip=2.0, stddev=0.0)
      vec, mat = sess.run(_run_query(query, [r1, r2]))
      self.assertAllClose(vec, [1.2, 1.0])
      self.assertAllClose(mat, [[1.6]])

  def test_noise_stddev(self):
    with tf.Graph().as_default(), self.cached_session() as sess:
      query = gaussian_query.GaussianSumQuery(l2_norm_clip=1.0, stddev=2.5)
      result = _run_query(query, [tf.zeros([200000])])
      draws = sess.run(result)
      self.assertNear(np.mean(draws), 0.0, 0.05)
      self.assertNear(np.std(draws), 2.5, 0.05)

  def test_batch_accumulation_equals_one_by_one(self):
    with tf.Graph().as_default(), self.cached_session() as sess:
      records = np.arange(12, dtype=np.float32).reshape([4, 3])
      for query in [_SumOnly(), gaussian_query.GaussianSumQuery(5.0, 0.0)]:
        params = query.derive_sample_params(query.initial_global_state())
        one = _run_query(query, [tf.constant(r) for r in records])
        stacked = tf.map_fn(lambda r, q=query, p=params: q.preprocess_record(p, r), tf.constant(records))
        state = query.initial_sample_state(tf.zeros([3]))
        fast = query.accumulate_preprocessed_records(state, stacked)
        # The base class's generic while_loop version.
        slow = dp_query.DPQuery.accumulate_preprocessed_records(
          query, query.initial_sample_state(tf.zeros([3])), stacked
        )
        a, b, c = sess.run([one, fast, slow])
        self.assertAllClose(a, b)
        self.assertAllClose(a, c)

  def test_multiplicative_noise_is_relative(self):
    with tf.Graph().as_default(), self.cached_session() as sess:
      query = gaussian_query.MultiplicativeGaussianSumQuery(0.5)
      record = tf.concat([tf.zeros([1000]), tf.fill([100000], 4.0)], 0)
      out = sess.run(_run_query(query, [record]))
      self.assertAllEqual(out[:1000], np.zeros(1000))  # zero stays zero
      self.assertNear(np.std(out[1000:]), 2.0, 0.05)
      self.assertNear(np.mean(out[1000:]), 4.0, 0.05)

  def test_rejects_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, 'l2_norm_clip must be .* > 0'):
      gaussian_query.GaussianSumQuery(0.0, 1.0)
    with self.assertRaisesRegex(ValueError, 'stddev must be .* >= 0. Found -1'):
      gaussian_query.GaussianSumQuery(1.0, -1.0)
    with self.assertRaisesRegex(ValueError, 'noise_multiplier'):
      gaussian_query.MultiplicativeGaussianSumQuery(float('nan'))


if __name__ == '__main__':
  tf.test.main()
