"""The harness on kernels people ship, on this CPU (cukernels/cpu_targets.py): a few hundred cases each here,
10^4 each under ``slow``. Integer targets are bit-exact; float targets within the bound they state."""

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("compressed_tensors")
pytest.importorskip("ml_dtypes")

import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cukernels import cpu_targets, harness  # noqa: E402
from refsim.formats import awq, gptq  # noqa: E402

GOOD = ["torch_int4pack_mm", "torch_int_mm", "ort_matmul_integer", "ort_matmul_nbits"]
FORMATS = ["gptq_v1_linear", "gptq_v2_linear", "awq_linear", "compressed_tensors_linear"]
FLOAT = ["torch_int4pack_mm", "ort_matmul_nbits", *FORMATS]


@pytest.mark.parametrize("name", GOOD + FORMATS)
def test_real_kernel_meets_its_contract(name):
    report = cpu_targets.validate(name, max_examples=200, seed=13)
    assert report.cases_run == 200 and report.ok, report.format()


@pytest.mark.parametrize("name", FLOAT)
def test_every_activation_dtype_the_kernel_accepts_is_drawn(name):
    """The cases draw each dtype of DTYPES[name], hand x in it and expect the result in it."""
    seen = {}

    def spy(**kw):
        got = cpu_targets.ADAPTERS[name](**{k: v for k, v in kw.items() if k != "out"})
        seen.setdefault(str(kw["x"].dtype), set()).add(str(got.dtype))
        return got

    report = cpu_targets.validate(name, spy, max_examples=60, seed=3)
    assert report.ok, report.format()
    assert set(seen) == set(cpu_targets.DTYPES[name])
    assert all(v == {k} or v == {f"torch.{k}"} for k, v in seen.items()), seen


def test_dtypes_narrow_the_draw_and_refuse_what_the_kernel_lacks():
    report = cpu_targets.validate("gptq_v2_linear", max_examples=20, seed=4, dtypes=("bfloat16",), bits=(3,))
    assert report.ok and report.cases_run == 20
    with pytest.raises(ValueError, match=r"dtypes=\('bfloat16',\) is not allowed; allowed: .*'float16'"):
        cpu_targets.validate("ort_matmul_nbits", max_examples=5, dtypes=("bfloat16",))


def test_the_harness_catches_ort_u8s8_saturation():
    """MatMulInteger uint8 x int8 on x86 AVX2 saturates pair sums to int16 (docs/conformance.md #5)."""
    report = cpu_targets.validate("ort_matmul_integer_u8s8", max_examples=200, seed=13)
    assert not report.ok
    failing = report.failures[0].params
    again = cpu_targets.run_case(cpu_targets.ort_matmul_integer, failing)  # the reported case reproduces on its own
    assert again.mismatch_count > 0


def test_a_wrong_kernel_is_caught():
    """An adapter that drops the float zero point of int4pack is outside the bound."""
    def wrong(x, w_packed, scales_and_zeros, group_size, out=None):
        sz = cpu_targets._torch(scales_and_zeros).clone()
        sz[..., 1] = 0
        return cpu_targets.torch_int4pack_mm(x, w_packed, sz, group_size)

    assert not cpu_targets.validate("torch_int4pack_mm", wrong, max_examples=20, seed=2, shrink=False).ok


def test_gptq_v1_and_v2_kernels_are_told_apart():
    """Reading a v2 file as v1 (zero + 1) or a v1 file as v2 (zero - 1 left in) is caught: the zero offset is
    part of each contract."""
    assert not cpu_targets.validate("gptq_v2_linear", cpu_targets.autogptq_linear, max_examples=20, seed=5,
                                 shrink=False).ok
    assert not cpu_targets.validate("gptq_v1_linear", cpu_targets.gptqmodel_linear, max_examples=20, seed=5,
                                 shrink=False).ok


def test_a_kernel_that_ignores_act_order_is_caught():
    """Groups taken as k // group_size instead of g_idx[k]: right without act-order, wrong with it."""
    def no_g_idx(x, qweight, qzeros, scales, g_idx, bits, group_size, out=None):
        return cpu_targets.gptqmodel_linear(x, qweight, qzeros, scales, np.arange(len(g_idx)) // group_size, bits)

    report = cpu_targets.validate("gptq_v2_linear", no_g_idx, max_examples=60, seed=6, shrink=False)
    assert not report.ok and report.failures[0].params.act_order


def test_an_awq_kernel_without_the_interleave_is_caught():
    def plain_order(x, qweight, qzeros, scales, group_size, out=None):
        flip = np.asarray(awq.AWQ_ORDER)  # re-interleave the columns: a kernel that reads nibbles in plain order
        k, words = np.asarray(qweight).shape
        out_cols = np.arange(words * 8).reshape(-1, 8)[:, flip].reshape(-1)
        y = cpu_targets.autoawq_linear(x, qweight, qzeros, scales, group_size)
        return y[:, np.argsort(out_cols)]

    assert not cpu_targets.validate("awq_linear", plain_order, max_examples=20, seed=7, shrink=False).ok


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_accumulating_in_the_activation_dtype_is_outside_the_bound(dtype):
    """The float bound is the contract 'accumulate in float32': a kernel that rounds every partial sum to
    float16 / bfloat16 fails it (the same weights, the same products)."""
    def low_precision(x, qweight, qzeros, scales, g_idx, bits, group_size, out=None):
        xt = cpu_targets._torch(x)
        w = cpu_targets._torch(cpu_targets.gptqmodel_linear(torch.eye(xt.shape[1], dtype=xt.dtype), qweight, qzeros,
                                                             scales, g_idx, bits))  # (K, N): W^T, exact
        acc = torch.zeros(xt.shape[0], w.shape[1], dtype=xt.dtype)
        for k in range(xt.shape[1]):
            acc = acc + xt[:, k:k + 1] * w[k:k + 1, :]  # rounded to dtype at every step
        return acc

    report = cpu_targets.validate("gptq_v2_linear", low_precision, max_examples=40, seed=8, dtypes=(dtype,),
                                  shrink=False)
    assert not report.ok


@settings(max_examples=60, deadline=None)
@given(bits=st.sampled_from([3, 4]), words=st.integers(1, 4), n_words=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_transcribed_gptq_unpacking_equals_refsim_codes(bits, words, n_words, seed):
    """The transcription of AutoGPTQ's unpacking reads refsim's writer's qweight and qzeros back to the same
    codes: two independent pieces of code for one layout."""
    rng = np.random.default_rng(seed)
    k, n = 32 * words, (32 if bits == 3 else 8) * n_words
    q = rng.integers(0, 1 << bits, (n, k))
    z = rng.integers(0, 1 << bits, (n, 2))
    t = gptq.write(q, np.ones((n, 2)), z, np.arange(k) * 2 // k, bits=bits, version=2)
    codes = cpu_targets._gptq_unpack(torch.from_numpy(t["qweight"]), bits).numpy()
    zeros = cpu_targets._gptq_unpack(torch.from_numpy(np.ascontiguousarray(t["qzeros"].T)), bits).numpy().T
    assert np.array_equal(codes.astype(np.int64), q.T) and np.array_equal(zeros.astype(np.int64), z.T)


def test_compressed_tensors_decompress_ignores_weight_g_idx():
    """Pinned (docs/conformance.md #10): compressed-tensors 0.20.1 removed actorder="group" and its decompress
    leaves a ``weight_g_idx`` unread, so an act-order file decompresses with consecutive groups. This is why
    ``compressed_tensors_linear`` draws consecutive groups; the day it reads g_idx, this test fails."""
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    from refsim.formats import compressed_tensors as ctf

    q = (np.arange(8) % 16)[None, :]
    s = np.array([[1.0, 2.0]], np.float32)
    g_idx = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ctf.write(q, s, None, g_idx, bits=4).items()}
    args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=4)
    w = PackedQuantizationCompressor.decompress(state, QuantizationScheme(targets=["Linear"], weights=args))["weight"]
    assert np.array_equal(w.numpy()[0], (q[0] - 8) * s[0, np.arange(8) // 4])  # consecutive groups
    assert not np.array_equal(w.numpy()[0], (q[0] - 8) * s[0, g_idx])  # not what the file says
    with pytest.raises(ValueError, match="actorder='group' has been removed"):
        QuantizationArgs(num_bits=4, type="int", strategy="group", group_size=4, actorder="group")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_arrays_travel_bit_for_bit(dtype):
    """bfloat16 (ml_dtypes) and float16 arrays reach torch and come back with their bit patterns; the poison is
    a NaN in both."""
    dt = cpu_targets.np_dtype(dtype)
    bits = np.arange(0, 2**16, 7, dtype=np.uint16)
    a = bits.view(dt).reshape(-1, 13) if bits.size % 13 == 0 else bits[: bits.size // 13 * 13].view(dt).reshape(-1, 13)
    xp = harness.ArrayModule("torch", device="cpu")
    back = xp.get(xp.place(a, 2, 3))
    assert back.dtype == dt and np.array_equal(back.view(np.uint16), a.view(np.uint16))
    assert np.isnan(harness.poison((2, 3), dt).astype(np.float32)).all()


def test_the_harness_target_list_is_left_alone():
    assert not set(cpu_targets.CPU_TARGETS) & set(harness.TARGETS)
    with cpu_targets.registered():
        assert set(cpu_targets.CPU_TARGETS) <= set(harness.TARGETS)
    assert not set(cpu_targets.CPU_TARGETS) & set(harness.TARGETS)


def test_every_target_has_its_tables():
    for table in (cpu_targets.BITS, cpu_targets.REQUIRES, cpu_targets.ADAPTERS):
        assert set(table) == set(cpu_targets.CPU_TARGETS)
    assert set(cpu_targets.DTYPES) == set(FLOAT)
    assert set(cpu_targets.TRANSCRIPTIONS) <= set(FORMATS)
    for name in cpu_targets.TRANSCRIPTIONS:  # a transcription says so where a user reads about it
        assert "transcription" in cpu_targets.CPU_TARGETS[name].description
        assert "TRANSCRIPTION" in cpu_targets.ADAPTERS[name].__doc__


@pytest.mark.slow
@pytest.mark.parametrize("name", GOOD + FORMATS)
def test_real_kernel_campaign(name):
    report = cpu_targets.validate(name, max_examples=10_000, seed=2026, shrink=False)
    assert report.cases_run == 10_000 and report.ok, report.format()
