"""Builds efl's native transport.

`python -m efl.native.build`: `transport.cc` -> `_transport.so`, the transport on gRPC's C core; `ops.cc` ->
`_ops_tf1.so` or `_ops_tf2.so`, its TF kernels for the installed TensorFlow, linked to the first.

`_transport.so` depends on gRPC only, so both TensorFlow stacks of a checkout share it; the kernels are built
against one TensorFlow's headers and library, so each stack has its own.

It needs g++ and gRPC's C core with its headers (Debian: `apt-get install libgrpc-dev pkg-config`). Without
them it prints why and exits 0: efl then runs its Python transport, which works everywhere but is slower.
`--require` makes a missing dependency an error (exit 1).
"""

import os
import shlex
import shutil
import subprocess
import sys

from efl import native

HERE = os.path.dirname(os.path.abspath(__file__))
# (source, library) in build order.
TARGETS = [(os.path.join(HERE, 'transport.cc'), native.LIBRARY), (os.path.join(HERE, 'ops.cc'), native.OPS_LIBRARY)]
# The tables both languages share (efl/transport/wire.py and the protocol's Frame), for the C++ sources.
WIRE_HEADER = os.path.join(HERE, '_wire.h')


def wire_header_text():
  """What `_wire.h` must hold now."""
  from efl.transport import wire  # pylint: disable=import-outside-toplevel
  from efl.communicator.proto import communicator_pb2  # pylint: disable=import-outside-toplevel

  return wire.c_header(communicator_pb2.Frame.DESCRIPTOR)


def write_wire_header():
  """Writes `_wire.h` when its text changed; returns whether it did (the sources then need a new build)."""
  text = wire_header_text()
  if os.path.exists(WIRE_HEADER):
    with open(WIRE_HEADER) as f:
      if f.read() == text:
        return False
  with open(WIRE_HEADER + '.tmp', 'w') as f:
    f.write(text)
  os.replace(WIRE_HEADER + '.tmp', WIRE_HEADER)
  return True


def _pkg_config_grpc():
  if shutil.which('pkg-config') is None:
    return None, 'pkg-config is not installed'
  proc = subprocess.run(
    ['pkg-config', '--cflags', '--libs', 'grpc'],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    universal_newlines=True,
  )
  if proc.returncode != 0:
    return None, "gRPC's C core is not installed (pkg-config grpc: %s)" % proc.stderr.strip()
  return shlex.split(proc.stdout), None


def commands():
  """Returns the compiler command lines, or (None, why they cannot run here)."""
  if shutil.which('g++') is None:
    return None, 'g++ is not installed'
  grpc_flags, why = _pkg_config_grpc()
  if grpc_flags is None:
    return None, why
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  # TF's flags carry the C++ standard of its headers (C++14 for 1.15, C++17 for 2.x) and the string ABI its
  # library was built with (the pre-C++11 one for 1.15, the C++11 one for 2.x); the kernels must match both.
  tf_flags = tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags()
  common = ['g++', '-shared', '-fPIC', '-O2', '-Wall', '-Wno-sign-compare']
  (transport_cc, transport_so), (ops_cc, ops_so) = TARGETS
  # The transport talks to the kernels through a C API only, so its standard and ABI are its own.
  return [
    common + ['-std=c++14', transport_cc, '-o', transport_so + '.tmp', '-Wl,-soname,_transport.so'] + grpc_flags,
    common
    + [_cxx_standard(tf_flags), ops_cc, '-o', ops_so + '.tmp', transport_so, '-Wl,-rpath,$ORIGIN']
    + [f for f in tf_flags if not _is_standard(f)],
  ], None


def _is_standard(flag):
  return flag.startswith(('-std=', '--std='))


def _cxx_standard(tf_flags):
  """TF's own -std flag (2.x names C++17), else C++14, which TF 1.15's headers need and do not name."""
  named = [f.lstrip('-') for f in tf_flags if _is_standard(f)]
  return '-' + named[-1] if named else '-std=c++14'


def stale(force=False):
  """Whether each target must be built.

  A target is built when it is missing or older than its source; the kernels also when older than the transport
  they link to, which the other stack's build may have rebuilt.
  """
  (transport_cc, transport_so), (ops_cc, ops_so) = TARGETS

  def older(library, *inputs):
    return not os.path.exists(library) or any(os.path.getmtime(library) < os.path.getmtime(i) for i in inputs)

  transport = force or older(transport_so, transport_cc, WIRE_HEADER)
  return [transport, transport or older(ops_so, ops_cc, transport_so, WIRE_HEADER)]


def main(argv):
  require = '--require' in argv
  write_wire_header()
  todo = stale('--force' in argv)
  if not any(todo):
    print('native transport: %s up to date' % ', '.join(os.path.relpath(so) for _, so in TARGETS))
    return 0
  cmds, why = commands()
  if cmds is None:
    print(
      'native transport not built: %s; efl uses its Python transport. To build it: apt-get install '
      'libgrpc-dev pkg-config, then make setup' % why
    )
    return 1 if require else 0
  for cmd, (source, library), build in zip(cmds, TARGETS, todo):
    if not build:
      continue
    print('native transport: compiling %s' % os.path.relpath(source))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    if proc.returncode != 0:
      print(proc.stdout)
      print('native transport not built: the compiler failed (above); efl uses its Python transport')
      return 1 if require else 0
    os.replace(library + '.tmp', library)
    print('native transport: built %s' % os.path.relpath(library))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
