"""The Paillier core: round trips, randomisation, homomorphic operations, packing and fixed point."""

import numpy as np
import pytest

from efl.privacy.paillier import PaillierCipher, encoding, keys


@pytest.fixture(scope='module')
def keypair(tmp_path_factory):
  d = tmp_path_factory.mktemp('keys')
  return keys.generate_paillier_key(str(d / 'pk.json'), str(d / 'sk.json'), n_length=768)


@pytest.fixture(scope='module')
def cipher(keypair):
  # Two worker processes: the same code path as training.
  c = PaillierCipher(keypair[0], keypair[1], processes=2, precompute=64)
  yield c
  c.close()


def test_round_trip_signed_values(cipher):
  n = int(cipher.n)
  values = [0, 1, -1, 123456789, -987654321, n // 2, -(n // 2) + 1, 1 << 700]
  assert cipher.decrypt(cipher.encrypt(values)) == values


def test_every_encryption_is_randomised(cipher):
  cts1 = cipher.encrypt([7] * 20)
  cts2 = cipher.encrypt([7] * 20)
  assert len(set(cts1) | set(cts2)) == 40
  assert cipher.decrypt(cts1 + cts2) == [7] * 40


def test_compatible_with_phe(keypair, cipher):
  public_key, private_key = keypair
  ours = cipher.encrypt([31337])[0]
  assert private_key.raw_decrypt(int(ours)) == 31337
  theirs = public_key.raw_encrypt(4242)
  assert cipher.decrypt([theirs]) == [4242]


def test_full_obfuscation_without_djn(keypair):
  with PaillierCipher(keypair[0], keypair[1], processes=0, djn=False, precompute=0) as c:
    cts = c.encrypt([5, 5, -3])
    assert cts[0] != cts[1]
    assert c.decrypt(cts) == [5, 5, -3]


def test_homomorphic_scale_and_add(cipher):
  cts = cipher.encrypt([3, -4, 10, 0])
  out = cipher.scale_add(cts, [5, 7, 0, 123], [1, -2, 9, -5])
  assert cipher.decrypt(out) == [16, -30, 9, -5]
  # Re-randomised: the same operation twice gives other ciphertexts.
  again = cipher.scale_add(cts, [5, 7, 0, 123], [1, -2, 9, -5])
  assert not set(out) & set(again)
  with pytest.raises(ValueError, match='non-negative scalars'):
    cipher.scale_add(cts[:1], [-1], [0])


def test_column_products_signed_exponents(cipher):
  offset = 1 << 24
  bases = cipher.encrypt([2, -3, 5])
  exps = [[offset + 1, offset - 2, offset + 3], [offset, offset + 100, offset - 7]]
  out = cipher.column_products([(bases, exps, [10, -1]), (bases[:1], [[offset - 5]], [0])], 24, 26)
  assert [cipher.decrypt(col) for col in out] == [[2 + 6 + 15 + 10, -300 - 35 - 1], [-10]]


def test_packing_survives_products_and_negative_slots(cipher):
  slots = encoding.slots_per_plaintext(cipher.n_bits)
  assert slots == 6
  rng = np.random.RandomState(0)
  x = rng.randint(-(2**24), 2**24, size=(13, 3))
  packed = encoding.pack_columns(x, slots)
  assert len(packed) == 3 * 3
  cts = cipher.encrypt(packed)
  weights = [2**55 + 3, 17, 1]
  groups = 3
  scaled = cipher.scale_add(cts, [weights[j] for j in range(3) for _ in range(groups)], [0] * len(cts))
  back = encoding.unpack_columns(cipher.decrypt(scaled), 13, 3, slots)
  expected = x.astype(object) * np.array(weights, dtype=object)[None, :]
  assert (back == expected).all()


def test_fixed_point_encoding():
  t = np.array([[0.5, -3.25], [1e-3, 7.0]], np.float32)
  values, k = encoding.encode(t)
  assert values.dtype == np.int64 and np.abs(values).max() <= 2**encoding.PRECISION
  np.testing.assert_allclose(encoding.decode(values, k), t, atol=2.0**-k)
  assert encoding.encode(np.zeros((2, 2)))[1] == 0
  with pytest.raises(ValueError, match='NaN or infinity'):
    encoding.encode(np.array([1.0, np.nan]))
  w = np.array([1.0, -0.25, 3.5])
  np.testing.assert_allclose(encoding.ring_to_weight(encoding.weight_to_ring(w)), w)
  # Shares: any split modulo the ring decodes to the sum.
  share = np.array([123456789012345, 2**55, 7], np.int64)
  other = (encoding.weight_to_ring(w) - share) & (encoding.RING - 1)
  np.testing.assert_allclose(encoding.ring_to_weight(share + other), w)


def test_wire_form_round_trip_and_validation(cipher):
  cts = cipher.encrypt([1, 2, 3])
  blob = cipher.to_wire(cts)
  assert blob.dtype == np.uint8 and blob.size == 3 * cipher.ct_bytes
  assert cipher.from_wire(blob, 3) == cts
  with pytest.raises(ValueError, match='expected 4 ciphertexts, received 3'):
    cipher.from_wire(blob, 4)
  with pytest.raises(ValueError, match='whole number'):
    cipher.from_wire(blob[:-1])
  with pytest.raises(ValueError, match=r'outside \(0, n\^2\)'):
    cipher.from_wire(np.full(cipher.ct_bytes, 255, np.uint8))


def test_public_only_cipher_cannot_decrypt(keypair):
  with PaillierCipher(keypair[0], None, processes=0, precompute=0) as c:
    cts = c.encrypt([1])
    with pytest.raises(ValueError, match='only the public key'):
      c.decrypt(cts)
