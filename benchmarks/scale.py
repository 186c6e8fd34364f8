"""Samples/s of the federated MNIST example trained by 1, 2 and 4 worker pairs, on loopback and over a 10 ms link.

Each party runs as a cluster of one parameter server and W workers (`launcher.run_clusters(..., worker_num=W,
ps_num=1)`, W = 1, 2, 4; so W = 1 also has its parameter server and only W changes); worker i of the leader
trains with worker i of the follower. The network, its batch (256) and its optimizer are the example's
(efl/example/mnist, leader.py and follower.py run through a thin wrapper that only records step times and
makes the input repeat). Two links between the parties:
- `loopback`: the workers' communicators talk directly over 127.0.0.1;
- `delay10`: every peer address points at a relay on 127.0.0.1 (its own process, started by this script) that
  forwards each leader <-> follower worker connection and releases every chunk it reads 10 ms
  later, in each direction: a delay, not a bandwidth cap (a queue per direction with release times, so chunks
  read 1 ms apart leave 1 ms apart). Traffic inside a party (worker <-> parameter server) stays direct.

The data: `generate_data.py` from the shared MNIST file (EFL_MNIST_NPZ, or ../shared/datasets/mnist.npz), all
60000 training rows in 4 files so that 1, 2 or 4 workers get equal shares. Each worker trains the same number of
samples whatever W (the input repeats as many epochs as needed): `--delay_samples` (60000, about 235 steps) through
the relay, `--loopback_samples` (300000) on loopback, where one pair runs about six times faster; so that every
configuration trains for several seconds.

Throughput: every leader worker records the time of each step's end and its batch size (the follower runs in
lockstep with it). The measured window runs from the latest of the workers' `WARMUP`-th steps to the earliest of
their last steps, so that all W pairs are training throughout and neither process start-up, session creation nor
the first steps count; samples/s = the samples of all workers' steps ending in the window / its length. Besides,
the machine's CPU use in the window (from /proc/stat) and the relay's CPU time are printed.

Prints, medians of `--repeats` runs (configurations alternate within a repeat):
`BENCH scale_samples_per_s_w<W>_<link>` for each W and link, `BENCH scale_w2_delay10`, `BENCH scale_w4_delay10`
(samples/s with W pairs over samples/s with 1 pair, both through the relay), `BENCH scale_w2_loopback` and
`BENCH scale_w4_loopback` (the same on loopback); each ratio is the median of the per-repeat ratios.

    .venv/bin/python benchmarks/scale.py [--repeats 3] [--workers 1,2,4] [--links loopback,delay10] [--verbose]

`--links` takes `loopback` and `delay<ms>` (e.g. `delay0`: the relay without delay, to see its own cost).
"""

import argparse
import asyncio
import collections
import io
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXAMPLE = os.path.join(ROOT, 'efl', 'example', 'mnist')
WARMUP = 10  # steps of each worker before the measured window
NUM_FILES = 4  # data files per party: equal shares for 1, 2 or 4 workers
TRAIN_ROWS = 60000
CHUNK = 1 << 16


# The party: the example's leader.py or follower.py, recording its training steps.


def _party():
  """Runs the example's script of this --federal_role; prints `STEPS {json}` with its step end times."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  import efl  # pylint: disable=g-import-not-at-top

  epochs = int(os.environ['EFL_SCALE_EPOCHS'])
  role = efl.get_federal_role()
  spec = importlib.util.spec_from_file_location('example_' + role, os.path.join(EXAMPLE, role + '.py'))
  party = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(party)
  example_input_fn = party.input_fn
  base = efl.data.FederalDataIO
  record = {'times': [], 'sizes': []}

  class RepeatedDataIO(base):
    """The example's reader, with `num_epochs` epochs."""

    def __init__(self, *args, **kwargs):
      kwargs.setdefault('num_epochs', epochs)
      super(RepeatedDataIO, self).__init__(*args, **kwargs)

  class StepTimes(tf.train.SessionRunHook):
    """Records each training step's end time and batch size."""

    def __init__(self, batch_size):
      self._batch_size = batch_size

    def before_run(self, run_context):
      return tf.train.SessionRunArgs(self._batch_size)

    def after_run(self, run_context, run_values):
      record['times'].append(time.time())
      record['sizes'].append(int(run_values.results))

  def input_fn(model, mode):
    sample = example_input_fn(model, mode)
    if mode == efl.MODE.TRAIN:
      model.add_hooks([StepTimes(sample.batch_size)], mode=mode)
    return sample

  efl.data.FederalDataIO = RepeatedDataIO
  party.input_fn = input_fn
  party.main()
  print('STEPS ' + json.dumps(record), flush=True)


# The relay: a TCP forwarder that delays every chunk in each direction.


async def _pipe(reader, writer, other, delay_s):
  """Copies `reader` to `writer`, each chunk released `delay_s` after it was read; closes both ends at the end."""
  loop = asyncio.get_event_loop()
  queue, ready = collections.deque(), asyncio.Event()

  async def read():
    while True:
      try:
        data = await reader.read(CHUNK)
      except (ConnectionError, OSError):
        data = b''
      queue.append((loop.time() + delay_s, data))
      ready.set()
      if not data:
        return

  reading = loop.create_task(read())
  try:
    while True:
      while not queue:
        ready.clear()
        await ready.wait()
      release, data = queue[0]
      wait = release - loop.time()
      if wait > 0:
        await asyncio.sleep(wait)
      queue.popleft()
      if not data:
        if writer.can_write_eof():
          writer.write_eof()
        return
      writer.write(data)
      await writer.drain()
  except (ConnectionError, OSError):
    writer.close()
    other.close()
  finally:
    reading.cancel()


async def _relay_connection(client_reader, client_writer, target, delay_s):
  host, port = target.rsplit(':', 1)
  try:
    reader, writer = await asyncio.open_connection(host, int(port))
  except OSError:
    client_writer.close()
    return
  for w in (client_writer, writer):
    w.get_extra_info('socket').setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
  try:
    await asyncio.gather(
      _pipe(client_reader, writer, client_writer, delay_s), _pipe(reader, client_writer, writer, delay_s)
    )
  finally:
    client_writer.close()
    writer.close()


def _relay(spec):
  """Listens on one 127.0.0.1 port per target of `spec` (JSON: targets, delay_ms, avoid), prints `PORTS [...]`,
  and relays until its standard input closes."""
  spec = json.loads(spec)
  delay_s = spec['delay_ms'] / 1000.0
  loop = asyncio.new_event_loop()
  asyncio.set_event_loop(loop)
  ports = []
  for target in spec['targets']:
    while True:  # not a port the launcher gave a task a moment ago
      server = loop.run_until_complete(
        asyncio.start_server(lambda r, w, t=target: _relay_connection(r, w, t, delay_s), '127.0.0.1', 0)
      )
      port = server.sockets[0].getsockname()[1]
      if port not in spec['avoid']:
        break
      server.close()
    ports.append(port)
  print('PORTS ' + json.dumps(ports), flush=True)

  def watch_stdin():
    sys.stdin.read()
    loop.call_soon_threadsafe(loop.stop)

  threading.Thread(target=watch_stdin, daemon=True).start()
  loop.run_forever()


def _process_cpu_s(pid):
  """User + system CPU seconds of process `pid` so far (None once it has ended)."""
  try:
    with open('/proc/%d/stat' % pid) as f:
      fields = f.read().rsplit(')', 1)[1].split()
  except (IOError, OSError):
    return None
  return (int(fields[11]) + int(fields[12])) / float(os.sysconf('SC_CLK_TCK'))


class _Relay(object):
  """The relay process for the peer-facing addresses `targets`: `ports[i]` forwards to `targets[i]`."""

  def __init__(self, targets, delay_ms, avoid):
    spec = json.dumps({'targets': targets, 'delay_ms': delay_ms, 'avoid': sorted(avoid)})
    self.proc = subprocess.Popen(
      [sys.executable, os.path.abspath(__file__), '--relay', spec], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    line = self.proc.stdout.readline().decode()
    if not line.startswith('PORTS '):
      self.proc.kill()
      raise RuntimeError('the relay did not start: %r' % line)
    self.ports = json.loads(line[6:])

  def close(self):
    self.proc.stdin.close()
    try:
      self.proc.wait(10)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait()


# The benchmark.


class _CpuSampler(object):
  """Samples every 0.2 s the machine's busy and total CPU time (/proc/stat) and the CPU time of the processes
  it watches, grouped (e.g. 'L workers'), for the CPU use in a window."""

  def __init__(self):
    self.samples = []
    self._groups = {}  # group -> [pid]
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def watch(self, group, pid):
    self._groups = dict(self._groups, **{group: self._groups.get(group, []) + [pid]})

  def _run(self):
    while not self._stop.is_set():
      with open('/proc/stat') as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
      groups = {g: [_process_cpu_s(p) for p in pids] for g, pids in self._groups.items()}
      self.samples.append((time.time(), sum(cpu) - cpu[3] - cpu[4], sum(cpu), groups))
      self._stop.wait(0.2)

  def stop(self):
    self._stop.set()
    self._thread.join()

  def _inside(self, start, end):
    inside = [s for s in self.samples if start <= s[0] <= end]
    return inside if len(inside) >= 2 and inside[-1][0] > inside[0][0] else None

  def busy(self, start, end):
    """The fraction of the machine's CPU time that was busy between `start` and `end` (None if unsampled)."""
    inside = self._inside(start, end)
    if not inside:
      return None
    return (inside[-1][1] - inside[0][1]) / float(inside[-1][2] - inside[0][2])

  def cores(self, start, end):
    """{group: cores it kept busy on average between `start` and `end`}, of the processes alive throughout."""
    inside = self._inside(start, end)
    if not inside:
      return {}
    first, last = inside[0][3], inside[-1][3]
    used = {}
    for group, after in last.items():
      before = first.get(group, [])
      used[group] = sum(b - a for a, b in zip(before, after) if a is not None and b is not None)
    return {g: u / (inside[-1][0] - inside[0][0]) for g, u in used.items()}


def _generate(data_dir, mnist_npz):
  gen = subprocess.run(
    [
      sys.executable,
      os.path.join(EXAMPLE, 'generate_data.py'),
      '--mnist_npz',
      mnist_npz,
      '--output_dir',
      data_dir,
      '--train_rows',
      str(TRAIN_ROWS),
      '--test_rows',
      '256',
      '--num_files',
      str(NUM_FILES),
    ],
    env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='2'),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    timeout=300,
  )
  if gen.returncode != 0:
    raise RuntimeError('generate_data.py failed:\n' + gen.stdout.decode('utf-8', 'replace')[-3000:])


def _mnist_npz(path):
  path = path or os.environ.get('EFL_MNIST_NPZ') or os.path.join(ROOT, '..', 'shared', 'datasets', 'mnist.npz')
  if not os.path.exists(path):
    sys.exit('benchmarks/scale.py needs MNIST: pass --mnist_npz or set EFL_MNIST_NPZ to a Keras-layout mnist.npz')
  return os.path.abspath(path)


def _window(steps):
  """(start, end, samples) of the window in which every worker of `steps` ({worker: record}) was training."""
  start = max(r['times'][WARMUP - 1] for r in steps.values())
  end = min(r['times'][-1] for r in steps.values())
  samples = sum(s for r in steps.values() for t, s in zip(r['times'], r['sizes']) if start < t <= end)
  return start, end, samples


def _delay_ms(link):
  """The relay's delay of `link` ('loopback': None, 'delay<ms>': ms)."""
  if link == 'loopback':
    return None
  m = re.match(r'^delay(\d+(\.\d+)?)$', link)
  if not m:
    raise ValueError('a link is loopback or delay<ms> (e.g. delay10), not %r' % link)
  return float(m.group(1))


def measure(data_dir, workers, link, args):
  """One run of both clusters with `workers` pairs over `link`; returns a dict of its figures."""
  from efl import launcher  # pylint: disable=g-import-not-at-top

  configs = launcher.cluster_configs(workers, 1)
  relay, delay_ms = None, _delay_ms(link)
  if delay_ms is not None:
    # Each party dials the relay port that forwards to the peer worker's communicator address.
    avoid = set(
      int(a.rsplit(':', 1)[1])
      for c in configs.values()
      for a in c['cluster']['ps'] + c['cluster']['worker'] + c['local_addrs']
    )
    relay = _Relay(configs['leader']['local_addrs'] + configs['follower']['local_addrs'], delay_ms, avoid)
    relayed = ['127.0.0.1:%d' % p for p in relay.ports]
    configs['follower']['peer_addrs'] = relayed[:workers]
    configs['leader']['peer_addrs'] = relayed[workers:]
  per_worker = args.delay_samples if delay_ms is not None and delay_ms >= 1 else args.loopback_samples
  epochs = -(-per_worker * workers // TRAIN_ROWS)
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='2', EFL_SCALE_EPOCHS=str(epochs))
  out = io.StringIO()
  sampler = _CpuSampler()
  if relay:
    sampler.watch('relay', relay.proc.pid)

  def started(procs):
    for label, p in procs.items():
      role, name, _ = label.split()
      sampler.watch('%s %s' % (role[0].upper(), 'ps' if name == 'ps' else 'workers'), p.pid)

  cmd = [sys.executable, os.path.abspath(__file__), '--party']
  begin = time.time()
  try:
    codes = launcher.run_clusters(
      data_dir,
      cmd,
      cmd,
      worker_num=workers,
      ps_num=1,
      timeout_s=args.timeout_s,
      env=env,
      out=out,
      configs=configs,
      started=started,
    )
  finally:
    sampler.stop()
    relay_cpu = _process_cpu_s(relay.proc.pid) if relay else None
    if relay:
      relay.close()
  wall = time.time() - begin
  log = out.getvalue()
  if args.verbose:
    sys.stdout.write(log)
  steps = {}
  for m in re.finditer(r'^\[L w(\d+)\] STEPS (.*)$', log, re.M):
    steps[int(m.group(1))] = json.loads(m.group(2))
  if any(c != 0 for c in codes.values()) or len(steps) != workers:
    raise RuntimeError('the run of %d pairs over %s failed: %s\n%s' % (workers, link, codes, log[-4000:]))
  start, end, samples = _window(steps)
  if end - start < 1.0:
    raise RuntimeError(
      '%d pairs over %s: the workers trained together for only %.2f s; raise '
      '--loopback_samples or --delay_samples' % (workers, link, end - start)
    )
  done = re.findall(r'^\[L w\d+\] .*train done: \[train\] .*samples/s=([\d.]+) loss=(\S+)', log, re.M)
  firsts = [r['times'][0] for r in steps.values()]
  return {
    'rate': samples / (end - start),
    'window_s': end - start,
    'steps': min(len(r['times']) for r in steps.values()),
    'cpu_busy': sampler.busy(start, end),
    'cores': sampler.cores(start, end),
    'relay_cpu_s': relay_cpu,
    'wall_s': wall,
    'stagger_s': max(firsts) - min(firsts),
    'train_done_sum': sum(float(d[0]) for d in done),
    'losses': [d[1] for d in done],
  }


def _describe(workers, link, r):
  line = '%d pair(s), %s: %.0f samples/s over %.1f s (all pairs training; %d steps per worker), machine CPU %s' % (
    workers,
    link,
    r['rate'],
    r['window_s'],
    r['steps'],
    '%.0f%% busy' % (100 * r['cpu_busy']) if r['cpu_busy'] is not None else 'unsampled',
  )
  line += ', first steps %.1f s apart, run %.0f s, sum of train-done samples/s %.0f, final losses %s' % (
    r['stagger_s'],
    r['wall_s'],
    r['train_done_sum'],
    ' '.join(r['losses']),
  )
  if r['relay_cpu_s'] is not None:
    line += ', relay CPU %.1f s in all' % r['relay_cpu_s']
  if r['cores']:
    line += '; cores busy in the window: ' + ', '.join('%s %.2f' % kv for kv in sorted(r['cores'].items()))
  if 'nan' in r['losses']:
    # The figure is throughput either way; a diverged run says the example's learning rate (tuned for one pair)
    # is too large for this many asynchronous workers over this many epochs.
    line += ' (training diverged: the samples/s stand, the model does not)'
  return line


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--workers', default='1,2,4', help='worker pairs to compare (the first is the baseline)')
  parser.add_argument(
    '--links', default='loopback,delay10', help='loopback, delay<ms> (through the relay, <ms> in each direction)'
  )
  parser.add_argument(
    '--loopback_samples',
    type=int,
    default=300000,
    help='samples each worker trains on loopback (and through a relay of under 1 ms)',
  )
  parser.add_argument('--delay_samples', type=int, default=60000, help='samples each worker trains through the relay')
  parser.add_argument('--timeout_s', type=float, default=300)
  parser.add_argument('--mnist_npz', default=None)
  parser.add_argument('--verbose', action='store_true', help="print the tasks' logs")
  parser.add_argument('--party', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--relay', default=None, help=argparse.SUPPRESS)
  args, _ = parser.parse_known_args()
  if args.party:
    _party()
    return
  if args.relay:
    _relay(args.relay)
    return
  sys.path.insert(0, ROOT)
  workers = [int(w) for w in args.workers.split(',')]
  links = args.links.split(',')
  for link in links:
    _delay_ms(link)
  data_dir = tempfile.mkdtemp(prefix='efl_scale_')
  try:
    _generate(data_dir, _mnist_npz(args.mnist_npz))
    rates = {(w, link): [] for w in workers for link in links}
    ratios = {(w, link): [] for w in workers[1:] for link in links}
    for i in range(args.repeats):
      for link in links:
        for w in workers:
          r = measure(data_dir, w, link, args)
          rates[(w, link)].append(r['rate'])
          print('repeat %d: %s' % (i + 1, _describe(w, link, r)), flush=True)
        for w in workers[1:]:
          ratios[(w, link)].append(rates[(w, link)][-1] / rates[(workers[0], link)][-1])
  finally:
    shutil.rmtree(data_dir, ignore_errors=True)
  load = os.getloadavg()
  print('load average after the runs: %.2f %.2f %.2f' % load)
  for link in links:
    for w in workers:
      print('BENCH scale_samples_per_s_w%d_%s %.0f' % (w, link, statistics.median(rates[(w, link)])))
    for w in workers[1:]:
      print('BENCH scale_w%d_%s %.3f' % (w, link, statistics.median(ratios[(w, link)])))
  sys.stdout.flush()


if __name__ == '__main__':
  main()
