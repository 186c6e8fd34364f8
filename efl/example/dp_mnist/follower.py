"""Federated DP MNIST, follower side (the seed's dp_mnist/follower.py).

The follower holds the images and the labels. It runs the convolutional trunk
of the dp_cnn.py network and sends its [batch, 512] output to the leader
(`y_train`, which the leader sends a gradient back for) together with the
labels; in evaluation it sends `y_test` and `labels_test`. Its loss is the
sent tensor: it has no loss of its own and trains on the gradient the leader
sends back, through a DP optimizer.

Both parties read MNIST in the same order (the same shuffle seed) and check
each batch's sample ids (the row indices) against each other. MNIST comes
from `tf.keras.datasets.mnist.load_data()`; offline, set EFL_MNIST_NPZ to a
Keras-layout mnist.npz. Run both parties with

  python -m efl.launcher efl/example/dp_mnist

or, in two terminals, `python follower.py --federal_role=follower` and
`python leader.py --federal_role=leader`.
"""

import argparse

import numpy as np
import tensorflow.compat.v1 as tf

import efl
from efl.example.dp_mnist._mnist_offline import use_local_mnist

SHUFFLE_SEED = 1234  # the leader shuffles with the same seed, so both read the same batches

use_local_mnist()  # reads EFL_MNIST_NPZ when set; otherwise Keras as usual

# 获取MNIST数据集
train, test = tf.keras.datasets.mnist.load_data()
train_data, train_labels = train
test_data, test_labels = test
# 数据归一化
train_data = np.array(train_data, dtype=np.float32) / 255.0
test_data = np.array(test_data, dtype=np.float32) / 255.0

train_labels = np.array(train_labels, dtype=np.int32)
test_labels = np.array(test_labels, dtype=np.int32)
# sample_id: the row index, which both parties agree on
train_ids = np.arange(len(train_labels), dtype=np.int64)
test_ids = np.arange(len(test_labels), dtype=np.int64)
# 生成Dataset
train_dataset = tf.data.Dataset.from_tensor_slices((train_data, train_labels, train_ids))
train_dataset = train_dataset.shuffle(1000, seed=SHUFFLE_SEED).batch(256).repeat()
train_iterator = train_dataset.make_one_shot_iterator()  # 创建迭代器

test_dataset = tf.data.Dataset.from_tensor_slices((test_data, test_labels, test_ids))
test_dataset = test_dataset.batch(100).repeat()
test_iterator = test_dataset.make_one_shot_iterator()


def input_fn(model, mode):
  # 利用Dataset的迭代器获取每次训练的数据
  if mode == efl.MODE.TRAIN:
    batch = train_iterator.get_next()
  else:
    batch = test_iterator.get_next()

  columns = {
    'img': [tf.feature_column.numeric_column('img', 28 * 28)],
    'label': [tf.feature_column.numeric_column('label', 1, dtype=tf.int32)],
  }
  features = {'img': batch[0], 'label': batch[1], 'sample_id': batch[2]}
  with tf.variable_scope('input_fn', reuse=tf.AUTO_REUSE):
    return efl.FederalSample(
      features,
      columns,
      model.federal_role,
      model.communicator,
      sample_id_name='sample_id',
      name='train' if mode == efl.MODE.TRAIN else 'eval',
    )


def model_fn(model, sample, is_training):
  inputs = tf.reshape(sample['img'], [-1, 28, 28, 1])
  labels = tf.squeeze(tf.cast(sample['label'], tf.int32))
  y = tf.layers.conv2d(inputs, 16, 8, strides=2, padding='same', activation='relu')
  y = tf.layers.max_pooling2d(y, 2, 1)
  y = tf.layers.conv2d(y, 32, 4, strides=2, padding='valid', activation='relu')
  y = tf.layers.max_pooling2d(y, 2, 1)
  y = tf.layers.flatten(y)
  # 发送数据
  if is_training:  # 训练阶段需要返回梯度
    model.send('y_train', y, require_grad=True)
    model.send('labels_train', labels, require_grad=False)
  else:  # 测试阶段不需要返回梯度
    model.send('y_test', y, mode=efl.MODE.EVAL, require_grad=False)
    model.send('labels_test', labels, mode=efl.MODE.EVAL, require_grad=False)
  # The sent tensor as the loss: the follower trains on the leader's gradient alone.
  return y


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
