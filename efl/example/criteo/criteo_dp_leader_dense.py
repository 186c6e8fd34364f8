"""Federated Criteo, leader side with differential privacy (the seed's criteo/criteo_dp_leader_dense.py).

The leader holds the labels and the 10 z-scored integer columns. It concatenates them with the follower's
[batch, 168] categorical embedding and trains Dense 64 -> Dense 16 -> Dense 2 with DP-Adam (per-example
gradients clipped to L2 norm 1.0, Gaussian noise of multiplier 1.0). With `BACKEND_MODE='unnoise'` the
gradient sent back to the follower is the exact one: it feeds the follower's own training, where noise would
be amplified rather than protect anything. Logs loss, accuracy and AUC.

Run from the directory holding `leader_train/` and `leader_test/` (see generate_data.py)::

  python criteo_dp_leader_dense.py --federal_role=leader
"""

import argparse

import tensorflow.compat.v1 as tf

import efl
from efl.example import modes

EMBEDDING_WIDTH = 21 * 8  # the follower's 21 columns, embedding dimension 8


def input_fn(model, mode):
  if mode == efl.MODE.TRAIN:
    dataio = efl.data.FederalDataIO(
      './leader_train',
      1000,
      model.communicator,
      model.federal_role,
      efl.get_task_index(),
      efl.get_worker_num(),  # this worker's share
      data_mode='local',
      num_epochs=10,
    )
  else:
    # Each evaluation of train_and_evaluate reads on; a prediction reads every example once.
    dataio = efl.data.FederalDataIO(
      './leader_test',
      1000,
      model.communicator,
      model.federal_role,
      efl.get_task_index(),
      efl.get_worker_num(),  # this worker's share
      data_mode='local',
      num_epochs=1 if efl.get_mode() == 'predict' else 10,
    )

  dataio.fixedlen_feature('sample_id', 1, dtype=tf.int64)
  # label数据
  dataio.fixedlen_feature('label', 1, dtype=tf.int64)
  # dense数据
  dataio.fixedlen_feature('dense', 10, dtype=tf.float32)
  features = dataio.read()
  model.add_hooks([dataio.get_hook()])
  columns = {
    'dense': [tf.feature_column.numeric_column('dense', 10)],
    'label': [tf.feature_column.numeric_column('label', 1)],
  }
  return efl.FederalSample(
    features,
    columns,
    model.federal_role,
    model.communicator,
    sample_id_name='sample_id',
    name='train' if mode == efl.MODE.TRAIN else 'eval',
  )


def model_fn(model, sample, is_training):
  if is_training:
    embedding = model.recv('embedding_train', dtype=tf.float32, require_grad=True)
  else:
    embedding = model.recv('embedding_test', dtype=tf.float32, require_grad=False)
  # A received tensor has no static shape: give it its known width.
  embedding = tf.reshape(embedding, [-1, EMBEDDING_WIDTH])
  inputs = tf.concat([sample['dense'], embedding], axis=1)
  with tf.variable_scope('criteo', reuse=tf.AUTO_REUSE):  # train and eval share the weights
    fc1 = tf.layers.dense(inputs, 64, activation=tf.nn.relu, name='fc1')
    fc2 = tf.layers.dense(fc1, 16, activation=tf.nn.relu, name='fc2')
    logits = tf.layers.dense(fc2, 2, name='logits')

  labels = tf.reshape(tf.cast(sample['label'], tf.int32), [-1])
  # Per-example loss: DP optimizers clip each example's gradient; a plain optimizer gets its mean.
  loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
  prediction = tf.argmax(logits, axis=-1)
  _, accuracy = tf.metrics.accuracy(labels, prediction)
  _, auc = efl.metrics.auc(labels, tf.nn.softmax(logits)[:, 1])
  mode = efl.MODE.TRAIN if is_training else efl.MODE.EVAL
  model.add_metric('loss', tf.reduce_mean(loss), mode)
  model.add_metric('accuracy', accuracy, mode)
  model.add_metric('auc', auc, mode)
  if not is_training:
    model.add_prediction('score', tf.nn.softmax(logits)[:, 1])  # the click probability, for --mode=predict
  return loss if is_training else auc


def loss_fn(model, sample):
  return model_fn(model, sample, True)


def eval_fn(model, sample):
  return model_fn(model, sample, False)


def parse_flags(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--train_step', type=int, default=8000, help='training steps per iteration')
  parser.add_argument('--eval_step', type=int, default=3800, help='evaluation steps per iteration')
  parser.add_argument('--max_iter', type=int, default=10, help='train-then-evaluate iterations')
  parser.add_argument('--log_step', type=int, default=1000, help='log every N steps')
  # The federal flags (--federal_role, --peer_addr, ...) are read by efl itself.
  return parser.parse_known_args(argv)[0]


def build_model(optimizer, opt_config=None):
  """The compiled leader model for `optimizer` (shared by the DP and the plain-Adam leader)."""
  CTR = efl.FederalModel()
  CTR.input_fn(input_fn)
  CTR.loss_fn(loss_fn)
  CTR.eval_fn(eval_fn)
  CTR.optimizer_fn(efl.optimizer_fn.optimizer_setter(optimizer))
  if opt_config is None:
    CTR.compile()
  else:
    CTR.compile(opt_config=opt_config)
  return CTR


def main(argv=None):
  args = parse_flags(argv)
  CTR = build_model(
    efl.DPAdamGaussianOptimizer(l2_norm_clip=1.0, noise_multiplier=1.0, learning_rate=0.01),
    opt_config={'BACKEND_MODE': 'unnoise'},
  )
  # --mode=train (default) | eval | predict --output=FILE | export --export_dir=DIR (efl/example/modes.py)
  modes.run(
    CTR,
    efl.procedure_fn.train_and_evaluate(train_step=args.train_step, eval_step=args.eval_step, max_iter=args.max_iter),
    log_step=args.log_step,
    project_name='criteo',
  )


if __name__ == '__main__':
  main()
