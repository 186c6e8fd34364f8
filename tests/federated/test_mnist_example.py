"""The seed's federated MNIST example (leader.py / follower.py, unchanged) on a subset of real MNIST."""

import os
import re
import shutil
import subprocess
import sys

from proc_helpers import ROOT, TF_IMPORT, party_env, run_pair

EXAMPLE = os.path.join(ROOT, 'efl', 'example', 'mnist')


def test_mnist_example_trains_federated(tmp_path, mnist_npz):
  gen = subprocess.run(
    [
      sys.executable,
      os.path.join(EXAMPLE, 'generate_data.py'),
      '--mnist_npz',
      mnist_npz,
      '--output_dir',
      str(tmp_path),
      '--train_rows',
      '5120',
      '--test_rows',
      '512',
    ],
    env=party_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    timeout=120,
  )
  assert gen.returncode == 0, gen.stdout.decode()
  for script in ('leader.py', 'follower.py'):
    shutil.copy(os.path.join(EXAMPLE, script), str(tmp_path))
  # TF's own warnings shown, as the launcher shows them: a failed op is logged at that level.
  res = run_pair(
    'leader.py', 'follower.py', cwd=str(tmp_path), timeout=240, tmp_path=tmp_path, env={'TF_CPP_MIN_LOG_LEVEL': '1'}
  )
  for role, (rc, log) in res.items():
    assert rc == 0, '%s failed:\n%s' % (role, log[-3000:])
    # At the end of the data neither party is left waiting for the other: no failed op, no traceback.
    assert 'Traceback' not in log and 'PeerClosedError' not in log, '%s:\n%s' % (role, log[-3000:])
  # 5120 samples / batch 256 = 20 steps; the leader's streaming accuracy over them is well above chance.
  done = re.search(r'train done: \[train\] gstep=20 .* accuracy=([\d.]+)', res['leader'][1])
  assert done, res['leader'][1][-2000:]
  assert float(done.group(1)) > 0.3
  assert 'train done: [train] gstep=20' in res['follower'][1]


def test_launcher_runs_both_parties(tmp_path, mnist_npz):
  work = tmp_path / 'mnist'
  work.mkdir()
  for script in ('leader.py', 'follower.py', 'generate_data.py'):
    shutil.copy(os.path.join(EXAMPLE, script), str(work))
  # The launcher generates the data itself when leader_train/ is missing.
  env = party_env({'EFL_MNIST_NPZ': mnist_npz})
  out = subprocess.run(
    [sys.executable, '-m', 'efl.launcher', str(work), '--timeout_s', '200'],
    env=env,
    cwd=ROOT,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    timeout=300,
  )
  log = out.stdout.decode('utf-8', 'replace')
  assert out.returncode == 0, log[-3000:]
  assert '[leader  ]' in log and '[follower]' in log
  assert 'exit codes: leader 0, follower 0' in log
  assert 'train done: [train] gstep=235' in log


def test_seed_federated_snippets_run_unchanged(tmp_path, mnist_npz):
  """The seed README's federated snippets as written (the example scripts have grown modes since)."""
  sys.path.insert(0, os.path.join(ROOT, 'tests', 'framework'))
  from test_seed_single_machine import seed_blocks  # pylint: disable=g-import-not-at-top

  main_block, input_block, follower_block, leader_block = seed_blocks('# 联邦示例', '# 差分隐私示例')
  assert '#follower' in follower_block and '#leader' in leader_block
  gen = subprocess.run(
    [
      sys.executable,
      os.path.join(EXAMPLE, 'generate_data.py'),
      '--mnist_npz',
      mnist_npz,
      '--output_dir',
      str(tmp_path),
      '--train_rows',
      '2560',
      '--test_rows',
      '256',
    ],
    env=party_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    timeout=120,
  )
  assert gen.returncode == 0, gen.stdout.decode()
  # The seed shows the follower's input_fn; the leader's reads its own folder.
  inputs = {'follower': input_block, 'leader': input_block.replace('./follower_train', './leader_train')}
  for role, model_block in (('follower', follower_block), ('leader', leader_block)):
    script = '\n'.join([TF_IMPORT, 'import efl', inputs[role], model_block, main_block])
    (tmp_path / ('seed_%s.py' % role)).write_text(script, encoding='utf-8')
  res = run_pair('seed_leader.py', 'seed_follower.py', cwd=str(tmp_path), timeout=240, tmp_path=tmp_path)
  for role, (rc, log) in res.items():
    assert rc == 0, '%s failed:\n%s' % (role, log[-3000:])
    assert 'train done: [train] gstep=10 ' in log, log[-2000:]  # 2560 samples / batch 256
