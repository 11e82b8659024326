"""The validation harness on CPU: numpy "kernels" that are right pass, deliberately buggy ones are caught.

The numpy kernels consume exactly the packed operands a GPU launcher hands to its kernel
(cluster-padded K, refsim layouts, colsum, padded offsets), so passing them also checks the
host logic; they are emulations of the algorithm, not tests of any CUDA kernel.
"""

import numpy as np
import pytest
from strategies import sdr_spec

from cukernels import harness, host
from refsim.layouts import unpack
from refsim.requant import float_epilogue

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")


def _lowbit_numpy(*, a_packed, w_packed, a_zero, w_colsum, cluster_offsets, scale_a, scale_w, bias, out_isums,
                  out_y, bits, bug=None):
    """The kernel's algorithm in numpy: sum a*w per padded cluster, minus z * colsum in wrapping int32."""
    host.check_lowbit_gemm_args(a_packed=a_packed, w_packed=w_packed, a_zero=a_zero, w_colsum=w_colsum,
                                cluster_offsets=cluster_offsets, scale_a=scale_a, scale_w=scale_w, bias=bias,
                                out_isums=out_isums, out_y=out_y, bits=bits)
    kp = int(cluster_offsets[-1])
    lay = host.LOWBIT_LAYOUTS[bits]
    a = unpack(a_packed, lay, kp, axis=1, signed=True).astype(np.int64)
    w = unpack(w_packed, lay, kp, axis=1, signed=True).astype(np.int64)
    offs = [int(o) for o in cluster_offsets]
    if bug == "one_cluster":
        offs = [0, kp] + [kp] * (len(offs) - 2)
    m = a.shape[0] - (1 if bug == "skip_last_row" else 0)
    for c in range(len(offs) - 1):
        raw = a[:m, offs[c]:offs[c + 1]] @ w[:, offs[c]:offs[c + 1]].T
        corr = 0 if bug == "no_zero_point" else np.int64(a_zero[c]) * w_colsum[c].astype(np.int64)
        out_isums[c, :m] = ((raw - corr + (1 << 31)) % (1 << 32) - (1 << 31)).astype(np.int32)
    if bug == "fused_epilogue":  # one float64 sum rounded once: not the documented order
        acc = (out_isums[:, :m].astype(np.float64) * scale_a[:, None, None].astype(np.float64)).sum(axis=0)
        y = (acc * scale_w.astype(np.float64)).astype(np.float32)
        out_y[:m] = y if bias is None else (y + bias).astype(np.float32)
    else:
        out_y[:m] = float_epilogue(out_isums[:, :m], scale_a, scale_w, bias=bias)


def _sdr_encode_numpy(*, x, group_size, base_bits, rounding, out_codes, out_flags, bug=None):
    """The encoder from the scalar hardware-step twin, row by row: independent of refsim.sdr_encode,
    which the harness's reference uses."""
    from refsim.sdr_scalar import sdr_encode_scalar

    rows = [sdr_encode_scalar([int(v) for v in row], group_size=group_size, base_bits=base_bits, keep=3,
                              spec=sdr_spec(rounding)) for row in np.array(x)]
    codes = np.array([r[0] for r in rows], dtype=np.int32)
    flags = np.array([r[1] for r in rows], dtype=np.int32)
    if bug == "truncate":  # drop the rounding bit: decode and razor by plain shifting
        mag = np.abs(np.array(x, dtype=np.int64))
        f = np.repeat(flags.astype(np.int64), group_size, axis=1)[:, :mag.shape[1]]
        codes = (np.sign(np.array(x, dtype=np.int64)) * (mag >> f)).astype(np.int32)
    pc, pf = host.pack_sdr(codes, flags)
    out_codes[...] = pc
    out_flags[...] = pf


def _sdr_gemm_numpy(*, a_codes, a_flags, w_codes, w_flags, k, group_size, acc_bits, out, bug=None):
    """The decompression-free MAC from the packed streams: per group, the small code products summed,
    shifted by f_a + f_w, accumulated in int64 in group order, then wrapped to acc_bits."""
    groups = -(-k // group_size)
    ac = unpack(a_codes, "sdr_code4", k, axis=1).astype(np.int64)
    af = unpack(a_flags, "sdr_flags4", groups, axis=1).astype(np.int64)
    wc = unpack(w_codes, "sdr_code4", k, axis=1).astype(np.int64)
    wf = unpack(w_flags, "sdr_flags4", groups, axis=1).astype(np.int64)
    acc = np.zeros((ac.shape[0], wc.shape[0]), dtype=np.int64)
    for j in range(groups):
        sl = slice(j * group_size, min(j * group_size + group_size, k))
        shift = af[:, j][:, None] + wf[:, j][None, :]
        if bug == "one_shift":  # the weight flag of group 0 for every group
            shift = af[:, j][:, None] + wf[:, 0][None, :]
        acc += (ac[:, sl] @ wc[:, sl].T) << shift
    if acc_bits < 64:
        half = np.int64(1) << (acc_bits - 1)
        acc = ((acc + half) & ((np.int64(1) << acc_bits) - 1)) - half
    out[...] = acc


@pytest.mark.parametrize("bits", [3, 4])
def test_correct_lowbit_kernel_has_zero_mismatches(bits):
    report = harness.validate(_lowbit_numpy, "lowbit_gemm", max_examples=40, seed=1, bits=(bits,), max_mn=24)
    assert report.ok, report.format()
    assert report.cases_run == 40


@pytest.mark.parametrize("bug", ["one_cluster", "skip_last_row", "no_zero_point", "fused_epilogue"])
def test_buggy_lowbit_kernel_is_caught(bug):
    def kernel(**kw):
        return _lowbit_numpy(**kw, bug=bug)

    report = harness.validate(kernel, "lowbit_gemm", max_examples=60, seed=2, max_mn=24, kernel_name=bug)
    assert not report.ok
    worst = report.failures[-1]
    assert worst.mismatch_count > 0 and worst.mismatches
    mm = worst.mismatches[0]
    # The report names the element, both values and their bit difference, and how to reproduce.
    assert mm.expected != mm.received or np.isnan(mm.received)
    assert int(mm.bit_difference, 16) != 0
    text = report.format()
    assert "CaseParams(" in text and "campaign seed 2" in text
    # The recorded params rebuild the failure on their own.
    again = harness.run_case(kernel, worst.params)
    assert again.mismatch_count == worst.mismatch_count


def test_skipped_row_shows_the_poison():
    def kernel(**kw):
        return _lowbit_numpy(**kw, bug="skip_last_row")

    params = harness.CaseParams("lowbit_gemm", m=3, n=2, k=0, seed=5, bits=4, cluster_sizes=(7, 40))
    res = harness.run_case(kernel, params)
    poisoned = [mm for mm in res.mismatches if mm.output == "out_isums"]
    assert poisoned and all(mm.index[1] == 2 for mm in poisoned)
    assert poisoned[0].received == int(harness.POISON_INT32)


def test_inputs_are_strided_views_with_junk_around():
    seen = {}

    def kernel(**kw):
        seen.update({k: v for k, v in kw.items() if isinstance(v, np.ndarray)})
        return _lowbit_numpy(**kw)

    params = harness.CaseParams("lowbit_gemm", m=5, n=3, k=0, seed=9, bits=3, cluster_sizes=(33,), offset=3,
                                row_pad=4)
    assert harness.run_case(kernel, params).ok
    a = seen["a_packed"]
    assert not a.flags.c_contiguous and a.strides[0] == a.shape[1] + 7
    assert a.base is not None and np.all(a.base[:, :3].view(np.uint8) == 0x5A)


def test_correct_sdr_encode_passes_and_truncation_is_caught():
    pytest.importorskip("refsim.sdr")
    ok = harness.validate(_sdr_encode_numpy, "sdr_encode", max_examples=30, seed=3, max_mn=8, max_k=80)
    assert ok.ok, ok.format()

    def truncating(**kw):
        return _sdr_encode_numpy(**kw, bug="truncate")

    bad = harness.validate(truncating, "sdr_encode", max_examples=60, seed=3, max_mn=8, max_k=80)
    assert not bad.ok


def test_float_target_bound_catches_a_wrong_zero_point():
    from refsim.quantize import dequantize

    def wxa16_numpy(*, x, w_packed, scales, zeros, group_size, bits, out, zero_bug=0):
        host.check_wxa16_args(x=x, w_packed=w_packed, scales=scales, zeros=zeros, group_size=group_size,
                              bits=bits, out=out)
        k = x.shape[1]
        w = unpack(w_packed, host.WXA16_LAYOUTS[bits], k, axis=1, signed=False)
        wd = dequantize(w, scales, zeros + zero_bug, axis=1, block_size=group_size, dtype=np.float32)
        out[...] = (x.astype(np.float32) @ wd.T).astype(np.float32)

    assert harness.validate(wxa16_numpy, "wxa16", max_examples=30, seed=4).ok
    bad = harness.validate(lambda **kw: wxa16_numpy(**kw, zero_bug=1), "wxa16", max_examples=30, seed=4)
    assert not bad.ok and "bound" in bad.failures[-1].mismatches[0].bit_difference


def test_compare_exact_reports_float_bits_and_ulps():
    e = np.array([1.0, 2.0], dtype=np.float32)
    r = np.array([1.0, np.nextafter(np.float32(2.0), np.float32(3.0))], dtype=np.float32)
    count, mms = harness.compare_exact("y", e, r)
    assert count == 1 and mms[0].index == (1,) and mms[0].ulp == 1 and mms[0].bit_difference == "0x00000001"


def test_unknown_target_and_array_module_are_refused():
    with pytest.raises(ValueError, match="target='nope'.*allowed"):
        harness.get_target("nope")
    with pytest.raises(ValueError, match="xp='jax'.*allowed"):
        harness.ArrayModule("jax")


def test_correct_sdr_gemm_passes_and_a_wrong_shift_is_caught():
    ok = harness.validate(_sdr_gemm_numpy, "sdr_gemm", max_examples=40, seed=4, max_mn=8, max_k=200)
    assert ok.ok, ok.format()
    assert ok.cases_run == 40

    def one_shift(**kw):
        return _sdr_gemm_numpy(**kw, bug="one_shift")

    bad = harness.validate(one_shift, "sdr_gemm", max_examples=60, seed=4, max_mn=8, max_k=200)
    assert not bad.ok
