"""Two-task federated MNIST, follower side: the right half of each image, one tower per task (see leader.py)."""

import os
import sys

import tensorflow.compat.v1 as tf

import efl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procedure import train  # noqa: E402

EPOCHS = int(os.environ.get('EFL_MULTITASK_EPOCHS', '3'))


def input_fn(model, mode, task):
  split = 'train' if mode == efl.MODE.TRAIN else 'test'
  dataio = efl.data.FederalDataIO(
    './follower_' + split,
    256,
    model.communicator,
    model.federal_role,
    efl.get_task_index(),
    efl.get_worker_num(),
    num_epochs=EPOCHS if mode == efl.MODE.TRAIN else 1,
    data_mode='local',
    name='%s_%s' % (task, split),
  )
  dataio.fixedlen_feature('sample_id', 1, dtype=tf.int64)
  dataio.fixedlen_feature('feature', 14 * 28, dtype=tf.float32)
  features = dataio.read()
  model.add_hooks([dataio.get_hook()], mode=mode, task=task)
  columns = {'emb': [tf.feature_column.numeric_column('feature', 14 * 28)]}
  return efl.FederalSample(
    features, columns, model.federal_role, model.communicator, sample_id_name='sample_id', name='%s_%s' % (task, split)
  )


def loss_fn(model, sample, mode, task):
  with tf.variable_scope('dnn'):
    bottom = tf.layers.dense(sample['emb'] / 255.0, 64, activation=tf.nn.relu, name='bottom')
    tower = tf.layers.dense(bottom, 32, activation=tf.nn.relu, name='tower_' + task)
  model.send('fc1_' + task, tower, require_grad=(mode == efl.MODE.TRAIN), mode=mode)
  model.add_metric('task', task, mode=mode, task=task)
  return tower


if __name__ == '__main__':
  train(input_fn, loss_fn)
