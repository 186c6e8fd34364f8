"""The forward-encryption MNIST example (efl/example/entropy_mnist) trains end to end: two real processes."""

import os
import re
import subprocess
import sys


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from proc_helpers import party_env, run_pair  # noqa: E402  pylint: disable=wrong-import-position

from efl.privacy.paillier import keys  # noqa: E402  pylint: disable=wrong-import-position

EXAMPLE = os.path.join(os.path.dirname(HERE), '..', 'efl', 'example', 'entropy_mnist')

# Runs an example script after making sure `efl.privacy` exposes the layers (it does once the package exports
# them; this only fills the names in if missing).
RUNNER = """
import runpy, sys
import efl.privacy
from efl.privacy import paillier
for name in ('EncryptActiveLayer', 'EncryptPassiveLayer', 'generate_paillier_key'):
  if not hasattr(efl.privacy, name):
    setattr(efl.privacy, name, getattr(paillier, name))
script = [a for a in sys.argv[1:] if a.endswith('.py')][0]
sys.argv = [script] + [a for a in sys.argv[1:] if a != script]
runpy.run_path(script, run_name='__main__')
"""


def test_entropy_mnist_trains(tmp_path, mnist_npz):
  rows = 512  # two batches of 256
  gen = subprocess.run(
    [
      sys.executable,
      os.path.join(EXAMPLE, 'generate_data.py'),
      '--mnist_npz',
      mnist_npz,
      '--output_dir',
      str(tmp_path),
      '--train_rows',
      str(rows),
      '--test_rows',
      '10',
      '--num_files',
      '2',
    ],
    env=party_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    timeout=120,
  )
  assert gen.returncode == 0, gen.stdout.decode()
  keys.generate_paillier_key(str(tmp_path / 'public_key.json'), str(tmp_path / 'private_key.json'), 512)
  runner = tmp_path / 'run_example.py'
  runner.write_text(RUNNER)
  res = run_pair(
    str(runner),
    str(runner),
    [os.path.join(EXAMPLE, 'leader.py')],
    [os.path.join(EXAMPLE, 'follower.py')],
    cwd=str(tmp_path),
    timeout=240,
    tmp_path=tmp_path,
  )
  for role, (rc, log) in res.items():
    assert rc == 0, '%s failed:\n%s' % (role, log[-4000:])
    losses = [float(v) for v in re.findall(r'\[train\] gstep=\d+ .*?loss=([0-9.]+)', log)]
    assert len(losses) >= 2, log[-3000:]
    assert all(0 < v < 5 for v in losses), losses
