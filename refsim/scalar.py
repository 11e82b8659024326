"""The specification: scalar twins of every fast path, in plain Python ints and Fractions.

Nothing here is vectorized or clever. Each function is written from the formula in the
docstring of the fast path it specifies, one element at a time; the tests assert that the
fast paths equal these bit for bit (hypothesis, and exhaustively on small domains).
"""

from __future__ import annotations

import math
from fractions import Fraction

from refsim.spec import NumericsSpec

# Binary formats: (significand bits incl. the hidden one, emin, emax)
FORMATS = {"float32": (24, -126, 127), "float16": (11, -14, 15), "float64": (53, -1022, 1023),
           "bfloat16": (8, -126, 127)}
INF = float("inf")


def round_half_even_int(v: Fraction) -> int:
    f = math.floor(v)
    rem = v - f
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and f % 2 == 1):
        return f + 1
    return f


def round_to_format(v, fmt: str):
    """The IEEE binary ``fmt`` value nearest to the rational v (ties to even), as a Fraction,
    or +-inf on overflow. Subnormals share the quantum 2^(emin - p + 1)."""
    p, emin, emax = FORMATS[fmt]
    if v in (INF, -INF):
        return v
    v = Fraction(v)
    if v == 0:
        return Fraction(0)
    sign = -1 if v < 0 else 1
    a = abs(v)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1  # now 2^e <= a < 2^(e+1)
    e = max(e, emin)
    quantum = Fraction(2) ** (e - p + 1)
    r = round_half_even_int(a / quantum) * quantum
    if r >= Fraction(2) ** (emax + 1):
        return sign * INF
    return sign * r


def round_rational(v, mode: str, fmt: str = "float64") -> int:
    """Round a rational to an integer under ``mode`` (refsim.spec.Rounding values); ``fmt`` is the
    format of the fl() step of the two float-formula variants (QONNX HALF_UP and HALF_DOWN)."""
    v = Fraction(v)
    f = math.floor(v)
    frac = v - f
    half = Fraction(1, 2)
    if mode == "floor":
        return f
    if mode == "trunc":
        return f if v >= 0 else -math.floor(-v)
    if mode == "half_up":
        return f + 1 if frac >= half else f
    if mode == "ties_even":
        return round_half_even_int(v)
    if mode == "ties_away":
        if v >= 0:
            return f + 1 if frac >= half else f
        return -round_rational(-v, "ties_away")
    if mode == "odd":
        if frac == 0:
            return f
        return f if f % 2 == 1 else f + 1
    sign = -1 if v < 0 else 1
    if mode == "ceil":
        return -math.floor(-v)
    if mode == "away":  # the magnitude rounded up
        return sign * -math.floor(-abs(v))
    if mode == "ties_zero":  # the magnitude rounded to nearest, a tie down
        return sign * (math.floor(abs(v)) + (1 if abs(v) - math.floor(abs(v)) > half else 0))
    if mode == "ties_away_add_half":  # sign(v) * floor(fl(|v| + 0.5))
        return sign * math.floor(round_to_format(abs(v) + half, fmt))
    if mode == "ties_zero_sub_half":  # sign(v) * ceil(fl(|v| - 0.5))
        return sign * -math.floor(-round_to_format(abs(v) - half, fmt))
    raise ValueError(mode)


def code_range(bits, signed, narrow):
    if signed:
        return -(2 ** (bits - 1)) + (1 if narrow else 0), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1 - (1 if narrow else 0)


def quantize_scalar(x: float, s: float, z: int, *, bits: int, amax=None, spec: NumericsSpec) -> int:
    """One element of refsim.quantize, from the formula in refsim/quantize.py's docstring."""
    signed, narrow = spec.signed, spec.narrow
    qmin, qmax = code_range(bits, signed, narrow)
    fmt = spec.compute_dtype.value
    range_recip = spec.scale_op.value == "mul_range_recip"
    if range_recip != (amax is not None) or (range_recip and not signed):
        raise ValueError("amax goes with scale_op='mul_range_recip' and signed codes, and only with it")
    if math.isnan(x) or math.isinf(x):
        if spec.nonfinite.value == "raise":
            raise ValueError("x is not finite")
        if spec.nonfinite.value == "zero":
            return 0
        return z if math.isnan(x) else (qmax if x > 0 else qmin)
    xc = round_to_format(Fraction(x), fmt)
    sc = round_to_format(Fraction(s), fmt)
    if spec.scale_op.value == "mul_recip" and round_to_format(1 / sc, fmt) == INF:
        raise ValueError("the scale's reciprocal overflows the compute dtype")
    if range_recip:
        a = round_to_format(Fraction(float(amax)), fmt)
        if a > 0 and sc != round_to_format(a / qmax, fmt):
            raise ValueError("scale is not fl(amax / qmax)")
        recip = round_to_format(qmax / a, fmt) if a > 0 else Fraction(0)
    if xc in (INF, -INF):
        v = xc
    elif range_recip:
        v = round_to_format(xc * recip, fmt)
    elif spec.scale_op.value == "div":
        v = round_to_format(xc / sc, fmt)
    elif spec.zero_point_stage.value == "before_round_fused":
        v = round_to_format(xc * round_to_format(1 / sc, fmt) + z, fmt)  # one rounding: an FMA
    else:
        v = round_to_format(xc * round_to_format(1 / sc, fmt), fmt)
    if v in (INF, -INF):
        if spec.saturation.value == "wrap":
            raise ValueError("cannot wrap an infinite value")
        if spec.saturation.value == "zero":
            return 0
        return qmax if v > 0 else qmin
    if spec.zero_point_stage.value in ("before_round", "before_round_fused"):
        if spec.zero_point_stage.value == "before_round":
            v = round_to_format(v + round_to_format(Fraction(z), fmt), fmt)
        if v in (INF, -INF):
            return 0 if spec.saturation.value == "zero" else (qmax if v > 0 else qmin)
        q = round_rational(v, spec.rounding.value, fmt)
    else:
        q = round_rational(v, spec.rounding.value, fmt) + z
    if spec.saturation.value == "saturate":
        return min(max(q, qmin), qmax)
    if spec.saturation.value == "zero":
        return q if qmin <= q <= qmax else 0
    return (q - qmin) % 2**bits + qmin


def dequantize_scalar(q: int, s: float, z: int, fmt="float32") -> Fraction:
    return round_to_format(round_to_format(Fraction(q - z), fmt) * round_to_format(Fraction(s), fmt), fmt)


# --- quantization parameter rules -------------------------------------------------------------

def absmax_scale_scalar(values, bits) -> Fraction:
    amax = max(abs(round_to_format(Fraction(v), "float32")) for v in values)
    if amax == 0:
        return Fraction(1)
    return round_to_format(amax / (2 ** (bits - 1) - 1), "float32")


def rptq_params_scalar(xmin: float, xmax: float, bits: int, *, spec: NumericsSpec):
    fmt = spec.compute_dtype.value
    lo = round_to_format(Fraction(xmin), fmt)
    hi = round_to_format(Fraction(xmax), fmt)
    s = round_to_format(round_to_format(hi - lo, fmt) / 2**bits, fmt)
    s = min(max(s, round_to_format(Fraction(1e-4), fmt)), round_to_format(Fraction(1e4), fmt))
    z = round_to_format(round_to_format(hi + lo, fmt) * round_to_format(Fraction(-1, 2) / s, fmt), fmt)
    return s, round_half_even_int(z)


def gptq_params_scalar(xmin: float, xmax: float, bits: int, sym: bool):
    maxq = 2**bits - 1
    lo = min(round_to_format(Fraction(xmin), "float32"), 0)
    hi = max(round_to_format(Fraction(xmax), "float32"), 0)
    if sym:
        hi = max(abs(lo), hi)
        if lo < 0:
            lo = -hi
    if lo == 0 and hi == 0:
        lo, hi = Fraction(-1), Fraction(1)
    s = round_to_format(round_to_format(hi - lo, "float32") / maxq, "float32")
    if s == 0:
        raise ValueError("the GPTQ scale underflows float32 to 0")
    z = (maxq + 1) // 2 if sym else round_half_even_int(round_to_format(-lo / s, "float32"))
    return s, z


# --- bit layouts, each from its own source's description --------------------------------------

def _field(c, bits):
    return c & (2**bits - 1)


def _signed(f, bits):
    return f - 2**bits if f >= 2 ** (bits - 1) else f


def _word32_stream(fields, bits) -> bytes:
    """compressed-tensors pack_to_int32: element i at global bit i * bits of little-endian 32-bit words,
    ceil(E * bits / 32) words, a field that crosses a word boundary split between the two."""
    words = [0] * (-(-len(fields) * bits // 32))
    for i, f in enumerate(fields):
        word, off = divmod(i * bits, 32)
        words[word] |= (f << off) & 0xFFFFFFFF
        if off + bits > 32:
            words[word + 1] |= f >> (32 - off)
    return b"".join(w.to_bytes(4, "little") for w in words)


def pack_scalar(codes, layout: str) -> bytes:
    codes = list(codes)
    if layout == "int8":  # one two's complement byte per code
        return bytes(c & 0xFF for c in codes)
    if layout == "int3_word32":
        return _word32_stream([_field(c, 3) for c in codes], 3)
    if layout in ("int4_word32_offset", "int3_word32_offset"):  # offset binary: v + 2^(bits-1), then the stream
        bits = 4 if layout.startswith("int4") else 3
        return _word32_stream([c + 2 ** (bits - 1) for c in codes], bits)
    if layout == "int4_lo_first":  # ONNX: byte i = low nibble element 2i, high nibble element 2i+1
        codes += [0] * (len(codes) % 2)
        return bytes(_field(codes[2 * i], 4) | (_field(codes[2 * i + 1], 4) << 4) for i in range(len(codes) // 2))
    if layout == "int4_word32":  # eight codes per little-endian uint32, value j at bits 4j
        codes += [0] * (-len(codes) % 8)
        out = b""
        for w in range(len(codes) // 8):
            word = 0
            for j in range(8):
                word |= _field(codes[8 * w + j], 4) << (4 * j)
            out += word.to_bytes(4, "little")
        return out
    if layout == "int3_stream":  # value i at bits [3i, 3i+3) of a little-endian integer
        acc = 0
        for i, c in enumerate(codes):
            acc |= _field(c, 3) << (3 * i)
        return acc.to_bytes(-(-3 * len(codes) // 8), "little")
    if layout == "int3_gptq":  # the IST-DASLab QuantLinear.pack loop for bits == 3, literally
        codes = [_field(c, 3) for c in codes] + [0] * (-len(codes) % 32)
        words = [0] * (len(codes) // 32 * 3)
        i = row = 0
        while i < len(codes):
            for j in range(i, i + 10):
                words[row] |= codes[j] << (3 * (j - i))
            i += 10
            words[row] |= (codes[i] << 30) & 0xFFFFFFFF
            row += 1
            words[row] |= (codes[i] >> 2) & 1
            i += 1
            for j in range(i, i + 10):
                words[row] |= codes[j] << (3 * (j - i) + 1)
            i += 10
            words[row] |= (codes[i] << 31) & 0xFFFFFFFF
            row += 1
            words[row] |= (codes[i] >> 1) & 0x3
            i += 1
            for j in range(i, i + 10):
                words[row] |= codes[j] << (3 * (j - i) + 2)
            i += 10
            row += 1
        return b"".join(w.to_bytes(4, "little") for w in words)
    if layout == "int3_planar":  # per 32 codes: word0 = low 2 bits of codes 0..15, word1 = of 16..31,
        codes = [_field(c, 3) for c in codes] + [0] * (-len(codes) % 32)  # word2 = bit 2 of code j at j
        out = b""
        for blk in range(len(codes) // 32):
            cs = codes[32 * blk: 32 * blk + 32]
            w0 = sum((c & 3) << (2 * j) for j, c in enumerate(cs[:16]))
            w1 = sum((c & 3) << (2 * j) for j, c in enumerate(cs[16:]))
            w2 = sum((c >> 2) << j for j, c in enumerate(cs))
            out += w0.to_bytes(4, "little") + w1.to_bytes(4, "little") + w2.to_bytes(4, "little")
        return out
    raise ValueError(layout)


def unpack_scalar(data: bytes, layout: str, count: int, signed: bool) -> list[int]:
    bits = {"int4": 4, "int8": 8}.get(layout[:4], 3)
    if layout.endswith("_offset"):  # offset binary: every field minus 2^(bits-1), whatever ``signed`` says
        acc = int.from_bytes(data, "little")
        return [((acc >> (bits * i)) & (2**bits - 1)) - 2 ** (bits - 1) for i in range(count)]
    if layout == "int3_planar":
        out = []
        for i in range(count):
            blk, j = divmod(i, 32)
            w = [int.from_bytes(data[12 * blk + 4 * t: 12 * blk + 4 * t + 4], "little") for t in range(3)]
            low = (w[j // 16] >> (2 * (j % 16))) & 3
            out.append(low | (((w[2] >> j) & 1) << 2))
    else:  # every other layout is a little-endian stream of `bits`-bit fields
        acc = int.from_bytes(data, "little")
        out = [(acc >> (bits * i)) & (2**bits - 1) for i in range(count)]
    return [_signed(f, bits) for f in out] if signed else out


# --- integer GEMM and accumulators -------------------------------------------------------------

def accumulate_scalar(acc: int, term: int, *, acc_bits: int, overflow: str, where) -> int:
    """One step of an acc_bits two's complement accumulator: acc + term, then the overflow rule
    (wrap modulo 2^acc_bits, saturate to the range, or raise OverflowError(where))."""
    lo, hi = -(2 ** (acc_bits - 1)), 2 ** (acc_bits - 1) - 1
    acc += term
    if acc < lo or acc > hi:
        if overflow == "wrap":
            return (acc - lo) % 2**acc_bits + lo
        if overflow == "saturate":
            return min(max(acc, lo), hi)
        raise OverflowError(where)
    return acc


def int_gemm_scalar(a, b, *, spec: NumericsSpec):
    """Ascending-k MAC per output, spec.acc_bits two's complement: spec.acc_overflow wrap / saturate /
    raise at each step."""
    acc_bits, overflow = spec.acc_bits, spec.acc_overflow.value
    m_count, k_count, n_count = len(a), len(b), len(b[0]) if b else 0
    out = [[0] * n_count for _ in range(m_count)]
    for m in range(m_count):
        for n in range(n_count):
            acc = 0
            for k in range(k_count):
                acc = accumulate_scalar(acc, int(a[m][k]) * int(b[k][n]), acc_bits=acc_bits, overflow=overflow,
                                        where=(m, n, k))
            out[m][n] = acc
    return out


def signed_bits_scalar(v: int) -> int:
    return (v if v >= 0 else -v - 1).bit_length() + 1


# --- requantization ---------------------------------------------------------------------------

def quantize_multiplier_scalar(m: float, single_rounding=False):
    if m == 0:
        return 0, 0
    q, shift = math.frexp(m)
    q_fixed = math.floor(Fraction(q) * 2**31 + Fraction(1, 2))  # std::round of a positive value
    if q_fixed == 2**31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    if single_rounding and shift > 30:
        shift, q_fixed = 30, 2**31 - 1
    return q_fixed, shift


def _c_div(a: int, b: int) -> int:
    """C/C++ integer division: the quotient truncated toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def srdhm_scalar(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul, int32."""
    if a == b == -(2**31):
        return 2**31 - 1
    ab = a * b
    nudge = 2**30 if ab >= 0 else 1 - 2**30
    return _c_div(ab + nudge, 2**31)


def rounding_divide_by_pot_scalar(x: int, exponent: int) -> int:
    """gemmlowp RoundingDivideByPOT: x / 2^exponent, nearest, ties away from zero."""
    mask = 2**exponent - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def multiply_by_quantized_multiplier_scalar(x: int, qm: int, shift: int, single_rounding=False) -> int:
    if single_rounding:
        total = 31 - shift
        return (x * qm + 2 ** (total - 1)) >> total
    left = max(shift, 0)
    right = max(-shift, 0)
    return rounding_divide_by_pot_scalar(srdhm_scalar(x * 2**left, qm), right)


def float_epilogue_scalar(isums_mn, scale_a, scale_w_n, bias_n=None):
    """One output of the float32 epilogue: clusters ascending, each op rounded to float32."""
    f32 = lambda v: round_to_format(v, "float32")  # noqa: E731
    acc = Fraction(0)
    for c, isum in enumerate(isums_mn):
        acc = f32(acc + f32(f32(f32(Fraction(isum)) * f32(Fraction(scale_a[c]))) * f32(Fraction(scale_w_n))))
    if bias_n is not None:
        acc = f32(acc + f32(Fraction(bias_n)))
    return acc


# --- float zero points -------------------------------------------------------------------------

def dequantize_float_zero_scalar(q: int, s: float, z: float, *, form: str, bits=4, fmt="float32") -> Fraction:
    """One element of refsim.dequantize_float_zero: "ort" fl(fl(q*s) - fl(z*s)); "tinygemm" fl(fl((q-mid)*s) + z)."""
    f = lambda v: round_to_format(v, fmt)  # noqa: E731
    sc, zc = f(Fraction(float(s))), f(Fraction(float(z)))
    if form == "ort":
        return f(f(f(Fraction(q)) * sc) - f(zc * sc))
    if form == "tinygemm_fused":
        return f(f(Fraction(q - 2 ** (bits - 1))) * sc + zc)
    return f(f(f(Fraction(q - 2 ** (bits - 1))) * sc) + zc)


def affine_minmax_params_scalar(xmin: float, xmax: float, *, qmin: int, qmax: int, symmetric: bool,
                                spec: NumericsSpec):
    """torchao choose_qparams_affine from one block's min and max (refsim.params.affine_minmax_params)."""
    fmt = spec.compute_dtype.value
    f = lambda v: round_to_format(v, fmt)  # noqa: E731
    eps = Fraction(2) ** (-14 if fmt == "float16" else -126)
    lo = min(f(Fraction(float(xmin))), 0)
    hi = max(f(Fraction(float(xmax))), 0)
    if symmetric:
        s = max(f(max(-lo, hi) / (Fraction(qmax - qmin) / 2)), eps)
        return s, int((qmax + qmin + 1) / 2)
    s = max(f(f(hi - lo) / (qmax - qmin)), eps)
    return s, min(max(qmin - round_half_even_int(f(lo / s)), qmin), qmax)


# --- GGUF block weights with a float offset (refsim.qtensor.block_offset_matmul) ----------------

def block_offset_matmul_scalar(qa, za, sa, ids, qw, d, m, blocks, bias=None, *, spec: NumericsSpec):
    """a (M, K) x w (N, K)^T with activations s_a[c] (qa - za[c]) and GGUF weights d[n, b] qw + m[n, b],
    written from docs/gguf.md one output at a time. Returns (S, A, y): S[(b, c)][m][n] and A[(b, c)][m]
    Python ints, y[m][n] Fractions (float32 values).

    Pairs (b, c) with at least one column k (blocks[k] == b, ids[k] == c), ordered by b then c:
        S = sum_{k in pair, ascending} (qa[m][k] - za[c]) * qw[n][k]      the spec's accumulator per step
        A = sum_{k in pair, ascending} (qa[m][k] - za[c])                 (m None: Q8_0, no A)
        acc = 0;  acc = f32(acc + f32(f32(f32(S) * f32(s_a[c] * d[n][b])) + f32(f32(A) * f32(s_a[c] * m[n][b]))))
        y = f32(acc + bias[n])
    """
    acc_bits, overflow = spec.acc_bits, spec.acc_overflow.value
    f32 = lambda v: round_to_format(v, "float32")  # noqa: E731
    pairs = sorted({(int(blocks[k]), int(ids[k])) for k in range(len(blocks))})
    rows, outs = len(qa), len(qw)
    big_s, big_a = {}, {}
    for b, c in pairs:
        cols = [k for k in range(len(blocks)) if int(blocks[k]) == b and int(ids[k]) == c]
        s_p = [[0] * outs for _ in range(rows)]
        a_p = [0] * rows
        for i in range(rows):
            acc_a = 0
            for k in cols:
                acc_a = accumulate_scalar(acc_a, int(qa[i][k]) - int(za[c]), acc_bits=acc_bits, overflow=overflow,
                                          where=(i, k))
            a_p[i] = acc_a
            for n in range(outs):
                acc = 0
                for k in cols:
                    term = (int(qa[i][k]) - int(za[c])) * int(qw[n][k])
                    acc = accumulate_scalar(acc, term, acc_bits=acc_bits, overflow=overflow, where=(i, n, k))
                s_p[i][n] = acc
        big_s[(b, c)], big_a[(b, c)] = s_p, a_p
    y = [[Fraction(0)] * outs for _ in range(rows)]
    for i in range(rows):
        for n in range(outs):
            acc = Fraction(0)
            for b, c in pairs:
                s_c = Fraction(float(sa[c]))
                t = f32(f32(Fraction(big_s[(b, c)][i][n])) * f32(s_c * Fraction(float(d[n][b]))))
                if m is not None:
                    t = f32(t + f32(f32(Fraction(big_a[(b, c)][i])) * f32(s_c * Fraction(float(m[n][b])))))
                acc = f32(acc + t)
            if bias is not None:
                acc = f32(acc + f32(Fraction(float(bias[n]))))
            y[i][n] = acc
    return big_s, (big_a if m is not None else None), y
