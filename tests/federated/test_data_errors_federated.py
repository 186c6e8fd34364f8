"""Bad input in real two-process runs: both parties stop, in bounded time, and the logs say why.

The parties are resume_party.py (FederalDataIO in 'local' mode, sample-id checks, checkpoints every 4 steps).
The single-process checks of each error are in tests/data/test_errors.py.
"""

import os
import re
import sys
import time

import pytest
import tensorflow.compat.v1 as tf

from efl.framework.federal_model import checkpoint_steps
from proc_helpers import run_pair

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import resume_party  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, 'resume_party.py')
FILES, PER_FILE, BATCH = 4, 8, 4


def _data(tmp_path):
  return {
    role: resume_party.write_data(str(tmp_path / ('data_' + role)), role, FILES, PER_FILE)
    for role in ('leader', 'follower')
  }


def _run(tmp_path, timeout=90, env=None, data=None):
  args = {}
  for role in ('leader', 'follower'):
    args[role] = [
      '--data',
      (data or {}).get(role) or str(tmp_path / ('data_' + role)),
      '--ckpt',
      str(tmp_path / ('ckpt_' + role)),
      '--record',
      str(tmp_path / ('%s.jsonl' % role)),
      '--steps',
      '100',
      '--epochs',
      '1',
      '--batch',
      str(BATCH),
      '--save_steps',
      '4',
    ]
  start = time.time()
  res = run_pair(
    SCRIPT, SCRIPT, args['leader'], args['follower'], cwd=HERE, timeout=timeout, env=env, tmp_path=tmp_path
  )
  return res, time.time() - start


def _steps(tmp_path, role):
  path = tmp_path / ('%s.jsonl' % role)
  return path.read_text().count('\n') if path.exists() else 0


def test_different_file_sets_stop_both(tmp_path):
  paths = _data(tmp_path)
  os.remove(paths['follower'][2])  # the follower lacks data_2.tfrd
  res, seconds = _run(tmp_path)
  assert seconds < 80
  (lrc, leader), (frc, follower) = res['leader'], res['follower']
  assert lrc != 0 and frc != 0, (leader[-2000:], follower[-2000:])
  reason = "leader and follower have different file sets: the leader reads block 'data_2.tfrd'"
  assert reason in follower, follower[-3000:]
  assert re.search(r'efl: the follower at \S+ failed at step', leader) and reason in leader, leader[-3000:]  # why
  # The first two blocks (4 batches) were trained; no checkpoint was written at the failure.
  assert _steps(tmp_path, 'leader') <= 4
  assert checkpoint_steps(str(tmp_path / 'ckpt_leader')) in ([0], [0, 4])


def _flip_a_byte(path):
  data = bytearray(open(path, 'rb').read())
  data[len(data) // 2] ^= 0xFF
  open(path, 'wb').write(bytes(data))


def _truncate(path):
  data = open(path, 'rb').read()
  open(path, 'wb').write(data[: len(data) * 2 // 3])


def _bad_later_record(path):
  # Record 5 of the file stores `x` with 2 values instead of 3 (the first record, which is checked before
  # training, is fine).
  records = list(tf.io.tf_record_iterator(path))
  example = tf.train.Example.FromString(records[5])
  del example.features.feature['x'].float_list.value[2:]
  records[5] = example.SerializeToString()
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)


@pytest.mark.parametrize(
  'side,damage,reason',
  [
    ('follower', _flip_a_byte, "DataLossError: Reader 'train': file '{path}' (block 1) is truncated or corrupt"),
    ('leader', _truncate, "DataLossError: Reader 'train': file '{path}' (block 1) is truncated or corrupt"),
    (
      'leader',
      _bad_later_record,
      "InvalidArgumentError: Reader 'train': a record does not match the declared features: Name: {path}:5, Key: x",
    ),
  ],
  ids=['corrupt-follower-file', 'truncated-leader-file', 'bad-leader-record'],
)
def test_bad_file_met_while_training_stops_both(tmp_path, side, damage, reason):
  paths = _data(tmp_path)
  damage(paths[side][1])  # the 2nd file: the checks before training pass, training meets the damage
  reason = reason.format(path=paths[side][1])
  other = 'leader' if side == 'follower' else 'follower'
  res, seconds = _run(tmp_path)
  assert seconds < 80
  assert res['leader'][0] != 0 and res['follower'][0] != 0, (res['leader'][1][-2000:], res['follower'][1][-2000:])
  assert 'training failed: ' + reason in res[side][1], res[side][1][-3000:]
  # the peer learns why, in its one last line
  assert re.search(
    r'efl: the %s at 127\.0\.0\.1:\d+ failed (at step \d+|before the first step) \(%s.*\); '
    r'fix that, then restart both parties' % (side, re.escape(reason)),
    res[other][1],
  ), res[other][1][-3000:]
  assert res[other][1].count(reason) == 1
  assert _steps(tmp_path, 'leader') <= 3  # the 2nd file starts in batch 3
  assert checkpoint_steps(str(tmp_path / ('ckpt_' + side))) == [0]  # only the one written at the start


def test_schema_error_stops_the_party_before_it_connects(tmp_path):
  _data(tmp_path)
  # The follower's records store `x` as int64 where float32 is declared: it fails while building its graph,
  # before it connects, naming the feature, the file and the dtype to declare.
  bad = tmp_path / 'bad_follower'
  bad.mkdir()
  with tf.io.TFRecordWriter(str(bad / 'data_0.tfrd')) as writer:
    writer.write(
      tf.train.Example(
        features=tf.train.Features(
          feature={
            'sample_id': tf.train.Feature(int64_list=tf.train.Int64List(value=[0])),
            'x': tf.train.Feature(int64_list=tf.train.Int64List(value=[1, 2, 3])),
          }
        )
      ).SerializeToString()
    )
  res, seconds = _run(tmp_path, env={'EFL_CONNECT_TIMEOUT_S': '5'}, data={'follower': str(bad)})
  (lrc, leader), (frc, follower) = res['leader'], res['follower']
  assert frc != 0, follower[-3000:]
  assert (
    "SchemaError: Reader 'train': feature 'x' is declared as float32 but '%s' stores it as int64_list"
    % (bad / 'data_0.tfrd')
    in follower
  ), follower[-3000:]
  # The leader learns it from the follower's last words if its server was up when the follower exited, or else
  # that its peer never answered, after its connect timeout.
  told = 'failed before the parties connected' in leader and 'SchemaError' in leader
  assert lrc != 0 and (told or 'did not answer within 5 s' in leader), leader[-3000:]
  assert seconds < 60
  assert not (tmp_path / 'ckpt_follower').exists() and _steps(tmp_path, 'leader') == 0
