"""A two-task model written as EFLS's algorithm library writes them (task scopes, a custom procedure of
LoopStages with feed_dict, scope_optimizer, string metrics, an eval_fn that rebuilds the training layers)
trains and evaluates in two real processes on a subset of real MNIST."""

import os
import re
import subprocess
import sys

import pytest

from proc_helpers import ROOT, party_env, run_pair

EXAMPLE = os.path.join(ROOT, 'efl', 'example', 'multitask')


@pytest.mark.parametrize('procedure', ['iterate', 'cotrain', 'train_and_evaluate'])
def test_two_task_model_trains_and_evaluates_federated(tmp_path, mnist_npz, procedure):
  # generate_data.py writes into the directory it runs in, wherever the script lies.
  gen = subprocess.run(
    [
      sys.executable,
      os.path.join(EXAMPLE, 'generate_data.py'),
      '--mnist_npz',
      mnist_npz,
      '--train_rows',
      '2560',
      '--test_rows',
      '1024',
    ],
    cwd=str(tmp_path),
    env=party_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    timeout=120,
  )
  assert gen.returncode == 0, gen.stdout.decode()
  assert sorted(os.listdir(str(tmp_path))) == ['follower_test', 'follower_train', 'leader_test', 'leader_train']
  args = ['--procedure', procedure]
  res = run_pair(
    os.path.join(EXAMPLE, 'leader.py'),
    os.path.join(EXAMPLE, 'follower.py'),
    args,
    args,
    cwd=str(tmp_path),
    timeout=300,
    tmp_path=tmp_path,
    env={'EFL_MULTITASK_EPOCHS': '2'},
  )
  for role, (rc, log) in res.items():
    assert rc == 0, '%s failed:\n%s' % (role, log[-3000:])
    assert 'Traceback' not in log, '%s:\n%s' % (role, log[-3000:])
  leader, follower = res['leader'][1], res['follower'][1]
  # 2560 rows x 2 epochs / batch 256 = 20 steps per task: 40 global steps in all, whatever the procedure
  for task in ('even', 'large'):
    train = re.findall(
      r'train/%s done: \[train/%s\] gstep=(\d+) lstep=(\d+) .*auc=([\d.]+) task=%s' % (task, task, task), leader
    )
    assert sum(int(lstep) for _, lstep, _ in train) == 20, (task, train)
    # every sample of the test set (1024 rows: 4 batches) evaluated once, on both sides
    for log in (leader, follower):
      evals = re.findall(r'eval/%s done: \[eval/%s\] gstep=\d+ lstep=(\d+) .*task=%s' % (task, task, task), log)
      assert sum(int(n) for n in evals) == 4, (task, evals)
    aucs = re.findall(
      r'eval/%s done: \[eval/%s\] gstep=\d+ lstep=4 .*auc=([\d.]+) task=%s' % (task, task, task), leader
    )
    assert len(aucs) == 1 and float(aucs[0]) > 0.8, (task, leader[-3000:])
  assert re.findall(r'gstep=(\d+)', leader)[-1] == '40'
