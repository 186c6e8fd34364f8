"""Fixed-point encoding of tensors and the packing of several integers into one Paillier plaintext.

Fixed point: a float tensor t becomes int64 values T = round(t * 2**k) with one exponent k per tensor,
chosen so that max|T| <= 2**PRECISION (PRECISION significant bits for the largest entry, the absolute error
of every entry is at most 2**-(k+1)).

Packing: S signed integers v_0..v_{S-1} share one plaintext sum_s v_s * 2**(s*L). The plaintext stays
linear in the slots, so adding plaintexts adds slot-wise and multiplying by one scalar multiplies every
slot; as long as every slot stays within (-2**(L-1), 2**(L-1)), `unpack` recovers the slots exactly (a
negative slot borrows from the next one, and unpacking gives the borrow back).
"""

import numpy as np

PRECISION = 24  # bits of the largest entry of an encoded tensor
RING_BITS = 56  # the active weight is secret-shared modulo 2**RING_BITS
RING = 1 << RING_BITS
WEIGHT_BITS = 24  # fixed fractional bits of the shared active weight (|W| must stay below 2**(31-24) = 128)
SIGMA = 40  # statistical security of the additive masks, in bits
SLOT_BITS = 124  # width of a packed slot: fits x*w_share + mask, dy*(w shares) + mask and masked sums


def encode(array, what='tensor'):
  """Encodes a float array as (int64 array, exponent k) with |values| <= 2**PRECISION.

  Raises:
      ValueError: the array holds NaN or infinity.
  """
  t = np.asarray(array, dtype=np.float64)
  if t.size == 0:
    return t.astype(np.int64), 0
  peak = float(np.max(np.abs(t)))
  if not np.isfinite(peak):
    raise ValueError('cannot encrypt %s: it holds NaN or infinity (check the learning rate and the inputs)' % what)
  if peak == 0.0:
    return np.zeros(t.shape, np.int64), 0
  _, e = np.frexp(peak)  # peak < 2**e
  k = PRECISION - int(e)
  return np.rint(np.ldexp(t, k)).astype(np.int64), k


def decode(values, k):
  """The inverse of `encode`: values * 2**-k as float64."""
  return np.ldexp(np.asarray(values, dtype=np.float64), -int(k))


def slots_per_plaintext(n_bits, slot_bits=SLOT_BITS):
  """How many slots of `slot_bits` fit below n/4 (so every signed packed value stays below n/2)."""
  slots = (n_bits - 2) // slot_bits
  if slots < 1:
    raise ValueError(
      'a %d-bit Paillier key is too small for %d-bit slots; use keys of at least 512 bits' % (n_bits, slot_bits)
    )
  return slots


def pack_columns(matrix, slots, slot_bits=SLOT_BITS):
  """Packs a [B, d] integer matrix column by column, `slots` consecutive rows per plaintext.

  Returns:
      A list of d * ceil(B / slots) Python integers: for column j, group t holds rows t*slots.. in
      slots 0.. (missing rows of the last group are 0).
  """
  m = np.asarray(matrix, dtype=object)
  rows, cols = m.shape
  groups = -(-rows // slots)
  out = []
  for j in range(cols):
    col = [int(v) for v in m[:, j]]
    for t in range(groups):
      packed = 0
      for s, v in enumerate(col[t * slots : (t + 1) * slots]):
        packed += v << (s * slot_bits)
      out.append(packed)
  return out


def pack_rows(values, slot_bits=SLOT_BITS):
  """Packs a sequence of integers into one plaintext, value i in slot i."""
  packed = 0
  for s, v in enumerate(values):
    packed += int(v) << (s * slot_bits)
  return packed


def unpack(packed, slots, slot_bits=SLOT_BITS):
  """Splits one signed plaintext into `slots` signed slot values."""
  half = 1 << (slot_bits - 1)
  mask = (1 << slot_bits) - 1
  out = []
  for _ in range(slots):
    v = ((packed + half) & mask) - half
    out.append(v)
    packed = (packed - v) >> slot_bits
  return out


def unpack_columns(packed_values, rows, cols, slots, slot_bits=SLOT_BITS):
  """The inverse of `pack_columns`: returns a [rows, cols] object array of Python integers."""
  groups = -(-rows // slots)
  if len(packed_values) != groups * cols:
    raise ValueError(
      'expected %d packed values for a [%d, %d] matrix, got %d' % (groups * cols, rows, cols, len(packed_values))
    )
  out = np.empty((rows, cols), dtype=object)
  i = 0
  for j in range(cols):
    for t in range(groups):
      vals = unpack(packed_values[i], slots, slot_bits)
      i += 1
      for s, v in enumerate(vals):
        r = t * slots + s
        if r < rows:
          out[r, j] = v
  return out


def to_ring(values):
  """Python integers (object array or ints) -> int64 array of their residues modulo 2**RING_BITS."""
  arr = np.asarray(values, dtype=object)
  return np.array([int(v) & (RING - 1) for v in arr.ravel()], dtype=np.int64).reshape(arr.shape)


def ring_to_signed(values):
  """int64 residues modulo 2**RING_BITS -> signed int64 in [-2**(RING_BITS-1), 2**(RING_BITS-1))."""
  v = np.asarray(values, dtype=np.int64) & (RING - 1)
  return np.where(v >= RING // 2, v - RING, v)


def weight_to_ring(weights):
  """Float weights -> fixed-point ring elements (int64 in [0, 2**RING_BITS))."""
  w = np.asarray(weights, dtype=np.float64)
  return np.rint(np.ldexp(w, WEIGHT_BITS)).astype(np.int64) & (RING - 1)


def ring_to_weight(values):
  """Ring elements -> float weights (the inverse of `weight_to_ring`)."""
  return np.ldexp(ring_to_signed(values).astype(np.float64), -WEIGHT_BITS)
