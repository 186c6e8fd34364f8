"""Single-machine training with periodic evaluation of the AUC (the seed's train_and_eval.py)."""

import tensorflow.compat.v1 as tf

import efl


def input_fn(model, mode):
  columns = {
    'deep': [tf.feature_column.numeric_column('dense', 2)],
    'label': [tf.feature_column.numeric_column('label', 1)],
    'emb': [
      tf.feature_column.embedding_column(
        tf.feature_column.categorical_column_with_identity('sparse1', 1000), dimension=8
      ),
      tf.feature_column.embedding_column(
        tf.feature_column.categorical_column_with_identity('sparse2', 1000), dimension=8
      ),
    ],
  }
  if mode == efl.MODE.TRAIN:
    features = {
      'dense': tf.constant([[1, 2]], dtype=tf.float32),
      'label': tf.constant([[1.0]], dtype=tf.float32),
      'sparse1': tf.SparseTensor(indices=[[0, 0], [0, 2]], values=[1, 2], dense_shape=[1, 4]),
      'sparse2': tf.SparseTensor(indices=[[0, 1], [0, 2]], values=[3, 4], dense_shape=[1, 4]),
    }
  else:
    features = {
      'dense': tf.constant([[1, 2]], dtype=tf.float32),
      'label': tf.constant([[1.0]], dtype=tf.float32),
      'sparse1': tf.SparseTensor(indices=[[0, 0], [0, 2]], values=[1, 2], dense_shape=[1, 4]),
      'sparse2': tf.SparseTensor(indices=[[0, 1], [0, 2]], values=[3, 4], dense_shape=[1, 4]),
    }
  with tf.variable_scope('input_fn', reuse=tf.AUTO_REUSE):
    return efl.Sample(features, columns)


def model_fn(model, sample, is_training):
  inputs = tf.concat([sample['deep'], sample['emb']], axis=1)
  fc1 = tf.layers.dense(inputs, 128)
  fc2 = tf.layers.dense(fc1, 64)
  fc3 = tf.layers.dense(fc2, 32)
  y = tf.layers.dense(fc3, 1)

  if is_training:
    loss = tf.losses.sigmoid_cross_entropy(sample['label'], y)
    return loss
  else:
    prediction = tf.nn.sigmoid(y)
    auc = efl.metrics.auc(sample['label'], prediction)
    model.add_metric('auc', auc, efl.MODE.EVAL)
    return auc


def loss_fn(model, sample):
  with tf.variable_scope('deepctr'):
    return model_fn(model, sample, True)


def eval_fn(model, sample):
  with tf.variable_scope('deepctr', reuse=tf.AUTO_REUSE):
    return model_fn(model, sample, False)


def main():
  CNN = efl.Model()
  CNN.input_fn(input_fn)
  CNN.loss_fn(loss_fn)
  CNN.eval_fn(eval_fn)
  CNN.optimizer_fn(efl.optimizer_fn.optimizer_setter(tf.train.GradientDescentOptimizer(0.01)))
  CNN.compile()
  CNN.fit(
    efl.procedure_fn.train_and_evaluate(train_step=100, eval_step=10, max_iter=5),
    log_step=10,
    project_name='train_and_eval',
  )


if __name__ == '__main__':
  main()
