"""The batched per-example filter gradient of a convolution matches one gradient per example."""

import itertools

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from efl import compat
from efl.privacy import conv_filter_grad

# TF 1.15's CPU convolutions have no dilations.
_DILATIONS = [1, 2] if compat.TF2 else [1]
_CASES = [
  case
  for case in itertools.product(['SAME', 'VALID'], [1, 2], _DILATIONS, [1, 3], [(3, 2, 4), (4, 1, 5)])
  if not (case[1] > 1 and case[2] > 1)
]


@pytest.mark.parametrize('padding,stride,dilation,microbatch,kcf', _CASES)
def test_vectorized_filter_gradients_equal_per_example_ones(padding, stride, dilation, microbatch, kcf):
  k, c, f = kcf
  rng = np.random.RandomState(stride * 10 + dilation + microbatch)
  conv_filter_grad.install()
  with tf.Graph().as_default():
    x = tf.constant(rng.randn(5, microbatch, 11, 9, c).astype(np.float32))
    w = tf.constant(rng.randn(k, k, c, f).astype(np.float32))

    def filter_grad(images):
      y = tf.nn.conv2d(images, w, strides=[1, stride, stride, 1], padding=padding, dilations=[1, dilation, dilation, 1])
      return tf.gradients(tf.reduce_sum(tf.sin(y)), w)[0]

    expected = tf.stack([filter_grad(x[i]) for i in range(5)])
    vectorized = tf.vectorized_map(filter_grad, x)
    # The batched converter replaced TensorFlow's while_loop over the examples.
    assert not [op for op in tf.get_default_graph().get_operations() if op.type == 'While' or op.type == 'Enter'], (
      'the vectorized filter gradient still loops over the examples'
    )
    with tf.Session() as sess:
      want, got = sess.run([expected, vectorized])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
