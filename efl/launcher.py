"""Runs a federated example's two parties on this machine and interleaves their logs.

    python -m efl.launcher efl/example/mnist [--leader leader.py] [--follower follower.py] [-- script args]
    python -m efl.launcher --worker_num 2 --ps_num 1 efl/example/mnist     # each party a cluster

It runs the directory's `generate_data.py` first if the leader's training data is missing, starts the leader
and the follower on two free localhost ports, each on its half of the CPUs, prefixes every log line with the
party's role, and exits non-zero if either party fails. A party still running a grace period after its peer
failed is stopped.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port():
  """A TCP port on 127.0.0.1 that was free a moment ago (the party binds it itself)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def party_args(role, own_port, peer_port):
  return ['--federal_role=%s' % role, '--local_addr=127.0.0.1:%d' % own_port, '--peer_addr=127.0.0.1:%d' % peer_port]


def shared_machine_env(env):
  """`env` for one of two parties sharing this machine: each gets half the cores for TF's intra-op pool."""
  env = dict(env)
  env.setdefault('EFL_INTRA_OP_THREADS', str(max(1, (os.cpu_count() or 2) // 2)))
  return env


def party_cpus(role, cpus=None):
  """The CPUs of party `role` when both share this machine's `cpus` (default: the ones this process may use).

  The leader gets the first half, the follower the rest; None when there is nothing to split.
  """
  if cpus is None:
    if not hasattr(os, 'sched_getaffinity'):
      return None
    cpus = os.sched_getaffinity(0)
  cpus = sorted(cpus)
  if len(cpus) < 2:
    return None
  half = len(cpus) // 2
  return set(cpus[:half]) if role == 'leader' else set(cpus[half:])


def pin_party(pid, role):
  """Keeps the party just started as process `pid` on its own CPUs (`party_cpus`).

  Set EFL_PIN_CPUS=0 to leave the scheduler free. Its threads, all started later, inherit the set.

  Each step waits on both parties in turn. Left free, their threads wander over both cores and displace each
  other's caches: pinned, the federated MNIST network trained 5-42% faster at batch 256 on a 2-core machine
  (4 alternating pairs).
  """
  if os.environ.get('EFL_PIN_CPUS', '1') == '0':
    return
  cpus = party_cpus(role)
  if cpus:
    try:
      os.sched_setaffinity(pid, cpus)
    except OSError:
      pass  # the process already ended, or this platform refuses: the party just runs unpinned


def start_party(argv, role, env=None, **popen_kwargs):
  """Starts party `role` (`argv` a full command line) as one of two sharing this machine.

  It runs with `shared_machine_env(env)` (default env: this process's), pinned to its CPUs (`pin_party`).
  """
  p = subprocess.Popen(argv, env=shared_machine_env(os.environ if env is None else env), **popen_kwargs)
  pin_party(p.pid, role)
  return p


def _pump(stream, prefix, out, lock):
  for raw in iter(stream.readline, b''):
    line = raw.decode('utf-8', 'replace').rstrip('\n')
    with lock:
      out.write('%s %s\n' % (prefix, line))
      out.flush()
  stream.close()


DEFAULT_RECOVERY_TIMEOUT_S = 120


def run_parties(workdir, leader_cmd, follower_cmd, timeout_s=None, grace_s=60, env=None, out=None, restarts=0):
  """Starts both parties (commands without role/address flags) in `workdir`; returns their exit codes.

  Args:
    workdir: the directory the scripts run in.
    leader_cmd: the leader's argv list, e.g. [sys.executable, 'leader.py'].
    follower_cmd: the follower's argv list.
    timeout_s: stop both parties after this many seconds (None: no limit).
    grace_s: how long a party may keep running after the other one failed.
    env: environment for both (default: this process's).
    out: where the prefixed lines go (default stdout).
    restarts: a supervisor: a party that exits abnormally is started again, up to this many times in all,
      with recovery on in both (EFL_RECOVERY_TIMEOUT_S, default 120 s), so that the other one waits for it
      and both resume from their common checkpoint.
  """
  out = out or sys.stdout
  lp, fp = free_port(), free_port()
  while fp == lp:
    fp = free_port()
  env = shared_machine_env(os.environ if env is None else env)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  env['PYTHONUNBUFFERED'] = '1'
  if restarts:
    env.setdefault('EFL_RECOVERY_TIMEOUT_S', str(DEFAULT_RECOVERY_TIMEOUT_S))
  lock = threading.Lock()
  procs, pumps = {}, []
  commands = {'leader': (leader_cmd, lp, fp), 'follower': (follower_cmd, fp, lp)}

  def launch(role):
    cmd, own, peer = commands[role]
    p = start_party(
      list(cmd) + party_args(role, own, peer), role, env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    procs[role] = p
    t = threading.Thread(target=_pump, args=(p.stdout, '[%-8s]' % role, out, lock), daemon=True)
    t.start()
    pumps.append(t)

  for role in commands:
    launch(role)
  start = time.time()
  failed_at = None
  restarted = 0
  while any(p.poll() is None for p in procs.values()):
    now = time.time()
    for role, p in list(procs.items()):
      other = procs['follower' if role == 'leader' else 'leader']
      # Restart a failed party while the other one still runs (and waits for it); a failed pair is over.
      if p.poll() not in (None, 0) and other.poll() is None and restarted < restarts:
        restarted += 1
        with lock:
          out.write(
            '[launcher] the %s exited with code %d; starting it again (restart %d of %d)\n'
            % (role, p.returncode, restarted, restarts)
          )
        launch(role)
    if failed_at is None and any(p.poll() not in (None, 0) for p in procs.values()):
      failed_at = now
    late = failed_at is not None and now - failed_at > grace_s
    if late or (timeout_s is not None and now - start > timeout_s):
      for role, p in procs.items():
        if p.poll() is None:
          with lock:
            out.write('[launcher] stopping the %s (%s)\n' % (role, 'peer failed' if late else 'timeout'))
          p.send_signal(signal.SIGTERM)
          try:
            p.wait(10)
          except subprocess.TimeoutExpired:
            p.kill()
      break
    time.sleep(0.2)
  for p in procs.values():
    p.wait()
  for t in pumps:
    t.join(5)
  return {role: p.returncode for role, p in procs.items()}


def cluster_configs(worker_num, ps_num, host='127.0.0.1'):
  """The -c/--config JSON of each party's tasks, {role: JSON}.

  Free ports for each party's parameter servers and
  workers, and one communicator port per worker (worker i of the leader talks to worker i of the follower).
  """
  used = set()

  def port():
    p = free_port()
    while p in used:
      p = free_port()
    used.add(p)
    return '%s:%d' % (host, p)

  comm = {role: [port() for _ in range(worker_num)] for role in ('leader', 'follower')}
  configs = {}
  for role, peer in (('leader', 'follower'), ('follower', 'leader')):
    configs[role] = {
      'cluster': {'ps': [port() for _ in range(ps_num)], 'worker': [port() for _ in range(worker_num)]},
      'local_addrs': comm[role],
      'peer_addrs': comm[peer],
    }
  return configs


def run_clusters(
  workdir,
  leader_cmd,
  follower_cmd,
  worker_num,
  ps_num,
  timeout_s=None,
  grace_s=30,
  env=None,
  out=None,
  started=None,
  configs=None,
):
  """Starts both parties as clusters of `ps_num` parameter servers and `worker_num` workers on this machine.

  Returns {'leader ps 0': exit code, ...}. When a task fails, the others still running `grace_s` later are
  stopped. `started`, if given, is called with {label: Popen} once all are started. `configs`, if given, is
  each party's -c/--config as `cluster_configs(worker_num, ps_num)` returns it (e.g. with "peer_addrs" pointing
  at a relay); by default that call's.
  """
  out = out or sys.stdout
  env = shared_machine_env(os.environ if env is None else env)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  env['PYTHONUNBUFFERED'] = '1'
  configs = configs or cluster_configs(worker_num, ps_num)
  lock = threading.Lock()
  procs, pumps = {}, []
  for role, cmd in (('leader', leader_cmd), ('follower', follower_cmd)):
    tasks = [('ps', i) for i in range(ps_num)] + [('worker', i) for i in range(worker_num)]
    for name, index in tasks:
      argv = list(cmd) + [
        '--federal_role=%s' % role,
        '--task_name=%s' % name,
        '--task_index=%d' % index,
        '--ps_num=%d' % ps_num,
        '--worker_num=%d' % worker_num,
        '--config=%s' % json.dumps(configs[role]),
      ]
      p = start_party(argv, role, env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
      label = '%s %s %d' % (role, name, index)
      procs[label] = p
      prefix = '[%s %s%d]' % (role[0].upper(), 'ps' if name == 'ps' else 'w', index)
      t = threading.Thread(target=_pump, args=(p.stdout, prefix, out, lock), daemon=True)
      t.start()
      pumps.append(t)
  if started is not None:
    started(procs)
  start = time.time()
  failed_at = None
  while any(p.poll() is None for p in procs.values()):
    now = time.time()
    if failed_at is None and any(p.poll() not in (None, 0) for p in procs.values()):
      failed_at = now
    late = failed_at is not None and now - failed_at > grace_s
    if late or (timeout_s is not None and now - start > timeout_s):
      for label, p in procs.items():
        if p.poll() is None:
          with lock:
            out.write('[launcher] stopping the %s (%s)\n' % (label, 'a task failed' if late else 'timeout'))
          p.send_signal(signal.SIGTERM)
      for p in procs.values():
        try:
          p.wait(10)
        except subprocess.TimeoutExpired:
          p.kill()
      break
    time.sleep(0.2)
  for p in procs.values():
    p.wait()
  for t in pumps:
    t.join(5)
  return {label: p.returncode for label, p in procs.items()}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('workdir', help='the example directory, e.g. efl/example/mnist')
  parser.add_argument('--leader', default='leader.py')
  parser.add_argument('--follower', default='follower.py')
  parser.add_argument(
    '--generate', default='generate_data.py', help='run this script first if leader_train/ is missing ("" to skip)'
  )
  parser.add_argument('--timeout_s', type=float, default=None)
  parser.add_argument(
    '--restarts',
    type=int,
    default=0,
    help='start a party that exits abnormally again, up to N times, with recovery on in both',
  )
  parser.add_argument(
    '--worker_num',
    type=int,
    default=1,
    help='workers per party (with --ps_num >= 1: each party runs as a TensorFlow cluster)',
  )
  parser.add_argument('--ps_num', type=int, default=0, help='parameter servers per party')
  parser.add_argument('script_args', nargs='*', help='passed to both parties (after --)')
  args = parser.parse_intermixed_args(argv)
  workdir = os.path.abspath(args.workdir)
  if not os.path.isdir(workdir):
    parser.error('no such directory: %s' % workdir)
  gen = os.path.join(workdir, args.generate) if args.generate else None
  if gen and os.path.exists(gen) and not os.path.isdir(os.path.join(workdir, 'leader_train')):
    print('[launcher] generating data with %s' % args.generate, flush=True)
    rc = subprocess.call([sys.executable, args.generate], cwd=workdir)
    if rc != 0:
      print('[launcher] %s failed with exit code %d' % (args.generate, rc), flush=True)
      return rc
  if args.worker_num > 1 or args.ps_num > 0:
    if args.restarts:
      parser.error('--restarts works with one worker per party only')
    codes = run_clusters(
      workdir,
      [sys.executable, args.leader] + args.script_args,
      [sys.executable, args.follower] + args.script_args,
      args.worker_num,
      args.ps_num,
      timeout_s=args.timeout_s,
    )
    print('[launcher] exit codes: %s' % ', '.join('%s %s' % kv for kv in codes.items()), flush=True)
    return 0 if all(c == 0 for c in codes.values()) else 1
  codes = run_parties(
    workdir,
    [sys.executable, args.leader] + args.script_args,
    [sys.executable, args.follower] + args.script_args,
    timeout_s=args.timeout_s,
    restarts=args.restarts,
  )
  print('[launcher] exit codes: leader %s, follower %s' % (codes['leader'], codes['follower']), flush=True)
  return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == '__main__':
  sys.exit(main())
