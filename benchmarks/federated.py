"""Throughput of the federated MNIST network against the same network in one process.

Prints `BENCH federated_ratio_b256 <r>` and `BENCH federated_ratio_b4096 <r>`: federated samples/s divided by
one-process samples/s, each measured in fresh processes, alternating, median of the repeats. Both use the
same in-memory MNIST-shaped data (784 features split 392/392) so that only the split and the wire differ; the
federated run includes the per-step sample-id check. The two parties share this machine the way
`python -m efl.launcher` runs them: each gets half the cores, for its threads (EFL_PIN_CPUS) and for TF's
intra-op pool (EFL_INTRA_OP_THREADS).

The federated figure uses the transport efl picks by default: the native one where it is built. Then each
repeat also runs the Python transport (`EFL_NATIVE_TRANSPORT=off`), and the benchmark prints
`federated_ratio_python_b<batch>` and `native_speedup_b<batch>` (native over Python samples/s, side by side).

    .venv/bin/python benchmarks/federated.py [--repeats 5]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STEPS = {256: 400, 4096: 60}
WARMUP = {256: 50, 4096: 10}


def _party(role, batch):
  """Runs one party (or the whole network for role 'single') and prints its steady-state samples/s."""
  import numpy as np
  import tensorflow.compat.v1 as tf
  import efl

  steps, warm = STEPS[batch], WARMUP[batch]
  rng = np.random.RandomState(0)
  n = 8192
  x = rng.uniform(0, 255, size=(n, 784)).astype(np.float32)
  y = rng.randint(0, 10, size=(n, 1)).astype(np.float32)
  ids = np.arange(n, dtype=np.int64).reshape(-1, 1)
  half = {'leader': x[:, :392], 'follower': x[:, 392:], 'single': x}[role]
  times = []

  class Timer(tf.train.SessionRunHook):
    def after_run(self, ctx, values):
      times.append(time.time())

  def input_fn(model, mode):
    ds = tf.data.Dataset.from_tensor_slices({'feature': half, 'label': y, 'sample_id': ids})
    feats = tf.data.make_one_shot_iterator(ds.repeat().batch(batch).prefetch(2)).get_next()
    cols = {
      'label': [tf.feature_column.numeric_column('label', 1)],
      'emb': [tf.feature_column.numeric_column('feature', half.shape[1])],
    }
    if role == 'single':
      return efl.Sample(feats, cols)
    return efl.FederalSample(feats, cols, model.federal_role, model.communicator, sample_id_name='sample_id')

  def dense(t, units):
    return tf.layers.dense(t, units, kernel_initializer=tf.truncated_normal_initializer(stddev=0.001))

  def model_fn(model, sample):
    label = tf.one_hot(tf.reshape(tf.cast(sample['label'], tf.int32), [-1]), 10)
    if role == 'single':
      emb = sample['emb']
      fc1 = tf.concat([dense(emb[:, :392], 128), dense(emb[:, 392:], 128)], axis=-1)
    elif role == 'follower':
      fc1 = dense(sample['emb'], 128)
      model.send('fc1', fc1, True)
      return tf.losses.softmax_cross_entropy(label, dense(fc1, 10))
    else:
      f_fc1 = tf.reshape(model.recv('fc1', dtype=tf.float32, require_grad=True), [-1, 128])
      fc1 = tf.concat([dense(sample['emb'], 128), f_fc1], axis=-1)
    return tf.losses.softmax_cross_entropy(label, dense(fc1, 10))

  model = efl.Model() if role == 'single' else efl.FederalModel()
  model.input_fn(input_fn)
  model.loss_fn(model_fn)
  model.optimizer_fn(efl.optimizer_fn.optimizer_setter(tf.train.GradientDescentOptimizer(0.001)))
  model.compile()
  model.add_hooks([Timer()])
  model.fit(efl.procedure_fn.train(steps), log_step=10**9)
  rate = (len(times) - warm) * batch / (times[-1] - times[warm - 1])
  print('RESULT ' + json.dumps({'role': role, 'samples_per_s': rate}), flush=True)


def _rate(out):
  for line in out.decode('utf-8', 'replace').splitlines():
    if line.startswith('RESULT '):
      return json.loads(line[7:])['samples_per_s']
  raise RuntimeError('a benchmark party failed:\n' + out.decode('utf-8', 'replace')[-3000:])


def _run(cmd_args, role=None, transport=None):
  """Starts one benchmark process; a federated party (`role`) shares the machine as `python -m efl.launcher`
  runs two parties: half the cores each, for its threads and TF's intra-op pool."""
  from efl import launcher  # pylint: disable=g-import-not-at-top

  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=ROOT)
  if transport:
    env['EFL_NATIVE_TRANSPORT'] = transport
  argv = [sys.executable, os.path.abspath(__file__)] + cmd_args
  if role:
    return launcher.start_party(argv, role, env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def measure_single(batch):
  p = _run(['--party', 'single', '--batch', str(batch)])
  out, _ = p.communicate(timeout=600)
  return _rate(out)


def measure_federated(batch, transport=None):
  from efl.launcher import free_port  # both parties start at once, so both need their ports first

  lp, fp = free_port(), free_port()
  procs = [
    _run(
      [
        '--party',
        'leader',
        '--batch',
        str(batch),
        '--federal_role=leader',
        '--local_addr=127.0.0.1:%d' % lp,
        '--peer_addr=127.0.0.1:%d' % fp,
      ],
      'leader',
      transport,
    ),
    _run(
      [
        '--party',
        'follower',
        '--batch',
        str(batch),
        '--federal_role=follower',
        '--local_addr=127.0.0.1:%d' % fp,
        '--peer_addr=127.0.0.1:%d' % lp,
      ],
      'follower',
      transport,
    ),
  ]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  return _rate(outs[0])  # the leader's rate; the follower runs in lockstep


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--party', default=None)
  p.add_argument('--batch', type=int, default=256)
  p.add_argument('--repeats', type=int, default=5)
  args, _ = p.parse_known_args()
  if args.party:
    _party(args.party, args.batch)
    return
  sys.path.insert(0, ROOT)
  from efl import native  # pylint: disable=g-import-not-at-top

  has_native, why = native.available()
  if not has_native:
    print('native transport not available (%s): the federated figures are of the Python transport' % why)
  for batch in (256, 4096):
    ratios, python_ratios, speedups = [], [], []
    for _ in range(args.repeats):
      single = measure_single(batch)
      fed = measure_federated(batch)
      ratios.append(fed / single)
      line = 'batch %d: one process %.0f samples/s, federated %.0f samples/s, ratio %.3f' % (
        batch,
        single,
        fed,
        fed / single,
      )
      if has_native:
        python = measure_federated(batch, 'off')
        python_ratios.append(python / single)
        speedups.append(fed / python)
        line += '; Python transport %.0f samples/s, ratio %.3f' % (python, python / single)
      print(line, flush=True)
    print('BENCH federated_ratio_b%d %.3f' % (batch, statistics.median(ratios)), flush=True)
    if has_native:
      print('BENCH federated_ratio_python_b%d %.3f' % (batch, statistics.median(python_ratios)), flush=True)
      print('BENCH native_speedup_b%d %.3f' % (batch, statistics.median(speedups)), flush=True)


if __name__ == '__main__':
  main()
