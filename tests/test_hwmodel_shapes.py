"""Model shapes: built-in table and config.json / transformers configs against transformers' own counts."""

import json

import pytest

from hwmodel.shapes import BUILTIN, from_config_json, from_transformers, get_shape

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def hf_param_count(config) -> int:
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def hf_config(shape):
    if shape.family == "opt":
        return transformers.OPTConfig(
            hidden_size=shape.hidden, ffn_dim=shape.ffn, num_hidden_layers=shape.n_layers,
            num_attention_heads=shape.n_heads, word_embed_proj_dim=shape.word_embed_proj_dim,
            do_layer_norm_before=shape.final_norm, vocab_size=shape.vocab,
            max_position_embeddings=shape.max_positions)
    cls = transformers.MistralConfig if shape.sliding_window else transformers.LlamaConfig
    return cls(hidden_size=shape.hidden, intermediate_size=shape.ffn, num_hidden_layers=shape.n_layers,
               num_attention_heads=shape.n_heads, num_key_value_heads=shape.n_kv_heads,
               vocab_size=shape.vocab,
               max_position_embeddings=shape.max_positions, tie_word_embeddings=shape.tie_word_embeddings)


@pytest.mark.parametrize("name", ["opt-125m", "opt-350m", "opt-66b", "opt-175b", "llama-2-7b", "llama-2-70b",
                                  "llama-3-8b", "llama-3-70b", "mistral-7b"])
def test_builtin_param_counts_match_transformers(name):
    shape = BUILTIN[name]
    assert shape.n_params == hf_param_count(hf_config(shape))


@pytest.mark.parametrize("name, billions", [("opt-66b", 65.72), ("opt-175b", 174.604), ("llama-2-7b", 6.738),
                                            ("llama-2-13b", 13.016), ("llama-3-8b", 8.030),
                                            ("llama-3-70b", 70.554), ("mistral-7b", 7.242)])
def test_published_parameter_counts(name, billions):
    assert BUILTIN[name].n_params / 1e9 == pytest.approx(billions, abs=0.001)


def test_gqa_and_tied_embeddings():
    l3 = get_shape("llama-3-8b")
    assert (l3.n_heads, l3.n_kv_heads, l3.q_dim, l3.kv_dim) == (32, 8, 4096, 1024)
    assert "lm_head" in [t.name for t in l3.tensors()]
    opt = get_shape("facebook/opt-66b")
    assert opt.tie_word_embeddings and "lm_head" not in [t.name for t in opt.tensors()]
    kinds = opt.params_by_kind()
    assert kinds["embed"] == 50272 * 9216 and kinds["pos_embed"] == 2050 * 9216
    assert kinds["linear"] == 64 * (4 * 9216**2 + 2 * 9216 * 36864)
    assert [n for n, _, _ in opt.layer_linears()] == ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def test_config_json_directory(tmp_path):
    cfg = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 3,
           "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 1000,
           "max_position_embeddings": 512, "tie_word_embeddings": True}
    d = tmp_path / "tiny-llama"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    shape = get_shape(str(d))
    assert shape.name == "tiny-llama" and shape.kv_dim == 64 and shape.tie_word_embeddings
    assert shape.n_params == hf_param_count(transformers.LlamaConfig(**cfg))
    assert from_config_json(d / "config.json").n_params == shape.n_params


def test_transformers_config_object():
    cfg = transformers.OPTConfig(hidden_size=64, ffn_dim=256, num_hidden_layers=2, num_attention_heads=4,
                                 vocab_size=300, max_position_embeddings=128, word_embed_proj_dim=32,
                                 do_layer_norm_before=False)
    shape = from_transformers(cfg)
    assert shape.word_embed_proj_dim == 32 and not shape.final_norm
    assert shape.n_params == hf_param_count(cfg)


def test_unknown_model_lists_known_ones():
    with pytest.raises(ValueError, match="unknown model 'opt-7b'.*opt-66b.*llama-3-8b"):
        get_shape("opt-7b")
    with pytest.raises(ValueError, match="model_type must be one of"):
        from_transformers({"model_type": "gpt2"})
