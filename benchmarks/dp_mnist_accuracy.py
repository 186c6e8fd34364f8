"""Test accuracy and epsilon of the seed's DP MNIST CNN within a time budget.

EFLS's documented setting: noise multiplier 1.3, clip 1.5, learning rate
0.25, batch 256, 256 microbatches (one per example); EFLS reports 97%
accuracy and epsilon 1.11 after 20 epochs. This trains as many steps as fit
in `--budget_s` seconds (EFLS's 20 epochs take far longer on 2 cores), then
evaluates on the 10000 test images:

  EFL_MNIST_NPZ=/path/mnist.npz python benchmarks/dp_mnist_accuracy.py \
      [--budget_s 900] [--max_epochs 20]

MNIST comes from EFL_MNIST_NPZ (a Keras-layout mnist.npz) or else from
`tf.keras.datasets.mnist.load_data()`. Output lines:
`BENCH dp_mnist_accuracy <test accuracy>`, `BENCH dp_mnist_epsilon <eps>`.
"""

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))

import tensorflow.compat.v1 as tf  # pylint: disable=wrong-import-position

from dp import seed_cnn  # pylint: disable=wrong-import-position
from efl.example.dp_mnist import _mnist_offline  # pylint: disable=wrong-import-position
from efl.privacy import analysis  # pylint: disable=wrong-import-position
from efl.privacy import dp_optimizer  # pylint: disable=wrong-import-position


def load_mnist():
  _mnist_offline.use_local_mnist()
  (x_train, y_train), (x_test, y_test) = tf.keras.datasets.mnist.load_data()

  def prep(x, y):
    return (x.reshape([-1, 784]).astype(np.float32) / 255.0, y.astype(np.int32))

  return prep(x_train, y_train), prep(x_test, y_test)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--budget_s', type=float, default=900.0, help='training time budget in seconds')
  parser.add_argument('--max_epochs', type=float, default=20.0)
  parser.add_argument('--noise_multiplier', type=float, default=1.3)
  parser.add_argument('--l2_norm_clip', type=float, default=1.5)
  parser.add_argument('--learning_rate', type=float, default=0.25)
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--microbatches', type=int, default=256)
  parser.add_argument('--delta', type=float, default=1e-5)
  args = parser.parse_args()

  (x_train, y_train), (x_test, y_test) = load_mnist()
  n = len(x_train)
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    xs = tf.placeholder(tf.float32, [None, 784])
    ys = tf.placeholder(tf.int32, [None])
    data = tf.data.Dataset.from_tensor_slices((xs, ys))
    data = data.shuffle(n, seed=0).batch(args.batch).repeat()
    iterator = tf.data.make_initializable_iterator(data)
    images, labels = iterator.get_next()
    with tf.variable_scope('cnn'):
      loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=seed_cnn(images))
    opt = dp_optimizer.DPGradientDescentGaussianOptimizer(
      l2_norm_clip=args.l2_norm_clip,
      noise_multiplier=args.noise_multiplier,
      num_microbatches=args.microbatches,
      learning_rate=args.learning_rate,
    )
    train_op = opt.minimize(loss)
    test_x = tf.placeholder(tf.float32, [None, 784])
    with tf.variable_scope('cnn', reuse=True):
      predictions = tf.argmax(seed_cnn(test_x), axis=-1, output_type=tf.int32)

    steps_per_epoch = int(np.ceil(n / float(args.batch)))
    max_steps = int(args.max_epochs * steps_per_epoch)
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      sess.run(iterator.initializer, {xs: x_train, ys: y_train})
      start = time.time()
      steps = 0
      while steps < max_steps and time.time() - start < args.budget_s:
        sess.run(train_op)
        steps += 1
        if steps % steps_per_epoch == 0:
          print('epoch %d done after %.0f s' % (steps // steps_per_epoch, time.time() - start))
          sys.stdout.flush()
      elapsed = time.time() - start
      correct = 0
      for i in range(0, len(x_test), 1000):
        correct += np.sum(sess.run(predictions, {test_x: x_test[i : i + 1000]}) == y_test[i : i + 1000])
  accuracy = correct / float(len(x_test))
  epsilon = analysis.epsilon_after_steps(n, args.batch, args.noise_multiplier, steps, args.delta)
  print(
    'trained %d steps (%.2f epochs) in %.0f s; sigma %g, clip %g, lr %g'
    % (steps, steps / float(steps_per_epoch), elapsed, args.noise_multiplier, args.l2_norm_clip, args.learning_rate)
  )
  print('BENCH dp_mnist_accuracy %.4f' % accuracy)
  print('BENCH dp_mnist_epsilon %.3f' % epsilon)


if __name__ == '__main__':
  main()
