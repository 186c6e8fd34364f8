"""Tests of the DP optimizers in graph mode, against gradients computed by hand."""

import copy

import numpy as np
import tensorflow.compat.v1 as tf
from absl.testing import parameterized

from efl.privacy import dp_optimizer
from efl.privacy import gaussian_query

METHODS = ('layers', 'vectorized', 'loop', 'slices')
D, OUT = 3, 2  # input and output width of the test layer


def _data(batch, seed=0):
  rng = np.random.RandomState(seed)
  # Mixed scales: some microbatch gradients are clipped, some are not.
  x = rng.randn(batch, D).astype(np.float32) * np.linspace(0.1, 3.0, batch, dtype=np.float32)[:, None]
  y = rng.randn(batch, OUT).astype(np.float32)
  w = rng.randn(D, OUT).astype(np.float32)
  b = rng.randn(OUT).astype(np.float32)
  return x, y, w, b


def _linear_graph(x, y, w, b, static_batch=True, use_resource=False):
  """Per-example loss 0.5 * ||x W + b - y||^2; returns (feeds, loss, vars)."""
  batch = x.shape[0] if static_batch else None
  xp = tf.placeholder(tf.float32, [batch, D])
  yp = tf.placeholder(tf.float32, [batch, OUT])
  wv = tf.get_variable('w', initializer=w, use_resource=use_resource)
  bv = tf.get_variable('b', initializer=b, use_resource=use_resource)
  loss = 0.5 * tf.reduce_sum(tf.square(tf.matmul(xp, wv) + bv - yp), axis=1)
  return {xp: x, yp: y}, loss, [wv, bv]


def _hand_gradients(x, y, w, b, clip, num_microbatches, reduce='mean'):
  """The DP gradient with zero noise, in numpy."""
  r = x.dot(w) + b - y
  gw = np.einsum('bi,bo->bio', x, r)
  gb = r
  m = num_microbatches or x.shape[0]
  if x.shape[0] % m:
    m = x.shape[0]
  red = np.mean if reduce == 'mean' else np.sum
  gw = red(gw.reshape([m, -1, D, OUT]), axis=1)
  gb = red(gb.reshape([m, -1, OUT]), axis=1)
  total_w, total_b = np.zeros([D, OUT]), np.zeros([OUT])
  for j in range(m):
    norm = np.sqrt(np.sum(gw[j] ** 2) + np.sum(gb[j] ** 2))
    scale = min(1.0, clip / norm) if clip else 1.0
    total_w += gw[j] * scale
    total_b += gb[j] * scale
  return total_w / m, total_b / m


class _RecordingQuery(gaussian_query.GaussianSumQuery):
  """Also tracks the largest global norm of a record entering the sum."""

  def __init__(self, *args):
    super(_RecordingQuery, self).__init__(*args)
    self.max_norm = None

  def initial_sample_state(self, template):
    return (super(_RecordingQuery, self).initial_sample_state(template), tf.constant(0.0))

  @staticmethod
  def _norm(record, axis=None):
    return tf.sqrt(
      tf.add_n(
        [
          tf.reduce_sum(tf.reshape(tf.square(t), [tf.shape(t)[0], -1]), 1) if axis == 0 else tf.reduce_sum(tf.square(t))
          for t in record
        ]
      )
    )

  def accumulate_preprocessed_record(self, sample_state, record):
    sums, top = sample_state
    return (
      super(_RecordingQuery, self).accumulate_preprocessed_record(sums, record),
      tf.maximum(top, self._norm(record)),
    )

  def accumulate_preprocessed_records(self, sample_state, records):
    sums, top = sample_state
    return (
      super(_RecordingQuery, self).accumulate_preprocessed_records(sums, records),
      tf.maximum(top, tf.reduce_max(self._norm(records, axis=0))),
    )

  def merge_sample_states(self, a, b):
    raise NotImplementedError

  def get_noised_result(self, sample_state, global_state):
    sums, self.max_norm = sample_state
    return super(_RecordingQuery, self).get_noised_result(sums, global_state)


def _gaussian(clip, sigma, m=None, method=None, **kwargs):
  opt = dp_optimizer.DPGradientDescentGaussianOptimizer(
    l2_norm_clip=clip, noise_multiplier=sigma, num_microbatches=m, learning_rate=0.25, **kwargs
  )
  if method:
    opt.per_microbatch_method = method
  return opt


class DPOptimizerTest(tf.test.TestCase, parameterized.TestCase):
  @classmethod
  def setUpClass(cls):
    super(DPOptimizerTest, cls).setUpClass()
    tf.disable_eager_execution()

  def _run(self, fetches, feeds, graph_init=True):
    with self.session() as sess:
      if graph_init:
        sess.run(tf.global_variables_initializer())
      return sess.run(fetches, feeds)

  @parameterized.product(method=METHODS, m=(None, 2, 4), static_batch=(True, False))
  def test_zero_noise_equals_hand_computation(self, method, m, static_batch):
    x, y, w, b = _data(8)
    with tf.Graph().as_default():
      feeds, loss, var_list = _linear_graph(x, y, w, b, static_batch)
      opt = _gaussian(1.0, 0.0, m, method)
      gv = opt.compute_gradients(loss, var_list)
      got = self._run([g for g, _ in gv], feeds)
    want = _hand_gradients(x, y, w, b, 1.0, m)
    self.assertAllClose(got[0], want[0], rtol=1e-5, atol=1e-6)
    self.assertAllClose(got[1], want[1], rtol=1e-5, atol=1e-6)

  def test_unrolled_and_resource_variables(self):
    x, y, w, b = _data(6)
    want = _hand_gradients(x, y, w, b, 0.5, 3)
    for kwargs, use_resource in [({'unroll_microbatches': True}, False), ({}, True)]:
      with tf.Graph().as_default():
        feeds, loss, var_list = _linear_graph(x, y, w, b, use_resource=use_resource)
        opt = _gaussian(0.5, 0.0, 3, **kwargs)
        got = self._run([g for g, _ in opt.compute_gradients(loss, var_list)], feeds)
      self.assertAllClose(got[0], want[0], rtol=1e-5, atol=1e-6)
      self.assertAllClose(got[1], want[1], rtol=1e-5, atol=1e-6)

  @parameterized.parameters(*METHODS)
  def test_every_record_entering_the_sum_is_clipped(self, method):
    x, y, w, b = _data(8)
    x *= 50.0  # every per-example gradient is far above the clip
    with tf.Graph().as_default():
      feeds, loss, var_list = _linear_graph(x, y, w, b)
      query = _RecordingQuery(0.3, 0.0)
      opt = dp_optimizer.DPGradientDescentOptimizer(query, None, False, 0.1)
      opt.per_microbatch_method = method
      if method == 'layers':  # the query's own sum is not the plain sum
        with self.assertRaisesRegex(ValueError, '_RecordingQuery does not'):
          opt.compute_gradients(loss, var_list)
        return
      grads = [g for g, _ in opt.compute_gradients(loss, var_list)]
      max_norm, _ = self._run([query.max_norm, grads], feeds)
    self.assertLessEqual(max_norm, 0.3 * (1 + 1e-5))
    self.assertGreater(max_norm, 0.3 * (1 - 1e-5))

  def test_noise_stddev(self):
    with tf.Graph().as_default():
      x = tf.zeros([4, 200000])
      v = tf.get_variable('v', [200000])
      loss = tf.reduce_sum(x * v, axis=1)  # zero gradients: pure noise
      opt = _gaussian(3.0, 2.0)
      ((grad, _),) = opt.compute_gradients(loss, [v])
      draws = self._run(grad, None)
    # stddev = clip * noise_multiplier / num_microbatches = 3 * 2 / 4
    self.assertNear(np.std(draws), 1.5, 0.03)
    self.assertNear(np.mean(draws), 0.0, 0.03)

  def test_reduce_sum_vs_mean(self):
    x, y, w, b = _data(6)
    with tf.Graph().as_default():
      feeds, loss, var_list = _linear_graph(x, y, w, b)
      fetches = {}
      for name, reduce in [('mean', 'mean'), ('sum', 'sum'), ('callable', tf.reduce_sum)]:
        opt = _gaussian(1e6, 0.0, 2)
        fetches[name] = [g for g, _ in opt.compute_gradients(loss, var_list, opt_config={'REDUCE': reduce})]
      got = self._run(fetches, feeds)
    # Microbatches of k=3 examples: 'sum' is exactly k times 'mean'.
    for a, b_ in zip(got['sum'], got['mean']):
      self.assertAllClose(a, 3.0 * b_, rtol=1e-5)
    for a, b_ in zip(got['sum'], got['callable']):
      self.assertAllClose(a, b_, rtol=1e-6)
    want = _hand_gradients(x, y, w, b, None, 2, reduce='sum')
    self.assertAllClose(got['sum'][0], want[0], rtol=1e-5)

  def test_opt_config_is_not_mutated(self):
    x, y, w, b = _data(4)
    config = {'REDUCE': 'sum', 'BACKEND_MODE': 'noise'}
    before = copy.deepcopy(config)
    with tf.Graph().as_default():
      _, loss, var_list = _linear_graph(x, y, w, b)
      _gaussian(1.0, 1.0).compute_gradients(loss, var_list, opt_config=config)
    self.assertEqual(config, before)

  @parameterized.parameters((None, 'mean'), (2, 'mean'), (2, 'sum'))
  def test_plain_tensor_rows(self, m, reduce):
    rng = np.random.RandomState(1)
    t_val = rng.randn(6, 4).astype(np.float32) * np.arange(1, 7, dtype=np.float32)[:, None]
    g_val = rng.randn(6, 4).astype(np.float32)
    with tf.Graph().as_default():
      t = tf.placeholder(tf.float32, [None, 4])
      g = tf.placeholder(tf.float32, [None, 4])
      loss = 0.5 * tf.square(t)  # [B, 4]; example i's gradient: t_i * g_i
      opt = _gaussian(2.0, 0.0, m)
      ((grad, var),) = opt.compute_gradients(loss, [t], grad_loss=g, opt_config={'REDUCE': reduce})
      (plain,) = opt.compute_plain_gradients(loss, [t], grad_loss=g)
      got, got_plain = self._run([grad, plain], {t: t_val, g: g_val}, graph_init=False)
    self.assertIs(var, t)
    rows = t_val * g_val
    self.assertAllClose(got_plain, rows, rtol=1e-6)
    mb = m or 6
    k = 6 // mb
    want = rows.reshape([mb, k, 4]) / (k if reduce == 'mean' else 1)
    norms = np.sqrt(np.sum(want**2, axis=(1, 2)))
    want = want * np.minimum(1.0, 2.0 / norms)[:, None, None] / mb
    self.assertAllClose(got, want.reshape([6, 4]), rtol=1e-5, atol=1e-6)

  def test_plain_tensor_noise(self):
    with tf.Graph().as_default():
      t = tf.zeros([5, 40000])
      opt = _gaussian(1.0, 2.0)
      ((grad, _),) = opt.compute_gradients(tf.square(t), [t])
      draws = self._run(grad, None, graph_init=False)
    self.assertNear(np.std(draws), 2.0 / 5, 0.01)

  @parameterized.parameters(True, False)
  def test_indivisible_batch_uses_one_microbatch_per_example(self, static):
    x, y, w, b = _data(5)
    with tf.Graph().as_default():
      feeds, loss, var_list = _linear_graph(x, y, w, b, static_batch=static)
      got = self._run([g for g, _ in _gaussian(1.0, 0.0, 2).compute_gradients(loss, var_list)], feeds)
    want = _hand_gradients(x, y, w, b, 1.0, None)
    self.assertAllClose(got[0], want[0], rtol=1e-5, atol=1e-6)

  def test_unclipped_multiplicative_mode(self):
    x, y, w, b = _data(4)
    with tf.Graph().as_default():
      feeds, loss, var_list = _linear_graph(x, y, w, b)
      opt = _gaussian(None, 0.0)
      self.assertIsNone(opt.l2_norm_clip)
      got = self._run([g for g, _ in opt.compute_gradients(loss, var_list)], feeds)
    want = _hand_gradients(x, y, w, b, None, None)
    self.assertAllClose(got[0], want[0], rtol=1e-5)

  @parameterized.parameters(None, 2)
  def test_seed_cnn_with_sparse_softmax_is_vectorized(self, m):
    rng = np.random.RandomState(2)
    img = rng.rand(4, 784).astype(np.float32)
    labels = rng.randint(0, 10, [4]).astype(np.int32)
    with tf.Graph().as_default():
      tf.set_random_seed(1)
      xp = tf.placeholder(tf.float32, [None, 784])
      lp = tf.placeholder(tf.int32, [None])
      y = tf.layers.conv2d(tf.reshape(xp, [-1, 28, 28, 1]), 16, 8, strides=2, padding='same', activation='relu')
      y = tf.layers.max_pooling2d(y, 2, 1)
      y = tf.layers.conv2d(y, 32, 4, strides=2, padding='valid', activation='relu')
      y = tf.layers.max_pooling2d(y, 2, 1)
      y = tf.layers.flatten(y)
      y = tf.layers.dense(y, 32, activation='relu')
      logits = tf.layers.dense(y, 10)
      loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=lp, logits=logits)
      results = []
      for method in METHODS:
        opt = _gaussian(0.05, 0.0, m, method)
        results.append([g for g, _ in opt.compute_gradients(loss)])
      got = self._run(results, {xp: img, lp: labels})
    for other in got[1:]:
      for a, b in zip(got[0], other):
        self.assertAllClose(a, b, rtol=1e-4, atol=1e-6)

  @parameterized.parameters(*METHODS)
  def test_variables_with_grad_loss(self, method):
    # A follower's objective: its sent activations times the peer's gradient.
    x, _, w, b = _data(6)
    g_val = np.random.RandomState(3).randn(6, OUT).astype(np.float32)
    with tf.Graph().as_default():
      xp = tf.placeholder(tf.float32, [None, D])
      gp = tf.placeholder(tf.float32, [None, OUT])
      wv = tf.get_variable('w', initializer=w)
      bv = tf.get_variable('b', initializer=b)
      sent = tf.matmul(xp, wv) + bv  # [B, OUT]
      opt = _gaussian(1.0, 0.0, 3, method)
      grads = [g for g, _ in opt.compute_gradients(sent, [wv, bv], grad_loss=gp)]
      got = self._run(grads, {xp: x, gp: g_val})
    gw = np.einsum('bi,bo->bio', x, g_val).reshape([3, 2, D, OUT]).mean(1)
    gb = g_val.reshape([3, 2, OUT]).mean(1)
    norms = np.sqrt(np.sum(gw**2, axis=(1, 2)) + np.sum(gb**2, axis=1))
    scale = np.minimum(1.0, 1.0 / norms)
    self.assertAllClose(got[0], np.einsum('mio,m->io', gw, scale) / 3, rtol=1e-5, atol=1e-6)
    self.assertAllClose(got[1], np.einsum('mo,m->o', gb, scale) / 3, rtol=1e-5, atol=1e-6)

  def test_leader_style_inputs_of_unknown_shape(self):
    # Like a federated leader: activations and labels arrive from a py_func
    # with unknown shapes; gradients go to the variables and, noised, back to
    # the received activations.
    rng = np.random.RandomState(5)
    act = rng.randn(6, 5).astype(np.float32)
    labels = rng.randint(0, 3, [6]).astype(np.int32)
    with tf.Graph().as_default():
      received = tf.py_func(lambda: act, [], tf.float32)
      got_labels = tf.py_func(lambda: labels, [], tf.int32)
      logits = tf.layers.dense(tf.reshape(received, [-1, 5]), 3)
      loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=got_labels, logits=logits)
      var_list = tf.trainable_variables()
      fetches = []
      for method in METHODS:
        opt = _gaussian(0.5, 0.0, 2, method)
        fetches.append([g for g, _ in opt.compute_gradients(loss, var_list)])
      opt = _gaussian(0.5, 0.0, 2)
      ((back, _),) = opt.compute_gradients(loss, [received])
      (plain,) = opt.compute_plain_gradients(loss, [received])
      got, back, plain = self._run([fetches, back, plain], None)
    for other in got[1:]:
      for a, b in zip(got[0], other):
        self.assertAllClose(a, b, rtol=1e-5, atol=1e-6)
    rows = plain.reshape([2, 3, 5]) / 3.0  # REDUCE 'mean' over k=3
    norms = np.sqrt(np.sum(rows**2, axis=(1, 2)))
    want = rows * np.minimum(1.0, 0.5 / norms)[:, None, None] / 2
    self.assertAllClose(back, want.reshape([6, 5]), rtol=1e-5, atol=1e-6)

  def test_layers_refuse_rows_that_are_not_examples(self):
    # Each example's 6 hidden values folded into 3 rows of 2 before a dense
    # layer:
    # the layer's rows are not examples, so per-layer sums would be wrong.
    # 'layers' must refuse and 'auto' must use the copy instead.
    rng = np.random.RandomState(5)
    x = rng.randn(4, 6).astype(np.float32)
    with tf.Graph().as_default():
      xp = tf.placeholder(tf.float32, [None, 6])
      h = tf.layers.dense(tf.reshape(tf.layers.dense(xp, 6), [-1, 2]), 1)
      loss = tf.reduce_sum(tf.square(tf.reshape(h, [-1, 3])), axis=1)
      with self.assertRaisesRegex(ValueError, 'impossible here: cannot tell'):
        _gaussian(0.1, 0.0, None, 'layers').compute_gradients(loss)
      results = [
        [g for g, _ in _gaussian(0.1, 0.0, None, method).compute_gradients(loss)] for method in ('auto', 'vectorized')
      ]
      got = self._run(results, {xp: x})
    for a, b in zip(*got):
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-7)

  def test_static_batch_baked_into_the_model_falls_back(self):
    # A reshape to the static batch size (what TF 1.15's tf.layers.flatten
    # builds; TF 2's keeps the batch dynamic) means the copied forward pass
    # cannot run on one example: 'auto' must notice and use slices, 'loop'
    # must refuse.
    rng = np.random.RandomState(4)
    x = rng.randn(4, 3).astype(np.float32)
    with tf.Graph().as_default():
      xp = tf.placeholder(tf.float32, [4, 3])
      h = tf.reshape(tf.layers.dense(xp, 4), [-1, 2, 2])
      h = tf.reshape(h, [4, -1])
      loss = tf.reduce_sum(tf.square(tf.layers.dense(h, 1)), axis=1)
      results = []
      for method in ('auto', 'slices'):
        opt = _gaussian(0.1, 0.0, None, method)
        results.append([g for g, _ in opt.compute_gradients(loss)])
      with self.assertRaisesRegex(ValueError, 'does not build'):
        _gaussian(0.1, 0.0, None, 'loop').compute_gradients(loss)
      got = self._run(results, {xp: x})
    for a, b in zip(*got):
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-7)

  @parameterized.parameters(
    dp_optimizer.DPGradientDescentGaussianOptimizer,
    dp_optimizer.DPAdamGaussianOptimizer,
    dp_optimizer.DPAdagradGaussianOptimizer,
  )
  def test_minimize_updates_and_reports_accounting_fields(self, cls):
    x, y, w, b = _data(4)
    with tf.Graph().as_default():
      feeds, loss, var_list = _linear_graph(x, y, w, b)
      opt = cls(1.0, 1.1, 2, None, False, 0.1)  # the v1 positional order
      step = opt.minimize(loss)
      with self.session() as sess:
        sess.run(tf.global_variables_initializer())
        before = sess.run(var_list[0])
        sess.run(step, feeds)
        self.assertNotAllClose(before, sess.run(var_list[0]))
    self.assertEqual((opt.l2_norm_clip, opt.noise_multiplier, opt.num_microbatches, opt.ledger), (1.0, 1.1, 2, None))
    self.assertEqual(cls.__name__, 'DP' + cls.__mro__[2].__name__.replace('Optimizer', 'GaussianOptimizer'))

  def test_invariants_raise(self):
    x, y, w, b = _data(4)
    with tf.Graph().as_default():
      _, loss, var_list = _linear_graph(x, y, w, b)
      opt = _gaussian(1.0, 1.0)
      with self.assertRaisesRegex(RuntimeError, 'before its compute_gradients'):
        opt.apply_gradients([(tf.zeros_like(v), v) for v in var_list])
      with self.assertRaisesRegex(ValueError, 'per-example loss'):
        opt.compute_gradients(tf.reduce_mean(loss), var_list)
      with self.assertRaisesRegex(ValueError, "REDUCE.*Found 'max'"):
        opt.compute_gradients(loss, var_list, opt_config={'REDUCE': 'max'})
      with self.assertRaisesRegex(ValueError, 'not both'):
        opt.compute_gradients(loss, var_list + [loss])
      with self.assertRaisesRegex(ValueError, 'per_microbatch_method'):
        opt.per_microbatch_method = 'fast'
      with self.assertRaisesRegex(ValueError, 'num_microbatches'):
        _gaussian(1.0, 1.0, 0)
      # A py_func in the forward pass cannot be copied: 'loop' refuses,
      # 'auto' falls back to slices.
      bumped = tf.py_func(lambda a: a, [loss], tf.float32)
      bumped.set_shape(loss.shape)
      opt.per_microbatch_method = 'loop'
      with self.assertRaisesRegex(ValueError, 'stateful'):
        opt.compute_gradients(loss * 0 + bumped * loss, var_list)


if __name__ == '__main__':
  tf.test.main()
