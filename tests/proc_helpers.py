"""Helpers for tests that run real processes: free ports, starting parties, running a pair."""

import os
import subprocess
import sys

from efl import compat
from efl import launcher
from ports import free_port


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# How a user's script imports TensorFlow: as the seed's snippets do on TF 1; on TF 2, its v1 API (README).
TF_IMPORT = 'import tensorflow.compat.v1 as tf' if compat.TF2 else 'import tensorflow as tf'


def party_env(extra=None):
  env = dict(os.environ)
  env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
  env['TF_CPP_MIN_LOG_LEVEL'] = '2'
  env['PYTHONUNBUFFERED'] = '1'
  env.update(extra or {})
  return env


def start_party(script, role, own_port, peer_port, args=(), cwd=None, env=None, log_path=None):
  """Starts `script` as a real process in `role`, listening on own_port, talking to peer_port."""
  cmd = [
    sys.executable,
    script,
    '--federal_role=%s' % role,
    '--local_addr=127.0.0.1:%d' % own_port,
    '--peer_addr=127.0.0.1:%d' % peer_port,
  ] + list(args)
  out = open(log_path, 'wb') if log_path else subprocess.PIPE
  # Two parties share this machine, as the launcher runs them.
  return launcher.start_party(cmd, role, party_env(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT)


def run_pair(
  script_leader,
  script_follower,
  args_leader=(),
  args_follower=(),
  cwd=None,
  timeout=240,
  env=None,
  tmp_path=None,
  env_leader=None,
  env_follower=None,
):
  """Runs both parties to completion; returns {role: (returncode, log text)}."""
  lp, fp = free_port(), free_port()
  logs = {}
  procs = {}
  for role, script, own, peer, args, own_env in (
    ('leader', script_leader, lp, fp, args_leader, env_leader),
    ('follower', script_follower, fp, lp, args_follower, env_follower),
  ):
    logs[role] = os.path.join(str(tmp_path or cwd), '%s.log' % role)
    procs[role] = start_party(
      script, role, own, peer, args, cwd=cwd, env=dict(env or {}, **(own_env or {})), log_path=logs[role]
    )
  out = {}
  try:
    for role, p in procs.items():
      p.wait(timeout)
  finally:
    for p in procs.values():
      if p.poll() is None:
        p.kill()
        p.wait()
  for role, p in procs.items():
    with open(logs[role], 'rb') as f:
      out[role] = (p.returncode, f.read().decode('utf-8', 'replace'))
  return out


def listening_ports(pid):
  """The TCP ports process `pid` listens on, from its socket inodes and /proc/<pid>/net/tcp{,6}."""
  inodes = set()
  fd_dir = '/proc/%d/fd' % pid
  for fd in os.listdir(fd_dir):
    try:
      target = os.readlink(os.path.join(fd_dir, fd))
    except OSError:
      continue  # closed meanwhile
    if target.startswith('socket:['):
      inodes.add(target[len('socket:[') : -1])
  ports = []
  for table in ('tcp', 'tcp6'):
    with open('/proc/%d/net/%s' % (pid, table)) as f:
      for line in f.readlines()[1:]:
        fields = line.split()
        if fields[3] == '0A' and fields[9] in inodes:  # 0A: LISTEN
          ports.append(int(fields[1].rsplit(':', 1)[1], 16))
  return ports
