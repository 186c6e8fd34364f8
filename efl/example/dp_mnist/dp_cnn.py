"""Single-machine MNIST CNN trained with DP-SGD (the seed's dp_mnist/dp_cnn.py).

MNIST comes from `tf.keras.datasets.mnist.load_data()`; offline, set
EFL_MNIST_NPZ to a Keras-layout mnist.npz.
"""

import numpy as np
import tensorflow.compat.v1 as tf

import efl
from efl.example.dp_mnist._mnist_offline import use_local_mnist

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
# 生成Dataset
train_dataset = tf.data.Dataset.from_tensor_slices((train_data, train_labels))
train_dataset = train_dataset.shuffle(1000).batch(256).repeat()
train_iterator = train_dataset.make_one_shot_iterator()  # 创建迭代器

test_dataset = tf.data.Dataset.from_tensor_slices((test_data, test_labels))
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
  features = {'img': batch[0], 'label': batch[1]}
  with tf.variable_scope('input_fn', reuse=tf.AUTO_REUSE):
    return efl.Sample(features, columns)


def model_fn(model, sample, is_training):
  inputs = tf.reshape(sample['img'], [-1, 28, 28, 1])
  labels = tf.squeeze(tf.cast(sample['label'], tf.int32))
  y = tf.layers.conv2d(inputs, 16, 8, strides=2, padding='same', activation='relu')
  y = tf.layers.max_pooling2d(y, 2, 1)
  y = tf.layers.conv2d(y, 32, 4, strides=2, padding='valid', activation='relu')
  y = tf.layers.max_pooling2d(y, 2, 1)
  y = tf.layers.flatten(y)
  y = tf.layers.dense(y, 32, activation='relu')
  logits = tf.layers.dense(y, 10)

  if is_training:
    # 计算reduce前的loss
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return loss
  else:
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


def main():
  CNN = efl.Model()
  CNN.input_fn(input_fn)
  CNN.loss_fn(loss_fn)
  CNN.eval_fn(eval_fn)
  CNN.optimizer_fn(
    efl.optimizer_fn.optimizer_setter(
      efl.DPGradientDescentGaussianOptimizer(  # 使用差分隐私Optimizer
        l2_norm_clip=1.0, noise_multiplier=1.0, learning_rate=0.25
      )
    )
  )
  CNN.compile()
  CNN.fit(
    efl.procedure_fn.train_and_evaluate(train_step=235, eval_step=100, max_iter=20), log_step=100, project_name='mnist'
  )


if __name__ == '__main__':
  main()
