"""The SDR specification: the QRazor hardware steps, literally, one element at a time.

Nothing here is vectorized or clever; plain Python ints and lists. ``refsim.sdr`` must equal
these bit for bit (tests/test_sdr*.py: hypothesis and exhaustive small domains).

Encoder of one group (QRazor, arXiv 2501.13331, Fig. 3 and Sec. 3; DESIGN.md "SDR"):
  1. split each value into a sign bit and a (base_bits - 1)-bit magnitude;
  2. OR the magnitudes of the group together;
  3. find the leading one of the OR by scanning from the top magnitude bit down: L = its
     position + 1 (0 if the OR is 0);
  4. shift = max(0, L - keep) is the group's 4-bit flag;
  5. per element: kept = m >> shift; the rounding bit is bit (shift - 1) of m; add it
     (half_up), or add it only if a lower bit is set or kept is odd (ties_even);
  6. if the sum carries out of ``keep`` bits (== 2^keep), drop the increment (floor);
  7. the code is the sign bit and the ``keep`` magnitude bits; magnitude 0 takes sign 0.
"""

from __future__ import annotations

from refsim.scalar import accumulate_scalar


def sdr_encode_group_scalar(values, *, base_bits, keep, spec):
    """(codes, flag) of one group of base-precision ints, by the steps in the module docstring;
    the rounding of step 5 is ``spec.sdr_rounding``."""
    rounding = spec.sdr_rounding.value
    signs = [1 if v < 0 else 0 for v in values]  # step 1
    mags = [-v if v < 0 else v for v in values]
    for m in mags:
        if m >= 2 ** (base_bits - 1):
            raise ValueError(f"|{m}| does not fit {base_bits - 1} magnitude bits")
    ored = 0  # step 2
    for m in mags:
        ored |= m
    lead = 0  # step 3
    for pos in range(base_bits - 2, -1, -1):
        if (ored >> pos) & 1:
            lead = pos + 1
            break
    shift = lead - keep if lead > keep else 0  # step 4
    codes = []
    for sign, m in zip(signs, mags, strict=True):
        if shift == 0:
            r = m
        else:
            kept = m >> shift  # step 5
            round_bit = (m >> (shift - 1)) & 1
            if rounding == "half_up":
                inc = round_bit
            elif rounding == "ties_even":
                sticky = 1 if m & ((1 << (shift - 1)) - 1) else 0
                inc = round_bit & (sticky | (kept & 1))
            else:
                raise ValueError(rounding)
            r = kept + inc
            if r == 1 << keep:  # step 6: overflow of the keep-bit field
                r = kept
        sign = sign if r != 0 else 0  # step 7
        codes.append(-r if sign else r)
    return codes, shift


def sdr_encode_scalar(row, *, group_size, base_bits, keep, spec):
    """One 1-d row: groups of ``group_size`` from the start; a ragged last group is zero-padded
    (the pad is encoded with the group, then dropped). Returns (codes, flags) as lists."""
    codes, flags = [], []
    for start in range(0, len(row), group_size):
        group = list(row[start:start + group_size])
        real = len(group)
        group += [0] * (group_size - real)
        c, f = sdr_encode_group_scalar(group, base_bits=base_bits, keep=keep, spec=spec)
        codes += c[:real]
        flags.append(f)
    return codes, flags


def sdr_decode_scalar(codes, flags, *, group_size):
    """Each code times 2^flag of its group (sign-magnitude: the sign is applied after the shift)."""
    out = []
    for i, c in enumerate(codes):
        mag = (-c if c < 0 else c) * 2 ** flags[i // group_size]
        out.append(-mag if c < 0 else mag)
    return out


def sdr_gemm_scalar(a_codes, a_flags, b_codes, b_flags, *, group_size, spec):
    """The decompression-free MAC, per output: per group, sum the code products in a group adder,
    shift the sum left by f_a + f_b, add it to the accumulator; after each group apply the
    accumulator rule of the spec (spec.acc_bits; spec.acc_overflow wrap / saturate / raise
    OverflowError((m, n, group)))."""
    acc_bits, overflow = spec.acc_bits, spec.acc_overflow.value
    m_count, k_count = len(a_codes), len(b_codes)
    n_count = len(b_codes[0]) if b_codes else 0
    out = [[0] * n_count for _ in range(m_count)]
    for m in range(m_count):
        for n in range(n_count):
            acc = 0
            for j, start in enumerate(range(0, k_count, group_size)):
                group_sum = 0
                for k in range(start, min(start + group_size, k_count)):
                    group_sum += int(a_codes[m][k]) * int(b_codes[k][n])
                acc = accumulate_scalar(acc, group_sum * 2 ** (int(a_flags[m][j]) + int(b_flags[j][n])),
                                        acc_bits=acc_bits, overflow=overflow, where=(m, n, j))
            out[m][n] = acc
    return out


def pack_nibbles_scalar(values, *, sign_magnitude):
    """SDR 4-bit fields: value 2i in the low nibble of byte i, value 2i+1 in the high nibble.
    sign_magnitude: field = (sign << 3) | |v| (codes); else the unsigned value (flags)."""
    fields = []
    for v in values:
        if sign_magnitude:
            fields.append((8 if v < 0 else 0) | (-v if v < 0 else v))
        else:
            fields.append(v)
    if len(fields) % 2:
        fields.append(0)
    return bytes(fields[2 * i] | (fields[2 * i + 1] << 4) for i in range(len(fields) // 2))


def unpack_nibbles_scalar(data, count, *, sign_magnitude):
    out = []
    for i in range(count):
        byte = data[i // 2]
        field = byte & 0xF if i % 2 == 0 else byte >> 4
        if sign_magnitude:
            out.append(-(field & 7) if field & 8 else field)
        else:
            out.append(field)
    return out
