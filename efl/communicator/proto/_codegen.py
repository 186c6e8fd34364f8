"""Generates the Python gRPC code of `protos/efl/*.proto` into `efl/communicator/proto/protobuf<major>/`.

Two callers: `python -m efl.communicator.build_proto` (`make proto`, part of `make setup`) writes into a source
checkout; setup.py's `build_py` writes into the build directory, so `pip install .` and the wheel carry the code.
Importing efl never calls `build()`. This module needs only the standard library and, in `build()`, grpcio-tools:
setup.py loads it by path, before efl's dependencies are installed.

The code protoc generates runs only on the protobuf major version of the grpcio-tools that generated it (protobuf 3
for TensorFlow 1.15, 6 and later for TensorFlow 2), and one checkout serves both stacks from their own
virtualenvs: so each protobuf major version has its own directory, `protobuf3/`, `protobuf7/`, ..., and
`efl.communicator.proto` imports the one of the protobuf it runs on.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

OUT_DIR = os.path.dirname(os.path.abspath(__file__))
# In a source checkout <repo>/protos holds the sources and is their import root (this directory is
# <repo>/efl/communicator/proto); an installed efl has no sources.
PROTO_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(OUT_DIR))), 'protos')
# The generated modules efl imports.
MODULES = ('communicator_pb2', 'communicator_pb2_grpc')
PACKAGE = 'efl.communicator.proto'


def protobuf_major():
  """The major version of the installed protobuf, which picks the directory of the generated code."""
  from google import protobuf  # pylint: disable=import-outside-toplevel

  return int(protobuf.__version__.split('.')[0])


def subdir(major=None):
  """The directory, relative to the package, of the code generated for protobuf `major` (default: installed)."""
  return 'protobuf%d' % (protobuf_major() if major is None else major)


def generated_package(major=None):
  """The dotted name of the package holding the generated modules for protobuf `major`."""
  return PACKAGE + '.' + subdir(major)


def proto_sources(proto_root=PROTO_ROOT):
  """Returns the paths of the `.proto` files of package efl (empty when the sources are not there)."""
  return sorted(glob.glob(os.path.join(proto_root, 'efl', '*.proto')))


def generated_paths(proto_path, out_dir):
  """Returns the two generated module paths of one `.proto` file in `out_dir`."""
  stem = os.path.splitext(os.path.basename(proto_path))[0]
  return [os.path.join(out_dir, stem + '_pb2.py'), os.path.join(out_dir, stem + '_pb2_grpc.py')]


def is_source_checkout():
  """True when the `.proto` sources sit next to this package, as in a git checkout (not an installed efl)."""
  return bool(proto_sources())


def missing_modules():
  """Returns the paths, relative to the package, of the generated modules this protobuf needs and lacks."""
  sub = subdir()
  return [os.path.join(sub, m + '.py') for m in MODULES if not os.path.exists(os.path.join(OUT_DIR, sub, m + '.py'))]


def is_stale():
  """True when, in a source checkout, a generated module is missing or older than its `.proto` source."""
  out_dir = os.path.join(OUT_DIR, subdir())
  for src in proto_sources():
    src_mtime = os.path.getmtime(src)
    for out in generated_paths(src, out_dir):
      if not os.path.exists(out) or os.path.getmtime(out) < src_mtime:
        return True
  return False


def import_error_message(error):
  """Explains why the generated modules did not import (`error`), and how to get them."""
  missing = missing_modules()
  if missing and is_source_checkout():
    return (
      'efl.communicator.proto: the generated gRPC modules %s (for protobuf %d) are missing from %s (they are '
      'generated from %s, not kept in git); run `make setup` or `python -m efl.communicator.build_proto`'
      % (', '.join(missing), protobuf_major(), OUT_DIR, os.path.join(PROTO_ROOT, 'efl'))
    )
  if missing:
    return (
      'efl.communicator.proto: the generated gRPC modules %s (for protobuf %d) are missing from the installed '
      'package at %s; install efl from its source tree or wheel with pip (`pip install .`) in this '
      'environment, whose build step generates them' % (', '.join(missing), protobuf_major(), OUT_DIR)
    )
  return (
    'efl.communicator.proto: the generated gRPC modules in %s do not import (%s: %s); they need the '
    'protobuf and grpcio of the requirements file of this stack'
    % (os.path.join(OUT_DIR, subdir()), type(error).__name__, error)
  )


def build(out_dir=OUT_DIR, proto_root=PROTO_ROOT):
  """Generates the modules of `proto_root/efl/*.proto` into `out_dir/protobuf<major>/`.

  `major` is the protobuf of grpcio-tools; each module is replaced atomically, so a concurrent importer never sees
  half a file.

  Raises:
    RuntimeError: if the sources are missing, grpcio-tools is not installed, or protoc fails.
  """
  sources = proto_sources(proto_root)
  if not sources:
    raise RuntimeError(
      'no .proto files under %s: efl generates its gRPC code from a source tree (its protos/ '
      'directory); an installed efl carries the code from its build' % os.path.join(proto_root, 'efl')
    )
  try:
    import grpc_tools  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise RuntimeError(
      "grpcio-tools is needed to generate efl's gRPC code (%s); install the requirements file of "
      'this stack (`make setup`)' % e
    )
  # grpcio-tools depends on the protobuf its protoc generates code for.
  sub = subdir()
  well_known = os.path.join(os.path.dirname(os.path.abspath(grpc_tools.__file__)), '_proto')
  tmp = tempfile.mkdtemp(prefix='efl_proto_')
  try:
    # In a process of its own: protoc's C++ protobuf and the one TensorFlow 2 loads (`python -m
    # efl.communicator.build_proto` imports efl, hence TensorFlow) crash when they meet in one process.
    args = [
      sys.executable,
      '-m',
      'grpc_tools.protoc',
      '-I' + proto_root,
      '-I' + well_known,
      '--python_out=' + tmp,
      '--grpc_python_out=' + tmp,
    ] + sources
    proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    if proc.returncode != 0:
      raise RuntimeError(
        'protoc failed on %s with exit status %d (command: %s):\n%s'
        % (', '.join(sources), proc.returncode, ' '.join(args), proc.stdout)
      )
    target = os.path.join(out_dir, sub)
    os.makedirs(target, exist_ok=True)
    written = []
    for src in sources:
      for out in generated_paths(src, target):
        gen = os.path.join(tmp, 'efl', os.path.basename(out))
        with open(gen) as f:
          code = f.read()
        # protoc names the package of protos/efl/x.proto `efl`; the modules live in efl.communicator.proto.<sub>.
        code = re.sub(r'^from efl import (\w+_pb2)', r'from %s.%s import \1' % (PACKAGE, sub), code, flags=re.M)
        staged = out + '.%d.tmp' % os.getpid()
        with open(staged, 'w') as f:
          f.write(code)
        os.replace(staged, out)
        written.append(out)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return written
