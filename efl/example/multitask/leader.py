"""Two-task federated MNIST, leader side, written as EFLS's algorithm library writes its models.

Task "even" predicts whether the digit is even, task "large" whether it is 5 or more. Both tasks share the
bottom layer of each party (the root variable scope reuses variables) and have a head of their own; the eval
graph rebuilds the training layers with the same function. Run from a folder with the MNIST data
(`python generate_data.py`), next to `python follower.py --federal_role=follower`.
"""

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
    './leader_' + split,
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
  dataio.fixedlen_feature('label', 1, dtype=tf.float32)
  features = dataio.read()
  model.add_hooks([dataio.get_hook()], mode=mode, task=task)
  columns = {
    'label': [tf.feature_column.numeric_column('label', 1)],
    'emb': [tf.feature_column.numeric_column('feature', 14 * 28)],
  }
  return efl.FederalSample(
    features, columns, model.federal_role, model.communicator, sample_id_name='sample_id', name='%s_%s' % (task, split)
  )


def loss_fn(model, sample, mode, task):
  digit = tf.reshape(sample['label'], [-1, 1])
  label = tf.cast(tf.equal(tf.mod(digit, 2), 0) if task == 'even' else digit >= 5, tf.float32)
  with tf.variable_scope('dnn'):
    own = tf.layers.dense(sample['emb'] / 255.0, 64, activation=tf.nn.relu, name='bottom')
    peer = model.recv('fc1_' + task, [-1, 32], tf.float32, mode == efl.MODE.TRAIN)  # (name, shape, dtype, ...)
    logits = tf.layers.dense(tf.concat([own, peer], axis=1), 1, name='head_' + task)
  loss = tf.losses.sigmoid_cross_entropy(label, logits)
  _, auc = efl.metrics.auc(label, tf.sigmoid(logits), name='auc_%s_%s' % (task, mode.name.lower()))
  model.add_metric('auc', auc, mode=mode, task=task)
  model.add_metric('task', task, mode=mode, task=task)
  return loss if mode == efl.MODE.TRAIN else auc


if __name__ == '__main__':
  train(input_fn, loss_fn)
