"""Builds efl's native transport: `python -m efl.native.build` (`transport.cc` -> `_transport.so`, the
transport on gRPC's C core; `ops.cc` -> `_ops.so`, its TF kernels, linked to the first).

It needs g++ and gRPC's C core with its headers (Debian: `apt-get install libgrpc-dev pkg-config`). Without
them it prints why and exits 0: efl then runs its Python transport, which works everywhere but is slower.
`--require` makes a missing dependency an error (exit 1).
"""
import os
import shlex
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# (source, library) in build order.
TARGETS = [(os.path.join(HERE, 'transport.cc'), os.path.join(HERE, '_transport.so')),
           (os.path.join(HERE, 'ops.cc'), os.path.join(HERE, '_ops.so'))]


def _pkg_config_grpc():
  if shutil.which('pkg-config') is None:
    return None, 'pkg-config is not installed'
  proc = subprocess.run(['pkg-config', '--cflags', '--libs', 'grpc'], stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, universal_newlines=True)
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
  tf_flags = tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags()
  common = ['g++', '-std=c++14', '-shared', '-fPIC', '-O2', '-Wall', '-Wno-sign-compare']
  (transport_cc, transport_so), (ops_cc, ops_so) = TARGETS
  return [common + [transport_cc, '-o', transport_so + '.tmp', '-Wl,-soname,_transport.so'] + grpc_flags,
          # TF 1.15's headers need C++14, and its library was built with the pre-C++11 string ABI (in tf_flags).
          common + [ops_cc, '-o', ops_so + '.tmp', transport_so, "-Wl,-rpath,$ORIGIN"] + tf_flags], None


def up_to_date():
  return all(os.path.exists(so) and os.path.getmtime(so) >= os.path.getmtime(cc) for cc, so in TARGETS)


def main(argv):
  require = '--require' in argv
  if up_to_date() and '--force' not in argv:
    print('native transport: %s up to date' % ', '.join(os.path.relpath(so) for _, so in TARGETS))
    return 0
  cmds, why = commands()
  if cmds is None:
    print('native transport not built: %s; efl uses its Python transport. To build it: apt-get install '
          'libgrpc-dev pkg-config, then make setup' % why)
    return 1 if require else 0
  for cmd, (source, library) in zip(cmds, TARGETS):
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
