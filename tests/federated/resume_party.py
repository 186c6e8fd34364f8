"""One party of a small split network that reads TFRecords with `FederalDataIO`, for the restart tests.

Every training run appends one JSON line `{"tag", "step", "ids"}` (the global step after the run and the
sample ids of its batch) to `--record` and flushes it, so a record survives SIGKILL. With `--stall_at S` the
party stops making progress after recording step S (the test then kills it).

Data layout (written by the test): `<data>/data_<i>.tfrd` with `sample_id` (int64), `x` (float[D]) and, on the
leader, `label` (int64).
"""

import argparse
import json
import os
import time

import tensorflow.compat.v1 as tf

import efl

D, H = 3, 2


def write_data(base, role, files, per_file, name='data_{}.tfrd'):
  """`files` TFRecord files of `per_file` records with sample ids 0, 1, ... in file order; returns their paths.

  Both parties' files hold the same sample ids; their `x` differ, and only the leader's records have `label`.
  """
  os.makedirs(base)
  paths = []
  for f in range(files):
    paths.append(os.path.join(base, name.format(f)))
    with tf.io.TFRecordWriter(paths[-1]) as writer:
      for i in range(f * per_file, (f + 1) * per_file):
        x = [float(i % 7), float(i % 3), 1.0] if role == 'leader' else [float(-i % 5), 0.5, float(i % 2)]
        feature = {
          'sample_id': tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
          'x': tf.train.Feature(float_list=tf.train.FloatList(value=x)),
        }
        if role == 'leader':
          feature['label'] = tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2]))
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
  return paths


class Recorder(tf.train.SessionRunHook):
  """Appends (global step, sample ids) of every training run to a file, flushed at once."""

  def __init__(self, ids, global_step, path, tag, stall_at):
    self._ids, self._step, self._path, self._tag, self._stall_at = ids, global_step, path, tag, stall_at

  def before_run(self, run_context):
    return tf.train.SessionRunArgs(self._ids)

  def after_run(self, run_context, run_values):
    step = int(run_context.session.run(self._step))
    with open(self._path, 'a') as f:
      f.write(json.dumps({'tag': self._tag, 'step': step, 'ids': [int(i) for i in run_values.results.ravel()]}) + '\n')
      f.flush()
    if 0 <= self._stall_at <= step:
      while True:  # wait to be killed, after the checkpoints of the earlier steps are complete
        time.sleep(1)


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--data', required=True)
  p.add_argument('--ckpt', required=True)
  p.add_argument('--record', required=True)
  p.add_argument('--tag', default='run')
  p.add_argument('--steps', type=int, default=14)
  p.add_argument('--save_steps', type=int, default=4)
  p.add_argument('--stall_at', type=int, default=-1)
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--epochs', type=int, default=2)
  args, _ = p.parse_known_args()
  role = efl.flags.get_federal_role()

  def input_fn(model, mode):
    if mode != efl.MODE.TRAIN:
      return None  # train only: no eval reader
    io = efl.data.FederalDataIO(
      args.data,
      args.batch,
      model.communicator,
      model.federal_role,
      num_epochs=args.epochs,
      prefetch=2,
      data_mode='local',
      name='train',
    )
    io.fixedlen_feature('sample_id', 1, dtype=tf.int64)
    io.fixedlen_feature('x', D)
    if role == 'leader':
      io.fixedlen_feature('label', 1, dtype=tf.int64)
    features = io.read()
    model.add_hooks(
      [io.get_hook(), Recorder(features['sample_id'], model.global_step, args.record, args.tag, args.stall_at)]
    )
    columns = {'x': [tf.feature_column.numeric_column('x', D)]}
    if role == 'leader':
      columns['label'] = [tf.feature_column.numeric_column('label', 1)]
    return efl.FederalSample(
      features, columns, model.federal_role, model.communicator, sample_id_name='sample_id', name='train'
    )

  def loss_fn(model, sample):
    with tf.variable_scope('net'):
      h = tf.layers.dense(sample['x'], H, name='own')
      if role == 'follower':
        model.send('h', h, require_grad=True)
        return h
      h_f = tf.reshape(model.recv('h', require_grad=True), [-1, H])
      logits = tf.layers.dense(tf.concat([h, h_f], 1), 1, name='top')
      return tf.losses.sigmoid_cross_entropy(sample['label'], logits)

  model = efl.FederalModel()
  model.input_fn(input_fn)
  model.loss_fn(loss_fn)
  model.optimizer_fn(efl.optimizer_fn.optimizer_setter(tf.train.GradientDescentOptimizer(0.1)))
  model.compile()
  model.fit(
    efl.procedure_fn.train(args.steps),
    log_step=1,
    project_name='resume',
    checkpoint_dir=args.ckpt,
    save_checkpoint_steps=args.save_steps,
  )


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  main()
