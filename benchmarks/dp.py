"""Cost of a DP-SGD step relative to a plain SGD step, on the seed's MNIST CNN.

Builds the dp_mnist CNN once, with two train ops on the same variables: plain
SGD on the mean loss, and `DPGradientDescentGaussianOptimizer` (clip 1.0,
noise 1.1, one microbatch per example). Runs them alternately on the same
in-graph batch and compares the medians:

  python benchmarks/dp.py [--batch 256] [--microbatches 256] [--rounds 60]

Output lines: `BENCH dp_step_ratio <dp median / plain median>`, plus the two
medians in milliseconds.
"""

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import tensorflow.compat.v1 as tf  # pylint: disable=wrong-import-position

from efl.privacy import dp_optimizer  # pylint: disable=wrong-import-position


def seed_cnn(images):
  """The dp_mnist example's CNN: logits for `[B, 784]` images."""
  y = tf.layers.conv2d(tf.reshape(images, [-1, 28, 28, 1]), 16, 8, strides=2, padding='same', activation='relu')
  y = tf.layers.max_pooling2d(y, 2, 1)
  y = tf.layers.conv2d(y, 32, 4, strides=2, padding='valid', activation='relu')
  y = tf.layers.max_pooling2d(y, 2, 1)
  y = tf.layers.flatten(y)
  y = tf.layers.dense(y, 32, activation='relu')
  return tf.layers.dense(y, 10)


def build(batch, microbatches, method):
  """Returns `(plain_step, dp_step)` on one in-graph random batch."""
  rng = np.random.RandomState(0)
  images = tf.constant(rng.rand(batch, 784).astype(np.float32))
  labels = tf.constant(rng.randint(0, 10, batch).astype(np.int32))
  # Dynamic batch size, as from a tf.data pipeline without drop_remainder.
  images = tf.placeholder_with_default(images, [None, 784])
  labels = tf.placeholder_with_default(labels, [None])
  loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=seed_cnn(images))
  plain = tf.train.GradientDescentOptimizer(0.25).minimize(tf.reduce_mean(loss))
  opt = dp_optimizer.DPGradientDescentGaussianOptimizer(
    l2_norm_clip=1.0, noise_multiplier=1.1, num_microbatches=microbatches, learning_rate=0.25
  )
  if method:
    opt.per_microbatch_method = method
  return plain, opt.minimize(loss)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--microbatches', type=int, default=256)
  parser.add_argument('--rounds', type=int, default=60, help='timed (plain, dp) pairs')
  parser.add_argument('--method', default=None, help="per_microbatch_method (default 'auto')")
  args = parser.parse_args()
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    plain, dp = build(args.batch, args.microbatches, args.method)
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      for _ in range(3):  # warm-up
        sess.run(plain)
        sess.run(dp)
      times = {plain: [], dp: []}
      for _ in range(args.rounds):
        for op in (plain, dp):
          start = time.perf_counter()
          sess.run(op)
          times[op].append(time.perf_counter() - start)
  plain_ms = 1000 * np.median(times[plain])
  dp_ms = 1000 * np.median(times[dp])
  print(
    'plain step median: %.1f ms; DP step median: %.1f ms (batch %d, '
    '%d microbatches)' % (plain_ms, dp_ms, args.batch, args.microbatches)
  )
  print('BENCH dp_step_ratio %.3f' % (dp_ms / plain_ms))


if __name__ == '__main__':
  main()
