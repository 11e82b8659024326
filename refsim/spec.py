"""The numerics spec: one immutable object that holds every knob a bit-exact tool must fix.

Public integer references disagree on at least seven points (DESIGN.md, "Numerics"). A
``NumericsSpec`` names all of them; presets fill every field from a published source, and a
custom spec must name every field (``from_dict`` refuses missing or unknown keys).

The source of each preset's fields is in ``PRESET_SOURCES`` and in docs/numerics.md.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

# 2: zero_point_stage gained "before_round_fused"; the torch presets follow x86 torch (CHANGELOG.md).
SPEC_SCHEMA_VERSION = 2
# A version-1 dict has the same fields and means the same numerics: it is read as is.
SUPPORTED_SPEC_SCHEMA_VERSIONS = (1, 2)


class ScaleOp(str, enum.Enum):
    """How x is brought to the integer grid before rounding."""

    DIV = "div"  # x / s, IEEE correctly rounded in the compute dtype (ONNX, TFLite)
    MUL_RECIP = "mul_recip"  # x * fl(1 / s): the reciprocal is rounded once (PyTorch, FBGEMM)
    # x * fl(qmax / amax), the reciprocal taken from the range, not from the stored scale fl(amax / qmax)
    # (ONNX Runtime MLAS dynamic int8 quantization, MatMulNBits accuracy_level 4); quantize needs amax=
    MUL_RANGE_RECIP = "mul_range_recip"


class ComputeDtype(str, enum.Enum):
    """The float format in which x, s, x op s (and a pre-round zero point) are held."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"  # RPTQ's code runs OPT in fp16, so x / s is rounded to fp16
    BFLOAT16 = "bfloat16"  # 8-bit significand, float32's exponent (torchao, compressed-tensors on bf16 models)


class Rounding(str, enum.Enum):
    """Float-to-integer rounding, named as IEEE 754 / RISC-V ``vxrm`` name them."""

    TIES_EVEN = "ties_even"  # rne: ONNX, numpy.rint, torch.round, nearbyint
    TIES_AWAY = "ties_away"  # C round(), TFLite TfLiteRound
    HALF_UP = "half_up"  # rnu: add one half, then floor (a hardware rounding bit)
    FLOOR = "floor"  # rdn
    TRUNC = "trunc"  # toward zero
    ODD = "odd"  # rod: an inexact value goes to the odd neighbour (jamming)
    CEIL = "ceil"  # rup: toward +inf (QONNX CEIL)
    AWAY = "away"  # toward the larger magnitude, sign(v) * ceil(|v|) (QONNX UP), exact
    TIES_ZERO = "ties_zero"  # nearest, ties toward zero (QONNX HALF_DOWN on its exact domain)
    # Named variants that reproduce a source's float formula, rounding step included (fl in the
    # compute dtype): QONNX HALF_UP sign(v) * floor(fl(|v| + 0.5)), which takes 0.49999997f to 1;
    # QONNX HALF_DOWN sign(v) * ceil(fl(|v| - 0.5)), which takes an odd 2^23 + 1 (float32) down.
    TIES_AWAY_ADD_HALF = "ties_away_add_half"
    TIES_ZERO_SUB_HALF = "ties_zero_sub_half"


class ZeroPointStage(str, enum.Enum):
    AFTER_ROUND = "after_round"  # q = round(fl(x op s)) + z             (ONNX QuantizeLinear)
    BEFORE_ROUND = "before_round"  # q = round(fl(fl(x op s) + z))       (QONNX, Brevitas, FBGEMM scalar)
    BEFORE_ROUND_FUSED = "before_round_fused"  # q = round(fl(x * fl(1/s) + z)), one rounding (FBGEMM AVX2 FMA)


class Saturation(str, enum.Enum):
    SATURATE = "saturate"  # clamp to [qmin, qmax] (ONNX)
    WRAP = "wrap"  # keep the low `bits` bits, two's complement
    ZERO = "zero"  # a code outside [qmin, qmax] becomes 0 (ml_dtypes' float -> intN cast)


class Overflow(str, enum.Enum):
    """What an accumulator of ``acc_bits`` does when a partial sum leaves its range."""

    WRAP = "wrap"  # modulo 2^acc_bits (ONNX MatMulInteger at int32, silently)
    SATURATE = "saturate"  # each ascending-k partial sum is clamped (a saturating MAC)
    RAISE = "raise"  # an error naming the first (m, n, k) whose partial sum leaves the range


class Requant(str, enum.Enum):
    """How an integer accumulator becomes an output value."""

    FLOAT = "float"  # float32 epilogue, separately rounded ops in a fixed order, no FMA
    DOUBLE_ROUNDING = "double_rounding"  # gemmlowp / TFLite default fixed point
    SINGLE_ROUNDING = "single_rounding"  # TFLITE_SINGLE_ROUNDING fixed point


class NonFinite(str, enum.Enum):
    RAISE = "raise"  # NaN or +-Inf input is an error (default: never a silent code)
    SATURATE = "saturate"  # +Inf -> qmax, -Inf -> qmin, NaN -> the zero point (stated mapping)
    ZERO = "zero"  # NaN and +-Inf -> code 0 (ml_dtypes' float -> intN cast)


_ENUM_FIELDS = {
    "scale_op": ScaleOp,
    "compute_dtype": ComputeDtype,
    "rounding": Rounding,
    "zero_point_stage": ZeroPointStage,
    "saturation": Saturation,
    "acc_overflow": Overflow,
    "requant": Requant,
    "nonfinite": NonFinite,
    "sdr_rounding": Rounding,
}


@dataclass(frozen=True)
class NumericsSpec:
    """Every numerics knob of DESIGN.md's table, immutable.

    Fields
    ------
    scale_op, compute_dtype, rounding, zero_point_stage:
        q = sat(round(fl(x op s)) + z)  or  sat(round(fl(fl(x op s) + z)))  with fl() the
        compute dtype's round-to-nearest-even and ``op`` division or reciprocal multiply.
    signed, narrow:
        the default code range for ``quantize`` (overridable per call): signed full
        [-2^(b-1), 2^(b-1)-1], signed narrow [-(2^(b-1)-1), 2^(b-1)-1], unsigned [0, 2^b-1]
        (narrow unsigned [0, 2^b-2]).
    saturation:
        saturate or wrap codes that leave the range.
    acc_bits, acc_overflow:
        integer accumulator width (2..64) and overflow rule.
    requant:
        float32 epilogue or gemmlowp fixed point (double / single rounding).
    nonfinite:
        policy for NaN / Inf inputs.
    sdr_rounding:
        rounding of the QRazor SDR razoring step (half_up = the paper's rounding bit, or
        ties_even as one public port does); other values are refused by the SDR encoder.
    """

    scale_op: ScaleOp
    compute_dtype: ComputeDtype
    rounding: Rounding
    zero_point_stage: ZeroPointStage
    signed: bool
    narrow: bool
    saturation: Saturation
    acc_bits: int
    acc_overflow: Overflow
    requant: Requant
    nonfinite: NonFinite
    sdr_rounding: Rounding

    def __post_init__(self):
        for name, enum_cls in _ENUM_FIELDS.items():
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, enum_cls(value))
            except ValueError:
                allowed = ", ".join(repr(m.value) for m in enum_cls)
                raise ValueError(f"{name}={value!r} is not allowed; allowed: {allowed}") from None
        for name in ("signed", "narrow"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.zero_point_stage is ZeroPointStage.BEFORE_ROUND_FUSED and self.scale_op is not ScaleOp.MUL_RECIP:
            raise ValueError("zero_point_stage='before_round_fused' is a fused multiply-add and needs "
                             "scale_op='mul_recip'; allowed with 'div': 'after_round', 'before_round'")
        if self.narrow and self.saturation is Saturation.WRAP:
            # wrapping keeps the low bits, modulo 2^bits: it can land on -2^(bits-1), the code narrow excludes
            raise ValueError("narrow=True with saturation='wrap' is not allowed: wrapping modulo 2^bits can give "
                             "the code the narrow range excludes; allowed with narrow=True: saturation 'saturate' "
                             "or 'zero'")
        if not isinstance(self.acc_bits, int) or isinstance(self.acc_bits, bool) or not 2 <= self.acc_bits <= 64:
            raise ValueError(f"acc_bits={self.acc_bits!r} is not allowed; allowed: an int in 2..64")

    def to_dict(self) -> dict:
        """Plain JSON-ready dict: enums as their string values, plus the schema version."""
        out = {"spec_schema_version": SPEC_SCHEMA_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.value if isinstance(value, enum.Enum) else value
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "NumericsSpec":
        """Inverse of ``to_dict``; every field must be present and no other key."""
        d = dict(d)
        version = d.pop("spec_schema_version", SPEC_SCHEMA_VERSION)
        if version not in SUPPORTED_SPEC_SCHEMA_VERSIONS:
            raise ValueError(
                f"spec_schema_version={version!r} is not supported; allowed: {SUPPORTED_SPEC_SCHEMA_VERSIONS}"
            )
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in d]
        unknown = sorted(set(d) - set(names))
        if missing:
            raise ValueError(f"spec dict is missing fields {missing}; a custom spec names every field")
        if unknown:
            raise ValueError(f"spec dict has unknown fields {unknown}; allowed: {names}")
        return cls(**d)

    def replace(self, **changes) -> "NumericsSpec":
        return dataclasses.replace(self, **changes)


# Every preset names every field: the common integer-pipeline defaults first (ONNX's), then each
# preset's departures from them, so the table reads as "what this source does differently".
_COMMON = dict(
    scale_op="div", compute_dtype="float32", rounding="ties_even", zero_point_stage="after_round",
    signed=True, narrow=False, saturation="saturate", acc_bits=32, acc_overflow="wrap",
    requant="float", nonfinite="raise", sdr_rounding="half_up",
)
_DEPARTURES = {
    "onnx": {},
    "torch": dict(scale_op="mul_recip", zero_point_stage="before_round_fused"),
    "torch_per_channel": dict(scale_op="mul_recip", zero_point_stage="before_round"),
    "gptq": dict(signed=False),
    "rptq": dict(compute_dtype="float16"),
    "qrazor": dict(narrow=True, acc_overflow="raise"),
    "tflite": dict(rounding="ties_away", requant="double_rounding"),
    "torchao": dict(scale_op="mul_recip", compute_dtype="bfloat16"),
    "compressed_tensors": dict(compute_dtype="bfloat16", zero_point_stage="before_round"),
    "onnxruntime": {},
    "onnxruntime_dynamic_int8": dict(scale_op="mul_range_recip"),
    "qonnx": dict(zero_point_stage="before_round"),
    "ml_dtypes": dict(rounding="trunc", saturation="zero", nonfinite="zero"),
}
PRESETS: dict[str, NumericsSpec] = {name: NumericsSpec(**{**_COMMON, **d}) for name, d in _DEPARTURES.items()}

# Where each preset's fields come from (also tabulated in docs/numerics.md).
PRESET_SOURCES: dict[str, str] = {
    "onnx": "ONNX QuantizeLinear opset 21 (y = saturate(round_half_even(x / y_scale) + y_zero_point)); "
    "MatMulInteger accumulates in int32 and wraps; QLinearMatMul requantizes in float.",
    "torch": "torch.quantize_per_tensor, qint8/quint8, x86 (FBGEMM QuantizeAvx2, LEGACY): "
    "nearbyint(fma(x, 1.0f / scale, zero_point)), one float32 rounding; FBGEMM int32 accumulation and float "
    "requantization. Established by tests/test_conformance_torch.py against torch 2.13 on x86.",
    "torch_per_channel": "torch.quantize_per_channel and quantize_per_tensor(qint32) on x86 (fbgemm::Quantize, "
    "LEGACY, scalar): nearbyint(fl32(zero_point + fl32(x * (1.0f / scale)))): the zero point added before "
    "rounding, unfused.",
    "gptq": "IST-DASLab gptq quant.py Quantizer: clamp(torch.round(x / scale) + zero, 0, maxq), float32.",
    "rptq": "RPTQ4LLM quantizer: round(x / scale) + round_zero_point, signed range, tensors in fp16.",
    "qrazor": "QRazor base precision: absmax symmetric, narrow range +-(2^(b-1)-1); SDR rounding bit "
    "(half up on the magnitude) with overflow flooring; accumulator overflow must not pass silently.",
    "tflite": "TFLite reference QuantizeLinear (TfLiteRound = std::round, ties away) and gemmlowp "
    "MultiplyByQuantizedMultiplier with double rounding (the default build).",
    "torchao": "torchao 0.18 quantize_affine (int zero-point domain): clamp(round(x * (1.0 / scale)) + zero_point), "
    "every op in the tensors' dtype (bfloat16 for a bf16 model; replace compute_dtype for fp16 / fp32).",
    "compressed_tensors": "compressed-tensors 0.20 forward._quantize: clamp(round(x / scale + zero_point)), the zero "
    "point added before rounding, in the model's dtype (bfloat16; replace compute_dtype for fp16 / fp32).",
    "onnxruntime": "ONNX Runtime 1.32 CPU QuantizeLinear / DequantizeLinear (int8, uint8, int4, uint4, blocked) and "
    "MatMulInteger (int32, wrapping): the ONNX operator formulas, float32 division.",
    "onnxruntime_dynamic_int8": "ONNX Runtime 1.32 MLAS int8 activation quantization (MatMulNBits accuracy_level 4): "
    "per block amax, scale = amax / 127, q = rne(a * fl(127 / amax)): the reciprocal comes from the range.",
    "qonnx": "QONNX 1.0 Quant op (intquant.int_quant): rounding_mode(clamp(x / scale + zeropt)), float32; "
    "rounding_mode ROUND by default (replace rounding for CEIL, FLOOR, UP, DOWN, HALF_UP, HALF_DOWN).",
    "ml_dtypes": "ml_dtypes 0.7 float -> int2/int4/uint2/uint4 cast: truncation toward zero; a value outside the "
    "range, NaN and +-Inf become 0.",
}


def preset(name: str) -> NumericsSpec:
    """The named preset; every field filled from its source (``PRESET_SOURCES[name]``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"preset name={name!r} is not known; allowed: {', '.join(PRESETS)}") from None
