"""One party of a small split network trained with DP optimizers, for the federated DP tests.

Follower: `h = x @ W`, sent as 'h' with require_grad; its loss is `h` itself, so it trains on the gradient the
leader sends back. Leader: receives `h` and computes a per-example loss, either softmax cross entropy of
`h @ V` (`--leader_loss ce`) or `sum(h * c)` (`--leader_loss linear`, whose gradient with respect to `h` is
`c` on every row). Both build the data and initial weights from fixed seeds, so the test can recompute the
exchange in numpy. Each party writes `<out>/<role>.npz`: one array per recorded tensor and run, stacked
(`<name>`: [steps, ...]), plus the variables at the end (`var:<name>`).
"""

import argparse
import os

import numpy as np
import tensorflow.compat.v1 as tf

import efl

N, D, H, C = 1024, 6, 64, 10


def make_data(seed=0):
  rng = np.random.RandomState(seed)
  x = rng.normal(size=(N, D)).astype(np.float32)
  labels = rng.randint(0, C, size=(N,)).astype(np.int64)
  return x, labels, np.arange(N, dtype=np.int64)


def init_weights(seed=1, linear_c=0.01):
  rng = np.random.RandomState(seed)
  return {
    'w': rng.normal(scale=0.5, size=(D, H)).astype(np.float32),
    'v': rng.normal(scale=0.5, size=(H, C)).astype(np.float32),
    'c': np.full([H], linear_c, np.float32),
  }


class Recorder(tf.train.SessionRunHook):
  """Fetches `fetches` in every training run and saves them with the final variables."""

  def __init__(self, fetches, path):
    self._fetches, self._path = fetches, path
    self._rows = {k: [] for k in fetches}

  def before_run(self, run_context):
    return tf.train.SessionRunArgs(self._fetches)

  def after_run(self, run_context, run_values):
    for k, v in run_values.results.items():
      self._rows[k].append(np.asarray(v))

  def end(self, session):
    out = {k: np.stack(v) for k, v in self._rows.items() if v}
    variables = tf.trainable_variables()
    for var, value in zip(variables, session.run(variables)):
      out['var:' + var.op.name] = value
    np.savez(self._path, **out)


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--out', required=True)
  p.add_argument('--steps', type=int, default=3)
  p.add_argument('--batch', type=int, default=256)
  p.add_argument('--backend', default=None, help="opt_config['BACKEND_MODE'] (None: the default)")
  p.add_argument('--leader_loss', default='ce', choices=('ce', 'linear'))
  p.add_argument('--linear_c', type=float, default=0.01)
  p.add_argument('--clip', type=float, default=1.0, help="this party's l2_norm_clip")
  p.add_argument('--sigma', type=float, default=1.0, help="this party's noise_multiplier")
  p.add_argument('--microbatches', type=int, default=0, help='num_microbatches (0: one per example)')
  p.add_argument('--lr', type=float, default=0.1)
  p.add_argument('--num_examples', type=int, default=0, help="opt_config['NUM_EXAMPLES'] (0: not given)")
  args, _ = p.parse_known_args()
  role = efl.flags.get_federal_role()
  x, labels, ids = make_data()
  w0 = init_weights(linear_c=args.linear_c)
  path = os.path.join(args.out, '%s.npz' % role)

  def input_fn(model, mode):
    data = {'sample_id': ids, 'label': labels}
    if role == 'follower':
      data['x'] = x
    ds = tf.data.Dataset.from_tensor_slices(data).batch(args.batch, drop_remainder=True).repeat()
    feats = tf.data.make_one_shot_iterator(ds).get_next()
    cols = {'x': [tf.feature_column.numeric_column('x', D)]} if role == 'follower' else {}
    return efl.FederalSample(feats, cols, model.federal_role, model.communicator, sample_id_name='sample_id')

  def loss_fn(model, sample):
    if role == 'follower':
      w = tf.get_variable('w', initializer=w0['w'])
      xb = sample['x']
      h = tf.matmul(xb, w)
      model.send('h', h, require_grad=True)
      ((_, grad),) = model.require_grad_ops[None]
      model.add_hooks([Recorder({'x': xb, 'grad': grad}, path)])
      return h
    h = tf.reshape(model.recv('h', require_grad=True), [-1, H])
    label = tf.reshape(sample.features['label'], [-1])
    if args.leader_loss == 'ce':
      # A resource variable: its read is a snapshot, so the recorded value is the one this run's loss and
      # gradients used, not the value after the update (a ref variable's read aliases the updated buffer).
      used = tf.get_variable('v', initializer=w0['v'], use_resource=True).read_value()
      loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=label, logits=tf.matmul(h, used))
    else:
      used = tf.get_variable('c', initializer=w0['c'], use_resource=True).read_value()
      loss = tf.reduce_sum(h * used, axis=1)
    plain = tf.gradients(tf.reduce_sum(loss), h)[0]
    model.add_hooks([Recorder({'h': h, 'label': label, 'used': used, 'plain': plain}, path)])
    return loss

  opt = efl.DPGradientDescentGaussianOptimizer(
    l2_norm_clip=args.clip,
    noise_multiplier=args.sigma,
    num_microbatches=args.microbatches or None,
    learning_rate=args.lr,
  )
  model = efl.FederalModel()
  model.input_fn(input_fn)
  model.loss_fn(loss_fn)
  model.optimizer_fn(efl.optimizer_fn.optimizer_setter(opt))
  opt_config = {}
  if args.backend:
    opt_config['BACKEND_MODE'] = args.backend
  if args.num_examples:
    opt_config['NUM_EXAMPLES'] = args.num_examples
  model.compile(opt_config=opt_config)
  model.fit(efl.procedure_fn.train(args.steps), log_step=1, project_name='dp_split')


if __name__ == '__main__':
  main()
