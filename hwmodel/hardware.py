"""Hardware table: peak throughput per (weight bits, activation bits), bandwidth, buffer, clock, energy.

Peaks are dense (no 2:4 sparsity), in operations per second with one multiply-accumulate = 2 ops.
A GEMM with w-bit weights and a-bit activations runs on the fastest datapath whose operand widths
hold both (``peak(w, a)``): on a GPU without int4 tensor cores (Hopper: H100, H200) W4A4 runs on the
int8 tensor cores, so 4-bit activations halve the bytes moved but not the time of a compute-bound
GEMM; W3A3 likewise. A weight-only configuration (activations fp16) dequantizes weights in registers
and runs on the fp16 tensor cores.

Sources (datasheet figures, dense):
* A100 SXM4 80GB: NVIDIA A100 datasheet / Ampere whitepaper: fp16 312 TFLOP/s, int8 624 TOP/s,
  int4 1248 TOP/s, HBM2e 2039 GB/s, 40 MiB L2, boost clock 1410 MHz, fp32 19.5 TFLOP/s.
* H100 SXM5 80GB: NVIDIA H100 datasheet / Hopper whitepaper: fp16/bf16 989.4 TFLOP/s, fp8 and int8
  1978.9 TOP/s, no int4 tensor-core path, HBM3 3.35 TB/s, 50 MiB L2, boost 1980 MHz, fp32 66.9 TFLOP/s.
* H200 SXM 141GB: NVIDIA H200 datasheet: H100's compute with HBM3e 4.8 TB/s and 141 GB (143771 MiB
  as nvidia-smi reports). Measured on one here (DESIGN.md): ~4.3 TB/s copy, ~790 TFLOP/s bf16 matmul.
* ``H200-int4``, ``H200-int3``: *hypothetical* Hopper parts (an assumption, no such product): H200 with
  int4 tensor cores at 2x the int8 rate (the ratio A100 has) and, on ``H200-int3``, int3 tensor cores
  at 2.67x (= int4 x 4/3: throughput inversely proportional to operand width, as at 8 -> 4 bits).
* ``acc-int3``: a *hypothetical* accelerator built from :meth:`Hardware.from_mac_array`: 512 x 512
  native 3-bit x 3-bit MACs at 1 GHz, wider operands bit-sliced, 64 MiB buffer, 2 TB/s HBM.
DRAM energy: HBM2 ~3.9 pJ/bit (O'Connor et al., "Fine-Grained DRAM", MICRO 2017), applied to
HBM2e/HBM3/HBM3e for lack of a published per-bit figure for those.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

MAX_BITS = 32
FLOAT_BITS = 16  # (16, 16) is the fp16/bf16 tensor-core path
HBM_PJ_PER_BIT = 3.9


@dataclass(frozen=True)
class Hardware:
    """One accelerator. ``peaks`` maps (weight bits, activation bits) to dense ops/s of that datapath."""

    name: str
    peaks: dict[tuple[int, int], float]
    bandwidth: float  # DRAM bandwidth, bytes/s
    capacity: float  # DRAM capacity, bytes
    buffer: float  # on-chip buffer (L2 / SRAM) that can hold an activation tensor between ops, bytes
    clock_hz: float
    vector_ops: float  # non-GEMM ops/s (softmax, norms): fp32 CUDA-core rate or the vector unit
    dram_pj_per_bit: float = HBM_PJ_PER_BIT
    mac_rows: int = 0
    mac_cols: int = 0
    hypothetical: bool = False
    notes: str = ""
    _table: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        for f in ("bandwidth", "capacity", "clock_hz", "vector_ops"):
            v = getattr(self, f)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"hardware {self.name!r}: {f} must be a positive number, got {v!r}")
        if self.buffer < 0:
            raise ValueError(f"hardware {self.name!r}: buffer must be >= 0 bytes, got {self.buffer!r}")
        if not self.peaks:
            raise ValueError(f"hardware {self.name!r}: peaks must list at least one "
                             f"(w_bits, a_bits) datapath")
        for (w, a), p in self.peaks.items():
            if not (1 <= w <= MAX_BITS and 1 <= a <= MAX_BITS and p > 0):
                raise ValueError(f"hardware {self.name!r}: bad peak entry ({w}, {a}) -> {p}")
        object.__setattr__(self, "_table", _peak_table(self.peaks))

    # ---- peak lookup ------------------------------------------------------------------------------
    @property
    def table(self) -> np.ndarray:
        """``table[w, a]``: ops/s of the fastest datapath holding w-bit and a-bit operands (0: none)."""
        return self._table

    def peak(self, w_bits, a_bits):
        """Peak ops/s for w-bit weights times a-bit activations (vectorized; bits rounded up)."""
        w = np.clip(np.ceil(np.asarray(w_bits, dtype=np.float64)), 1, MAX_BITS).astype(np.int64)
        a = np.clip(np.ceil(np.asarray(a_bits, dtype=np.float64)), 1, MAX_BITS).astype(np.int64)
        out = self._table[w, a]
        if np.any(out <= 0):
            raise ValueError(f"hardware {self.name!r} has no datapath for (w_bits, a_bits) = "
                             f"{(np.asarray(w_bits).max(), np.asarray(a_bits).max())}; "
                             f"it offers {sorted(self.peaks)}")
        return out

    def native(self, w_bits: int, a_bits: int) -> tuple[int, int]:
        """The datapath (w, a) a GEMM with these operand widths runs on."""
        best = None
        for (w, a), p in self.peaks.items():
            if w >= w_bits and a >= a_bits and (best is None or p > self.peaks[best]):
                best = (w, a)
        if best is None:
            raise ValueError(f"hardware {self.name!r}: no datapath holds ({w_bits}, {a_bits})")
        return best

    def describe(self) -> str:
        sym = sorted((k, p) for k, p in self.peaks.items() if k[0] == k[1])
        mixed = len(self.peaks) - len(sym)
        peaks = ", ".join(f"W{w}A{a}: {p / 1e12:.4g} T" for (w, a), p in sym) + (
            f" (+{mixed} mixed-width datapaths)" if mixed else "")
        tag = " (hypothetical)" if self.hypothetical else ""
        return (f"{self.name}{tag}: {self.bandwidth / 1e12:g} TB/s, {self.capacity / 2**30:.1f} GiB, "
                f"buffer {self.buffer / 2**20:g} MiB, {self.clock_hz / 1e9:g} GHz; peaks {peaks}")

    # ---- constructors -------------------------------------------------------------------------------
    @classmethod
    def from_mac_array(cls, name: str, *, rows: int, cols: int, mac_w_bits: int, mac_a_bits: int,
                       clock_hz: float, bandwidth: float, capacity: float, buffer: float,
                       vector_ops: float | None = None, dram_pj_per_bit: float = HBM_PJ_PER_BIT,
                       widths=(2, 3, 4, 8, 16), hypothetical: bool = True, notes: str = "") -> Hardware:
        """An accelerator from its MAC array: rows x cols MACs of ``mac_w_bits x mac_a_bits`` per cycle.

        Narrower operands pack ``floor(mac_bits / bits)`` per MAC slice (BitFusion-style fusion), wider
        ones are bit-sliced over ``ceil(bits / mac_bits)`` passes:
        ops/s(w, a) = 2 * rows * cols * clock * pack(w) * pack(a), pack(x) = floor(m/x) or 1/ceil(x/m).
        """
        for n, v in (("rows", rows), ("cols", cols), ("mac_w_bits", mac_w_bits), ("mac_a_bits", mac_a_bits)):
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"hardware {name!r}: {n} must be a positive integer, got {v!r}")

        def pack(bits: int, m: int) -> float:
            return float(m // bits) if bits <= m else 1.0 / math.ceil(bits / m)

        base = 2.0 * rows * cols * clock_hz
        peaks = {(w, a): base * pack(w, mac_w_bits) * pack(a, mac_a_bits) for w in widths for a in widths}
        return cls(name=name, peaks=peaks, bandwidth=bandwidth, capacity=capacity, buffer=buffer,
                   clock_hz=clock_hz, vector_ops=vector_ops or 2.0 * max(rows, cols) * 32 * clock_hz,
                   dram_pj_per_bit=dram_pj_per_bit, mac_rows=rows, mac_cols=cols, hypothetical=hypothetical,
                   notes=notes or f"{rows}x{cols} MAC array of {mac_w_bits}x{mac_a_bits}-bit MACs")

    @classmethod
    def from_spec(cls, spec: dict, *, where: str | None = None) -> Hardware:
        """A user-defined accelerator from a dict (or a JSON file's contents).

        Keys: ``name``; ``bandwidth_gbs`` (GB/s, 10^9 bytes/s); ``capacity_gib`` (GiB); ``buffer_mib``
        (MiB); ``clock_ghz``; and either ``mac_rows, mac_cols, mac_w_bits, mac_a_bits`` (peaks derived
        with :meth:`from_mac_array`) or ``peak_tops`` mapping ``"w,a"`` to dense TOP/s (both: the
        explicit peaks override); optional ``vector_tops``, ``dram_pj_per_bit``, ``notes``.
        A bad key or value is a ValueError naming ``where`` (the file) and the key.
        """
        where = where or "hardware spec"
        if not isinstance(spec, dict):
            raise ValueError(f"{where}: expected a JSON object of keys, got {type(spec).__name__}")
        allowed = {"name", "bandwidth_gbs", "capacity_gib", "buffer_mib", "clock_ghz", "mac_rows", "mac_cols",
                   "mac_w_bits", "mac_a_bits", "peak_tops", "vector_tops", "dram_pj_per_bit", "notes"}
        unknown = set(spec) - allowed
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        required = ("name", "bandwidth_gbs", "capacity_gib", "buffer_mib", "clock_ghz")
        missing = [k for k in required if k not in spec]
        if missing:
            raise ValueError(f"{where}: missing keys {missing}")

        def num(key, *, integer=False, zero=False, value=None):
            v = spec[key] if value is None else value
            ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
            ok = ok and (v >= 0 if zero else v > 0) and (not integer or int(v) == v)
            if not ok:
                kind = "integer" if integer else "number"
                raise ValueError(f"{where}: key {key!r} must be a {'non-negative' if zero else 'positive'} "
                                 f"{kind}, got {v!r}")
            return int(v) if integer else float(v)

        if not isinstance(spec["name"], str) or not spec["name"]:
            raise ValueError(f"{where}: key 'name' must be a non-empty string, got {spec['name']!r}")
        common = dict(bandwidth=num("bandwidth_gbs") * 1e9, capacity=num("capacity_gib") * 2**30,
                      buffer=num("buffer_mib", zero=True) * 2**20, clock_hz=num("clock_ghz") * 1e9,
                      dram_pj_per_bit=num("dram_pj_per_bit", zero=True) if "dram_pj_per_bit" in spec
                      else HBM_PJ_PER_BIT)
        vec = num("vector_tops") * 1e12 if "vector_tops" in spec else None
        peaks: dict[tuple[int, int], float] = {}
        mac = ("mac_rows", "mac_cols", "mac_w_bits", "mac_a_bits")
        if any(k in spec for k in mac):
            absent = [k for k in mac if k not in spec]
            if absent:
                raise ValueError(f"{where}: a MAC array needs all of {list(mac)}; missing {absent}")
            for k in ("mac_w_bits", "mac_a_bits"):
                if num(k, integer=True) > MAX_BITS:
                    raise ValueError(f"{where}: key {k!r} must be in 1..{MAX_BITS}, got {spec[k]!r}")
            hw = cls.from_mac_array(spec["name"], rows=num("mac_rows", integer=True),
                                    cols=num("mac_cols", integer=True), mac_w_bits=num("mac_w_bits", integer=True),
                                    mac_a_bits=num("mac_a_bits", integer=True),
                                    vector_ops=vec, notes=str(spec.get("notes", "")), **common)
            peaks.update(hw.peaks)
            vec = hw.vector_ops
        tops_table = spec.get("peak_tops", {})
        if not isinstance(tops_table, dict):
            raise ValueError(f"{where}: key 'peak_tops' must map 'w,a' to TOP/s, got {tops_table!r}")
        for key, tops in tops_table.items():
            try:
                w, a = (int(x) for x in str(key).split(","))
            except ValueError:
                raise ValueError(f"{where}: peak_tops keys are 'w,a' (e.g. '4,4'), got {key!r}") from None
            if not (1 <= w <= MAX_BITS and 1 <= a <= MAX_BITS):
                raise ValueError(f"{where}: peak_tops key {key!r}: bit widths must be in 1..{MAX_BITS}")
            peaks[(w, a)] = num(f"peak_tops[{key!r}]", value=tops) * 1e12
        if not peaks:
            raise ValueError(f"{where}: give mac_rows/mac_cols/mac_w_bits/mac_a_bits or peak_tops")
        if vec is None:
            vec = max(peaks.values()) / 16
        return cls(name=spec["name"], peaks=peaks, vector_ops=vec, hypothetical=True,
                   mac_rows=int(spec.get("mac_rows", 0)), mac_cols=int(spec.get("mac_cols", 0)),
                   notes=str(spec.get("notes", "user-defined")), **common)


def _peak_table(peaks: dict[tuple[int, int], float]) -> np.ndarray:
    t = np.zeros((MAX_BITS + 1, MAX_BITS + 1))
    for (w, a), p in peaks.items():
        # every (w', a') with w' <= w and a' <= a can run on this datapath
        sub = t[1 : w + 1, 1 : a + 1]
        np.maximum(sub, p, out=sub)
    return t


T = 1e12
_H100_PEAKS = {(16, 16): 989.4 * T, (8, 8): 1978.9 * T}

BUILTIN: dict[str, Hardware] = {h.name: h for h in [
    Hardware("A100", {(16, 16): 312 * T, (8, 8): 624 * T, (4, 4): 1248 * T}, bandwidth=2.039e12,
             capacity=80 * 2**30, buffer=40 * 2**20, clock_hz=1.41e9, vector_ops=19.5 * T,
             notes="SXM4 80GB; int4 tensor cores (mma .s4) at 2x int8"),
    Hardware("H100", dict(_H100_PEAKS), bandwidth=3.35e12, capacity=81559 * 2**20, buffer=50 * 2**20,
             clock_hz=1.98e9, vector_ops=66.9 * T,
             notes="SXM5 80GB; no int4 tensor cores: W4A4 runs on int8 (unpack in registers)"),
    Hardware("H200", dict(_H100_PEAKS), bandwidth=4.8e12, capacity=143771 * 2**20, buffer=50 * 2**20,
             clock_hz=1.98e9, vector_ops=66.9 * T,
             notes="SXM 141GB; H100 compute, HBM3e; no int4 tensor cores: W4A4 runs on int8"),
    Hardware("H200-int4", {**_H100_PEAKS, (4, 4): 2 * 1978.9 * T}, bandwidth=4.8e12,
             capacity=143771 * 2**20, buffer=50 * 2**20, clock_hz=1.98e9, vector_ops=66.9 * T,
             hypothetical=True,
             notes="hypothetical: H200 with int4 tensor cores at 2x the int8 rate (3958 TOP/s, A100's int4/int8 "
                   "ratio); W3A3 runs on them"),
    Hardware("H200-int3", {**_H100_PEAKS, (4, 4): 2 * 1978.9 * T, (3, 3): 2 * 1978.9 * T * 4 / 3},
             bandwidth=4.8e12, capacity=143771 * 2**20, buffer=50 * 2**20, clock_hz=1.98e9,
             vector_ops=66.9 * T, hypothetical=True,
             notes="hypothetical: H200 with int4 tensor cores at 2x and int3 at 2.67x the int8 rate (3958 and "
                   "5277 TOP/s; int3 = int4 x 4/3, throughput inversely proportional to operand width)"),
    Hardware.from_mac_array("acc-int3", rows=512, cols=512, mac_w_bits=3, mac_a_bits=3, clock_hz=1e9,
                            bandwidth=2e12, capacity=96 * 2**30, buffer=64 * 2**20,
                            notes="hypothetical: 512x512 native 3x3-bit MACs, wider operands bit-sliced"),
]}


def known_hardware() -> list[str]:
    return list(BUILTIN)


def get_hardware(hw) -> Hardware:
    """A :class:`Hardware` from a built-in name (case-insensitive), a JSON file path, a dict or a Hardware."""
    if isinstance(hw, Hardware):
        return hw
    if isinstance(hw, dict):
        return Hardware.from_spec(hw)
    if isinstance(hw, (str, os.PathLike)):
        key = os.fspath(hw)
        for name, h in BUILTIN.items():
            if name.lower() == key.lower():
                return h
        if key.endswith(".json") or os.path.exists(key):
            if not os.path.isfile(key):
                raise ValueError(f"hardware: no file {key!r} (a JSON file describing an accelerator)")
            from .shapes import read_json

            return Hardware.from_spec(read_json(key, what="hardware file"), where=f"hardware file {key}")
        raise ValueError(f"hardware: unknown hardware {hw!r}; known: {', '.join(BUILTIN)} "
                         f"(or a JSON file describing an accelerator)")
    raise TypeError(f"hardware: expected a name, a JSON path, a dict or a Hardware, got {type(hw).__name__}")


def with_bandwidth(hw: Hardware, bandwidth: float) -> Hardware:
    return replace(hw, bandwidth=bandwidth)
