"""Generates the Python gRPC code of `protos/efl/*.proto` into `efl/communicator/proto/`.

Two callers: `python -m efl.communicator.build_proto` (`make proto`, part of `make setup`) writes into a source
checkout; setup.py's `build_py` writes into the build directory, so `pip install .` and the wheel carry the code.
Importing efl never calls `build()`. This module needs only the standard library and, in `build()`, grpcio-tools:
setup.py loads it by path, before efl's dependencies are installed.
"""
import glob
import os
import re
import shutil
import tempfile

OUT_DIR = os.path.dirname(os.path.abspath(__file__))
# In a source checkout <repo>/protos holds the sources and is their import root (this directory is
# <repo>/efl/communicator/proto); an installed efl has no sources.
PROTO_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(OUT_DIR))), 'protos')
# The generated modules efl imports.
MODULES = ('communicator_pb2', 'communicator_pb2_grpc')


def proto_sources(proto_root=PROTO_ROOT):
  """Returns the paths of the `.proto` files of package efl (empty when the sources are not there)."""
  return sorted(glob.glob(os.path.join(proto_root, 'efl', '*.proto')))


def generated_paths(proto_path, out_dir=OUT_DIR):
  """Returns the two generated module paths of one `.proto` file."""
  stem = os.path.splitext(os.path.basename(proto_path))[0]
  return [os.path.join(out_dir, stem + '_pb2.py'), os.path.join(out_dir, stem + '_pb2_grpc.py')]


def is_source_checkout():
  """True when the `.proto` sources sit next to this package, as in a git checkout (not an installed efl)."""
  return bool(proto_sources())


def missing_modules():
  """Returns the file names of the generated modules absent from this directory."""
  return [m + '.py' for m in MODULES if not os.path.exists(os.path.join(OUT_DIR, m + '.py'))]


def is_stale():
  """True when, in a source checkout, a generated module is missing or older than its `.proto` source."""
  for src in proto_sources():
    src_mtime = os.path.getmtime(src)
    for out in generated_paths(src):
      if not os.path.exists(out) or os.path.getmtime(out) < src_mtime:
        return True
  return False


def import_error_message(error):
  """Explains why the generated modules did not import (`error`), and how to get them."""
  missing = missing_modules()
  if missing and is_source_checkout():
    return ('efl.communicator.proto: the generated gRPC modules %s are missing from %s (they are generated from '
            '%s, not kept in git); run `make setup` or `python -m efl.communicator.build_proto`'
            % (', '.join(missing), OUT_DIR, os.path.join(PROTO_ROOT, 'efl')))
  if missing:
    return ('efl.communicator.proto: the generated gRPC modules %s are missing from the installed package at %s; '
            'install efl from its source tree or wheel with pip (`pip install .`), whose build step generates '
            'them' % (', '.join(missing), OUT_DIR))
  return ('efl.communicator.proto: the generated gRPC modules in %s do not import (%s: %s); they need '
          'protobuf>=3.19,<4 and grpcio installed' % (OUT_DIR, type(error).__name__, error))


def build(out_dir=OUT_DIR, proto_root=PROTO_ROOT):
  """Generates the modules of `proto_root/efl/*.proto` into `out_dir`; each is replaced atomically, so a
  concurrent importer never sees half a file.

  Raises:
    RuntimeError: if the sources are missing, grpcio-tools is not installed, or protoc fails.
  """
  sources = proto_sources(proto_root)
  if not sources:
    raise RuntimeError('no .proto files under %s: efl generates its gRPC code from a source tree (its protos/ '
                       'directory); an installed efl carries the code from its build' % os.path.join(proto_root, 'efl'))
  try:
    import grpc_tools  # pylint: disable=import-outside-toplevel
    from grpc_tools import protoc  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise RuntimeError("grpcio-tools is needed to generate efl's gRPC code (%s); install requirements.txt "
                       '(`make setup`)' % e)
  well_known = os.path.join(os.path.dirname(os.path.abspath(grpc_tools.__file__)), '_proto')
  tmp = tempfile.mkdtemp(prefix='efl_proto_')
  try:
    args = ['grpc_tools.protoc', '-I' + proto_root, '-I' + well_known,
            '--python_out=' + tmp, '--grpc_python_out=' + tmp] + sources
    if protoc.main(args) != 0:
      raise RuntimeError('protoc failed on %s (command: %s)' % (', '.join(sources), ' '.join(args)))
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for src in sources:
      for out in generated_paths(src, out_dir):
        gen = os.path.join(tmp, 'efl', os.path.basename(out))
        with open(gen) as f:
          code = f.read()
        # protoc names the package of protos/efl/x.proto `efl`; the modules live in efl.communicator.proto.
        code = re.sub(r'^from efl import (\w+_pb2)', r'from efl.communicator.proto import \1', code, flags=re.M)
        staged = out + '.%d.tmp' % os.getpid()
        with open(staged, 'w') as f:
          f.write(code)
        os.replace(staged, out)
        written.append(out)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return written
