"""Each party as a TensorFlow cluster (parameter servers and several workers, worker i paired with the peer's
worker i): configuration errors, and federated MNIST trained by 2 x (1 ps + 2 workers) as by one pair."""

import io
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from efl import flags
from efl import launcher
from efl.framework import cluster
from efl.framework import federal_model
from proc_helpers import ROOT, listening_ports, party_env

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(ROOT, 'efl', 'example', 'mnist')
CLUSTER = '{"cluster": {"ps": ["127.0.0.1:1"], "worker": ["127.0.0.1:2", "127.0.0.1:3"]}}'


@pytest.fixture(autouse=True)
def _restore_flags():
  yield
  flags.parse([])


def _spec_error(*argv):
  flags.parse(list(argv))
  with pytest.raises(cluster.ClusterConfigError) as e:
    cluster.spec()
  return str(e.value)


def test_good_cluster_config():
  flags.parse(['--ps_num=1', '--worker_num=2', '--task_index=1', '-c', CLUSTER])
  assert cluster.enabled()
  assert cluster.spec().as_dict() == {'ps': ['127.0.0.1:1'], 'worker': ['127.0.0.1:2', '127.0.0.1:3']}
  flags.parse([])
  assert not cluster.enabled()  # the one-worker form has no cluster


def test_task_index_out_of_range():
  msg = _spec_error('--ps_num=1', '--worker_num=2', '--task_index=2', '-c', CLUSTER)
  assert '--task_index=2 is out of range' in msg and 'indices 0 to 1' in msg


def test_ps_task_without_parameter_servers():
  msg = _spec_error('--ps_num=0', '--task_name=ps', '-c', CLUSTER)
  assert '--task_name=ps' in msg and '--ps_num is 0' in msg and 'pass --ps_num >= 1' in msg


def test_cluster_spec_without_own_address():
  msg = _spec_error('--ps_num=1', '--worker_num=3', '--task_index=2', '-c', CLUSTER)
  assert 'lists 2 "worker" address(es) but --worker_num is 3' in msg
  msg = _spec_error(
    '--ps_num=1',
    '--worker_num=2',
    '--task_index=1',
    '-c',
    '{"cluster": {"ps": ["127.0.0.1:1"], "worker": ["127.0.0.1:2", ""]}}',
  )
  assert 'no address for this task (worker 1)' in msg
  msg = _spec_error('--ps_num=1', '--worker_num=2')
  assert 'no cluster is configured' in msg and 'TF_CONFIG' in msg


def test_several_workers_need_parameter_servers():
  msg = _spec_error('--worker_num=2', '-c', CLUSTER)
  assert '--worker_num=2 workers share their variables on parameter servers' in msg


def test_worker_addresses_from_config():
  flags.parse(
    ['--federal_role=follower', '--task_index=1', '-c', '{"local_addrs": ["h:1", "h:2"], "peer_addrs": ["p:1", "p:2"]}']
  )
  assert (flags.get_local_addr(), flags.get_peer_addr()) == ('h:2', 'p:2')
  flags.parse(['--task_index=2', '-c', '{"local_addrs": ["h:1", "h:2"]}'])
  with pytest.raises(ValueError, match='one "host:port" per worker, with one for --task_index=2'):
    flags.get_local_addr()


def test_handshake_refuses_different_worker_counts():
  flags.parse(['--federal_role=leader'])
  with pytest.raises(federal_model.ClusterMismatchError) as e:
    federal_model._check_peer_cluster(
      'leader', {'worker_num': 2, 'task_index': 0}, {'worker_num': 1, 'task_index': 0, 'checkpoint_steps': []}
    )
  assert 'this leader has --worker_num=2, the follower has --worker_num=1' in str(
    e.value
  ) and 'same --worker_num' in str(e.value)
  with pytest.raises(federal_model.ClusterMismatchError, match="worker 1 is connected to the follower's worker 0"):
    federal_model._check_peer_cluster('leader', {'worker_num': 2, 'task_index': 1}, {'worker_num': 2, 'task_index': 0})
  # A peer of an older efl sends no cluster fields: the one-worker form.
  federal_model._check_peer_cluster('leader', {'worker_num': 1, 'task_index': 0}, {})


def _mnist(tmp_path, mnist_npz, rows):
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
      '256',
    ],
    env=party_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    timeout=120,
  )
  assert gen.returncode == 0, gen.stdout.decode()


def _accuracies(log, prefix):
  return [
    float(a) for a in re.findall(r'^\[%s\] .*train done: \[train\] .*accuracy=([\d.]+)' % re.escape(prefix), log, re.M)
  ]


def _ids(path):
  with open(path) as f:
    return [int(x) for x in f.read().split()]


def test_two_clusters_train_mnist_like_one_pair(tmp_path, mnist_npz):
  """Slow (~60 s): 2 x (1 ps + 2 workers), then one pair, on the same 5120 images, one epoch each."""
  rows = 5120
  _mnist(tmp_path, mnist_npz, rows)
  script = [sys.executable, os.path.join(HERE, 'cluster_party.py')]
  ids_dir = tmp_path / 'ids_cluster'
  ids_dir.mkdir()
  ports, expected = {}, {}

  def look(procs):
    for label, p in procs.items():
      if p.poll() is not None or 'worker' not in label:
        continue
      ports[label] = sorted(listening_ports(p.pid))
      with open('/proc/%d/cmdline' % p.pid) as f:
        config = json.loads([a for a in f.read().split('\0') if a.startswith('--config=')][0][len('--config=') :])
      i = int(label[-1])
      expected[label] = sorted(
        int(a.rsplit(':', 1)[1]) for a in (config['cluster']['worker'][i], config['local_addrs'][i])
      )

  out = _OnLine('[L w1]', 'consumed batch 2\n', look)
  codes = launcher.run_clusters(
    str(tmp_path),
    script,
    script,
    worker_num=2,
    ps_num=1,
    timeout_s=150,
    env=party_env({'EFL_TEST_IDS_DIR': str(ids_dir)}),
    out=out,
    started=lambda procs: setattr(out, 'procs', procs),
  )
  log = out.getvalue()
  assert all(c == 0 for c in codes.values()), '%s\n%s' % (codes, log[-4000:])
  assert len(codes) == 6
  # A running worker listens on its communicator's address (the one its peer reaches) and on its address in
  # its own party's cluster: nothing else.
  # (A worker that finished its share has closed its communicator: a subset then.)
  assert ports['leader worker 1'] == expected['leader worker 1'], (ports, expected)
  for label in ports:
    assert set(ports[label]) <= set(expected[label]), (label, ports[label], expected[label])
  # Every training sample once per epoch across the workers, and each follower worker saw its leader's ids.
  leader = {w: _ids(str(ids_dir / ('leader_w%d.txt' % w))) for w in (0, 1)}
  assert sorted(leader[0] + leader[1]) == list(range(rows)), 'a sample skipped or repeated'
  assert leader[0] and leader[1] and not set(leader[0]) & set(leader[1])
  for w in (0, 1):
    assert _ids(str(ids_dir / ('follower_w%d.txt' % w))) == leader[w]
  cluster_acc = _accuracies(log, 'L w0') + _accuracies(log, 'L w1')
  assert len(cluster_acc) == 2, log[-3000:]

  ids_dir = tmp_path / 'ids_pair'
  ids_dir.mkdir()
  out = io.StringIO()
  codes = launcher.run_parties(
    str(tmp_path), script, script, timeout_s=150, env=party_env({'EFL_TEST_IDS_DIR': str(ids_dir)}), out=out
  )
  log = out.getvalue()
  assert codes == {'leader': 0, 'follower': 0}, log[-4000:]
  pair_acc = _accuracies(log, 'leader  ')
  assert len(pair_acc) == 1, log[-3000:]
  # Tolerance: the streaming training accuracy of one epoch; asynchronous updates from two workers may cost a
  # little (tolerance 0.15), never most of it.
  mean = sum(cluster_acc) / len(cluster_acc)
  print('training accuracy: cluster workers %s, one pair %s' % (cluster_acc, pair_acc))
  assert mean >= pair_acc[0] - 0.15, (cluster_acc, pair_acc)


class _OnLine(object):
  """A log sink that calls `action(procs)` once, when line `trigger` of the task printing `prefix` appears."""

  def __init__(self, prefix, trigger, action):
    self.prefix, self.trigger, self.action = prefix, trigger, action
    self.procs, self.done_at, self._buf = None, None, io.StringIO()

  def write(self, text):
    self._buf.write(text)
    if self.done_at is None and self.procs and text.startswith(self.prefix) and self.trigger in text:
      self.action(self.procs)
      self.done_at = time.time()

  def flush(self):
    pass

  def getvalue(self):
    return self._buf.getvalue()


def _KillOn(victim, prefix, trigger):
  """A log sink that kills task `victim` (kill -9) when line `trigger` of `prefix` appears."""
  return _OnLine(prefix, trigger, lambda procs: procs[victim].kill())


def _kill_one(tmp_path, mnist_npz, victim, prefix):
  _mnist(tmp_path, mnist_npz, 20480)
  script = [sys.executable, os.path.join(HERE, 'cluster_party.py')]
  ids_dir = tmp_path / 'ids'
  ids_dir.mkdir()
  sink = _KillOn(victim, prefix, 'consumed batch 3\n')

  def started(procs):
    sink.procs = procs

  codes = launcher.run_clusters(
    str(tmp_path),
    script,
    script,
    worker_num=2,
    ps_num=1,
    timeout_s=120,
    grace_s=60,
    env=party_env({'EFL_TEST_IDS_DIR': str(ids_dir)}),
    out=sink,
    started=started,
  )
  log = sink.getvalue()
  (tmp_path / 'cluster.log').write_text(log)
  assert sink.done_at is not None, log[-3000:]
  return codes, log, sink


@pytest.mark.parametrize(
  'victim,prefix,dead', [('leader worker 1', '[L w1]', 'leader worker 1'), ('follower ps 0', '[L w0]', 'follower ps 0')]
)
def test_a_killed_task_stops_both_parties(tmp_path, mnist_npz, victim, prefix, dead):
  """Slow (~45 s): kill -9 of a task mid-training; both parties' parameter servers and the victim's pair fail
  naming it, and nothing has to be stopped. A pair that completes its share before the failure is known ends
  well (asynchronous training: its share is done)."""
  codes, log, sink = _kill_one(tmp_path, mnist_npz, victim, prefix)
  assert '[launcher] stopping' not in log, 'a task had to be stopped:\n' + log[-4000:]
  # Every task ends within 30 s of the kill (a worker that TensorFlow keeps waiting on a dead parameter server
  # ends 10 s after it found the server gone).
  assert time.time() - sink.done_at < 30, log[-4000:]
  index = victim.split()[-1]
  must_fail = {'leader ps 0', 'follower ps 0', 'leader worker ' + index, 'follower worker ' + index} - {victim}
  for label in must_fail:
    assert codes[label] > 0, '%s exited %s\n%s' % (label, codes[label], log[-4000:])
  for label, code in codes.items():
    if label != victim and code == 0:
      assert re.search(
        r'^\[%s%s\] .*%s finished' % (label[0].upper(), ' w' + label[-1], re.escape(label)), log, re.M
      ), '%s exited 0 without finishing its share\n%s' % (label, log[-4000:])
  assert dead in log, log[-4000:]


def _batches(path):
  """The batches of ids a worker consumed, in order ([] when it consumed none)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [[int(x) for x in line.split()] for line in f if line.strip()]


def test_a_restarted_cluster_resumes_every_worker_from_the_checkpoint(tmp_path, mnist_npz):
  """Slow (~50 s): a job killed mid-epoch and started again resumes each worker's share from the chiefs'
  agreed checkpoint: across the workers no sample is lost, and only samples read after that checkpoint repeat."""
  rows = 20480
  _mnist(tmp_path, mnist_npz, rows)
  script = [sys.executable, os.path.join(HERE, 'cluster_party.py'), '--ckpt_dir', str(tmp_path / 'ckpt')]
  runs = []
  for run in (1, 2):
    ids_dir = tmp_path / ('ids%d' % run)
    ids_dir.mkdir()
    env = party_env({'EFL_TEST_IDS_DIR': str(ids_dir), 'EFL_TEST_SAVE_STEPS': '5'})
    sink = _KillOn('leader worker 1', '[L w1]', 'consumed batch 17\n' if run == 1 else '\0')

    def started(procs, sink=sink):
      sink.procs = procs

    codes = launcher.run_clusters(
      str(tmp_path),
      script,
      script,
      worker_num=2,
      ps_num=1,
      timeout_s=150,
      grace_s=60,
      env=env,
      out=sink,
      started=started,
    )
    log = sink.getvalue()
    (tmp_path / ('run%d.log' % run)).write_text(log)
    if run == 1:
      assert sink.done_at is not None and any(c != 0 for c in codes.values()), log[-3000:]
    else:
      assert all(c == 0 for c in codes.values()), '%s\n%s' % (codes, log[-4000:])
      assert re.search(r'restoring checkpoint .*model\.ckpt-(\d+)', log), log[-3000:]
    runs.append({w: _batches(str(ids_dir / ('leader_w%d.txt' % w))) for w in (0, 1)})
    for w in (0, 1):
      # The pair's batches are the same samples; a kill may cut one party's record one batch short.
      leader, follower = runs[-1][w], _batches(str(ids_dir / ('follower_w%d.txt' % w)))
      n = min(len(leader), len(follower))
      assert leader[:n] == follower[:n] and abs(len(leader) - len(follower)) <= (1 if run == 1 else 0)
  kept = []
  for w in (0, 1):
    first, second = runs[0][w], runs[1][w]
    assert first, 'worker %d consumed nothing before the kill' % w
    # Run 2 starts at a batch of run 1 (the checkpoint's position) or right after run 1's last one; a worker
    # pair may have finished its share before the kill.
    resume = next((i for i, batch in enumerate(first) if second and batch == second[0]), len(first))
    repeated = first[resume:]
    assert second[: len(repeated)] == repeated, 'worker %d did not resume at a batch boundary of run 1' % w
    kept.extend(x for batch in first[:resume] + second for x in batch)
  assert runs[1][1], 'the killed worker 1 had nothing left to do after the restart'
  assert sorted(kept) == list(range(rows)), 'a sample lost or repeated before the checkpoint'


def _variables(ckpt_dir):
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top

  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(ckpt_dir))
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def test_synchronous_training_is_deterministic(tmp_path, mnist_npz):
  """Slow (~30 s): compile(sync_optimizer_config={}) with a graph seed, twice: the same weights bit for bit,
  one update of the global step per step of all workers."""
  rows = 5120
  _mnist(tmp_path, mnist_npz, rows)
  weights = []
  for run in (1, 2):
    ids_dir = tmp_path / ('ids%d' % run)
    ids_dir.mkdir()
    script = [sys.executable, os.path.join(HERE, 'cluster_party.py'), '--ckpt_dir', str(tmp_path / ('ckpt%d' % run))]
    out = io.StringIO()
    codes = launcher.run_clusters(
      str(tmp_path),
      script,
      script,
      worker_num=2,
      ps_num=1,
      timeout_s=150,
      env=party_env({'EFL_TEST_IDS_DIR': str(ids_dir), 'EFL_TEST_SYNC_SEED': '7'}),
      out=out,
    )
    log = out.getvalue()
    (tmp_path / ('run%d.log' % run)).write_text(log)
    assert all(c == 0 for c in codes.values()), '%s\n%s' % (codes, log[-4000:])
    weights.append({role: _variables(str(tmp_path / ('ckpt%d' % run) / role)) for role in ('leader', 'follower')})
  steps = rows // 256 // 2  # batches per worker: each step of the two workers is one update
  for role in ('leader', 'follower'):
    first, second = weights[0][role], weights[1][role]
    assert int(first['global_step']) == steps, (role, first['global_step'])
    trained = [n for n in first if n.startswith(('dense', 'fc', role)) or '/kernel' in n]
    assert trained, sorted(first)
    assert sorted(first) == sorted(second)
    # Bookkeeping that the chief's last save catches at a moment of the other worker's progress (its stage
    # record, its reader position, its step count) is left out; every weight and optimizer slot is compared.
    progress = ('stage_manager/', 'efl_worker_steps')
    for name in (n for n in first if not n.startswith(progress) and 'reader_state' not in n):
      assert np.array_equal(first[name], second[name]), '%s %s differs between two synchronous runs' % (role, name)
