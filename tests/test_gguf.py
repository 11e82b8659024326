"""refsim.formats.gguf: GGUF blocks as integer codes; dequantization equal to the gguf package's, bit for bit."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refsim.formats import gguf as G
from refsim.layouts import unpack

gguf = pytest.importorskip("gguf")
QT = gguf.GGMLQuantizationType


def bits(a):
    a = np.ascontiguousarray(a, dtype=np.float32)
    return a.view(np.uint32)


def reference(raw, qtype):
    """The gguf package's own dequantizer (what transformers uses to load a GGUF)."""
    return np.asarray(gguf.quants.dequantize(np.asarray(raw), QT[qtype]), dtype=np.float32)


def ours(raw, qtype, cols):
    if qtype == "Q4_1":
        return G.dequantize_blocks(*G.decode_q4_1(raw, cols))
    return G.dequantize_blocks(*G.decode_q8_0(raw, cols))


def scalar(raw, qtype, cols):
    rows = [G.dequantize_row_scalar(qtype, r.tobytes(), cols) for r in np.asarray(raw)]
    return np.array([[float(v) for v in row] for row in rows], dtype=np.float32)


def assert_three_agree(raw, qtype, cols):
    ref = reference(raw, qtype).reshape(raw.shape[0], cols)
    fast = ours(raw, qtype, cols)
    assert fast.dtype == np.float32 and fast.shape == ref.shape
    assert np.array_equal(bits(fast), bits(ref))
    assert np.array_equal(bits(scalar(raw, qtype, cols)), bits(ref))


def f16_bytes(values):
    return np.asarray(values, dtype="<f2").view(np.uint8).reshape(-1, 2)


def q4_1_rows(d, m, codes):
    """Raw Q4_1 rows (R, nb*20) from d, m (R, nb) fp16 and codes (R, nb, 32) in 0..15."""
    d, m, q = np.asarray(d, np.float16), np.asarray(m, np.float16), np.asarray(codes, np.uint8)
    r, nb = d.shape
    qs = q[..., :16] | (q[..., 16:] << np.uint8(4))
    blocks = np.concatenate([f16_bytes(d.ravel()).reshape(r, nb, 2), f16_bytes(m.ravel()).reshape(r, nb, 2), qs],
                            axis=-1)
    return blocks.reshape(r, nb * 20)


def q8_0_rows(d, codes):
    d, q = np.asarray(d, np.float16), np.asarray(codes, np.int8)
    r, nb = d.shape
    blocks = np.concatenate([f16_bytes(d.ravel()).reshape(r, nb, 2), q.view(np.uint8)], axis=-1)
    return blocks.reshape(r, nb * 34)


# ------------------------------------------------------------------ the block layout

def test_nibble_order_and_layout():
    codes = np.arange(32, dtype=np.uint8) % 16
    codes = np.stack([codes, codes[::-1]])  # (2, 32)
    raw = q4_1_rows(np.ones((2, 1)), np.zeros((2, 1)), codes[:, None, :])
    got, d, m = G.decode_q4_1(raw, 32)
    assert np.array_equal(got, codes)
    # byte 4 + j holds code j (low nibble) and code j + 16 (high nibble)
    assert raw[0, 4] == (codes[0, 0] | codes[0, 16] << 4)
    # the same codes through refsim's generic bit-layout reader
    assert np.array_equal(unpack(raw[:, 4:20], G.GGUF_Q4_NIBBLES, 32), codes.astype(np.int32))


@given(st.integers(1, 3), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_layout_unpack_equals_decoder(r, nb, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 16, (r, nb, 32))
    raw = q4_1_rows(rng.standard_normal((r, nb)), rng.standard_normal((r, nb)), codes)
    got, _, _ = G.decode_q4_1(raw, nb * 32)
    qs = raw.reshape(r, nb, 20)[..., 4:].reshape(r, nb * 16)
    assert np.array_equal(unpack(qs, G.GGUF_Q4_NIBBLES, nb * 32), got.astype(np.int32))
    assert np.array_equal(got, codes.reshape(r, -1))


# ------------------------------------------------------------------ adversarial blocks, bit patterns

finite_f16_bits = st.integers(0, 0xFFFF).filter(lambda b: (b >> 10) & 0x1F != 0x1F)


def f16_from_bits(b):
    return np.array(b, dtype=np.uint16).view(np.float16)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(finite_f16_bits, finite_f16_bits), min_size=1, max_size=4),
       st.integers(0, 2**32 - 1))
def test_q4_1_any_fp16_params(params, seed):
    """Every finite fp16 d and m (subnormal, zero, -0, 65504): ours == scalar == gguf."""
    rng = np.random.default_rng(seed)
    d = f16_from_bits([p[0] for p in params])[None]
    m = f16_from_bits([p[1] for p in params])[None]
    codes = rng.integers(0, 16, (1, len(params), 32))
    assert_three_agree(q4_1_rows(d, m, codes), "Q4_1", 32 * len(params))


@settings(max_examples=60, deadline=None)
@given(st.lists(finite_f16_bits, min_size=1, max_size=4), st.integers(0, 2**32 - 1))
def test_q8_0_any_fp16_scale(ds, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(-128, 128, (1, len(ds), 32))
    assert_three_agree(q8_0_rows(f16_from_bits(ds)[None], codes), "Q8_0", 32 * len(ds))


EXTREMES = [0.0, -0.0, 2.0**-24, -(2.0**-24), 2.0**-14 - 2.0**-24, 2.0**-14, 1.0, 65504.0, -65504.0]


def test_q4_1_extremes_exhaustive_codes():
    """Every code 0..15 against every pair of extreme fp16 d, m (subnormal, smallest normal, max)."""
    pairs = [(d, m) for d in EXTREMES for m in EXTREMES]
    d = np.array([[p[0] for p in pairs]], np.float16)
    m = np.array([[p[1] for p in pairs]], np.float16)
    codes = np.tile(np.arange(32) % 16, (1, len(pairs), 1))
    assert_three_agree(q4_1_rows(d, m, codes), "Q4_1", 32 * len(pairs))
    codes8 = np.tile(np.r_[np.arange(-128, -112), np.arange(112, 128)], (1, len(EXTREMES), 1))
    assert_three_agree(q8_0_rows(np.array([EXTREMES], np.float16), codes8), "Q8_0", 32 * len(EXTREMES))


def test_q4_1_ties_round_to_even():
    """d * q + m exactly halfway between two float32 values: both ways of breaking the tie occur."""
    # d = 2^15, q = 15: d*q = 491520 (float32 ulp 2^-5 there); m = 2^-6 and 3 * 2^-6 are half-ulp sums
    d = np.array([[32768.0, 32768.0, 1.0, 1.0]], np.float16)
    m = np.array([[2.0**-6, 3 * 2.0**-6, 2.0**-24, 3 * 2.0**-24]], np.float16)
    codes = np.full((1, 4, 32), 15)
    codes[0, 2:] = 1  # 1 + 2^-24 and 1 + 3 * 2^-24: halfway at ulp(1) = 2^-23
    raw = q4_1_rows(d, m, codes)
    w = ours(raw, "Q4_1", 128).reshape(4, 32)[:, 0]
    for k in range(4):
        exact = Fraction(float(d[0, k])) * int(codes[0, k, 0]) + Fraction(float(m[0, k]))
        got = Fraction(float(w[k]))
        neighbours = {Fraction(float(np.nextafter(w[k], np.float32(s)))) for s in (-np.inf, np.inf)}
        assert 2 * exact - got in neighbours  # a true tie: exact lies halfway between w and a neighbour
        assert np.float32(w[k]).view(np.uint32) % 2 == 0  # broken to the even one
    assert_three_agree(raw, "Q4_1", 128)


def test_non_finite_parameters_are_refused():
    raw = q4_1_rows(np.array([[np.inf]]), np.zeros((1, 1)), np.zeros((1, 1, 32)))
    with pytest.raises(ValueError, match="Inf or NaN"):
        G.decode_q4_1(raw, 32)
    raw = q8_0_rows(np.array([[np.nan]]), np.zeros((1, 1, 32)))
    with pytest.raises(ValueError, match="Inf or NaN"):
        G.decode_q8_0(raw, 32)
    with pytest.raises(ValueError, match="Inf or NaN"):
        G.dequantize_row_scalar("Q8_0", raw[0].tobytes(), 32)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="multiple of the Q4_1 block size"):
        G.decode_q4_1(np.zeros((1, 20), np.uint8), 30)
    with pytest.raises(ValueError, match="hold 40 bytes, got 20"):
        G.decode_q4_1(np.zeros((1, 20), np.uint8), 64)
    with pytest.raises(ValueError, match="2-D uint8"):
        G.decode_q8_0(np.zeros((1, 34), np.int8), 32)
    with pytest.raises(ValueError, match="qtype='Q4_K' is not known; allowed: Q4_1, Q8_0, F16, F32"):
        G.dequantize_row_scalar("Q4_K", b"", 0)


# ------------------------------------------------------------------ files the gguf package writes

def adversarial_weights(rng, rows, cols):
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    w[0] = 0.0  # all-zero blocks: d = 0
    w[1] = 0.37  # constant blocks: max == min
    w[2, :32] = rng.uniform(-1e-6, 1e-6, 32)  # d subnormal in fp16
    w[3, :32] = rng.uniform(-60000, 60000, 32)  # extreme m
    w[3, 32:64] = np.linspace(-65504, -65000, 32)
    w[4] = np.repeat(np.arange(cols // 16) * 0.5, 16)[:cols]  # values on a grid: exact quantization ties
    return w


def write_gguf(path, tensors):
    w = gguf.GGUFWriter(str(path), "llama")
    for name, (qtype, data) in tensors.items():
        q = gguf.quants.quantize(data, QT[qtype])
        w.add_tensor(name, q, raw_dtype=QT[qtype])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("seed", [0, 1])
def test_written_file_equals_gguf_dequantizer(tmp_path, seed):
    rng = np.random.default_rng(seed)
    tensors = {
        "blk.0.attn_q.weight": ("Q4_1", adversarial_weights(rng, 8, 96)),
        "token_embd.weight": ("Q8_0", adversarial_weights(rng, 6, 64)),
        "blk.0.attn_norm.weight": ("F32", rng.standard_normal(64).astype(np.float32)),
        "blk.0.f16.weight": ("F16", rng.standard_normal((3, 32)).astype(np.float32)),
    }
    path = tmp_path / "t.gguf"
    write_gguf(path, tensors)
    got = G.read_gguf(path)
    reader = gguf.GGUFReader(str(path))
    assert set(got) == set(tensors)
    for t in reader.tensors:
        bt = got[t.name]
        assert bt.qtype == tensors[t.name][0]
        ref = reference(t.data, bt.qtype).reshape(bt.shape)
        assert np.array_equal(bits(bt.dequantize()), bits(ref)), t.name
        if bt.qtype in ("Q4_1", "Q8_0"):
            raw = np.asarray(t.data).reshape(bt.shape[0], -1)
            assert np.array_equal(bits(scalar(raw, bt.qtype, bt.shape[1])), bits(ref)), t.name
            assert bt.scale.dtype == np.float16 and bt.scale.shape == (bt.shape[0], bt.shape[1] // 32)
    q = got["blk.0.attn_q.weight"]
    assert q.codes.dtype == np.uint8 and int(q.codes.max()) <= 15 and q.offset.dtype == np.float16
    assert got["token_embd.weight"].codes.dtype == np.int8
    assert got["blk.0.attn_norm.weight"].shape == (1, 64)


def test_unknown_tensor_name(tmp_path):
    path = tmp_path / "t.gguf"
    write_gguf(path, {"a": ("F32", np.zeros(32, np.float32))})
    with pytest.raises(ValueError, match="has no tensor 'b'"):
        G.read_gguf(path, ["b"])


def test_llama_unpermute_rows_is_transformers_reverse_permute():
    pytest.importorskip("transformers")
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    proc = LlamaTensorProcessor(config={})
    for n_rows, heads in ((576, 9), (192, 3), (8, 1)):
        w = np.arange(n_rows * 3).reshape(n_rows, 3)
        want = proc._reverse_permute_weights(w, heads, heads)
        assert np.array_equal(w[G.llama_unpermute_rows(n_rows, heads)], want)
    with pytest.raises(ValueError, match="multiple of 2 \\* n_head"):
        G.llama_unpermute_rows(10, 3)


# ------------------------------------------------------------------ the real model (make realmodel)

def _smollm2():
    try:
        return G.smollm2_gguf()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.mark.slow
def test_every_smollm2_tensor_equals_gguf_dequantizer():
    path = _smollm2()
    reader = gguf.GGUFReader(str(path))
    kinds = set()
    rng = np.random.default_rng(0)
    for t in reader.tensors:
        bt = G.read_tensor(path, t)
        kinds.add(bt.qtype)
        ref = reference(t.data, bt.qtype).reshape(bt.shape)
        assert np.array_equal(bits(bt.dequantize()), bits(ref)), t.name
        if bt.qtype in ("Q4_1", "Q8_0"):  # the scalar twin on two rows of each tensor
            rows = rng.choice(bt.shape[0], 2, replace=False)
            raw = np.asarray(t.data).reshape(bt.shape[0], -1)[rows]
            assert np.array_equal(bits(scalar(raw, bt.qtype, bt.shape[1])), bits(ref[rows])), t.name
    assert kinds == {"Q4_1", "Q8_0", "F32"}
    assert len(reader.tensors) == 272


@pytest.mark.slow
def test_smollm2_codes_are_what_transformers_loads():
    """The codes dequantized (rows of attn_q / attn_k un-permuted) equal transformers' float32
    weights of the same file bit for bit, for the first and the last layer and the embedding."""
    path = _smollm2()
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    cfg = model.config
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}
    for i in (0, cfg.num_hidden_layers - 1):
        for g, h in (("attn_q", "self_attn.q_proj"), ("attn_k", "self_attn.k_proj"), ("attn_v", "self_attn.v_proj"),
                     ("attn_output", "self_attn.o_proj"), ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"),
                     ("ffn_down", "mlp.down_proj"), ("attn_norm", "input_layernorm"),
                     ("ffn_norm", "post_attention_layernorm")):
            names[f"blk.{i}.{g}.weight"] = f"model.layers.{i}.{h}.weight"
    tensors = G.read_gguf(path, list(names))
    for g, h in names.items():
        w = tensors[g].dequantize()
        if ".attn_q." in g or ".attn_k." in g:
            heads = cfg.num_attention_heads if ".attn_q." in g else cfg.num_key_value_heads
            w = w[G.llama_unpermute_rows(w.shape[0], heads)]
        assert np.array_equal(bits(w.reshape(sd[h].shape)), bits(sd[h])), g
