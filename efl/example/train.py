"""Single-machine training on constant features (the seed's train.py)."""

import tensorflow.compat.v1 as tf

import efl


def input_fn(model, mode):
  columns = {
    'deep': [tf.feature_column.numeric_column('dense', 2)],
    'label': [tf.feature_column.numeric_column('label', 1)],
    'emb': [
      tf.feature_column.embedding_column(
        tf.feature_column.categorical_column_with_identity('sparse1', 1000), dimension=8, combiner='mean'
      ),
      tf.feature_column.embedding_column(
        tf.feature_column.categorical_column_with_identity('sparse2', 1000), dimension=8, combiner='mean'
      ),
    ],
  }
  features = {
    'dense': tf.constant([[1, 2]], dtype=tf.float32),
    'label': tf.constant([[1.0]], dtype=tf.float32),
    'sparse1': tf.SparseTensor(indices=[[0, 0], [0, 2]], values=[1, 2], dense_shape=[1, 4]),
    'sparse2': tf.SparseTensor(indices=[[0, 1], [0, 2]], values=[3, 4], dense_shape=[1, 4]),
  }
  with tf.variable_scope('input_fn', reuse=tf.AUTO_REUSE):
    return efl.Sample(features, columns)


def model_fn(model, sample):
  inputs = tf.concat([sample['deep'], sample['emb']], axis=1)
  init = tf.truncated_normal_initializer(stddev=0.001, dtype=tf.float32)
  fc1 = tf.layers.dense(inputs, 128, kernel_initializer=init)
  fc2 = tf.layers.dense(fc1, 64, kernel_initializer=init)
  fc3 = tf.layers.dense(fc2, 32, kernel_initializer=init)
  y = tf.layers.dense(fc3, 1, kernel_initializer=init)
  return tf.losses.sigmoid_cross_entropy(sample['label'], y)


def loss_fn(model, sample):
  with tf.variable_scope('deepctr'):
    return model_fn(model, sample)


def main():
  CTR = efl.Model()
  CTR.input_fn(input_fn)
  CTR.loss_fn(loss_fn)
  CTR.optimizer_fn(efl.optimizer_fn.optimizer_setter(tf.train.GradientDescentOptimizer(0.01)))
  CTR.compile()
  CTR.fit(efl.procedure_fn.train(max_step=100), log_step=10, project_name='train')


if __name__ == '__main__':
  main()
