"""The transport's shared layer (efl.transport) and the native transport import no communicator: no cycle."""

import ast
import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOWER = sorted(
  glob.glob(os.path.join(ROOT, 'efl', 'transport', '**', '*.py'), recursive=True)
  + glob.glob(os.path.join(ROOT, 'efl', 'native', '*.py'))
)


def _imported(path):
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
      names.update('%s.%s' % (node.module, a.name) for a in node.names)
  return names


@pytest.mark.parametrize('path', LOWER, ids=lambda p: os.path.relpath(p, ROOT))
def test_lower_layer_imports_no_communicator(path):
  # efl.communicator.proto is the protocol's generated code (no logic), which the native build reads.
  above = sorted(
    n
    for n in _imported(path)
    if n.startswith(('efl.communicator', 'efl.framework')) and not n.startswith('efl.communicator.proto')
  )
  assert not above, '%s imports %s: the transport layer must not depend on the layers above it' % (
    os.path.relpath(path, ROOT),
    above,
  )


def test_the_check_sees_imports():
  # The check itself: the communicator does import the native transport.
  assert 'efl.native' in _imported(os.path.join(ROOT, 'efl', 'communicator', 'communicator.py'))
