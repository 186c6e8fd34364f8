"""Federated DP MNIST, leader side (the seed's dp_mnist/leader.py).

The leader receives the follower's [batch, 512] convolutional features and
the labels, and trains the head of the dp_cnn.py network on them (Dense32
relu, Dense10, per-example softmax cross entropy) with a DP optimizer. With
`BACKEND_MODE='unnoise'` the gradient it sends back for `y_train` is the plain
gradient of its summed per-example loss; only its own update is noised.

Its own input is the sample ids of the batches: it reads MNIST's row indices
in the follower's order (the same shuffle seed) so that every step checks
that both parties hold the same examples. MNIST comes from
`tf.keras.datasets.mnist.load_data()`; offline, set EFL_MNIST_NPZ to a
Keras-layout mnist.npz. See follower.py for how to run both parties.
"""

import argparse

import numpy as np
import tensorflow.compat.v1 as tf

import efl
from efl.example.dp_mnist._mnist_offline import use_local_mnist

SHUFFLE_SEED = 1234  # the follower's shuffle seed: both read the same batches

use_local_mnist()  # reads EFL_MNIST_NPZ when set; otherwise Keras as usual

# 获取MNIST数据集: the leader only needs the sample ids (row indices)
train, test = tf.keras.datasets.mnist.load_data()
train_ids = np.arange(len(train[1]), dtype=np.int64)
test_ids = np.arange(len(test[1]), dtype=np.int64)
# 生成Dataset, batched and ordered as the follower's
train_dataset = tf.data.Dataset.from_tensor_slices(train_ids)
train_dataset = train_dataset.shuffle(1000, seed=SHUFFLE_SEED).batch(256).repeat()
train_iterator = train_dataset.make_one_shot_iterator()  # 创建迭代器

test_dataset = tf.data.Dataset.from_tensor_slices(test_ids)
test_dataset = test_dataset.batch(100).repeat()
test_iterator = test_dataset.make_one_shot_iterator()


def input_fn(model, mode):
  if mode == efl.MODE.TRAIN:
    batch = train_iterator.get_next()
  else:
    batch = test_iterator.get_next()
  # Features and labels come from the follower: the sample holds the ids only.
  features = {'sample_id': batch}
  with tf.variable_scope('input_fn', reuse=tf.AUTO_REUSE):
    return efl.FederalSample(
      features,
      {},
      model.federal_role,
      model.communicator,
      sample_id_name='sample_id',
      name='train' if mode == efl.MODE.TRAIN else 'eval',
    )


def model_fn(model, sample, is_training):
  # 接收follower侧的输出
  if is_training:
    labels = model.recv('labels_train', dtype=tf.int32, require_grad=False)
    y = model.recv('y_train', dtype=tf.float32, require_grad=True)
  else:
    labels = model.recv('labels_test', dtype=tf.int32, require_grad=False)
    y = model.recv('y_test', dtype=tf.float32, require_grad=False)
  # 通过两层dense
  y = tf.reshape(y, [-1, 512])  # reshape数据
  y = tf.layers.dense(y, 32, activation='relu')
  logits = tf.layers.dense(y, 10)

  if is_training:  # 训练阶段返回loss
    # 计算loss，但不做reduce
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return loss
  else:  # 测试阶段返回accuracy
    prediction = tf.argmax(logits, axis=-1)
    accuracy = tf.metrics.accuracy(labels, prediction)
    model.add_metric('accuracy', accuracy, efl.MODE.EVAL)
    return accuracy[1]


def loss_fn(model, sample):
  with tf.variable_scope('cnn'):
    return model_fn(model, sample, True)


def eval_fn(model, sample):
  with tf.variable_scope('cnn', reuse=tf.AUTO_REUSE):
    return model_fn(model, sample, False)


def parse_flags(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--train_step', type=int, default=235, help='training steps per iteration')
  parser.add_argument('--eval_step', type=int, default=100, help='evaluation steps per iteration')
  parser.add_argument('--max_iter', type=int, default=20, help='train-then-evaluate iterations')
  parser.add_argument('--log_step', type=int, default=100, help='log every N steps')
  # The federal flags (--federal_role, --peer_addr, ...) are read by efl itself.
  return parser.parse_known_args(argv)[0]


def main(argv=None):
  args = parse_flags(argv)
  CNN = efl.FederalModel()
  CNN.input_fn(input_fn)
  CNN.loss_fn(loss_fn)
  CNN.eval_fn(eval_fn)
  CNN.optimizer_fn(
    efl.optimizer_fn.optimizer_setter(
      efl.DPGradientDescentGaussianOptimizer(l2_norm_clip=1.0, noise_multiplier=1.0, learning_rate=0.25)
    )
  )
  # 指定backend_mode和reduce
  CNN.compile(opt_config={'BACKEND_MODE': 'unnoise'})
  CNN.fit(
    efl.procedure_fn.train_and_evaluate(train_step=args.train_step, eval_step=args.eval_step, max_iter=args.max_iter),
    log_step=args.log_step,
    project_name='fed_mnist',
  )


if __name__ == '__main__':
  main()
