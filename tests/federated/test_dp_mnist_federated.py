"""The seed's federated DP MNIST example (efl/example/dp_mnist/{leader,follower}.py) runs as written.

Both parties run for a few steps through the launcher, on real MNIST images (EFL_MNIST_NPZ), with real gRPC on
127.0.0.1: they must exit 0, agree on every batch's sample ids, log the leader's eval accuracy, and log
epsilon when the dataset size is known.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from proc_helpers import ROOT, party_env

from efl.privacy import analysis

EXAMPLE = os.path.join(ROOT, 'efl', 'example', 'dp_mnist')
# The first images of real MNIST: the parties load them in a fraction of the time. 600 = 256 + 256 + 88, so
# the third training batch is the last, partial one of the epoch.
N_TRAIN, N_TEST, BATCH = 600, 1000, 256
TRAIN_STEP, EVAL_STEP = 3, 2


@pytest.fixture(scope='module')
def example_run(tmp_path_factory):
  path = os.environ.get('EFL_MNIST_NPZ') or os.path.join(ROOT, '..', 'shared', 'datasets', 'mnist.npz')
  if not os.path.exists(path):
    pytest.skip('real MNIST not available: set EFL_MNIST_NPZ to a Keras-layout mnist.npz')
  npz = str(tmp_path_factory.mktemp('dp_mnist') / 'mnist.npz')
  with np.load(path) as f:
    np.savez(
      npz,
      x_train=f['x_train'][:N_TRAIN],
      y_train=f['y_train'][:N_TRAIN],
      x_test=f['x_test'][:N_TEST],
      y_test=f['y_test'][:N_TEST],
    )
  cmd = [
    sys.executable,
    '-m',
    'efl.launcher',
    '--timeout_s',
    '150',
    EXAMPLE,
    '--',
    '--train_step',
    str(TRAIN_STEP),
    '--eval_step',
    str(EVAL_STEP),
    '--max_iter',
    '1',
  ]
  env = party_env({'EFL_MNIST_NPZ': npz, 'EFL_DP_NUM_EXAMPLES': str(N_TRAIN)})
  proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=200)
  return proc.returncode, proc.stdout.decode('utf-8', 'replace')


def test_dp_mnist_leader_and_follower_run(example_run):
  rc, out = example_run
  assert rc == 0, out[-4000:]
  assert 'exit codes: leader 0, follower 0' in out
  assert 'sample ids' not in out  # no SampleIdMismatchError: both read the same batches
  # The leader's evaluation reports the accuracy of the split network.
  acc = re.findall(r'\[leader\s*\].*eval done: .*accuracy=([0-9.]+)', out)
  assert acc and 0.0 <= float(acc[-1]) <= 1.0, out[-4000:]
  for role in ('leader', 'follower'):
    assert re.search(r'\[%s\s*\].*train done: .*gstep=%d .*epsilon=' % (role, TRAIN_STEP), out), out[-4000:]


def test_dp_mnist_epsilon_uses_the_batch_size_not_the_last_batch(example_run):
  rc, out = example_run
  assert rc == 0, out[-4000:]
  # Both parties train with the seed's DP optimizer (sigma 1, batch 256); 'unnoise' releases one noised
  # gradient per step. The last batch of the epoch is smaller; the sampling rate stays batch / n.
  eps = '%.4g' % analysis.epsilon_after_steps(N_TRAIN, BATCH, 1.0, TRAIN_STEP)
  for role in ('leader', 'follower'):
    line = re.search(r'\[%s\s*\].*train done: .*' % role, out).group(0)
    assert 'epsilon=%s ' % eps in line, line
