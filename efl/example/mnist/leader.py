"""Federated MNIST, leader side: holds the left half of each image and the labels (the seed's mnist/leader.py).

The seed's training code, with named layers (so that evaluation, prediction and export share the trained
weights), an EVAL input and eval_fn, and `--mode` (see efl/example/modes.py): train, eval, predict, export.
"""

import tensorflow.compat.v1 as tf

import efl
from efl.example import modes


def input_fn(model, mode):
  split = 'train' if mode == efl.MODE.TRAIN else 'test'
  dataio = efl.data.FederalDataIO(
    './leader_' + split,
    256,
    model.communicator,
    model.federal_role,
    efl.get_task_index(),
    efl.get_worker_num(),  # this worker's share
    data_mode='local',
    name='dataio_' + split,
  )
  dataio.fixedlen_feature('sample_id', 1, dtype=tf.int64)
  dataio.fixedlen_feature('feature', 14 * 28, dtype=tf.float32)
  dataio.fixedlen_feature('label', 1, dtype=tf.float32)
  features = dataio.read()
  model.add_hooks([dataio.get_hook()], mode=mode)
  columns = {
    'label': [tf.feature_column.numeric_column('label', 1)],
    'emb': [tf.feature_column.numeric_column('feature', 28 * 14)],
  }
  return efl.FederalSample(
    features, columns, model.federal_role, model.communicator, sample_id_name='sample_id', name=split
  )


def network(model, sample, require_grad):
  input = sample['emb']
  fc1 = tf.layers.dense(
    input, 128, kernel_initializer=tf.truncated_normal_initializer(stddev=0.001, dtype=tf.float32), name='leader_fc1'
  )
  f_fc1 = model.recv('fc1', dtype=tf.float32, require_grad=require_grad)
  f_fc1 = tf.reshape(f_fc1, [-1, 128])
  fc1 = tf.concat([fc1, f_fc1], axis=-1)
  return tf.layers.dense(
    fc1, 10, kernel_initializer=tf.truncated_normal_initializer(stddev=0.001, dtype=tf.float32), name='leader_y'
  )


def model_fn(model, sample):
  label = tf.cast(sample['label'], tf.int32)
  label = tf.reshape(label, [-1])
  label = tf.one_hot(label, 10)
  y = network(model, sample, True)

  pred = tf.argmax(y, axis=-1)
  _, accuracy = tf.metrics.accuracy(sample['label'], pred)
  model.add_metric('accuracy', accuracy)

  loss = tf.losses.softmax_cross_entropy(label, y)
  return loss


def eval_fn(model, sample):
  y = network(model, sample, False)
  pred = tf.argmax(y, axis=-1)
  _, accuracy = tf.metrics.accuracy(sample['label'], pred)
  model.add_metric('accuracy', accuracy, efl.MODE.EVAL)
  model.add_prediction('class', pred)
  model.add_prediction('prob', tf.nn.softmax(y))
  return accuracy


def main():
  CTR = efl.FederalModel()
  CTR.input_fn(input_fn)
  CTR.loss_fn(model_fn)
  CTR.eval_fn(eval_fn)
  CTR.optimizer_fn(efl.optimizer_fn.optimizer_setter(tf.train.GradientDescentOptimizer(0.001)))
  CTR.compile()
  modes.run(CTR, efl.procedure_fn.train(), log_step=100, project_name='train')


if __name__ == '__main__':
  main()
