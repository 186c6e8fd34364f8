"""The seed README's single-machine snippets, composed into one script, run unchanged."""

import os
import re
import subprocess
import sys

import pytest

from proc_helpers import TF_IMPORT

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED = os.path.join(ROOT, '..', 'shared', 'seed', 'examples_README_zh.md')


def seed_blocks(section_title, next_title):
  if not os.path.exists(SEED):
    pytest.skip('the seed README is not beside this checkout')
  text = open(SEED, encoding='utf-8').read()
  section = text[text.index(section_title) : text.index(next_title)]
  return re.findall(r'```python\n(.*?)```', section, re.S)


def test_single_machine_snippets_run_unchanged(tmp_path):
  main_block, input_block, model_block = seed_blocks('# 单机示例', '# 联邦示例')
  script = '\n'.join([TF_IMPORT, 'import efl', input_block, model_block, main_block])
  path = tmp_path / 'seed_single.py'
  path.write_text(script, encoding='utf-8')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  out = subprocess.run(
    [sys.executable, str(path)],
    cwd=str(tmp_path),
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    timeout=300,
  )
  log = out.stdout.decode('utf-8', 'replace')
  assert out.returncode == 0, log[-3000:]
  auc_lines = [ln for ln in log.splitlines() if '[eval]' in ln and 'auc=' in ln]
  assert len(auc_lines) >= 5, log[-3000:]  # one per eval stage of max_iter=5
  assert 'gstep=500' in log  # 5 iterations x 100 train steps


@pytest.mark.parametrize('script', ['train.py', 'train_and_eval.py'])
def test_examples_run(script):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  out = subprocess.run(
    [sys.executable, script],
    cwd=os.path.join(ROOT, 'efl', 'example'),
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    timeout=300,
  )
  log = out.stdout.decode('utf-8', 'replace')
  assert out.returncode == 0, log[-3000:]
  assert re.search(r'\[train\] gstep=100 lstep=100 steps/s=[\d.]+ gsteps/s=[\d.]+ samples/s=[\d.]+ loss=', log)
