"""The wheel built from this checkout installs a working efl into a fresh environment outside the checkout.

The wheel is built with `pip wheel --no-deps --no-build-isolation` from a copy of the checkout's own files (what
git tracks or would track), so neither the generated gRPC modules nor the native libraries of the checkout can
slip in: the wheel's generated code must come from its build step. `--no-build-isolation` takes setuptools, wheel
and grpcio-tools from this interpreter instead of downloading them; the build itself is the one `pip install .`
runs. The fresh environment is a venv of the same base Python whose third-party packages come from this one's
site-packages through a `.pth` line. A plain path line does not run the `.pth` files of that directory, so the
editable install of the checkout there stays out of the fresh environment's sys.path; the test checks it.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time

import pytest

from efl import launcher
from efl.communicator.proto import _codegen
from proc_helpers import ROOT
from ports import free_port

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 8
GENERATED = ('communicator_pb2.py', 'communicator_pb2_grpc.py')
# Where the generated modules lie, relative to the package efl: the directory of this stack's protobuf.
GENERATED_DIR = os.path.join('communicator', 'proto', _codegen.subdir())


def _run(cmd, timeout, **kwargs):
  proc = subprocess.run(
    cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=timeout, **kwargs
  )
  assert proc.returncode == 0, '%s exited with %d:\n%s' % (' '.join(cmd), proc.returncode, proc.stdout[-4000:])
  return proc.stdout


def _checkout_files():
  """The checkout's files, without what git ignores (generated code, built libraries, example data)."""
  try:
    out = subprocess.run(
      ['git', '-C', ROOT, 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
      stdout=subprocess.PIPE,
      stderr=subprocess.DEVNULL,
      check=True,
      timeout=60,
    ).stdout
    return [f for f in out.decode('utf-8').split('\0') if f and os.path.isfile(os.path.join(ROOT, f))]
  except (OSError, subprocess.SubprocessError):
    # Not a git checkout: the build's inputs by name.
    files = [
      f for f in ('setup.py', 'pyproject.toml', 'MANIFEST.in', 'README.md') if os.path.exists(os.path.join(ROOT, f))
    ]
    for top in ('efl', 'protos'):
      for d, _, names in os.walk(os.path.join(ROOT, top)):
        files += [
          os.path.relpath(os.path.join(d, n), ROOT)
          for n in names
          if n.endswith(('.py', '.cc', '.proto')) and n not in GENERATED
        ]
    return files


def _fresh_env(extra=None):
  """The environment of the fresh venv's processes: nothing that points Python at the checkout."""
  env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME', 'PYTHONSTARTUP', 'VIRTUAL_ENV')}
  env.update(
    {
      'PYTHONNOUSERSITE': '1',
      'PYTHONUNBUFFERED': '1',
      'TF_CPP_MIN_LOG_LEVEL': '2',
      'PIP_DISABLE_PIP_VERSION_CHECK': '1',
      'PIP_NO_INPUT': '1',
    }
  )
  env.update(extra or {})
  return env


def _marker(text, name):
  """The value of the `SMOKE <name>=<value>` line smoke_party.py prints."""
  m = re.search(r'^SMOKE %s=(.*)$' % name, text, re.M)
  assert m, 'no "SMOKE %s=" line in:\n%s' % (name, text[-4000:])
  return m.group(1)


def _inside(path, root):
  path, root = os.path.realpath(path), os.path.realpath(root)
  return path == root or path.startswith(root + os.sep)


def _listing(top):
  return sorted(
    os.path.relpath(os.path.join(d, n), top)
    for d, dirs, names in os.walk(top)
    if '__pycache__' not in d.split(os.sep)
    for n in names
  )


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
  src = str(tmp_path_factory.mktemp('src'))
  for rel in _checkout_files():
    os.makedirs(os.path.join(src, os.path.dirname(rel)), exist_ok=True)
    shutil.copy2(os.path.join(ROOT, rel), os.path.join(src, rel))
  assert not [g for g in GENERATED if os.path.exists(os.path.join(src, 'efl', GENERATED_DIR, g))], (
    'generated modules are tracked by git; they must only be generated (see .gitignore)'
  )
  out = str(tmp_path_factory.mktemp('dist'))
  _run(
    [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--no-index', '-q', '-w', out, src],
    timeout=180,
    env=_fresh_env(),
    cwd=out,
  )
  wheels = [os.path.join(out, f) for f in os.listdir(out) if f.endswith('.whl')]
  assert len(wheels) == 1, 'expected one wheel in %s, found %s' % (out, os.listdir(out))
  return wheels[0]


def test_wheel_contents(wheel):
  import zipfile  # pylint: disable=import-outside-toplevel

  names = set(zipfile.ZipFile(wheel).namelist())
  for g in GENERATED:
    assert 'efl/%s/%s' % (GENERATED_DIR, g) in names
  assert {'efl/native/transport.cc', 'efl/native/ops.cc'} <= names  # what `python -m efl.native.build` compiles
  assert not [n for n in names if re.search(r'\.so(\.|$)', n)], 'the wheel holds a native library'


def test_wheel_installs_and_trains_two_parties(tmp_path, wheel):
  venv = str(tmp_path / 'venv')
  base = os.path.join(sys.base_prefix, 'bin', 'python%d.%d' % sys.version_info[:2])
  _run([base, '-m', 'venv', '--without-pip', venv], timeout=60, env=_fresh_env())
  python = os.path.join(venv, 'bin', 'python')
  site_dir = _run(
    [python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], timeout=30, env=_fresh_env()
  ).strip()
  deps = sorted({sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']})
  assert not [d for d in deps if _inside(ROOT, d)], 'the checkout %s lies inside site-packages %s' % (ROOT, deps)
  with open(os.path.join(site_dir, 'efl_test_dependencies.pth'), 'w') as f:
    f.write(''.join(d + '\n' for d in deps))
  # --ignore-installed: pip must neither consult nor uninstall the editable efl it sees through the .pth.
  _run(
    [python, '-m', 'pip', 'install', '--no-deps', '--no-index', '--ignore-installed', '-q', wheel],
    timeout=120,
    env=_fresh_env(),
    cwd=str(tmp_path),
  )
  installed = os.path.join(site_dir, 'efl')
  before = _listing(installed)

  # The wheel's install_requires hold for the tested versions: pkg_resources checks them where setuptools still
  # has it (the TF 1 stack), importlib.metadata and packaging where not (the TF 2 stack).
  probe = (
    'import json, sys\n'
    'import efl, efl.privacy\n'
    'from efl.communicator import Communicator, proto\n'
    'try:\n'
    '  import pkg_resources\n'
    'except ImportError:\n'
    '  from importlib import metadata\n'
    '  from packaging.requirements import Requirement\n'
    '  for r in map(Requirement, metadata.requires("efl")):\n'
    '    if r.marker is None or r.marker.evaluate({"extra": ""}):\n'
    '      assert r.specifier.contains(metadata.version(r.name), prereleases=True), (str(r), '
    'metadata.version(r.name))\n'
    'else:\n'
    '  pkg_resources.require("efl")\n'
    'print(json.dumps({"efl": efl.__file__, "proto": proto.__file__, "path": sys.path}))\n'
  )
  seen = json.loads(_run([python, '-c', probe], timeout=120, env=_fresh_env(), cwd=str(tmp_path)).splitlines()[-1])
  for key in ('efl', 'proto'):
    assert _inside(seen[key], installed), '%s imported from %s, not from %s' % (key, seen[key], installed)
  # This interpreter's site-packages may lie inside the checkout (a .venv there); nothing else of it may be seen.
  leaks = [p for p in seen['path'] if p and _inside(p, ROOT) and not any(_inside(p, d) for d in deps)]
  assert not leaks, "the checkout is on the fresh environment's sys.path: %s" % leaks

  # The smoke job: both parties from a directory outside the checkout, on the Python transport (the wheel holds
  # no native library).
  shutil.copy(os.path.join(HERE, 'smoke_party.py'), str(tmp_path))
  ports = {'leader': free_port(), 'follower': free_port()}
  procs, logs = {}, {}
  for role, peer in (('leader', 'follower'), ('follower', 'leader')):
    logs[role] = str(tmp_path / ('%s.log' % role))
    with open(logs[role], 'wb') as out:
      procs[role] = launcher.start_party(
        [python, 'smoke_party.py', '--steps=%d' % STEPS] + launcher.party_args(role, ports[role], ports[peer]),
        role,
        _fresh_env({'EFL_NATIVE_TRANSPORT': 'off'}),
        cwd=str(tmp_path),
        stdout=out,
        stderr=subprocess.STDOUT,
      )
  deadline = time.time() + 120
  try:
    for p in procs.values():
      p.wait(max(1, deadline - time.time()))
  finally:
    for p in procs.values():
      if p.poll() is None:
        p.kill()
        p.wait()
  text = {}
  for role, path in logs.items():
    with open(path, 'rb') as f:
      text[role] = f.read().decode('utf-8', 'replace')
    assert procs[role].returncode == 0, '%s exited with %s:\n%s' % (role, procs[role].returncode, text[role][-4000:])
    efl_file = _marker(text[role], 'efl_file')
    assert _inside(efl_file, installed), '%s ran efl from %s' % (role, efl_file)
  losses = json.loads(_marker(text['leader'], 'losses'))
  assert len(losses) == STEPS and losses[-1] < losses[0], 'the loss did not fall: %s' % losses
  assert re.search(r'gstep=%d\b' % STEPS, text['leader']), text['leader'][-4000:]
  # Nothing was written into the installed package at run time (bytecode aside).
  assert _listing(installed) == before

  # Without its generated modules, the installed package says how to get them and does not rebuild them.
  for g in GENERATED:
    os.remove(os.path.join(installed, GENERATED_DIR, g))
  proc = subprocess.run(
    [python, '-c', 'import efl.communicator as c; c.Communicator'],
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    universal_newlines=True,
    timeout=60,
    env=_fresh_env(),
    cwd=str(tmp_path),
  )
  assert proc.returncode != 0 and 'missing from the installed package' in proc.stdout, proc.stdout[-3000:]
  assert not [g for g in GENERATED if os.path.exists(os.path.join(installed, GENERATED_DIR, g))]


def test_checkout_without_generated_code(tmp_path):
  """A source tree without the generated modules: importing says how to generate them; build_proto does."""
  src = str(tmp_path / 'src')
  for rel in _checkout_files():
    if rel.startswith(('efl/', 'protos/')):
      os.makedirs(os.path.join(src, os.path.dirname(rel)), exist_ok=True)
      shutil.copy2(os.path.join(ROOT, rel), os.path.join(src, rel))
  env = _fresh_env({'PYTHONPATH': src})
  check = 'import efl.communicator as c; c.Communicator; print(c.__file__)'
  proc = subprocess.run(
    [sys.executable, '-c', check],
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    universal_newlines=True,
    timeout=60,
    env=env,
    cwd=str(tmp_path),
  )
  assert proc.returncode != 0 and 'python -m efl.communicator.build_proto' in proc.stdout, proc.stdout[-3000:]
  _run([sys.executable, '-m', 'efl.communicator.build_proto'], timeout=60, env=env, cwd=str(tmp_path))
  imported = _run([sys.executable, '-c', check], timeout=60, env=env, cwd=str(tmp_path)).splitlines()[-1]
  assert _inside(imported, src)
