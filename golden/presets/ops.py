"""Every call from golden's presets into refsim's numerics primitives, each taking a spec.

The presets call these wrappers only, so a change of refsim's signatures touches this module
alone. Each wrapper takes the role's ``NumericsSpec`` and hands refsim every knob from it (the
issue-11 signatures: no loose knob the spec holds); the body adapts to the refsim it runs on.
"""

from __future__ import annotations

import numpy as np

import refsim
from refsim.quantize import COMPUTE_DTYPES


def compute_dtype(spec) -> np.dtype:
    """The numpy dtype of ``spec.compute_dtype`` (float16 for the rptq preset)."""
    return np.dtype(COMPUTE_DTYPES[spec.compute_dtype])


def rptq_params(xmin, xmax, *, bits, spec):
    """RPTQ min-max (scale, zero point), the arithmetic in the spec's compute dtype (refsim.rptq_params)."""
    return refsim.rptq_params(xmin, xmax, bits=bits, spec=spec)


def gptq_params(wmin, wmax, *, bits, spec):
    """GPTQ asymmetric (scale, zero point) in float32 (refsim.gptq_params): it refuses another compute dtype."""
    return refsim.gptq_params(wmin, wmax, bits=bits, spec=spec)


def quantize(x, scale, zero_point, *, bits, spec, **granularity):
    """Codes of x under the spec's quantize rules (refsim.quantize; signed / narrow from the spec)."""
    return refsim.quantize(x, scale, zero_point, bits=bits, spec=spec, **granularity)


def dequantize(q, scale, zero_point, *, spec, **granularity):
    """(q - z) * s in the spec's compute dtype (refsim.dequantize)."""
    return refsim.dequantize(q, scale, zero_point, dtype=compute_dtype(spec), **granularity)


def cluster_int_gemm(a_codes, a_zero, b_codes, b_zero, clusters, *, spec):
    """Per-cluster exact sums, accumulator from spec.acc_bits / spec.acc_overflow; int64 as bundles record them
    (refsim returns int32 for acc_bits <= 32: the same values)."""
    return refsim.cluster_int_gemm(a_codes, a_zero, b_codes, b_zero, clusters, spec=spec).astype(np.int64)


def exact_int_gemm(a, b):
    """The exact (64-bit, never overflowing for these operands) product of small code blocks.

    Not a spec accumulator: an SDR group's adder is defined exact (QRazor); the accumulator
    rule applies to the sum over groups (sdr_gemm).
    """
    return refsim.int_gemm(a, b, spec=refsim.preset("onnx").replace(acc_bits=64))


def sdr_encode(x, *, group_size, base_bits, keep, axis, spec):
    """SDR codes and flags, razoring rounded by spec.sdr_rounding (refsim.sdr_encode)."""
    return refsim.sdr_encode(x, group_size=group_size, base_bits=base_bits, keep=keep, axis=axis, spec=spec)


def sdr_decode(codes, flags, *, group_size, axis):
    return refsim.sdr_decode(codes, flags, group_size=group_size, axis=axis)


def sdr_gemm(a_codes, a_flags, b_codes, b_flags, *, group_size, spec):
    """The decompression-free SDR GEMM, accumulator from spec.acc_bits / spec.acc_overflow."""
    return refsim.sdr_gemm(a_codes, a_flags, b_codes, b_flags, group_size=group_size, spec=spec).astype(np.int64)


def quantize_multiplier(m, *, spec):
    """gemmlowp (Q, shift) of a real multiplier; single rounding when spec.requant says so."""
    return refsim.quantize_multiplier(float(m), single_rounding=spec.requant is refsim.Requant.SINGLE_ROUNDING)


def requantize(acc, multiplier, *, zero_point, bits, spec):
    """Output codes of int32 accumulators under spec.requant / rounding / code range (refsim.requantize)."""
    return refsim.requantize(acc, multiplier, zero_point=zero_point, bits=bits, spec=spec)


def pack(codes, layout, *, axis, signed):
    """Codes packed in a refsim bit layout (refsim.pack): a layout takes no numerics spec."""
    return refsim.pack(codes, layout, axis=axis, signed=signed)


def float_epilogue(isums, scale_a, scale_w):
    return refsim.float_epilogue(isums, scale_a, scale_w)


def opt_block(block, x, *, bits, spec):
    """The integer OPT block forward (refsim.rptq.block.opt_block: the one forward pass over the OPT
    topology under the RPTQ scheme) with the act role's spec as the scheme's spec: every activation and
    probability quantization and every product's accumulator follow it (the weights are recorded codes)."""
    from refsim.rptq.block import opt_block as forward

    return forward(block, x, config=bits, spec=spec)


def block_forward(topology, block, x, *, bits, spec, positions=None):
    """The one forward pass (refsim.models.forward) of any topology under the RPTQ scheme of ``bits``, the act
    role's spec as the scheme's spec (as ``opt_block``); ``positions``: the rotary positions (None: 0 .. T-1)."""
    from refsim.models.forward import forward
    from refsim.schemes import scheme

    return forward(topology, block, x, scheme(bits, spec=spec), positions=positions)
