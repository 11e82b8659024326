"""QRazor significant data razoring (SDR): encode, decode, decompression-free GEMM.

Source: QRazor (arXiv 2501.13331), DESIGN.md "SDR". Base-precision integers x (int8 weights
and KV cache, int16 activations; the symmetric range |x| <= 2^(b-1) - 1) are razored per
group of ``g`` consecutive elements along ``axis``:

    m_i   = |x_i|,  sign_i = x_i < 0                          sign-magnitude
    L     = bit_length(m_0 | m_1 | ... | m_(g-1))             leading-one position of the group
    f     = max(0, L - keep)                                  the group's flag (shift), 4 bits
    r_i   = (m_i + 2^(f-1)) >> f      (f > 0, half_up: the rounding bit, = (m>>f) + ((m>>(f-1))&1))
          = round_half_even(m_i / 2^f)                        (rounding="ties_even")
    r_i   = m_i >> f  if r_i == 2^keep                        overflow: floor instead
    code  = (-1)^sign_i * r_i,  |code| <= 2^keep - 1          magnitude 0 has sign 0
    decode(code, f) = code << f

A ragged last group is zero-padded: the padding elements are zero, add nothing to the OR and
are not stored (codes keep x's shape; flags have ceil(D / g) entries along ``axis``).
Codes are int8 (keep <= 7), flags uint8 (0..15).

Decompression-free GEMM (a (M, K) grouped along K, b (K, N) grouped along K, same g):

    T_j[m, n] = (sum_{k in group j} a_code[m, k] * b_code[k, n]) << (f_a[m, j] + f_b[j, n])
    C[m, n]   = sum_j T_j[m, n]                               j ascending

Since a_code << f_a times b_code << f_b = (a_code * b_code) << (f_a + f_b), C is exactly
sum_k decode(a)[m, k] * decode(b)[k, n]: the fast path computes it with the exact integer GEMM
of ``refsim.gemm`` on the decoded operands. The accumulator of ``acc_bits`` receives one
shifted group sum T_j per group, in ascending j (what a decompression-free MAC does: the
small code products are summed in a group adder wide enough for them, then shifted):

    wrap      C modulo 2^acc_bits; equal to int_gemm(decode(a), decode(b), wrap) always
              (wrap arithmetic is associative).
    saturate  acc_j = clamp(acc_(j-1) + T_j): clamped at group boundaries only.
    raise     ValueError naming the first (m, n) and group j whose prefix leaves the range.

The group-order prefixes are the ascending-k prefixes of the decoded product taken at group
boundaries, so whenever ``int_gemm(decode(a), decode(b), overflow="raise")`` does not raise,
neither does sdr_gemm, and under saturate both return the exact value. The converse does not
hold: a prefix inside a group may leave the range while every group boundary stays inside;
then sdr_gemm (saturate or raise) returns the exact value where int_gemm clamps or raises.

The scalar specification is ``refsim.sdr_scalar`` (the hardware steps, one element at a time).
"""

from __future__ import annotations

import numba
import numpy as np

from refsim.accumulate import acc_limits, max_signed_bits, sequential_step, settle_sequential, spec_acc, wrap_to
from refsim.checks import check_bits, check_choice, normalize_axis
from refsim.gemm import AccBitsNeeded, _as_acc_dtype, exact_matmul
from refsim.spec import NumericsSpec

SDR_ROUNDINGS = ("half_up", "ties_even")
FLAG_BITS = 4


# --- argument checks ---------------------------------------------------------------------------

def check_group_size(group_size) -> int:
    g = group_size
    if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 2 or (int(g) & (int(g) - 1)):
        raise ValueError(f"group_size={group_size!r} is not allowed; allowed: a power of two >= 2 "
                         "(QRazor uses 8, 16, 32, 64, 128)")
    return int(g)


def check_keep(keep, base_bits) -> int:
    top = min(base_bits - 1, 7)
    if isinstance(keep, bool) or not isinstance(keep, (int, np.integer)) or not 1 <= keep <= top:
        raise ValueError(f"keep={keep!r} is not allowed for base_bits={base_bits}; allowed: an integer in "
                         f"1..{top} (keep >= base_bits leaves nothing to razor; codes are at most 8-bit "
                         "sign-magnitude)")
    return int(keep)


def check_rounding(rounding, name="sdr_rounding") -> str:
    rounding = getattr(rounding, "value", rounding)
    return check_choice(rounding, SDR_ROUNDINGS, name=name)


def spec_sdr_rounding(spec) -> str:
    """The SDR razoring rounding a spec names (``spec.sdr_rounding``: half_up or ties_even)."""
    if not isinstance(spec, NumericsSpec):
        raise TypeError(f"spec must be a refsim.NumericsSpec (e.g. refsim.preset('qrazor')), got {type(spec).__name__}")
    return check_rounding(spec.sdr_rounding, name="spec.sdr_rounding")


def _int_input(x, name) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array (base-precision codes), got dtype {a.dtype}")
    if a.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension")
    return a


def check_base_range(x: np.ndarray, base_bits: int, *, name="x") -> None:
    """x must lie in the symmetric range [-(2^(b-1) - 1), 2^(b-1) - 1]; min/max first (cheap)."""
    lim = (1 << (base_bits - 1)) - 1
    if x.size == 0 or (int(x.min()) >= -lim and int(x.max()) <= lim):
        return
    bad = (x < -lim) | (x > lim)
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    v = int(x[idx])
    if v == -(1 << (base_bits - 1)):
        raise ValueError(f"{name}{idx} = {v} is -2^(base_bits-1): SDR works in sign-magnitude, whose symmetric "
                         f"range [{-lim}, {lim}] has no code for it (quantize with narrow=True)")
    raise ValueError(f"{name}{idx} = {v} is outside the base_bits={base_bits} symmetric range [{-lim}, {lim}]")


# --- encode ------------------------------------------------------------------------------------

# bit_length of every 15-bit magnitude: a table lookup keeps the kernel free of data-dependent
# branches (a leading-one loop per group mispredicts on real data and costs 5x the time).
_BIT_LENGTH = np.array([int(v).bit_length() for v in range(1 << 16)], dtype=np.int32)


@numba.njit(cache=True)
def _encode_groups(x, g, keep, ties_even, codes, flags, bit_length):
    """Whole groups of a flat int8/int16 array: group j is x[j*g:(j+1)*g].

    half_up:   q = (m + 2^(f-1)) >> f, which is (m >> f) + the rounding bit
    ties_even: q = (m + 2^(f-1) - 1 + ((m >> f) & 1)) >> f   (the kept lsb breaks a tie)
    f = 0:     q = m                                         (half = 0, tie = 0)
    min(q, 2^keep - 1) is the overflow floor. No data-dependent branch: a leading-one loop per
    group mispredicts on real data and costs 5x the time; so does a ragged inner loop bound.
    """
    maxr = np.int32((1 << keep) - 1)
    one = np.int32(1)
    te = np.int32(ties_even)
    seen = np.int32(0)
    for j in range(flags.shape[0]):
        base = j * g
        orv = np.int32(0)
        for i in range(g):
            orv |= abs(np.int32(x[base + i]))
        seen |= orv
        shift = max(bit_length[orv] - keep, 0)
        flags[j] = shift
        half = (one << shift) >> one
        tie = np.int32(shift > 0) * te
        for i in range(g):
            v = np.int32(x[base + i])
            m = abs(v)
            q = min((m + half - tie + ((m >> shift) & tie)) >> shift, maxr)
            codes[base + i] = -q if v < 0 else q
    return seen  # the OR of every magnitude: > 2^(b-1) - 1 iff some |x| is out of range


def sdr_encode(x, *, group_size, base_bits, keep=3, axis=-1, spec: NumericsSpec):
    """Razor base-precision integers to (codes int8, flags uint8); see the module docstring.

    x: int8/int16 (any integer dtype) in [-(2^(b-1) - 1), 2^(b-1) - 1]; groups of
    ``group_size`` (a power of two >= 2) along ``axis``; ``keep`` magnitude bits (3: 4-bit
    codes with the sign; 7: the A8 variant), 1 <= keep <= min(base_bits - 1, 7); rounding ``half_up`` (the
    paper's rounding bit) or ``ties_even``, from ``spec.sdr_rounding`` (no other spec field is read). codes
    have x's shape; flags have x's shape with ceil(D / group_size) along ``axis``.
    """
    x = _int_input(x, "x")
    base_bits = check_bits(base_bits, name="base_bits", lo=2, hi=16)
    keep = check_keep(keep, base_bits)
    g = check_group_size(group_size)
    rounding = spec_sdr_rounding(spec)
    ax = normalize_axis(axis, x.ndim)
    if x.dtype.itemsize > 2 or x.dtype.kind == "u":  # the kernel reads signed 8/16-bit lanes
        check_base_range(x, base_bits)
        x = x.astype(np.int16)
    xm = np.moveaxis(x, ax, -1)
    d = xm.shape[-1]
    lead = xm.shape[:-1]
    x2 = np.ascontiguousarray(xm).reshape(int(np.prod(lead, dtype=np.int64)), d)
    groups = -(-d // g)
    if d % g:  # the ragged last group, zero-padded (the padding is dropped from the codes)
        x2 = np.concatenate([x2, np.zeros((x2.shape[0], groups * g - d), dtype=x2.dtype)], axis=1)
    codes = np.empty(x2.shape, dtype=np.int8)
    flags = np.empty((x2.shape[0], groups), dtype=np.uint8)
    if x2.size:
        seen = _encode_groups(x2.reshape(-1), g, keep, rounding == "ties_even", codes.reshape(-1),
                              flags.reshape(-1), _BIT_LENGTH)
        if seen >= 1 << (base_bits - 1):  # checked in the same pass; now find and name the culprit
            check_base_range(x, base_bits)
    codes = np.moveaxis(codes[:, :d].reshape(lead + (d,)), -1, ax)
    flags = np.moveaxis(flags.reshape(lead + (groups,)), -1, ax)
    return codes, flags


# --- decode ------------------------------------------------------------------------------------

def _check_codes_flags(codes, flags, g, axis):
    c = _int_input(codes, "codes")
    f = _int_input(flags, "flags")
    ax = normalize_axis(axis, c.ndim)
    want = c.shape[:ax] + (-(-c.shape[ax] // g),) + c.shape[ax + 1:]
    if f.shape != want:
        raise ValueError(f"flags has shape {f.shape}; codes of shape {c.shape} in groups of {g} along axis {ax} "
                         f"need flags of shape {want}")
    if c.size and (int(c.min()) < -127 or int(c.max()) > 127):
        raise ValueError(f"codes must lie in [-127, 127] (sign + at most 7 magnitude bits), got "
                         f"[{int(c.min())}, {int(c.max())}]")
    if f.size and (int(f.min()) < 0 or int(f.max()) > (1 << FLAG_BITS) - 1):
        raise ValueError(f"flags must lie in [0, 15] (4-bit shifts), got [{int(f.min())}, {int(f.max())}]")
    return c, f, ax


def sdr_decode(codes, flags, *, group_size, axis=-1) -> np.ndarray:
    """Base-precision integers (int32): code << flag of its group, along ``axis``."""
    g = check_group_size(group_size)
    c, f, ax = _check_codes_flags(codes, flags, g, axis)
    d = c.shape[ax]
    fl = np.take(f.astype(np.int32), np.arange(d) // g, axis=ax)  # each element's group flag
    # (-r) << f == -(r << f) in two's complement: the sign survives the shift.
    return c.astype(np.int32) << fl


# --- decompression-free GEMM -------------------------------------------------------------------

@numba.njit(cache=True)
def _group_mac(ac, af, bct, bf, g, rows, cols, lo, hi, mode):
    """Group-order accumulation of the listed outputs, literally: code products summed per group,
    shifted by f_a + f_b, added to the accumulator in ascending group order.
    mode 0: saturating accumulator, returns the values; 1: returns the first group out of range
    (or -1); 2: returns the exact value and records the prefix extremes in ext[0], ext[1]."""
    k_count = ac.shape[1]
    groups = af.shape[1]
    out = np.empty(rows.shape[0], dtype=np.int64)
    ext = np.zeros(2, dtype=np.int64)
    for t in range(rows.shape[0]):
        m = rows[t]
        n = cols[t]
        acc = np.int64(0)
        first = -1
        for j in range(groups):
            s = np.int64(0)
            for k in range(j * g, min(j * g + g, k_count)):
                s += np.int64(ac[m, k]) * np.int64(bct[n, k])
            acc += s << (np.int64(af[m, j]) + np.int64(bf[j, n]))
            if mode == 2:
                if acc < ext[0]:
                    ext[0] = acc
                elif acc > ext[1]:
                    ext[1] = acc
            else:
                acc, first = sequential_step(acc, lo, hi, mode, first, j)
        out[t] = first if mode == 1 else acc
    return out, ext


def _gemm_operands(a_codes, a_flags, b_codes, b_flags, g):
    if np.ndim(a_codes) != 2 or np.ndim(b_codes) != 2:
        raise ValueError(f"a_codes and b_codes must be 2-d (M, K) and (K, N), got shapes {np.shape(a_codes)} "
                         f"and {np.shape(b_codes)}")
    ac, af, _ = _check_codes_flags(a_codes, a_flags, g, 1)  # grouped along K = axis 1 of a
    bc, bf, _ = _check_codes_flags(b_codes, b_flags, g, 0)  # and along K = axis 0 of b
    if ac.shape[1] != bc.shape[0]:
        raise ValueError(f"a_codes is {ac.shape} and b_codes is {bc.shape}: the inner dimensions (K) differ")
    return ac, af, bc, bf


def sdr_gemm(a_codes, a_flags, b_codes, b_flags, *, group_size, spec: NumericsSpec) -> np.ndarray:
    """Decompression-free SDR product of a (M, K) and b (K, N), both grouped along K.

    a_flags is (M, ceil(K/g)), b_flags (ceil(K/g), N). The accumulator receives one shifted
    group sum per group in ascending group order; it is ``spec.acc_bits`` wide with
    ``spec.acc_overflow`` wrap / saturate / raise (module docstring: what equals ``int_gemm``
    of the decoded operands, and when). int32 out when acc_bits <= 32, else int64.
    """
    return _as_acc_dtype(_sdr_gemm(a_codes, a_flags, b_codes, b_flags, group_size, *spec_acc(spec)),
                         spec.acc_bits)


def _sdr_gemm(a_codes, a_flags, b_codes, b_flags, group_size, acc_bits, overflow) -> np.ndarray:
    g = check_group_size(group_size)
    ac, af, bc, bf = _gemm_operands(a_codes, a_flags, b_codes, b_flags, g)
    a = sdr_decode(ac, af, group_size=g, axis=1)
    b = sdr_decode(bc, bf, group_size=g, axis=0)
    for name, dec in (("a", a), ("b", b)):
        # Base-precision ints are at most 16 bits (int16: flags 0..12), so a flag that decodes
        # beyond them is an error in the flags, reported as such rather than as a GEMM operand.
        big = np.abs(dec) > (1 << 15) - 1
        if big.any():
            i = tuple(int(j) for j in np.argwhere(big)[0])
            raise ValueError(f"{name}_codes{i} << {name}_flags decodes to {int(dec[i])}, beyond the int16 base "
                             "precision: flags must keep |code| << flag <= 32767 (int16: flags 0..12)")
    exact = exact_matmul(a, b)  # the exact int64 product of the decoded (16-bit) operands
    if overflow == "wrap":
        return wrap_to(exact, acc_bits)
    lo, hi = acc_limits(acc_bits)
    # Every group-order prefix is bounded by sum_k |a||b|: only those outputs can leave the range.
    absum = exact_matmul(np.abs(a), np.abs(b))
    rows, cols = np.nonzero(absum > hi)  # row-major; hi < -lo, so this covers both ends
    if rows.size == 0:
        return exact
    res, _ = _group_mac(ac, af, np.ascontiguousarray(bc.T), bf, g, rows.astype(np.int64), cols.astype(np.int64),
                        lo, hi, 0 if overflow == "saturate" else 1)

    def describe(m, n, j):
        k0, k1 = j * g, min(j * g + g, ac.shape[1])
        return (f"accumulator overflow at output (m={m}, n={n}), group {j} (k={k0}..{k1 - 1}): the group-order "
                f"partial sum leaves the {acc_bits}-bit range [{lo}, {hi}] (overflow='raise'; the data needs "
                f"{sdr_acc_bits_needed(ac, af, bc, bf, group_size=g).partial} bits)")

    return settle_sequential(exact, rows, cols, res, overflow, describe)


def sdr_acc_bits_needed(a_codes, a_flags, b_codes, b_flags, *, group_size) -> AccBitsNeeded:
    """Accumulator bits this SDR product needed (``refsim.AccBitsNeeded``): ``final`` for a wrap
    accumulator, ``partial`` for the group-order prefixes (saturate / raise), ``bound`` for any
    summation order (max of the sums of positive and of negative products). One pass of M*N*K."""
    g = check_group_size(group_size)
    ac, af, bc, bf = _gemm_operands(a_codes, a_flags, b_codes, b_flags, g)
    a = sdr_decode(ac, af, group_size=g, axis=1).astype(np.int64)
    b = sdr_decode(bc, bf, group_size=g, axis=0).astype(np.int64)
    exact = exact_matmul(a, b)
    ap, an = np.maximum(a, 0), np.maximum(-a, 0)
    bp, bn = np.maximum(b, 0), np.maximum(-b, 0)
    pos = exact_matmul(ap, bp) + exact_matmul(an, bn)
    neg = exact_matmul(ap, bn) + exact_matmul(an, bp)
    rows, cols = np.indices(exact.shape).reshape(2, -1)
    _, ext = _group_mac(ac, af, np.ascontiguousarray(bc.T), bf, g, rows.astype(np.int64), cols.astype(np.int64),
                        0, 0, 2)
    return AccBitsNeeded(final=max_signed_bits(exact), partial=max_signed_bits(ext),
                         bound=max(max_signed_bits(pos), max_signed_bits(-neg)))
