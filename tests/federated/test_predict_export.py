"""Federated prediction and SavedModel export of the MNIST example, in real processes on real MNIST: the
prediction file against eval's accuracy, the two exported models chained in stock TensorFlow against the
prediction file, and a prediction killed mid-way and run again."""

import csv
import glob
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

from proc_helpers import ROOT, party_env, run_pair, start_party
from ports import free_port

EXAMPLE = os.path.join(ROOT, 'efl', 'example', 'mnist')
HERE = os.path.dirname(os.path.abspath(__file__))
TEST_ROWS = 10000
SIGNATURES = r"""
import glob, json, os, sys
import tensorflow.compat.v1 as tf
out = {}
for role in ('follower', 'leader'):
  version, = glob.glob(os.path.join(sys.argv[1], role, '*'))
  with tf.Session(graph=tf.Graph()) as sess:
    sig = tf.saved_model.loader.load(sess, ['serve'], version).signature_def['serving_default']
    out[role] = [sorted(sig.inputs), sorted(sig.outputs)]
print(json.dumps(out))
"""


def _pair(work, *args, timeout=240):
  args = ['--ckpt_dir=ckpt'] + list(args)
  res = run_pair(
    os.path.join(EXAMPLE, 'leader.py'),
    os.path.join(EXAMPLE, 'follower.py'),
    args,
    args,
    cwd=str(work),
    timeout=timeout,
    tmp_path=work,
  )
  for role, (rc, log) in res.items():
    assert rc == 0, '%s failed:\n%s' % (role, log[-3000:])
  return res['leader'][1], res['follower'][1]


def _read_rows(path):
  with open(path) as f:
    rows = list(csv.reader(f))
  return rows[0], rows[1:]


def _labels(work):
  """{sample_id: label} of the test split, read from the leader's TFRecords."""
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top

  out = {}
  for path in sorted(glob.glob(os.path.join(str(work), 'leader_test', '*'))):
    for record in tf.io.tf_record_iterator(path):
      ex = tf.train.Example.FromString(record)
      out[ex.features.feature['sample_id'].int64_list.value[0]] = ex.features.feature['label'].float_list.value[0]
  return out


def test_predict_export_and_restart(tmp_path, mnist_npz):
  work = tmp_path
  gen = subprocess.run(
    [sys.executable, os.path.join(EXAMPLE, 'generate_data.py'), '--mnist_npz', mnist_npz, '--train_rows', '5120'],
    cwd=str(work),
    env=party_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    timeout=120,
  )
  assert gen.returncode == 0, gen.stdout.decode()
  leader, _ = _pair(work)  # --mode=train: 20 steps, checkpoints in ckpt/<role>
  assert 'train done: [train] gstep=20' in leader
  leader, _ = _pair(work, '--mode=eval')
  accuracy = float(re.search(r'eval done: \[eval\] gstep=20 lstep=40 .*accuracy=([\d.]+)', leader).group(1))

  leader, follower = _pair(work, '--mode=predict', '--output=pred.csv')
  assert 'predict: wrote %d rows (40 steps) to pred.csv' % TEST_ROWS in leader
  assert 'writes nothing' in follower and not os.path.exists(str(work / 'follower.csv'))
  header, rows = _read_rows(str(work / 'pred.csv'))
  assert header == ['sample_id', 'class'] + ['prob_%d' % i for i in range(10)]
  ids = [int(r[0]) for r in rows]
  assert len(rows) == TEST_ROWS and len(set(ids)) == TEST_ROWS  # the last partial batch (16 rows) too
  labels = _labels(work)
  file_accuracy = np.mean([labels[i] == int(r[1]) for i, r in zip(ids, rows)])
  assert abs(file_accuracy - accuracy) < 1e-6, (file_accuracy, accuracy)

  # Export each party (no peer needed), then chain the two SavedModels in a fresh process with stock TF.
  for role in ('leader', 'follower'):
    out = subprocess.run(
      [
        sys.executable,
        os.path.join(EXAMPLE, role + '.py'),
        '--federal_role=' + role,
        '--ckpt_dir=ckpt',
        '--mode=export',
        '--export_dir=export',
      ],
      cwd=str(work),
      env=party_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      timeout=120,
    )
    assert out.returncode == 0, out.stdout.decode()[-3000:]
    assert os.path.isfile(str(work / 'export' / role / '20' / 'saved_model.pb'))
  chain = subprocess.run(
    [sys.executable, os.path.join(EXAMPLE, 'serve_chain.py'), '--export_dir', 'export', '--rows', '256'],
    cwd=str(work),
    env=party_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    timeout=120,
  )
  assert chain.returncode == 0, chain.stderr.decode()[-3000:]
  served = json.loads(chain.stdout.decode().strip().splitlines()[-1])
  assert len(served['ids']) == 256
  by_id = {int(r[0]): r for r in rows}
  expected = np.array([[float(v) for v in by_id[i][2:]] for i in served['ids']])
  np.testing.assert_allclose(np.array(served['prob']), expected, rtol=0, atol=1e-5)
  assert served['class'] == [int(by_id[i][1]) for i in served['ids']]
  # Each signature takes what its party has and sends: raw features (no label), and the peer's fc1.
  signatures = subprocess.run(
    [sys.executable, '-c', SIGNATURES, str(work / 'export')],
    env=party_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    timeout=120,
  )
  assert signatures.returncode == 0, signatures.stderr.decode()[-3000:]
  assert json.loads(signatures.stdout.decode().strip().splitlines()[-1]) == {
    'follower': [['feature'], ['fc1']],
    'leader': [['fc1', 'feature'], ['class', 'prob']],
  }

  # Killed mid-way: no partial pred.csv; run again: the same complete file.
  first = open(str(work / 'pred.csv')).read()
  os.remove(str(work / 'pred.csv'))
  lp, fp = free_port(), free_port()
  env = {'EFL_TEST_SCRIPT': os.path.join(EXAMPLE, 'leader.py'), 'EFL_TEST_PAUSE_S': '0.1'}
  args = ['--ckpt_dir=ckpt', '--mode=predict', '--output=pred.csv']
  leader = start_party(
    os.path.join(HERE, 'paused_party.py'),
    'leader',
    lp,
    fp,
    args,
    cwd=str(work),
    env=env,
    log_path=str(work / 'killed_leader.log'),
  )
  follower = start_party(
    os.path.join(EXAMPLE, 'follower.py'),
    'follower',
    fp,
    lp,
    args,
    cwd=str(work),
    log_path=str(work / 'killed_follower.log'),
  )
  try:
    deadline = time.time() + 120
    partial = []
    while time.time() < deadline and not partial:
      partial = [p for p in glob.glob(str(work / '.pred.csv.partial-*')) if os.path.getsize(p) > 0]
      time.sleep(0.05)
    assert partial, open(str(work / 'killed_leader.log')).read()[-3000:]
    leader.kill()
    assert leader.wait(30) != 0
    assert follower.wait(60) != 0  # the follower sees its peer lost
  finally:
    for p in (leader, follower):
      if p.poll() is None:
        p.kill()
  assert not os.path.exists(str(work / 'pred.csv'))
  _pair(work, '--mode=predict', '--output=pred.csv')
  assert open(str(work / 'pred.csv')).read() == first
  assert not glob.glob(str(work / '.pred.csv.partial-*'))  # the killed run's leftovers are gone
