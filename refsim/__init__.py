"""refsim: a bit-exact reference for 3- and 4-bit LLM quantization (RPTQ, QRazor, GPTQ).

Public API (a contract; docs/numerics.md documents every knob):

    NumericsSpec, preset                  the numerics spec and its named presets
    quantize, dequantize                  per tensor / axis / block / cluster
    dequantize_float_zero                 float zero points (ONNX Runtime MatMulNBits, torch int4pack / tinygemm)
    absmax_params, rptq_params, gptq_params, affine_minmax_params (torchao), range_recip_params (ONNX Runtime)
    pack, unpack, LAYOUTS                 int4_lo_first, int4_word32, int3_gptq, int3_planar, int3_stream, int8,
                                          int3_word32, int4_word32_offset, int3_word32_offset
    int_gemm, cluster_int_gemm, acc_bits_needed, acc_bits_worst_case
    quantize_multiplier, multiply_by_quantized_multiplier, saturating_rounding_doubling_high_mul,
    rounding_divide_by_pot, float_epilogue, requantize
    sqnr_db
    sdr_encode, sdr_decode, sdr_gemm, sdr_acc_bits_needed     QRazor SDR (docs/sdr.md)
    qrazor_config, qrazor_matmul, accumulator_question        the QRazor path and accumulator analysis

refsim.rptq (imported on its own; torch/transformers only in its calibrate/gptq parts): RPTQ clustering
and reordering, GPTQ, the integer OPT decoder block ``opt_block`` and ``refsim calibrate`` (docs/rptq.md).
"""

from refsim.gemm import AccBitsNeeded, acc_bits_needed, acc_bits_worst_case, cluster_int_gemm, int_gemm
from refsim.layouts import LAYOUTS, pack, unpack
from refsim.metrics import sqnr_db
from refsim.params import absmax_params, affine_minmax_params, gptq_params, range_recip_params, rptq_params
from refsim.qrazor import accumulator_question, qrazor_config, qrazor_matmul
from refsim.quantize import dequantize, dequantize_float_zero, quantize
from refsim.requant import (
    float_epilogue,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    requantize,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)
from refsim.sdr import sdr_acc_bits_needed, sdr_decode, sdr_encode, sdr_gemm
from refsim.spec import (
    PRESETS,
    ComputeDtype,
    NonFinite,
    NumericsSpec,
    Overflow,
    Requant,
    Rounding,
    Saturation,
    ScaleOp,
    ZeroPointStage,
    preset,
)

__version__ = "0.1.0"

__all__ = [
    "AccBitsNeeded", "ComputeDtype", "LAYOUTS", "NonFinite", "NumericsSpec", "Overflow", "PRESETS",
    "Requant", "Rounding", "Saturation", "ScaleOp", "ZeroPointStage", "__version__", "absmax_params",
    "acc_bits_needed", "acc_bits_worst_case", "cluster_int_gemm", "dequantize", "float_epilogue", "gptq_params",
    "int_gemm",
    "multiply_by_quantized_multiplier", "pack", "preset", "quantize", "quantize_multiplier", "requantize",
    "rounding_divide_by_pot", "rptq_params", "saturating_rounding_doubling_high_mul", "sqnr_db", "unpack",
    "accumulator_question", "qrazor_config", "qrazor_matmul", "sdr_acc_bits_needed", "sdr_decode", "sdr_encode",
    "sdr_gemm", "affine_minmax_params", "range_recip_params", "dequantize_float_zero",
]

# --- issue 11, "model" helper: the quantized-tensor type and its exact GEMM (refsim/qtensor.py) ---
from refsim.qtensor import Granularity, QuantizedTensor, epilogue, qgemm  # noqa: E402

__all__ += ["Granularity", "QuantizedTensor", "epilogue", "qgemm"]
