"""FederalDataIO with every pipeline option at once, stopped and resumed: both parties stay aligned.

Data-join naming (`part-<id>-...`, a different `<id>` per party) in a sub-directory, GZIP files on the leader
and ZLIB on the follower, a variable-length feature, worker sharding on the leader, two epochs and
drop_remainder. The parties run in two threads of this process with real Communicators on 127.0.0.1; each
session is a new graph and a new Communicator pair, as after a restart.
"""

import os
import threading

import numpy as np
import tensorflow.compat.v1 as tf

import efl.data
from ports import pair

FILES, PER_FILE, BATCH, EPOCHS = 5, 5, 3, 2
WORKER_IDX, WORKER_NUM = 1, 2


def _write(base, role):
  """Files day1/part-<id>-0000<f> with ids 0..24; the follower's also carry `tags` = [10 i, ...] (i % 3 values)."""
  party_id, compression = ('L7', 'GZIP') if role == 'leader' else ('f0042', 'ZLIB')
  os.makedirs(os.path.join(base, 'day1'))
  open(os.path.join(base, '_SUCCESS'), 'w').close()  # marker files are not data
  for f in range(FILES):
    path = os.path.join(base, 'day1', 'part-%s-%05d' % (party_id, f))
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression)) as writer:
      for i in range(f * PER_FILE, (f + 1) * PER_FILE):
        feature = {'sample_id': tf.train.Feature(int64_list=tf.train.Int64List(value=[i]))}
        if role == 'follower':
          feature['tags'] = tf.train.Feature(int64_list=tf.train.Int64List(value=[10 * i + k for k in range(i % 3)]))
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
  return compression


def _session(tmp_path, batches):
  """One session of both parties: restores, reads up to `batches` batches, checkpoints; returns their batches."""
  comms = dict(zip(('leader', 'follower'), pair()))
  graphs, readers, features = {}, {}, {}
  for role in comms:
    graphs[role] = tf.Graph()
    with graphs[role].as_default():
      io = efl.data.FederalDataIO(
        str(tmp_path / role),
        BATCH,
        comms[role],
        role,
        worker_idx=WORKER_IDX,
        worker_num=WORKER_NUM,
        prefetch=2,
        num_epochs=EPOCHS,
        drop_remainder=True,
        data_mode='data-join',
        compression_type='GZIP' if role == 'leader' else 'ZLIB',
      )
      io.fixedlen_feature('sample_id', 1, dtype=tf.int64)
      if role == 'follower':
        io.varlen_feature('tags', dtype=tf.int64)
      readers[role], features[role] = io, io.read()
  results, errors = {}, {}

  def run(role):
    try:
      comms[role].connect(timeout_s=30)
      ckpt = str(tmp_path / ('ckpt_' + role))
      with graphs[role].as_default():
        step = tf.train.get_or_create_global_step()
        train_op = tf.assign_add(step, 1)
        hooks = [readers[role].get_hook(), tf.train.CheckpointSaverHook(ckpt, save_steps=1000)]
        got = []
        with tf.train.MonitoredSession(tf.train.ChiefSessionCreator(checkpoint_dir=ckpt), hooks=hooks) as sess:
          while len(got) < batches and not sess.should_stop():
            got.append(sess.run([features[role], train_op])[0])
      results[role] = got
    except BaseException as err:  # pylint: disable=broad-except
      errors[role] = err
    finally:
      comms[role].close(error=errors.get(role))

  threads = [threading.Thread(target=run, args=(role,), daemon=True) for role in comms]
  for t in threads:
    t.start()
  for t in threads:
    t.join(60)
    assert not t.is_alive(), 'a party did not finish within 60 s'
  assert not errors, errors
  assert readers['leader'].block_ids == ['day1/part-*-00001', 'day1/part-*-00003']  # the leader's shard
  assert len(readers['follower'].block_ids) == FILES  # the follower follows whatever block is named
  return results['leader'], results['follower']


def _ids(batches):
  return [b['sample_id'].ravel().tolist() for b in batches]


def test_all_pipeline_options_resume_aligned(tmp_path):
  for role in ('leader', 'follower'):
    _write(str(tmp_path / role), role)
  # Worker 1 of 2 reads blocks 1 and 3 (ids 5..9, 15..19), twice; 20 records in batches of 3, the last 2
  # dropped.
  stream = (list(range(5, 10)) + list(range(15, 20))) * EPOCHS
  expected = [stream[i : i + BATCH] for i in range(0, len(stream) - BATCH + 1, BATCH)]
  assert len(expected) == 6
  got_leader, got_follower = [], []
  for batches in (2, 3, 10):  # stop after 2 batches, then 3 more, then the rest
    lead, follow = _session(tmp_path, batches)
    got_leader += lead
    got_follower += follow
  assert _ids(got_leader) == _ids(got_follower) == expected
  for batch in got_follower:
    ids = batch['sample_id'].ravel()
    tags = batch['tags']
    want = [(row, 10 * i + k) for row, i in enumerate(ids) for k in range(i % 3)]
    assert list(zip(tags.indices[:, 0].tolist(), tags.values.tolist())) == want
    assert tags.dense_shape[0] == BATCH
  np.testing.assert_array_equal(got_leader[-1]['sample_id'].ravel(), [15, 16, 17])
