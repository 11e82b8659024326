"""Host logic of the kernel launchers, in plain numpy: argument checks, padding, layouts, grids.

Everything a launcher decides before a kernel runs lives here, so that it is tested on any
machine against refsim (tests/test_cukernels_host.py); the launchers in ``cukernels.launch``
only move arrays to the device and call ``cupy.RawModule`` kernels with what these return.

Cluster-padded K (the layout of W4A4 / W3A3 operands, docs/kernels.md):
    RPTQ reorders K so that each activation cluster is contiguous: cluster c holds the
    reordered channels [off[c], off[c+1]) with off = cumsum(sizes). The GEMM kernel consumes
    K in tiles of ``TILE_K`` = 32 codes that must not straddle clusters, so each cluster is
    padded to a multiple of 32 codes:  poff[c+1] = poff[c] + ceil(sizes[c] / 32) * 32.
    Padding codes are 0 in both operands. A padded weight is 0, so the padded activation
    term contributes nothing: sum_k (a[k] - z_c) * w[k] over the padded range equals the sum
    over the real range, and the zero-point correction z_c * colsum_c uses real weights only.
"""

from __future__ import annotations

import numpy as np

from refsim.checks import as_int_array, check_choice, check_range
from refsim.layouts import get_layout, pack, unpack

TILE_K = 32  # codes per mma.sync m16n8k32 step; also one int3_planar block
GEMM_BLOCK_M = 128
GEMM_BLOCK_N = 128
GEMM_THREADS = 256  # 8 warps, each a 64 x 32 sub-tile
GEMM_ROW_ALIGN = {4: 16, 3: 4}  # bytes: the GEMM's cp.async copies 16-byte (int4) or 4-byte (int3) pieces
LOWBIT_LAYOUTS = {4: "int4_lo_first", 3: "int3_planar"}  # activation and weight codes, signed
WXA16_LAYOUTS = {4: "int4_word32", 3: "int3_planar"}  # GPTQ-style unsigned weight codes
ZERO_POINT_LIMIT = (1 << 15) - 8  # |z| bound so that a - z stays a 16-bit int_gemm operand
LN_WARPS_PER_BLOCK = 4
SDR_ENCODE_THREADS = 128
SDR_GEMM_BLOCK = (16, 16)
WXA16_WARPS_PER_BLOCK = 8
WXA16_MAX_M = 16
WXA16_CHUNK = 1024  # codes of K per shared-memory stage of x: 32 lanes x 32 codes
GEMM_GROUP_M = 8  # M tiles per group in the block order (L2 reuse of the weight tiles)
MAX_GRID_X = (1 << 31) - 1  # CUDA's gridDim.x limit (gridDim.y and z stop at 65535)
SDR_GROUPS = (16, 32)
SDR_BASE_BITS = (8, 16)


def ceil_div(a: int, b: int) -> int:
    return -(-int(a) // int(b))


def check_bits_choice(bits, allowed=(3, 4)) -> int:
    if isinstance(bits, bool) or bits not in allowed:
        raise ValueError(f"bits={bits!r} is not supported by this kernel; allowed: {', '.join(map(str, allowed))}")
    return int(bits)


def check_positive(value, *, name) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r} is not allowed; allowed: a positive integer")
    return int(value)


def check_dtype(arr, allowed, *, name):
    dt = getattr(arr, "dtype", None)  # numpy, cupy and torch arrays (torch.float32 -> float32)
    dt = np.dtype(str(dt).replace("torch.", "")) if dt is not None else np.asarray(arr).dtype
    names = [np.dtype(a).name for a in allowed]
    if dt.name not in names:
        raise TypeError(f"{name} must have dtype {' or '.join(names)}, got {dt.name}")
    return dt


def check_shape(arr, shape, *, name):
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(arr.shape)}")


# --- clusters ---------------------------------------------------------------------------------

def check_cluster_sizes(sizes) -> np.ndarray:
    s = as_int_array(sizes, name="cluster_sizes")
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"cluster_sizes must be a non-empty 1-d array, got shape {s.shape}")
    check_range(s, 1, 1 << 24, name="cluster_sizes", what="(every cluster holds at least one channel)")
    return s


def cluster_sizes_from_ids(cluster_ids) -> np.ndarray:
    """Sizes of contiguous clusters 0..C-1 from a per-channel id (as after RPTQ reordering)."""
    c = as_int_array(cluster_ids, name="cluster_ids")
    if c.ndim != 1 or c.size == 0:
        raise ValueError("cluster_ids must be a non-empty 1-d array")
    if np.any(np.diff(c) < 0) or c[0] != 0 or np.any(np.diff(c) > 1):
        raise ValueError("cluster_ids must be contiguous and ascending 0, 0, .., 1, 1, .. (reorder K first)")
    return np.bincount(c).astype(np.int64)


def cluster_offsets(sizes) -> np.ndarray:
    """off[c] = first reordered channel of cluster c; off[C] = K."""
    s = check_cluster_sizes(sizes)
    return np.concatenate([[0], np.cumsum(s)]).astype(np.int64)


def padded_cluster_offsets(sizes, tile=TILE_K) -> np.ndarray:
    """poff[c] = first padded position of cluster c; poff[C] = K' (each cluster a multiple of ``tile``)."""
    s = check_cluster_sizes(sizes)
    return np.concatenate([[0], np.cumsum(-(-s // tile) * tile)]).astype(np.int64)


def padded_source_map(sizes, tile=TILE_K) -> tuple[np.ndarray, np.ndarray]:
    """(src, cid), each (K',): reordered channel held by each padded position (-1 = padding), its cluster."""
    s = check_cluster_sizes(sizes)
    off = cluster_offsets(s)
    poff = padded_cluster_offsets(s, tile)
    kp = int(poff[-1])
    src = np.full(kp, -1, dtype=np.int32)
    cid = np.empty(kp, dtype=np.int32)
    for c in range(s.size):
        src[poff[c]:poff[c] + s[c]] = np.arange(off[c], off[c + 1], dtype=np.int32)
        cid[poff[c]:poff[c + 1]] = c
    return src, cid


def pad_clusters(codes, sizes, tile=TILE_K) -> np.ndarray:
    """Codes (R, K) in reordered order -> (R, K') with each cluster padded by zero codes."""
    c = as_int_array(codes, name="codes")
    s = check_cluster_sizes(sizes)
    if c.ndim != 2 or c.shape[1] != int(s.sum()):
        raise ValueError(f"codes must be (rows, K={int(s.sum())}) for these cluster sizes, got {c.shape}")
    src, _ = padded_source_map(s, tile)
    out = np.zeros((c.shape[0], src.size), dtype=np.int32)
    real = src >= 0
    out[:, real] = c[:, src[real]]
    return out


def packed_row_bytes(kp: int, layout) -> int:
    return get_layout(layout).nbytes(int(kp))


# --- W4A4 / W3A3 GEMM -------------------------------------------------------------------------

def pack_lowbit_operand(codes, sizes, bits) -> np.ndarray:
    """Signed ``bits``-bit codes (R, K), reordered K -> packed cluster-padded rows (R, row_bytes) uint8."""
    bits = check_bits_choice(bits)
    padded = pad_clusters(codes, sizes)
    return pack(padded, LOWBIT_LAYOUTS[bits], axis=1, signed=True)


def weight_colsum(w_codes, sizes) -> np.ndarray:
    """colsum[c, n] = sum_{k in cluster c} w[n, k] (int32): the activation zero-point correction term."""
    w = as_int_array(w_codes, name="w_codes")
    off = cluster_offsets(sizes)
    if w.ndim != 2 or w.shape[1] != int(off[-1]):
        raise ValueError(f"w_codes must be (N, K={int(off[-1])}), got {w.shape}")
    return np.stack([w[:, off[c]:off[c + 1]].sum(axis=1) for c in range(off.size - 1)]).astype(np.int32)


def prepare_lowbit_weights(w_codes, sizes, bits) -> dict:
    """Static weight preparation: packed (N, row_bytes), colsum (C, N) int32, padded offsets (C+1,) int32."""
    bits = check_bits_choice(bits)
    w = as_int_array(w_codes, name="w_codes")
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    check_range(w, lo, hi, name="w_codes", what=f"(signed {bits}-bit weight codes)")
    return {
        "w_packed": pack_lowbit_operand(w, sizes, bits),
        "w_colsum": weight_colsum(w, sizes),
        "cluster_offsets": padded_cluster_offsets(sizes).astype(np.int32),
    }


# --- W4A4 / W3A3 weights in fragment order (issue 15, item 4; not yet used by the kernel) ------
#
# PTX ISA v9.2, 9.7.14.5 "Matrix Fragments for mma.m16n8k32", .s8 B operand (32 x 8, col): lane
# l = 4 g + t holds in register r (0, 1), byte b (0..3) the element at k = 16 r + 4 t + b, n = g.
# A warp of lowbit_gemm.cu covers 32 columns (n-tiles j = 0..3) per K tile of 32 codes, so each
# lane needs exactly 32 codes per K tile: code q = 8 j + 4 r + b of its sequence is
#     w[n = 32 G + 8 j + g, k = 32 kt + 16 r + 4 t + b]          (G: the warp's 32-column group)
# packed with the operand's own layout (int4_lo_first: 16 bytes, one cp.async chunk; int3_planar:
# 12 bytes). Then the kernel's own unpackers give the fragments directly: word j of an int4 chunk
# through unpack8_int4 is (b0, b1) of n-tile j; for int3 planar3_to_int4x8 on the 16 low bits
# (w0 >> 16 j for j < 2, w1 >> 16 (j - 2) otherwise) and byte j of w2, then unpack8_int4, is (b0, b1)
# of n-tile j (tests/test_cukernels_fragments.py emulates this against the PTX layout).
# Array order (G, kt, lane, bytes): a warp's chunk for one K tile is 32 * FRAG_LANE_BYTES contiguous
# bytes (512 or 384, both multiples of 16), at byte ((G * KT + kt) * 32 + lane) * FRAG_LANE_BYTES.
FRAG_WARP_N = 32  # columns per warp and K tile: 4 m16n8k32 n-tiles
FRAG_LANE_BYTES = {4: 16, 3: 12}  # 32 codes per lane and K tile


def prepare_lowbit_weight_fragments(w_codes, sizes, bits) -> np.ndarray:
    """Signed weight codes (N, K), reordered K -> uint8 (ceil(N / 32), K' / 32, 32, FRAG_LANE_BYTES[bits]):
    cluster-padded (``pad_clusters``), columns past N zero, each lane's 32 codes of a K tile in fragment
    order q = 8 j + 4 r + b <- w[32 G + 8 j + g, 32 kt + 16 r + 4 t + b] (lane = 4 g + t; see above)."""
    bits = check_bits_choice(bits)
    w = pad_clusters(w_codes, sizes)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    check_range(w, lo, hi, name="w_codes", what=f"(signed {bits}-bit weight codes)")
    n, kp = w.shape
    groups = ceil_div(n, FRAG_WARP_N)
    full = np.zeros((groups * FRAG_WARP_N, kp), dtype=np.int32)
    full[:n] = w
    # axes (G, j, g, kt, r, t, b) -> (G, kt, g, t, j, r, b): lane = 4 g + t, q = 8 j + 4 r + b
    seq = full.reshape(groups, 4, 8, kp // TILE_K, 2, 4, 4).transpose(0, 3, 2, 5, 1, 4, 6)
    seq = seq.reshape(groups, kp // TILE_K, 32, 32)
    return pack(seq, LOWBIT_LAYOUTS[bits], axis=-1, signed=True)


def unprepare_lowbit_weight_fragments(frag, n, bits) -> np.ndarray:
    """The exact inverse of ``prepare_lowbit_weight_fragments``: the cluster-padded codes (N, K') int32."""
    bits = check_bits_choice(bits)
    n = check_positive(n, name="n")
    frag = np.asarray(frag)
    check_dtype(frag, ("uint8",), name="frag")
    groups = ceil_div(n, FRAG_WARP_N)
    if frag.ndim != 4 or frag.shape[0] != groups or frag.shape[2:] != (32, FRAG_LANE_BYTES[bits]):
        raise ValueError(f"frag must be ({groups}, K'/32, 32, {FRAG_LANE_BYTES[bits]}) for n={n}, bits={bits}; "
                         f"got {frag.shape}")
    seq = unpack(frag, LOWBIT_LAYOUTS[bits], 32, axis=-1, signed=True).astype(np.int32)
    kt = frag.shape[1]
    # axes (G, kt, g, t, j, r, b) -> (G, j, g, kt, r, t, b)
    full = seq.reshape(groups, kt, 8, 4, 4, 2, 4).transpose(0, 4, 2, 1, 5, 3, 6).reshape(groups * 32, kt * TILE_K)
    return np.ascontiguousarray(full[:n])


def _linear_grid(tiles: int, what: str) -> int:
    if tiles > MAX_GRID_X:
        raise ValueError(f"{what} needs {tiles} thread blocks; allowed: at most {MAX_GRID_X} (CUDA gridDim.x)")
    return tiles


def lowbit_gemm_grid(m: int, n: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(grid, block): one block of GEMM_THREADS per GEMM_BLOCK_M x GEMM_BLOCK_N output tile, all tiles on
    gridDim.x (up to 2^31 - 1; gridDim.y would stop M at 65535 * 64 = 4,194,240 rows).
    Block t computes the tile ``lowbit_gemm_tile(t, m, n)``."""
    m, n = check_positive(m, name="M"), check_positive(n, name="N")
    tiles = ceil_div(m, GEMM_BLOCK_M) * ceil_div(n, GEMM_BLOCK_N)
    return (_linear_grid(tiles, f"a {m} x {n} GEMM"), 1, 1), (GEMM_THREADS, 1, 1)


def lowbit_gemm_tile(t: int, m: int, n: int) -> tuple[int, int]:
    """(tile_m, tile_n) of block t: the kernel's grouped order (Triton's "grouped ordering"): blocks
    walk GEMM_GROUP_M tile rows column by column, so that the blocks resident at once share weight
    tiles and activation tiles in L2. The twin of ``gemm_tile`` in lowbit_gemm.cu (int arithmetic)."""
    tiles_m, tiles_n = ceil_div(m, GEMM_BLOCK_M), ceil_div(n, GEMM_BLOCK_N)
    per_group = GEMM_GROUP_M * tiles_n
    first = (t // per_group) * GEMM_GROUP_M
    rows = min(tiles_m - first, GEMM_GROUP_M)
    return first + (t % per_group) % rows, (t % per_group) // rows


def check_lowbit_gemm_args(*, a_packed, w_packed, a_zero, w_colsum, cluster_offsets, scale_a, scale_w, bias,
                           out_isums, out_y, bits):
    """Validate a W{bits}A{bits} GEMM call before launch; returns (M, N, K', C). Works on any array type."""
    bits = check_bits_choice(bits)
    for name, arr, dts in (("a_packed", a_packed, ["uint8"]), ("w_packed", w_packed, ["uint8"]),
                           ("a_zero", a_zero, ["int32"]), ("w_colsum", w_colsum, ["int32"]),
                           ("cluster_offsets", cluster_offsets, ["int32"]), ("scale_a", scale_a, ["float32"]),
                           ("scale_w", scale_w, ["float32"]), ("out_isums", out_isums, ["int32"]),
                           ("out_y", out_y, ["float32"])):
        check_dtype(arr, dts, name=name)
    if bias is not None:
        check_dtype(bias, ["float32"], name="bias")
    if a_packed.ndim != 2 or w_packed.ndim != 2:
        raise ValueError("a_packed and w_packed must be 2-d (rows, packed bytes)")
    offs = np.asarray(_to_host(cluster_offsets)).astype(np.int64)
    if offs.ndim != 1 or offs.size < 2 or offs[0] != 0 or np.any(np.diff(offs) <= 0) or np.any(offs % TILE_K):
        raise ValueError(f"cluster_offsets must be ascending from 0 with every cluster a positive multiple of "
                         f"{TILE_K} codes (cluster-padded K; see cukernels.host.padded_cluster_offsets)")
    c, kp = offs.size - 1, int(offs[-1])
    m, n = a_packed.shape[0], w_packed.shape[0]
    row = packed_row_bytes(kp, LOWBIT_LAYOUTS[bits])
    check_shape(a_packed, (m, row), name="a_packed")
    check_shape(w_packed, (n, row), name="w_packed")
    check_shape(a_zero, (c,), name="a_zero")
    check_shape(w_colsum, (c, n), name="w_colsum")
    check_shape(scale_a, (c,), name="scale_a")
    check_shape(scale_w, (n,), name="scale_w")
    if bias is not None:
        check_shape(bias, (n,), name="bias")
    check_shape(out_isums, (c, m, n), name="out_isums")
    check_shape(out_y, (m, n), name="out_y")
    if m < 1 or n < 1:
        raise ValueError(f"M={m} and N={n} must be positive")
    z = np.asarray(_to_host(a_zero)).astype(np.int64)
    check_range(z, -ZERO_POINT_LIMIT, ZERO_POINT_LIMIT, name="a_zero", what="(zero points this kernel supports)")
    return m, n, kp, c


def _to_host(arr):
    """numpy view of a small array of any kind (numpy, cupy, torch) for host-side checks."""
    if hasattr(arr, "get") and not isinstance(arr, np.ndarray):  # cupy
        return arr.get()
    if hasattr(arr, "detach"):  # torch
        return arr.detach().cpu().numpy()
    return np.asarray(arr)


# --- fused LayerNorm + reorder + quantize + pack ----------------------------------------------

LN_COMPUTE_DTYPES = ("float16", "float32")


def ln_quant_plan(perm, sizes) -> dict:
    """What the fused kernel needs: for each padded output position, the original channel and cluster.

    perm: reordered position j takes original channel perm[j] (new[j] = old[perm[j]], DESIGN.md).
    Returns src_index (K',) int32 (original channel, -1 for padding), cluster_of (K',) int32,
    cluster_offsets (C+1,) int32 (padded).
    """
    p = as_int_array(perm, name="perm")
    s = check_cluster_sizes(sizes)
    k = int(s.sum())
    if p.shape != (k,) or not np.array_equal(np.sort(p), np.arange(k)):
        raise ValueError(f"perm must be a permutation of 0..{k - 1} (one entry per channel)")
    src, cid = padded_source_map(s)
    orig = np.where(src >= 0, p[np.maximum(src, 0)], -1).astype(np.int32)
    return {"src_index": orig, "cluster_of": cid, "cluster_offsets": padded_cluster_offsets(s).astype(np.int32)}


def check_ln_quant_params(scale, zero, compute_dtype) -> None:
    """Quantization parameters the fused kernel computes with exactly as refsim.quantize does.

    The kernel converts each scale to the compute dtype (fp16 under the rptq preset): a scale
    that becomes 0 or infinity there (below about 2^-25 or above 65504 in fp16) would make codes
    silently, so it is refused as refsim.quantize refuses it. Zero points are limited to
    |z| <= ZERO_POINT_LIMIT: the kernel clamps x / s to +-2^20 before adding z, which saturates
    exactly as the unclamped value would only while |z| < 2^20 - 2^bits.
    """
    s = np.asarray(_to_host(scale)).astype(np.float64)
    bad = ~np.isfinite(s) | (s <= 0)
    cdt = np.float16 if compute_dtype == "float16" else np.float32
    with np.errstate(over="ignore", under="ignore"):
        sc = s.astype(np.float32).astype(cdt)
    bad |= ~np.isfinite(sc) | (sc <= 0)
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        raise ValueError(f"scale[{i}] = {float(s[i])!r} is not allowed; allowed: finite and > 0 and representable as "
                         f"a positive finite {np.dtype(cdt).name} (compute_dtype={compute_dtype!r})")
    z = np.asarray(_to_host(zero)).astype(np.int64)
    check_range(z, -ZERO_POINT_LIMIT, ZERO_POINT_LIMIT, name="zero", what="(zero points this kernel supports)")


def check_output_alignment(ptr: int, store_bytes: int, *, name) -> None:
    """A user output buffer must start at a multiple of the kernel's store width (32-bit words for the
    packed codes): an offset view would fault on the stores."""
    if store_bytes > 1 and int(ptr) % store_bytes:
        raise ValueError(f"{name} starts at byte address {int(ptr)}, not a multiple of {store_bytes}; allowed: a "
                         f"buffer aligned to {store_bytes} bytes (the kernel stores {8 * store_bytes}-bit words)")


def ln_quant_grid(m: int):
    m = check_positive(m, name="M")
    return (ceil_div(m, LN_WARPS_PER_BLOCK), 1, 1), (32 * LN_WARPS_PER_BLOCK, 1, 1)


def check_spec_for_ln_kernel(spec) -> str:
    """The fused kernel implements the rptq dataflow; it accepts a spec only if every other knob matches."""
    from refsim.spec import preset

    base = preset("rptq")
    for field in ("scale_op", "rounding", "zero_point_stage", "signed", "narrow", "saturation", "nonfinite"):
        if getattr(spec, field) != getattr(base, field):
            raise ValueError(f"spec.{field}={getattr(spec, field)!r} is not supported by the fused LayerNorm "
                             f"kernel; allowed: {getattr(base, field)!r} (the rptq preset)")
    return spec.compute_dtype.value


# --- SDR --------------------------------------------------------------------------------------

def pack_sdr(codes, flags, *, axis=-1) -> tuple[np.ndarray, np.ndarray]:
    """(codes, flags) of refsim.sdr_encode -> the kernels' packed nibble streams: refsim's SDR layouts
    ``sdr_code4`` (4-bit sign-magnitude codes, bit 3 = sign) and ``sdr_flags4`` (4-bit shifts), first
    element in the low nibble of each byte, a ragged byte zero-padded."""
    return pack(codes, "sdr_code4", axis=axis), pack(flags, "sdr_flags4", axis=axis)


def check_sdr_args(group_size, base_bits, rounding):
    if group_size not in SDR_GROUPS:
        raise ValueError(f"group_size={group_size!r} is not supported by the SDR kernels; allowed: 16, 32")
    if base_bits not in SDR_BASE_BITS:
        raise ValueError(f"base_bits={base_bits!r} is not supported; allowed: 8 (int8), 16 (int16)")
    check_choice(getattr(rounding, "value", rounding), ("half_up", "ties_even"), name="rounding")


def sdr_encode_grid(rows: int, k: int, group_size: int):
    """One thread per (row, pair of groups): a pair shares one flag byte, so no two threads write one byte."""
    pairs = ceil_div(ceil_div(check_positive(k, name="K"), group_size), 2)
    return (ceil_div(check_positive(rows, name="rows") * pairs, SDR_ENCODE_THREADS), 1, 1), (SDR_ENCODE_THREADS, 1, 1)


def sdr_gemm_grid(m: int, n: int):
    """One (16, 16) block per output tile, all tiles on gridDim.x (gridDim.y would stop M at 1,048,560);
    block t covers rows 16 (t // tiles_n) .., columns 16 (t % tiles_n) .. (``sdr_gemm_tile``)."""
    bx, by = SDR_GEMM_BLOCK
    m, n = check_positive(m, name="M"), check_positive(n, name="N")
    tiles = ceil_div(m, by) * ceil_div(n, bx)
    return (_linear_grid(tiles, f"an SDR GEMM of {m} x {n}"), 1, 1), (bx, by, 1)


def sdr_gemm_tile(t: int, n: int) -> tuple[int, int]:
    """(tile_m, tile_n) of block t in sdr.cu: row-major over tiles."""
    tiles_n = ceil_div(n, SDR_GEMM_BLOCK[0])
    return t // tiles_n, t % tiles_n


# --- W4A16 / W3A16 ----------------------------------------------------------------------------

def wxa16_padded_k(k: int) -> int:
    return ceil_div(check_positive(k, name="K"), TILE_K) * TILE_K


def prepare_wxa16_weights(w_codes, bits) -> np.ndarray:
    """Unsigned GPTQ codes (N, K) -> packed rows (N, row_bytes) of K padded to a multiple of 32 with code 0."""
    bits = check_bits_choice(bits)
    w = as_int_array(w_codes, name="w_codes")
    check_range(w, 0, (1 << bits) - 1, name="w_codes", what=f"(unsigned {bits}-bit GPTQ codes)")
    if w.ndim != 2:
        raise ValueError(f"w_codes must be 2-d (N, K), got shape {w.shape}")
    kp = wxa16_padded_k(w.shape[1])
    padded = np.zeros((w.shape[0], kp), dtype=np.int64)
    padded[:, :w.shape[1]] = w
    return pack(padded, WXA16_LAYOUTS[bits], axis=1, signed=False)


def check_wxa16_args(*, x, w_packed, scales, zeros, group_size, bits, out):
    bits = check_bits_choice(bits)
    check_dtype(x, ["float16"], name="x")
    check_dtype(w_packed, ["uint8"], name="w_packed")
    check_dtype(scales, ["float16"], name="scales")
    check_dtype(zeros, ["int32"], name="zeros")
    check_dtype(out, ["float32"], name="out")
    if x.ndim != 2:
        raise ValueError(f"x must be 2-d (M, K), got shape {tuple(x.shape)}")
    m, k = x.shape
    if not 1 <= m <= WXA16_MAX_M:
        raise ValueError(f"M={m} is not supported by the W{bits}A16 kernel; allowed: 1..{WXA16_MAX_M} (GEMV regime)")
    g = check_positive(group_size, name="group_size")
    if g % TILE_K:
        raise ValueError(f"group_size={group_size} is not supported; allowed: a multiple of {TILE_K}")
    n = w_packed.shape[0]
    groups = ceil_div(k, g)
    check_shape(w_packed, (n, packed_row_bytes(wxa16_padded_k(k), WXA16_LAYOUTS[bits])), name="w_packed")
    check_shape(scales, (n, groups), name="scales")
    check_shape(zeros, (n, groups), name="zeros")
    check_shape(out, (m, n), name="out")
    return m, n, k, groups


def check_wxa16_zeros(zeros, bits) -> np.ndarray:
    """GPTQ zero points 0..2^bits - 1, as the kernel reads them: one byte per group (compact)."""
    z = np.asarray(_to_host(zeros))
    check_range(z, 0, (1 << bits) - 1, name="zeros", what=f"(unsigned {bits}-bit GPTQ zero points)")
    return z.astype(np.uint8)


def wxa16_columns_per_warp(m: int) -> int:
    """Output columns per warp of the (BITS, M) kernel: WX_CPW_OF(M) in wxa16.cu."""
    return 4 if m <= 4 else 2


def wxa16_grid(n: int, m: int = 1):
    """(grid, block, shared bytes) of the W{b}A16 kernel for M = m: WXA16_WARPS_PER_BLOCK warps of
    ``wxa16_columns_per_warp(m)`` columns per block; x staged as float32, m x WXA16_CHUNK per block."""
    n = check_positive(n, name="N")
    if not 1 <= m <= WXA16_MAX_M:
        raise ValueError(f"M={m} is not supported; allowed: 1..{WXA16_MAX_M}")
    cols = WXA16_WARPS_PER_BLOCK * wxa16_columns_per_warp(m)
    return (ceil_div(n, cols), 1, 1), (32 * WXA16_WARPS_PER_BLOCK, 1, 1), 4 * m * WXA16_CHUNK


def wxa16_swizzle(p):
    """Float index in shared memory of chunk position p (0..WXA16_CHUNK-1): the 16-byte unit
    (p >> 2) & 7 of each 32-float lane segment XORed with the segment's (p >> 5) & 7
    (wx_swizzle in wxa16.cu). Lane l reads unit u of its segment at 32 l + 4 (u ^ (l & 7))."""
    p = np.asarray(p)
    return (p & ~31) | ((((p >> 2) & 7) ^ ((p >> 5) & 7)) << 2) | (p & 3)


def wxa16_lane_positions(lane: int, bits: int) -> np.ndarray:
    """Chunk positions of the 32 codes lane ``lane`` dequantizes, in the kernel's pair order:
    int4: word wi, nibble pair j -> codes 8 wi + j and 8 wi + j + 4 (wx_magic_pair, shift 4 j);
    int3: pair 4 u + e -> codes 4 u + e and 16 + 4 u + e (wx_planar3_pair). Both are 32 l + code."""
    if bits == 4:
        order = [c for wi in range(4) for j in range(4) for c in (8 * wi + j, 8 * wi + j + 4)]
    else:
        order = [c for u in range(4) for e in range(4) for c in (4 * u + e, 16 + 4 * u + e)]
    return 32 * lane + np.array(order)


def wxa16_magic_pair(word: int, shift: int) -> np.ndarray:
    """wx_magic_pair: the two fp16 values of ((word >> shift) & 0x000F000F) | 0x64006400 (low half first)."""
    v = ((int(word) >> shift) & 0x000F000F) | 0x64006400
    return np.array([v & 0xFFFF, v >> 16], dtype=np.uint16).view(np.float16)


def wxa16_planar3_pair(w0: int, w1: int, w2: int, j: int) -> np.ndarray:
    """wx_planar3_pair: codes j and j + 16 of an int3_planar block as fp16 1024 + q (low half first)."""
    lo = (int(w0) >> (2 * j)) & 3
    hi = ((int(w1) >> (2 * j)) & 3) << 16
    top = ((int(w2) >> j) & 0x00010001) << 2
    v = lo | hi | top | 0x64006400
    return np.array([v & 0xFFFF, v >> 16], dtype=np.uint16).view(np.float16)


# --- device row layout ------------------------------------------------------------------------

def plan_rows(shape, strides, itemsize, ptr, align) -> tuple[bool, int]:
    """(needs_copy, row stride in elements) for a 2-d input handed to a kernel that loads ``align`` bytes.

    A kernel reads row r at ptr + r * stride with unit stride along the row; it can take a
    strided, offset view as it is when the elements of a row are adjacent and both the start
    and the row stride are multiples of ``align`` bytes. Otherwise the launcher copies the
    input into a fresh contiguous array (whose row bytes the layouts keep aligned).
    """
    if len(shape) != 2:
        raise ValueError(f"expected a 2-d array, got shape {tuple(shape)}")
    rows, cols = shape
    unit = cols <= 1 or strides[1] == itemsize
    row_ok = rows <= 1 or (strides[0] > 0 and strides[0] % itemsize == 0 and strides[0] % align == 0)
    if unit and row_ok and ptr % align == 0:
        return False, (strides[0] // itemsize if rows > 1 else cols)
    return True, cols
