"""One party of a small split network, for the two-process tests.

Both parties build the data and initial weights from the same seed, so the test can compute the same
network in one process and compare. Writes `<out>/<role>.json` with what it saw.
"""

import argparse
import json
import os

import numpy as np
import tensorflow.compat.v1 as tf

import efl

N, D_L, D_F, H, BATCH, LR = 512, 4, 6, 3, 32, 0.1


def make_data(seed=0):
  rng = np.random.RandomState(seed)
  x = rng.normal(size=(N, D_L + D_F)).astype(np.float32)
  w = rng.normal(size=(D_L + D_F,)).astype(np.float32)
  y = (x.dot(w) > 0).astype(np.float32).reshape(-1, 1)
  return x[:, :D_L], x[:, D_L:], y, np.arange(N, dtype=np.int64).reshape(-1, 1)


def init_weights(seed=1):
  rng = np.random.RandomState(seed)
  return {
    'w_l': rng.normal(scale=0.5, size=(D_L, H)).astype(np.float32),
    'w_f': rng.normal(scale=0.5, size=(D_F, H)).astype(np.float32),
    'v': rng.normal(scale=0.5, size=(2 * H, 1)).astype(np.float32),
  }


class Recorder(tf.train.SessionRunHook):
  """Records fetched tensors every run, and variables at the end."""

  def __init__(self, fetches, variables, out_path):
    self._fetches, self._vars, self._path = fetches, variables, out_path
    self.rows = []

  def before_run(self, run_context):
    return tf.train.SessionRunArgs(self._fetches)

  def after_run(self, run_context, run_values):
    self.rows.append({k: np.asarray(v).tolist() for k, v in run_values.results.items()})

  def end(self, session):
    values = session.run(self._vars)
    with open(self._path, 'w') as f:
      json.dump({'rows': self.rows, 'vars': {k: np.asarray(v).tolist() for k, v in values.items()}}, f)


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--out', required=True)
  p.add_argument('--steps', type=int, default=5)
  p.add_argument('--procedure', default='train')
  p.add_argument('--eval_steps', type=int, default=3)
  p.add_argument('--mismatch_at', type=int, default=-1, help='follower: corrupt sample ids from this batch on')
  p.add_argument('--stall_at', type=int, default=-1, help='sleep forever before this step (to be killed)')
  p.add_argument('--pause_s', type=float, default=0, help='sleep this long in every step')
  p.add_argument('--ckpt', default=None)
  p.add_argument('--save_steps', type=int, default=None)
  args, _ = p.parse_known_args()
  role = efl.flags.get_federal_role()
  x_l, x_f, y, ids = make_data()
  w0 = init_weights()
  x_own = x_l if role == 'leader' else x_f
  if role == 'follower' and args.mismatch_at >= 0:
    ids = ids.copy()
    ids[args.mismatch_at * BATCH + 1 :] += 100000

  def input_fn(model, mode):
    ds = tf.data.Dataset.from_tensor_slices({'x': x_own, 'label': y, 'sample_id': ids}).batch(BATCH).repeat()
    feats = tf.data.make_one_shot_iterator(ds).get_next()
    if args.stall_at >= 0:
      step = model.global_step

      def stall(s):
        if s >= args.stall_at:
          import time

          time.sleep(3600)
        return s

      feats['x'] = feats['x'] + 0 * tf.cast(tf.py_func(stall, [step], tf.int64), tf.float32)
    if args.pause_s > 0:

      def pause(x):
        import time

        time.sleep(args.pause_s)
        return x

      feats['x'] = tf.py_func(pause, [feats['x']], tf.float32)
    cols = {
      'x': [tf.feature_column.numeric_column('x', x_own.shape[1])],
      'label': [tf.feature_column.numeric_column('label', 1)],
    }
    return efl.FederalSample(
      feats,
      cols,
      model.federal_role,
      model.communicator,
      sample_id_name='sample_id',
      name='train' if mode == efl.MODE.TRAIN else 'eval',
    )

  def body(model, sample, training):
    w = tf.get_variable('w_' + role[0], initializer=w0['w_' + role[0]])
    h = tf.matmul(sample['x'], w)
    if role == 'follower':
      if training:
        model.send('h', h, require_grad=True)
      else:
        model.send('h_eval', h, mode=efl.MODE.EVAL)
      return h, {'h': h}
    h_f = model.recv('h' if training else 'h_eval', require_grad=training)
    h_f = tf.reshape(h_f, [-1, H])
    v = tf.get_variable('v', initializer=w0['v'])
    logits = tf.matmul(tf.concat([h, h_f], axis=1), v)
    loss = tf.losses.sigmoid_cross_entropy(sample['label'], logits)
    return loss, {'loss': loss, 'h_recv': h_f}

  def loss_fn(model, sample):
    with tf.variable_scope('net', reuse=tf.AUTO_REUSE):
      out, fetches = body(model, sample, True)
    rec = Recorder(fetches, {v.op.name: v for v in tf.trainable_variables()}, os.path.join(args.out, '%s.json' % role))
    model.add_hooks([rec])
    return out

  def eval_fn(model, sample):
    with tf.variable_scope('net', reuse=tf.AUTO_REUSE):
      out, _ = body(model, sample, False)
    return out

  model = efl.FederalModel()
  model.input_fn(input_fn)
  model.loss_fn(loss_fn)
  model.eval_fn(eval_fn)
  model.optimizer_fn(efl.optimizer_fn.optimizer_setter(tf.train.GradientDescentOptimizer(LR)))
  model.compile()
  if args.procedure == 'train':
    proc = efl.procedure_fn.train(args.steps)
  else:
    proc = efl.procedure_fn.train_and_evaluate(train_step=args.steps, eval_step=args.eval_steps, max_iter=2)
  model.fit(proc, log_step=1, project_name='split', checkpoint_dir=args.ckpt, save_checkpoint_steps=args.save_steps)


if __name__ == '__main__':
  main()
