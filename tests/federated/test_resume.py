"""Exact resume across real processes: both parties killed (SIGKILL) mid-run, then restarted from checkpoints.

The parties (resume_party.py) read TFRecords with `FederalDataIO` and check sample ids every step
(`FederalSample`); each records (global step, sample ids) of every training run. Batches cross file and epoch
boundaries (3 files of 20 records, batch 8, 2 epochs), so a resume position inside a file is exercised.
"""

import glob
import json
import os
import re
import shutil
import signal
import sys
import time

import pytest
import tensorflow.compat.v1 as tf

from efl.framework.federal_model import checkpoint_steps
from proc_helpers import start_party
from ports import free_port

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import resume_party  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, 'resume_party.py')
FILES, PER_FILE, BATCH, EPOCHS, STEPS, SAVE_STEPS, STALL_AT = 3, 20, 8, 2, 14, 4, 10
ROLES = ('leader', 'follower')


def _expected_ids(step):
  """The sample ids of the batch of global step `step` (1-based): batches run on across files and epochs."""
  sequence = list(range(FILES * PER_FILE)) * EPOCHS
  return sequence[(step - 1) * BATCH : step * BATCH]


def _records(path):
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.endswith('\n')]


class Pair(object):
  """Both parties of one run, on fresh ports, with per-run logs and records."""

  def __init__(self, tmp, tag, ckpt=None, extra=()):
    self.tmp, self.tag = tmp, tag
    ports = {'leader': free_port(), 'follower': free_port()}
    self.procs, self.logs, self.records = {}, {}, {}
    for role in ROLES:
      peer = 'follower' if role == 'leader' else 'leader'
      self.logs[role] = os.path.join(tmp, '%s_%s.log' % (tag, role))
      self.records[role] = os.path.join(tmp, '%s_%s.jsonl' % (tag, role))
      ckpt_dir = (ckpt or {}).get(role) or os.path.join(tmp, 'ckpt_' + role)
      args = [
        '--data',
        os.path.join(tmp, 'data_' + role),
        '--ckpt',
        ckpt_dir,
        '--record',
        self.records[role],
        '--tag',
        tag,
        '--steps',
        str(STEPS),
        '--save_steps',
        str(SAVE_STEPS),
        '--batch',
        str(BATCH),
        '--epochs',
        str(EPOCHS),
      ] + list(extra)
      self.procs[role] = start_party(SCRIPT, role, ports[role], ports[peer], args, cwd=HERE, log_path=self.logs[role])

  def log(self, role):
    with open(self.logs[role], 'rb') as f:
      return f.read().decode('utf-8', 'replace')

  def steps(self, role):
    return [(r['step'], r['ids']) for r in _records(self.records[role])]

  def wait(self, timeout=90):
    deadline = time.time() + timeout
    try:
      for role in ROLES:
        self.procs[role].wait(max(deadline - time.time(), 1))
    finally:
      self.kill()
    return {role: self.procs[role].returncode for role in ROLES}

  def kill(self):
    for p in self.procs.values():
      if p.poll() is None:
        p.send_signal(signal.SIGKILL)
        p.wait()


def _keep_only(ckpt_dir, steps):
  """Deletes every checkpoint of `ckpt_dir` but `steps`, as if the others had never been written."""
  kept = []
  for path in tf.train.get_checkpoint_state(ckpt_dir).all_model_checkpoint_paths:
    local = os.path.join(ckpt_dir, os.path.basename(path))
    if int(local.rsplit('-', 1)[1]) in steps:
      kept.append(local)
    else:
      for name in glob.glob(local + '.*'):
        os.remove(name)
  tf.train.update_checkpoint_state(ckpt_dir, kept[-1], kept)
  assert checkpoint_steps(ckpt_dir) == sorted(steps)


def _copy_checkpoints(source, target):
  """Copies a checkpoint dir as a user would; its state file still names the files of `source`."""
  shutil.copytree(source, target)


@pytest.fixture(scope='module')
def killed_run(tmp_path_factory):
  """Run 1: both parties train until step STALL_AT, then both are SIGKILLed (the last checkpoint is step 8)."""
  tmp = str(tmp_path_factory.mktemp('resume'))
  for role in ROLES:
    resume_party.write_data(os.path.join(tmp, 'data_' + role), role, FILES, PER_FILE)
  pair = Pair(tmp, 'run1', extra=['--stall_at', str(STALL_AT)])
  try:
    deadline = time.time() + 90
    while time.time() < deadline:
      done = [any(step == STALL_AT for step, _ in pair.steps(role)) for role in ROLES]
      if all(done) or any(p.poll() is not None for p in pair.procs.values()):
        break
      time.sleep(0.2)
    logs = '\n'.join(pair.log(r)[-3000:] for r in ROLES)
    assert all(p.poll() is None for p in pair.procs.values()), 'a party ended before it was killed:\n' + logs
    assert all(done), 'the parties did not reach step %d within 90 s:\n%s' % (STALL_AT, logs)
  finally:
    pair.kill()
  steps = {role: checkpoint_steps(os.path.join(tmp, 'ckpt_' + role)) for role in ROLES}
  assert steps['leader'] == steps['follower'] == [0, 4, 8], steps
  # Untouched copies of the checkpoints, for the runs that tamper with them.
  for role in ROLES:
    _copy_checkpoints(os.path.join(tmp, 'ckpt_' + role), os.path.join(tmp, 'snapshot_' + role))
  return tmp, pair


def _copy_snapshot(tmp, name):
  dirs = {}
  for role in ROLES:
    dirs[role] = os.path.join(tmp, '%s_%s' % (name, role))
    _copy_checkpoints(os.path.join(tmp, 'snapshot_' + role), dirs[role])
  return dirs


def _check_sequence(pair, first, last):
  for role in ROLES:
    steps = pair.steps(role)
    assert [s for s, _ in steps] == list(range(first, last + 1)), (role, steps)
    for step, ids in steps:
      assert ids == _expected_ids(step), (role, step, ids)
  assert pair.steps('leader') == pair.steps('follower')


def test_killed_pair_resumes_exactly_after_the_last_checkpoint(killed_run):
  tmp, run1 = killed_run
  _check_sequence(run1, 1, STALL_AT)
  run2 = Pair(tmp, 'run2')
  codes = run2.wait()
  assert codes == {'leader': 0, 'follower': 0}, '\n'.join(run2.log(r)[-3000:] for r in ROLES)
  # Steps 9 and 10 were trained before the kill but not checkpointed: they run again, on the same batches, and
  # nothing before them does. Both parties' sample ids agreed at every step (the run would have failed).
  _check_sequence(run2, 9, STEPS)
  assert run2.steps('leader')[0][1] == run1.steps('leader')[8][1]  # step 9 of both runs: the same batch
  leader = run2.log('leader')
  assert 'restoring checkpoint' in leader and 'ckpt_leader/model.ckpt-8' in leader
  # Position after batch 8 = record 64 = block 3 (data_0 of epoch 2), record 4.
  assert 'Restoring reader train at block 3, sample 4 (file data_0.tfrd)' in leader
  assert 'train done: [train] gstep=%d lstep=%d' % (STEPS, STEPS - 8) in leader
  follower = run2.log('follower')
  assert 'resumes where the leader says' in follower
  receives = re.search(r'follower connecting: .*; receives (\[.*?\]);', follower).group(1)
  assert "'_verify_sample_ids_train'" in receives and "'efl_data/train/blocks'" in receives  # ids checked


def test_restart_restores_the_newest_common_checkpoint(killed_run):
  tmp, _ = killed_run
  dirs = _copy_snapshot(tmp, 'common')
  _keep_only(dirs['follower'], [0, 4])  # the follower lost its step-8 checkpoint
  run = Pair(tmp, 'common', ckpt=dirs)
  codes = run.wait()
  assert codes == {'leader': 0, 'follower': 0}, '\n'.join(run.log(r)[-3000:] for r in ROLES)
  _check_sequence(run, 5, STEPS)
  leader = run.log('leader')
  assert 'restoring step 4, the newest step both parties have' in leader
  # The copies' state files name the original dirs (TF writes absolute paths); the copies are what is restored.
  assert 'restoring checkpoint %s/model.ckpt-4' % dirs['leader'] in leader
  assert 'restoring checkpoint %s/model.ckpt-4' % dirs['follower'] in run.log('follower')


def test_no_common_checkpoint_is_a_clear_error(killed_run):
  tmp, _ = killed_run
  dirs = _copy_snapshot(tmp, 'disjoint')
  _keep_only(dirs['leader'], [8])
  _keep_only(dirs['follower'], [4])
  start = time.time()
  run = Pair(tmp, 'disjoint', ckpt=dirs)
  codes = run.wait(timeout=60)
  assert time.time() - start < 60
  assert codes['leader'] != 0 and codes['follower'] != 0
  for role in ROLES:
    log = run.log(role)
    assert 'CheckpointMismatchError' in log and 'cannot restore the same checkpoint' in log, log[-3000:]
    assert run.steps(role) == []  # nothing trained
  assert 'this leader has steps [8]' in run.log('leader') and 'the peer has steps [4]' in run.log('leader')
