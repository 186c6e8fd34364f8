"""Paillier key files: generation, loading, and clear errors for missing, malformed or mismatched files."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from efl.privacy.paillier import keys
from efl.privacy.paillier.keys import PaillierKeyError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, 'efl', 'example', 'entropy_mnist', 'generate_paillier_keypair.py')


@pytest.fixture(scope='module')
def pair(tmp_path_factory):
  d = tmp_path_factory.mktemp('keys')
  pub, priv = str(d / 'public_key.json'), str(d / 'private_key.json')
  keys.generate_paillier_key(pub, priv, n_length=512)
  return pub, priv


def test_generate_and_load_round_trip(pair):
  pub_file, priv_file = pair
  with open(pub_file) as f:
    pub_json = json.load(f)
  with open(priv_file) as f:
    priv_json = json.load(f)
  assert set(pub_json) == {'n'} and set(priv_json) == {'p', 'q'}
  assert pub_json['n'] == priv_json['p'] * priv_json['q']
  assert pub_json['n'].bit_length() == 512
  assert os.stat(priv_file).st_mode & 0o077 == 0
  public_key, private_key = keys.load_keypair(pub_file, priv_file)
  assert public_key.n == pub_json['n']
  assert private_key.decrypt(public_key.encrypt(42)) == 42


def test_missing_file_names_file_and_fix(tmp_path, pair):
  missing = str(tmp_path / 'nope.json')
  with pytest.raises(PaillierKeyError, match=r'nope\.json.*does not exist.*generate_paillier_keypair'):
    keys.load_public_key(missing)
  with pytest.raises(PaillierKeyError, match=r'private key file .*nope\.json'):
    keys.load_private_key(missing, pair[0])


@pytest.mark.parametrize(
  'content, pattern',
  [
    ('{"n": 12', 'not valid JSON'),
    ('[1, 2]', 'JSON object'),
    ('{"m": 5}', "integer field 'n'"),
    ('{"n": "123"}', "integer field 'n'"),
    ('{"n": 15}', 'at least 512 bits'),
  ],
)
def test_malformed_public_key(tmp_path, content, pattern):
  path = tmp_path / 'public_key.json'
  path.write_text(content)
  with pytest.raises(PaillierKeyError, match=pattern) as info:
    keys.load_public_key(str(path))
  assert 'public_key.json' in str(info.value)


def test_malformed_private_key(tmp_path, pair):
  path = tmp_path / 'private_key.json'
  path.write_text('{"p": 3}')
  with pytest.raises(PaillierKeyError, match=r"private_key\.json.*integer field 'q'"):
    keys.load_private_key(str(path), pair[0])


def test_private_key_of_another_pair(tmp_path, pair):
  other_pub, other_priv = str(tmp_path / 'pk.json'), str(tmp_path / 'sk.json')
  keys.generate_paillier_key(other_pub, other_priv, n_length=512)
  with pytest.raises(PaillierKeyError, match=r'sk\.json.*does not belong.*p\*q != n.*copy the public_key\.json'):
    keys.load_keypair(pair[0], other_priv)


def test_bad_n_length(tmp_path):
  with pytest.raises(ValueError, match='n_length must be an even number of bits >= 512, got 100'):
    keys.generate_paillier_key(str(tmp_path / 'a'), str(tmp_path / 'b'), n_length=100)


def test_cli_writes_both_files_in_cwd(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  out = subprocess.run(
    [sys.executable, SCRIPT, '--n_length', '512'],
    cwd=str(tmp_path),
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    timeout=60,
  )
  assert out.returncode == 0, out.stdout
  public_key, _ = keys.load_keypair(str(tmp_path / 'public_key.json'), str(tmp_path / 'private_key.json'))
  assert public_key.n.bit_length() == 512
  # The same main() in-process: custom paths, and a bad n_length reported as a usage error.
  spec = importlib.util.spec_from_file_location('generate_paillier_keypair', SCRIPT)
  cli = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(cli)
  assert (
    cli.main(
      [
        '--n_length',
        '512',
        '--public_file',
        str(tmp_path / 'k' / 'pub.json'),
        '--private_file',
        str(tmp_path / 'k' / 'priv.json'),
      ]
    )
    == 0
  )
  keys.load_keypair(str(tmp_path / 'k' / 'pub.json'), str(tmp_path / 'k' / 'priv.json'))
  with pytest.raises(SystemExit):
    cli.main(['--n_length', '7'])
