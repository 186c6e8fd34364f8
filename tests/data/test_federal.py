"""FederalDataIO with two real Communicators on 127.0.0.1, the parties in two threads of one process."""

import os
import threading
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import efl.data
from data_helpers import declare, example, read_all, run_in_threads, write_dataset, write_records


def _ids(batches):
  return [b['sample_id'].ravel().tolist() for b in batches]


class Party(object):
  """One party's graph with its readers."""

  def __init__(self, role, comm, bases, batch_size=4, **kwargs):
    self.graph = tf.Graph()
    self.role = role
    with self.graph.as_default():
      self.readers = []
      for base in bases:
        io = efl.data.FederalDataIO(str(base), batch_size, comm, role, **kwargs)
        declare(io)
        self.readers.append(io)
      self.features = [io.read() for io in self.readers]
      self.hooks = [io.get_hook() for io in self.readers]

  def read_all(self, reader=0, session_creator=None):
    with self.graph.as_default():
      return read_all(self.features[reader], self.hooks, session_creator=session_creator)


def _run_pair(leader, follower, fn_leader, fn_follower):
  results, errors = run_in_threads(lambda: fn_leader(leader), lambda: fn_follower(follower), timeout=60)
  return results, errors


def _pair(comm_pairs, leader_bases, follower_bases, **kwargs):
  lc, fc = comm_pairs.make()
  leader = Party('leader', lc, leader_bases, **kwargs)
  follower = Party('follower', fc, follower_bases, **kwargs)
  comm_pairs.connect(lc, fc)
  return leader, follower


def test_leader_and_follower_read_the_same_samples(tmp_path, comm_pairs):
  write_dataset(tmp_path / 'leader', 3, 5)
  write_dataset(tmp_path / 'follower', 3, 5, offset=100)
  leader, follower = _pair(
    comm_pairs, [tmp_path / 'leader'], [tmp_path / 'follower'], data_mode='local', num_epochs=2, prefetch=3
  )
  (lb, fb), errors = _run_pair(leader, follower, Party.read_all, Party.read_all)
  assert errors == [None, None]
  expected = list(range(15)) * 2
  assert sum(_ids(lb), []) == expected
  assert _ids(lb) == _ids(fb)
  for ln, f in zip(lb, fb):
    np.testing.assert_allclose(f['dense'], ln['dense'] + 100)  # the follower's own feature values


def test_data_join_prefix_mapping(tmp_path, comm_pairs):
  write_dataset(tmp_path / 'leader' / 'day1', 2, 3, name='part-aaa-{:05d}.tfrd')
  write_dataset(tmp_path / 'follower' / 'day1', 2, 3, offset=100, name='part-bbbb-{:05d}.tfrd')
  leader, follower = _pair(comm_pairs, [tmp_path / 'leader'], [tmp_path / 'follower'])
  assert leader.readers[0].block_ids == ['day1/part-*-00000.tfrd', 'day1/part-*-00001.tfrd']
  assert follower.readers[0].block_ids == leader.readers[0].block_ids
  (lb, fb), errors = _run_pair(leader, follower, Party.read_all, Party.read_all)
  assert errors == [None, None]
  assert _ids(lb) == _ids(fb) == [[0, 1, 2, 3], [4, 5]]
  assert fb[0]['dense'][0, 0] == 100.0


def test_different_file_sets(tmp_path, comm_pairs):
  write_dataset(tmp_path / 'leader', 3, 2)
  follower_paths = write_dataset(tmp_path / 'follower', 3, 2)
  os.rename(follower_paths[1], follower_paths[1] + '.old')  # the follower lacks data_1.tfrd
  leader, follower = _pair(
    comm_pairs, [tmp_path / 'leader'], [tmp_path / 'follower'], data_mode='local', batch_size=2, prefetch=0
  )
  (lb, _), errors = _run_pair(leader, follower, Party.read_all, Party.read_all)
  assert errors[0] is None and len(lb) == 3  # the leader alone does not notice
  assert isinstance(errors[1], tf.errors.OpError)
  message = errors[1].message
  assert 'leader and follower have different file sets' in message
  assert "block 'data_1.tfrd'" in message and str(tmp_path / 'follower') in message


def test_different_batch_sizes(tmp_path, comm_pairs):
  write_dataset(tmp_path / 'leader', 1, 4)
  write_dataset(tmp_path / 'follower', 1, 4)
  lc, fc = comm_pairs.make()
  leader = Party('leader', lc, [tmp_path / 'leader'], data_mode='local', batch_size=2)
  follower = Party('follower', fc, [tmp_path / 'follower'], data_mode='local', batch_size=3)
  comm_pairs.connect(lc, fc)
  _, errors = _run_pair(leader, follower, Party.read_all, Party.read_all)
  assert errors[0] is None
  assert 'the leader batches with batch_size=2, drop_remainder=False but the follower with batch_size=3' in (
    errors[1].message
  )


def test_role_and_mode_checks(tmp_path, comm_pairs):
  lc, _ = comm_pairs.make()
  with pytest.raises(ValueError, match="role must be 'leader' or 'follower'. Found 'boss'"):
    efl.data.FederalDataIO(str(tmp_path), 2, lc, 'boss')
  with pytest.raises(ValueError, match="data_mode must be 'data-join' or 'local'"):
    efl.data.FederalDataIO(str(tmp_path), 2, lc, 'leader', data_mode='join')
  with pytest.raises(ValueError, match="the communicator is the 'leader'"):
    efl.data.FederalDataIO(str(tmp_path), 2, lc, 'follower')


def test_efls_positional_arguments(tmp_path, comm_pairs):
  lc, _ = comm_pairs.make()
  # EFLS's order: (..., prefetch, num_epochs, save_interval, data_mode, name), without drop_remainder.
  io = efl.data.FederalDataIO(str(tmp_path), 8, lc, 'leader', 0, 1, 1, 2, 100, 'local', 'train_reader')
  assert (io.name, io.channel) == ('train_reader', 'efl_data/train_reader/blocks')
  assert lc.send_names == ('efl_data/train_reader/blocks',)


def test_readers_with_the_same_name_use_their_own_channels(tmp_path, comm_pairs):
  for party, offset in (('leader', 0), ('follower', 100)):
    write_dataset(tmp_path / party / 'train', 2, 4, offset=offset)
    write_records(str(tmp_path / party / 'eval' / 'e.tfrd'), [example(1000 + i, offset) for i in range(6)])
  leader, follower = _pair(
    comm_pairs,
    [tmp_path / 'leader' / 'train', tmp_path / 'leader' / 'eval'],
    [tmp_path / 'follower' / 'train', tmp_path / 'follower' / 'eval'],
    data_mode='local',
    batch_size=3,
  )
  assert [io.channel for io in leader.readers] == ['efl_data/dataio/blocks', 'efl_data/dataio_1/blocks']

  def interleaved(party):
    with party.graph.as_default():
      train, evaluate = party.features
      got = []
      with tf.train.MonitoredSession(hooks=party.hooks) as sess:
        for _ in range(2):
          got.append(sess.run(train))
          got.append(sess.run(evaluate))
        got.append(sess.run(train))
      return _ids(got)

  (lb, fb), errors = _run_pair(leader, follower, interleaved, interleaved)
  assert errors == [None, None]
  assert lb == fb == [[0, 1, 2], [1000, 1001, 1002], [3, 4, 5], [1003, 1004, 1005], [6, 7]]


def test_reinitialization_discards_blocks_read_ahead(tmp_path, comm_pairs):
  write_dataset(tmp_path / 'leader', 6, 2)
  write_dataset(tmp_path / 'follower', 6, 2, offset=100)
  leader, follower = _pair(
    comm_pairs, [tmp_path / 'leader'], [tmp_path / 'follower'], data_mode='local', batch_size=2, prefetch=3
  )

  def twice(party):
    with party.graph.as_default():
      io, features = party.readers[0], party.features[0]
      with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        io.initialize_iter(sess)
        first = [sess.run(features) for _ in range(2)]
        io.initialize_iter(sess)  # resumes after the 2nd batch; the leader's read-ahead is stale
        second = [sess.run(features) for _ in range(2)]
        io.stop()
      return _ids(first + second)

  (lb, fb), errors = _run_pair(leader, follower, twice, twice)
  assert errors == [None, None]
  assert lb == fb == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_federal_resume(tmp_path, comm_pairs):
  write_dataset(tmp_path / 'leader', 3, 5)
  write_dataset(tmp_path / 'follower', 3, 5, offset=100)

  def run(party, batches, ckpt_dir):
    with party.graph.as_default():
      step = tf.train.get_or_create_global_step()
      train_op = tf.assign_add(step, 1)
      hooks = party.hooks + [tf.train.CheckpointSaverHook(ckpt_dir, save_steps=1000)]
      creator = tf.train.ChiefSessionCreator(checkpoint_dir=ckpt_dir)
      got = []
      with tf.train.MonitoredSession(session_creator=creator, hooks=hooks) as sess:
        while len(got) < batches and not sess.should_stop():
          got.append(sess.run([party.features[0], train_op])[0])
      return _ids(got), got

  def session(batches, follower_ckpt):
    leader, follower = _pair(
      comm_pairs, [tmp_path / 'leader'], [tmp_path / 'follower'], data_mode='local', batch_size=2, prefetch=4
    )
    (lead, follow), errors = _run_pair(
      leader,
      follower,
      lambda p: run(p, batches, str(tmp_path / 'ckpt_leader')),
      lambda p: run(p, batches, str(tmp_path / follower_ckpt)),
    )
    assert errors == [None, None]
    for ln, f in zip(lead[1], follow[1]):
      np.testing.assert_allclose(f['dense'], ln['dense'] + 100)
    return lead[0], follow[0]

  assert session(3, 'ckpt_follower') == ([[0, 1], [2, 3], [4, 5]],) * 2
  # New graphs, sessions and communicators: both continue with the 4th batch, whatever both read ahead; the
  # follower is told by the leader, even without a checkpoint of its own.
  assert session(2, 'ckpt_follower') == ([[6, 7], [8, 9]],) * 2
  assert session(10, 'ckpt_follower_fresh') == ([[10, 11], [12, 13], [14]],) * 2


def test_block_message_round_trip():
  from efl.data.federal_dataio import BlockMessage  # pylint: disable=g-import-not-at-top

  message = BlockMessage(b'BLOCK', 3, 17, 'day1/part-*-00001.tfrd', 250, 40, 256, True)
  encoded = message.encode()
  assert encoded.dtype == object and all(isinstance(v, bytes) for v in encoded)
  assert BlockMessage.decode(encoded) == message
  with pytest.raises(ValueError, match='A block message is'):
    BlockMessage.decode(np.array([b'HELLO'], dtype=object))


def test_follower_session_closes_promptly_after_an_error(tmp_path, comm_pairs):
  write_dataset(tmp_path / 'leader', 3, 2)
  write_dataset(tmp_path / 'follower', 3, 2)
  lc, fc = comm_pairs.make()
  leader = Party('leader', lc, [tmp_path / 'leader'], data_mode='local', batch_size=2, prefetch=0)
  follower = Party('follower', fc, [tmp_path / 'follower'], data_mode='local', batch_size=2, prefetch=2)
  comm_pairs.connect(lc, fc)
  follower_done = threading.Event()

  def lead(party):
    with party.graph.as_default(), tf.train.MonitoredSession(hooks=party.hooks) as sess:
      got = sess.run(party.features[0])  # the leader announces block 0 only
      follower_done.wait(30)
    return _ids([got])

  def follow(party):
    try:
      with party.graph.as_default(), tf.train.MonitoredSession(hooks=party.hooks) as sess:
        got = sess.run(party.features[0])
        time.sleep(0.5)  # meanwhile the prefetch thread waits for the leader's next block
        start = time.time()
        raise KeyError(_ids([got]))
    except KeyError as err:
      return err.args[0], time.time() - start
    finally:
      follower_done.set()

  (lb, (fb, close_s)), errors = _run_pair(leader, follower, lead, follow)
  assert errors == [None, None]
  assert lb == fb == [[0, 1]]
  assert close_s < 5  # not the 30 s receive timeout
