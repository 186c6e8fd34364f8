"""One party of the installed-wheel smoke job (test_wheel.py runs it with the fresh environment's Python).

The follower sends its hidden layer with `require_grad=True`; the leader receives it, computes the loss and sends
the gradient back. Both train the same batch every step, so the leader's loss falls step by step. Prints
`SMOKE efl_file=<path>` and, on the leader, `SMOKE losses=<json list>`.
"""

import argparse
import json

import numpy as np
import tensorflow.compat.v1 as tf

import efl

N, D, H, LR = 64, 3, 4, 0.5


def make_data():
  rng = np.random.RandomState(0)
  x = rng.normal(size=(N, 2 * D)).astype(np.float32)
  y = (x.dot(rng.normal(size=(2 * D,))) > 0).astype(np.float32).reshape(-1, 1)
  return x[:, :D], x[:, D:], y, np.arange(N, dtype=np.int64).reshape(-1, 1)


class LossLogger(tf.train.SessionRunHook):
  """Collects the leader's loss every step and prints the list at the end."""

  def __init__(self, loss):
    self._loss, self._values = loss, []

  def before_run(self, run_context):
    return tf.train.SessionRunArgs(self._loss)

  def after_run(self, run_context, run_values):
    self._values.append(float(run_values.results))

  def end(self, session):
    print('SMOKE losses=%s' % json.dumps(self._values), flush=True)


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--steps', type=int, default=8)
  args, _ = p.parse_known_args()
  print('SMOKE efl_file=%s' % efl.__file__, flush=True)
  role = efl.flags.get_federal_role()
  x_l, x_f, y, ids = make_data()
  x_own = x_l if role == 'leader' else x_f

  def input_fn(model, mode):
    # One batch, the whole data set, every step.
    ds = tf.data.Dataset.from_tensor_slices({'x': x_own, 'label': y, 'sample_id': ids}).batch(N).repeat()
    feats = tf.data.make_one_shot_iterator(ds).get_next()
    cols = {'x': [tf.feature_column.numeric_column('x', D)], 'label': [tf.feature_column.numeric_column('label', 1)]}
    return efl.FederalSample(feats, cols, model.federal_role, model.communicator, sample_id_name='sample_id')

  def loss_fn(model, sample):
    init = tf.glorot_uniform_initializer(seed=1)
    h = tf.layers.dense(sample['x'], H, kernel_initializer=init, name='own')
    if role == 'follower':
      model.send('h', h, require_grad=True)
      return h
    h_f = tf.reshape(model.recv('h', dtype=tf.float32, require_grad=True), [-1, H])
    logits = tf.layers.dense(tf.concat([h, h_f], axis=1), 1, kernel_initializer=init, name='top')
    loss = tf.losses.sigmoid_cross_entropy(sample['label'], logits)
    model.add_hooks([LossLogger(loss)])
    return loss

  model = efl.FederalModel()
  model.input_fn(input_fn)
  model.loss_fn(loss_fn)
  model.optimizer_fn(efl.optimizer_fn.optimizer_setter(tf.train.GradientDescentOptimizer(LR)))
  model.compile()
  model.fit(efl.procedure_fn.train(max_step=args.steps), log_step=1, project_name='packaging_smoke')


if __name__ == '__main__':
  main()
