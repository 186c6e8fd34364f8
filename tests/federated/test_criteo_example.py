"""The federated Criteo example end to end: Kaggle-format rows -> generate_data.py -> both parties' scripts.

The rows are synthetic (`efl.example.criteo.synthetic`, with a planted signal), the scripts run unchanged as two
real processes in the directory generate_data.py wrote. The seed's hash-bucket sizes (about 10M embedding
rows on the follower) make each Adam step take seconds, so the run is a few steps only.
"""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from efl.example.criteo import synthetic
from proc_helpers import ROOT, party_env, run_pair

EXAMPLE = os.path.join(ROOT, 'efl', 'example', 'criteo')
FOLLOWER = os.path.join(EXAMPLE, 'criteo_dp_follower_dense.py')
PLAIN_LEADER = os.path.join(EXAMPLE, 'criteo_leader_dense.py')
DP_LEADER = os.path.join(EXAMPLE, 'criteo_dp_leader_dense.py')
TRAIN_STEP, EVAL_STEP = 8, 3
ARGS = ['--train_step', str(TRAIN_STEP), '--eval_step', str(EVAL_STEP), '--max_iter', '1', '--log_step', '1']


@pytest.fixture(scope='module')
def criteo_dir(tmp_path_factory):
  """30k synthetic rows turned into {leader,follower}_{train,test}/ by the example's generate_data.py."""
  work = tmp_path_factory.mktemp('criteo')
  synthetic.write_synthetic_criteo(str(work / 'train.txt'), 30000, seed=0)
  gen = subprocess.run(
    [
      sys.executable,
      os.path.join(EXAMPLE, 'generate_data.py'),
      '--input',
      str(work / 'train.txt'),
      '--output_dir',
      str(work),
      '--rows_per_file',
      '2000',
      '--workers',
      '1',
      '--quiet',
    ],
    env=party_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    timeout=120,
  )
  assert gen.returncode == 0, gen.stdout.decode()
  # About 10k complete, class-balanced rows: ~6.9k train rows (7 batches of 1000), ~3.3k test rows.
  for split in ('leader_train', 'follower_train', 'leader_test', 'follower_test'):
    assert sorted(os.listdir(str(work / split)))[:1] == ['data_0.tfrd']
  return str(work)


def _eval_auc(log):
  done = re.search(r'eval done: \[eval\] gstep=%d lstep=%d .* auc=([\d.]+)' % (TRAIN_STEP, EVAL_STEP), log)
  assert done, log[-3000:]
  return float(done.group(1))


def _run(criteo_dir, leader, tmp_path):
  res = run_pair(leader, FOLLOWER, ARGS, ARGS, cwd=criteo_dir, timeout=240, tmp_path=tmp_path)
  for role, (rc, log) in res.items():
    assert rc == 0, '%s failed:\n%s' % (role, log[-3000:])
  assert 'eval done: [eval] gstep=%d lstep=%d' % (TRAIN_STEP, EVAL_STEP) in res['follower'][1]
  return res


def test_plain_adam_leader_learns_the_planted_signal(criteo_dir, tmp_path):
  res = _run(criteo_dir, PLAIN_LEADER, tmp_path)
  leader = res['leader'][1]
  assert 'train done: [train] gstep=%d' % TRAIN_STEP in leader
  # Evaluated on the held-out rows, through both parties' halves of the network.
  assert _eval_auc(leader) > 0.6
  # The train and the eval reader, both named 'dataio' by the seed, got their own block channels.
  assert "sends ['efl_data/dataio/blocks', 'efl_data/dataio_1/blocks'" in leader


@pytest.mark.skipif(
  not os.environ.get('EFL_LONG_TESTS'), reason='another minute of Criteo training; set EFL_LONG_TESTS=1 to run it'
)
def test_dp_leader_trains_with_the_same_follower(criteo_dir, tmp_path):
  res = _run(criteo_dir, DP_LEADER, tmp_path)
  leader = res['leader'][1]
  assert 'train done: [train] gstep=%d' % TRAIN_STEP in leader
  assert _eval_auc(leader) > 0.55  # 0.65 measured; DP noise makes it vary from run to run


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize('script', [FOLLOWER, DP_LEADER])
def test_scripts_accept_the_seed_command_line(script):
  # `python criteo_dp_follower_dense.py --federal_role=follower`: the efl flags pass through the script's own
  # parser, and the step counts default to the seed's.
  args = _load(script).parse_flags(['--federal_role=follower', '--peer_addr=localhost:50051'])
  assert (args.train_step, args.eval_step, args.max_iter, args.log_step) == (8000, 3800, 10, 1000)


@pytest.mark.parametrize(
  'args, message',
  [
    (['--mode=predict', '--output=p.csv'], '--mode=predict works on a trained checkpoint: pass --ckpt_dir'),
    (['--mode=predict', '--ckpt_dir=ckpt'], '--mode=predict needs --output=FILE'),
    (['--mode=export', '--ckpt_dir=ckpt'], '--mode=export needs --export_dir=DIR'),
    (['--mode=export', '--ckpt_dir=ckpt', '--export_dir=out'], 'export: no checkpoint to export in'),
    (['--mode=serve', '--ckpt_dir=ckpt'], '--mode must be train, eval, predict or export'),
  ],
)
def test_modes_refuse_what_they_cannot_do(criteo_dir, tmp_path, args, message):
  # The Criteo scripts take the MNIST example's modes; a checkpoint of their 10M embedding rows is >1 GB, so the
  # full predict/export round is tested on MNIST (tests/federated/test_predict_export.py).
  out = subprocess.run(
    [sys.executable, PLAIN_LEADER, '--federal_role=leader'] + args,
    cwd=criteo_dir,
    env=party_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    timeout=120,
  )
  log = out.stdout.decode('utf-8', 'replace')
  assert out.returncode != 0 and message in log, log[-3000:]
