"""Test certificates made with the openssl command-line tool: a CA and leaf certificates signed by it."""

import os
import shutil
import subprocess

HAVE_OPENSSL = shutil.which('openssl') is not None

_LEAF_EXTENSIONS = """\
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
"""


def openssl(*args):
  subprocess.run(('openssl',) + args, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)


def make_ca(directory, name):
  key, cert = os.path.join(directory, name + '.key'), os.path.join(directory, name + '.crt')
  openssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    key,
    '-out',
    cert,
    '-days',
    '2',
    '-subj',
    '/CN=efl test ' + name,
  )
  return key, cert


def make_leaf(directory, name, ca_key, ca_cert):
  key, csr, cert = (os.path.join(directory, name + ext) for ext in ('.key', '.csr', '.crt'))
  ext = os.path.join(directory, name + '.ext')
  with open(ext, 'w') as f:
    f.write(_LEAF_EXTENSIONS)
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj', '/CN=localhost')
  openssl(
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    ca_cert,
    '-CAkey',
    ca_key,
    '-CAcreateserial',
    '-out',
    cert,
    '-days',
    '2',
    '-extfile',
    ext,
  )
  return key, cert
