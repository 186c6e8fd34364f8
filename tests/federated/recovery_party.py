"""One party of a small split network that reads real TFRecords with FederalDataIO, checkpoints often, and
traces the sample ids of every training step (`<out>/<role>_trace.jsonl`: one line per step, the global step
after it and the ids), so that a test can check that every sample is used exactly once per epoch across a
crash and a recovery."""

import argparse
import json
import os
import time

import tensorflow.compat.v1 as tf

import efl

DIM, H, BATCH = 4, 3, 16


class Trace(tf.train.SessionRunHook):
  """Appends (global step after the run, sample ids of its batch) to a file, one flushed line per run."""

  def __init__(self, ids, global_step, path, pause_s):
    self._ids, self._step, self._path, self._pause_s = ids, global_step, path, pause_s

  def before_run(self, run_context):
    return tf.train.SessionRunArgs(self._ids)

  def after_run(self, run_context, run_values):
    gstep = int(run_context.session.run(self._step))
    with open(self._path, 'a') as f:
      f.write(
        json.dumps({'gstep': gstep, 'pid': os.getpid(), 'ids': [int(i) for i in run_values.results.reshape(-1)]}) + '\n'
      )
    time.sleep(self._pause_s)  # a step long enough for a test to kill this process in the middle


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--out', required=True)
  p.add_argument('--data', required=True)
  p.add_argument('--epochs', type=int, default=2)
  p.add_argument('--pause_s', type=float, default=0.05)
  args, _ = p.parse_known_args()
  role = efl.get_federal_role()

  def input_fn(model, mode):
    dataio = efl.data.FederalDataIO(
      os.path.join(args.data, role),
      BATCH,
      model.communicator,
      model.federal_role,
      0,
      1,
      num_epochs=args.epochs,
      data_mode='local',
      name='train',
    )
    dataio.fixedlen_feature('sample_id', 1, dtype=tf.int64)
    dataio.fixedlen_feature('x', DIM, dtype=tf.float32)
    if role == 'leader':
      dataio.fixedlen_feature('label', 1, dtype=tf.float32)
    features = dataio.read()
    model.add_hooks([dataio.get_hook()])
    columns = {'x': [tf.feature_column.numeric_column('x', DIM)]}
    if role == 'leader':
      columns['label'] = [tf.feature_column.numeric_column('label', 1)]
    sample = efl.FederalSample(
      features, columns, model.federal_role, model.communicator, sample_id_name='sample_id', name='train'
    )
    model.add_hooks(
      [Trace(sample.sample_ids, model.global_step, os.path.join(args.out, '%s_trace.jsonl' % role), args.pause_s)]
    )
    return sample

  def loss_fn(model, sample):
    h = tf.layers.dense(sample['x'], H, name='%s_dense' % role)
    if role == 'follower':
      model.send('h', h, require_grad=True)
      return h
    peer = tf.reshape(model.recv('h', require_grad=True), [-1, H])
    logits = tf.layers.dense(tf.concat([h, peer], axis=1), 1, name='head')
    return tf.losses.sigmoid_cross_entropy(sample['label'], logits)

  model = efl.FederalModel()
  model.input_fn(input_fn)
  model.loss_fn(loss_fn)
  model.optimizer_fn(efl.optimizer_fn.optimizer_setter(tf.train.GradientDescentOptimizer(0.1)))
  model.compile()
  model.fit(
    efl.procedure_fn.train(),
    log_step=1,
    project_name='recovery',
    checkpoint_dir=os.path.join(args.out, 'ckpt_' + role),
    save_checkpoint_steps=4,
  )


if __name__ == '__main__':
  main()
