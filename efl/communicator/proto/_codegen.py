"""Generates the Python gRPC code of `protos/efl/*.proto` into this package (`efl/communicator/proto/`).

The command is `python -m efl.communicator.build_proto`. `efl.communicator.proto` also calls `build()` on import
when the generated files are missing or older than their `.proto`, so a fresh checkout works without it.
"""
import glob
import logging
import os
import re
import shutil
import tempfile

OUT_DIR = os.path.dirname(os.path.abspath(__file__))
# <repo>/protos holds the sources and is their import root; this directory is <repo>/efl/communicator/proto.
PROTO_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(OUT_DIR))), 'protos')


def proto_sources():
  """Returns the paths of the `.proto` files of package efl (empty when the sources are not shipped)."""
  return sorted(glob.glob(os.path.join(PROTO_ROOT, 'efl', '*.proto')))


def generated_paths(proto_path):
  """Returns the two generated module paths of one `.proto` file."""
  stem = os.path.splitext(os.path.basename(proto_path))[0]
  return [os.path.join(OUT_DIR, stem + '_pb2.py'), os.path.join(OUT_DIR, stem + '_pb2_grpc.py')]


def is_stale():
  """True when a generated module is missing or older than its `.proto` source."""
  for src in proto_sources():
    src_mtime = os.path.getmtime(src)
    for out in generated_paths(src):
      if not os.path.exists(out) or os.path.getmtime(out) < src_mtime:
        return True
  return False


def build():
  """Regenerates the modules; each is replaced atomically, so concurrent importers never see half a file.

  Raises:
    RuntimeError: if the sources are missing, grpcio-tools is not installed, or protoc fails.
  """
  sources = proto_sources()
  if not sources:
    raise RuntimeError('no .proto files found under %s; the generated modules of efl.communicator.proto are '
                       'missing and cannot be rebuilt' % PROTO_ROOT)
  try:
    from grpc_tools import protoc  # pylint: disable=import-outside-toplevel
    import pkg_resources  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise RuntimeError("grpcio-tools is needed to generate efl's gRPC code (%s); install requirements.txt "
                       '(`make setup`)' % e)
  well_known = pkg_resources.resource_filename('grpc_tools', '_proto')
  tmp = tempfile.mkdtemp(prefix='efl_proto_')
  try:
    args = ['grpc_tools.protoc', '-I' + PROTO_ROOT, '-I' + well_known,
            '--python_out=' + tmp, '--grpc_python_out=' + tmp] + sources
    if protoc.main(args) != 0:
      raise RuntimeError('protoc failed on %s (command: %s)' % (', '.join(sources), ' '.join(args)))
    for src in sources:
      for out in generated_paths(src):
        gen = os.path.join(tmp, 'efl', os.path.basename(out))
        with open(gen) as f:
          code = f.read()
        # protoc names the package of protos/efl/x.proto `efl`; the modules live in efl.communicator.proto.
        code = re.sub(r'^from efl import (\w+_pb2)', r'from efl.communicator.proto import \1', code,
                                    flags=re.M)
        staged = out + '.%d.tmp' % os.getpid()
        with open(staged, 'w') as f:
          f.write(code)
        os.replace(staged, out)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  logging.getLogger(__name__).info('generated gRPC code for %s into %s', ', '.join(sources), OUT_DIR)

