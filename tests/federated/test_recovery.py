"""Recovery without restarting the survivor: the launcher's supervisor (`--restarts`) starts a party killed at a
random step again; the other party, with EFL_RECOVERY_TIMEOUT_S, waits for it, both restore their common
checkpoint and finish. Over the whole run every training sample is used exactly once per epoch: the steps
before the restored checkpoint, plus those after it (a step run again after the restore reads the same ids)."""

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from efl import native
from proc_helpers import ROOT, party_env

HERE = os.path.dirname(os.path.abspath(__file__))
N, EPOCHS, BATCH = 256, 2, 16
STEPS = N * EPOCHS // BATCH
TRIALS = int(os.environ.get('EFL_RECOVERY_TRIALS', '3'))  # 10 with EFL_RECOVERY_TRIALS=10


def _write_data(directory):
  rng = np.random.RandomState(0)
  x = rng.normal(size=(N, 8)).astype(np.float32)
  y = (x.sum(axis=1) > 0).astype(np.float32)
  for role, cols in (('leader', slice(0, 4)), ('follower', slice(4, 8))):
    os.makedirs(os.path.join(directory, role))
    for part in range(4):  # 4 files of 64 records: blocks to resume inside
      with tf.io.TFRecordWriter(os.path.join(directory, role, 'data_%d.tfrd' % part)) as w:
        for i in range(part * 64, (part + 1) * 64):
          feature = {
            'sample_id': tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
            'x': tf.train.Feature(float_list=tf.train.FloatList(value=x[i, cols].tolist())),
          }
          if role == 'leader':
            feature['label'] = tf.train.Feature(float_list=tf.train.FloatList(value=[y[i]]))
          w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def _party_pid(out, role):
  for pid in os.listdir('/proc'):
    if not pid.isdigit():
      continue
    try:
      with open('/proc/%s/cmdline' % pid, 'rb') as f:
        cmd = f.read().split(b'\0')
    except OSError:
      continue
    if b'recovery_party.py' in b' '.join(cmd) and out.encode() in cmd and ('--federal_role=%s' % role).encode() in cmd:
      return int(pid)
  return None


def _traced(path):
  """{global step: [ids of each time it ran]} from a trace file."""
  runs = collections.defaultdict(list)
  with open(path) as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        runs[row['gstep']].append(row['ids'])
  return runs


@pytest.mark.parametrize('transport', ['native', 'python'])
@pytest.mark.parametrize('trial', range(TRIALS))
def test_killed_party_recovers_and_every_sample_is_used_once_per_epoch(tmp_path, trial, transport):
  if transport == 'native' and not native.available()[0]:
    pytest.skip('native transport not built: %s' % native.available()[1])
  rng = random.Random(trial)
  victim, kill_after = rng.choice(['leader', 'follower']), rng.randint(3, STEPS - 10)
  data, out = str(tmp_path / 'data'), str(tmp_path / 'out')
  _write_data(data)
  os.makedirs(out)
  args = ['--out', out, '--data', data, '--epochs', str(EPOCHS)]
  launcher = subprocess.Popen(
    [
      sys.executable,
      '-m',
      'efl.launcher',
      HERE,
      '--leader',
      'recovery_party.py',
      '--follower',
      'recovery_party.py',
      '--generate',
      '',
      '--restarts',
      '1',
      '--timeout_s',
      '240',
      '--',
    ]
    + args,
    cwd=ROOT,
    env=party_env({'EFL_RECOVERY_TIMEOUT_S': '60', 'EFL_NATIVE_TRANSPORT': 'on' if transport == 'native' else 'off'}),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
  )
  trace = os.path.join(out, '%s_trace.jsonl' % victim)
  try:
    deadline = time.time() + 120
    while time.time() < deadline:
      if os.path.exists(trace) and sum(1 for _ in open(trace)) >= kill_after:
        break
      time.sleep(0.02)
    pid = _party_pid(out, victim)
    if pid is None:
      launcher.kill()
      raise AssertionError(
        'the %s is not running after %d traced steps:\n%s'
        % (victim, sum(1 for _ in open(trace)), launcher.communicate()[0].decode('utf-8', 'replace')[-4000:])
      )
    os.kill(pid, signal.SIGKILL)
    log = launcher.communicate(timeout=240)[0].decode('utf-8', 'replace')
  finally:
    if launcher.poll() is None:
      launcher.kill()
  assert launcher.returncode == 0, log[-4000:]
  assert 'starting it again (restart 1 of 1)' in log and 'exit codes: leader 0, follower 0' in log, log[-4000:]
  survivor = 'follower' if victim == 'leader' else 'leader'
  assert 'recovering: waiting up to 60 s for the %s' % victim in log, log[-4000:]
  for role in ('leader', 'follower'):
    runs = _traced(os.path.join(out, '%s_trace.jsonl' % role))
    assert sorted(runs) == list(range(1, STEPS + 1)), (role, sorted(runs))
    for gstep, attempts in runs.items():
      assert all(ids == attempts[0] for ids in attempts), (role, gstep, attempts)  # the same batch again
    used = [i for gstep in sorted(runs) for i in runs[gstep][-1]]
    for epoch in range(EPOCHS):
      assert sorted(used[epoch * N : (epoch + 1) * N]) == list(range(N)), (role, epoch)
  # the survivor kept its process: one pid in its trace; the victim had two
  pids = {
    role: {json.loads(ln)['pid'] for ln in open(os.path.join(out, '%s_trace.jsonl' % role)) if ln.strip()}
    for role in ('leader', 'follower')
  }
  assert len(pids[survivor]) == 1 and len(pids[victim]) == 2, pids
