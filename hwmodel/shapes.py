"""Model shapes: the tensors of a decoder-only LLM and their parameter counts.

A :class:`ModelShape` holds the few numbers that fix every tensor of OPT, LLaMA-2/3 and Mistral
(layers, hidden size, FFN size, heads, key/value heads, vocabulary, positions) and lists each weight
tensor with its shape and kind. It comes from

* the built-in table :data:`BUILTIN` of published configurations (no model hub is contacted),
* a ``config.json`` in a local directory (:func:`from_config_json`),
* a ``transformers`` configuration object (:func:`from_transformers`),

and :func:`get_shape` accepts any of these (or a ``ModelShape``).

Parameter counts match ``sum(p.numel() for p in model.parameters())`` of the ``transformers`` model,
which counts a tied embedding / output layer once (``tie_word_embeddings``). Whether the output layer
is *stored* once or twice is a deployment question answered in :mod:`hwmodel.footprint`.

Sources of the built-in table: the ``config.json`` files published with each model
(facebook/opt-*, meta-llama/Llama-2-*-hf, meta-llama/Meta-Llama-3-*, mistralai/Mistral-7B-v0.1) and,
for OPT-175B (not published as a checkpoint), Table 1 of Zhang et al., "OPT", arXiv 2205.01068.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Tensor:
    """One weight tensor. ``count`` is how many copies the model has (``n_layers`` for a per-layer one).

    kind: ``linear`` (a GEMM weight in a decoder layer, ``shape = (out_features, in_features)``),
    ``embed`` (token embedding table, ``(vocab, dim)``), ``pos_embed`` (learned positions),
    ``lm_head`` (output projection, ``(vocab, hidden)``), ``proj`` (OPT-350m project_in/out),
    ``norm`` (LayerNorm / RMSNorm gains and shifts), ``bias`` (linear-layer biases).
    """

    name: str
    shape: tuple[int, ...]
    kind: str
    count: int = 1

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * self.count


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a decoder-only transformer.

    ``family``: ``opt`` (learned positions with an offset of 2, LayerNorm with bias, biased linears,
    fc1/fc2 with ReLU) or ``llama`` (RoPE, RMSNorm, no biases, gated SiLU MLP gate/up/down; Mistral is
    this family with a sliding window).
    """

    name: str
    family: str
    n_layers: int
    hidden: int
    ffn: int
    n_heads: int
    n_kv_heads: int
    vocab: int
    max_positions: int
    head_dim: int = 0
    tie_word_embeddings: bool = True
    word_embed_proj_dim: int = 0  # OPT-350m embeds in 512 and projects to 1024 (project_in/out)
    final_norm: bool = True  # OPT with do_layer_norm_before=False (350m) has no final LayerNorm
    linear_bias: bool = True
    sliding_window: int = 0  # Mistral-7B-v0.1: the KV cache holds at most this many positions

    def __post_init__(self):
        for field in ("n_layers", "hidden", "ffn", "n_heads", "n_kv_heads", "vocab", "max_positions"):
            v = getattr(self, field)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"model shape {self.name!r}: {field} must be a positive integer, got {v!r}")
        if self.family not in ("opt", "llama"):
            raise ValueError(f"model shape {self.name!r}: family must be 'opt' or 'llama', "
                             f"got {self.family!r}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"model shape {self.name!r}: n_heads ({self.n_heads}) must be a multiple of "
                             f"n_kv_heads ({self.n_kv_heads})")
        if self.head_dim == 0:
            object.__setattr__(self, "head_dim", self.hidden // self.n_heads)
        if self.word_embed_proj_dim == 0:
            object.__setattr__(self, "word_embed_proj_dim", self.hidden)

    # ---- derived sizes -------------------------------------------------------------------------
    @property
    def q_dim(self) -> int:
        """Width of the query projection output, n_heads * head_dim."""
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of each of the key and value projection outputs, n_kv_heads * head_dim (GQA)."""
        return self.n_kv_heads * self.head_dim

    @property
    def gated(self) -> bool:
        """LLaMA-style MLP with two input projections (gate, up) and one output projection (down)."""
        return self.family == "llama"

    def kv_positions(self, seq):
        """Positions held in the KV cache after ``seq`` tokens: all of them, or the sliding window."""
        import numpy as np

        return np.minimum(seq, self.sliding_window) if self.sliding_window else seq

    # ---- tensors -------------------------------------------------------------------------------
    def layer_linears(self) -> list[tuple[str, int, int]]:
        """(name, out_features, in_features) of the GEMM weights of one decoder layer, in dataflow order."""
        h, f = self.hidden, self.ffn
        names = ("q_proj", "k_proj", "v_proj", "out_proj") if self.family == "opt" else (
            "q_proj", "k_proj", "v_proj", "o_proj")
        out = [(names[0], self.q_dim, h), (names[1], self.kv_dim, h), (names[2], self.kv_dim, h),
               (names[3], h, self.q_dim)]
        if self.gated:
            out += [("gate_proj", f, h), ("up_proj", f, h), ("down_proj", h, f)]
        else:
            out += [("fc1", f, h), ("fc2", h, f)]
        return out

    def tensors(self) -> list[Tensor]:
        """Every weight tensor; a tied output layer is listed once (no ``lm_head`` entry when tied)."""
        L, h, V, e = self.n_layers, self.hidden, self.vocab, self.word_embed_proj_dim
        t = [Tensor("embed_tokens", (V, e), "embed")]
        if self.family == "opt":
            # OPTLearnedPositionalEmbedding allocates max_positions + 2 rows (offset 2, a fairseq legacy).
            t.append(Tensor("embed_positions", (self.max_positions + 2, h), "pos_embed"))
        if e != h:
            t.append(Tensor("project_in", (h, e), "proj"))
            t.append(Tensor("project_out", (e, h), "proj"))
        for name, o, i in self.layer_linears():
            t.append(Tensor(f"layers.{name}", (o, i), "linear", L))
            if self.linear_bias:
                t.append(Tensor(f"layers.{name}.bias", (o,), "bias", L))
        n_norm_vectors = 2 if self.family == "opt" else 1  # LayerNorm: gain and shift; RMSNorm: gain
        t.append(Tensor("layers.norms", (2, n_norm_vectors, h), "norm", L))
        if self.final_norm:
            t.append(Tensor("final_norm", (n_norm_vectors, h), "norm"))
        if not self.tie_word_embeddings:
            t.append(Tensor("lm_head", (V, e), "lm_head"))
        return t

    def params_by_kind(self) -> dict[str, int]:
        """Parameter count per tensor kind (tied output layer counted once, under ``embed``)."""
        out: dict[str, int] = {}
        for t in self.tensors():
            out[t.kind] = out.get(t.kind, 0) + t.numel
        return out

    @property
    def n_params(self) -> int:
        """Total parameters, a tied output layer counted once (as ``transformers`` counts them)."""
        return sum(t.numel for t in self.tensors())

    def describe(self) -> str:
        gqa = f", GQA {self.n_heads}/{self.n_kv_heads}" if self.n_kv_heads != self.n_heads else ""
        return (f"{self.name}: {self.n_layers} layers, hidden {self.hidden}, ffn {self.ffn}, "
                f"{self.n_heads} heads{gqa}, vocab {self.vocab}, {self.n_params / 1e9:.3f} B params")


def _opt(name, L, h, heads, *, ffn=None, proj=0, ln_before=True):
    return ModelShape(name=name, family="opt", n_layers=L, hidden=h, ffn=ffn or 4 * h, n_heads=heads,
                      n_kv_heads=heads, vocab=50272, max_positions=2048, tie_word_embeddings=True,
                      word_embed_proj_dim=proj, final_norm=ln_before, linear_bias=True)


def _llama(name, L, h, ffn, heads, kv, vocab, maxpos, *, window=0):
    return ModelShape(name=name, family="llama", n_layers=L, hidden=h, ffn=ffn, n_heads=heads,
                      n_kv_heads=kv, vocab=vocab, max_positions=maxpos, tie_word_embeddings=False,
                      linear_bias=False, sliding_window=window)


#: Published configurations (see the module docstring for sources).
BUILTIN: dict[str, ModelShape] = {s.name: s for s in [
    _opt("opt-125m", 12, 768, 12),
    _opt("opt-350m", 24, 1024, 16, proj=512, ln_before=False),
    _opt("opt-1.3b", 24, 2048, 32),
    _opt("opt-2.7b", 32, 2560, 32),
    _opt("opt-6.7b", 32, 4096, 32),
    _opt("opt-13b", 40, 5120, 40),
    _opt("opt-30b", 48, 7168, 56),
    _opt("opt-66b", 64, 9216, 72),
    _opt("opt-175b", 96, 12288, 96),
    _llama("llama-2-7b", 32, 4096, 11008, 32, 32, 32000, 4096),
    _llama("llama-2-13b", 40, 5120, 13824, 40, 40, 32000, 4096),
    _llama("llama-2-70b", 80, 8192, 28672, 64, 8, 32000, 4096),
    _llama("llama-3-8b", 32, 4096, 14336, 32, 8, 128256, 8192),
    _llama("llama-3-70b", 80, 8192, 28672, 64, 8, 128256, 8192),
    # Mistral-7B-v0.1 uses a 4096-token sliding window: its rolling KV cache never exceeds 4096 positions.
    _llama("mistral-7b", 32, 4096, 14336, 32, 8, 32000, 32768, window=4096),
]}

_ALIASES = {"llama2-7b": "llama-2-7b", "llama2-13b": "llama-2-13b", "llama2-70b": "llama-2-70b",
            "llama3-8b": "llama-3-8b", "llama3-70b": "llama-3-70b", "mistral-7b-v0.1": "mistral-7b"}


def known_models() -> list[str]:
    return list(BUILTIN)


def _get(d: Any, key: str, default=None):
    if isinstance(d, dict):
        v = d.get(key, default)
    else:
        v = getattr(d, key, default)
    return default if v is None else v


_REQUIRED = object()
MAX_DIM = 2**31 - 1  # a config.json dimension beyond this is not a model


def _need(d: Any, key: str, where: str, default=_REQUIRED) -> int:
    """Field ``key`` of a config as a positive integer; a missing or non-integer value names ``where`` and the key."""
    v = _get(d, key, None)
    if v is None:
        if default is _REQUIRED:
            raise ValueError(f"{where}: missing key {key!r} (needed to size the model)")
        v = default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= MAX_DIM or int(v) != v:
        raise ValueError(f"{where}: key {key!r} must be a positive integer up to {MAX_DIM}, got {v!r}")
    return int(v)


def from_transformers(config: Any, name: str | None = None, *, where: str | None = None) -> ModelShape:
    """Shape from a ``transformers`` configuration object or the dict of a ``config.json``.

    Supports ``model_type`` ``opt``, ``llama`` and ``mistral`` (and LLaMA-like types with the same
    field names: ``qwen2`` is not special-cased and is refused to avoid silently wrong biases).
    A missing or non-integer size field is a ValueError naming ``where`` (the file) and the key.
    """
    mtype = _get(config, "model_type", "")
    name = name or _get(config, "_name_or_path", "") or _get(config, "name_or_path", "") or mtype
    name = os.path.basename(str(name).rstrip("/")) or str(mtype)
    where = where or f"config {name!r}"

    def need(key, default=_REQUIRED):
        return _need(config, key, where, default)

    if mtype == "opt":
        h = need("hidden_size")
        heads = need("num_attention_heads")
        ln_before = bool(_get(config, "do_layer_norm_before", True))
        remove_final = bool(_get(config, "_remove_final_layer_norm", False))
        return ModelShape(
            name=name, family="opt", n_layers=need("num_hidden_layers"), hidden=h,
            ffn=need("ffn_dim"), n_heads=heads, n_kv_heads=heads, vocab=need("vocab_size"),
            max_positions=need("max_position_embeddings"),
            tie_word_embeddings=bool(_get(config, "tie_word_embeddings", True)),
            word_embed_proj_dim=need("word_embed_proj_dim", h),
            final_norm=ln_before and not remove_final, linear_bias=bool(_get(config, "enable_bias", True)))
    if mtype in ("llama", "mistral"):
        heads = need("num_attention_heads")
        h = need("hidden_size")
        if _get(config, "attention_bias", False) or _get(config, "mlp_bias", False):
            raise ValueError(f"{where}: attention_bias/mlp_bias are not supported by hwmodel yet")
        window = need("sliding_window", 0) if mtype == "mistral" and _get(config, "sliding_window") else 0
        return ModelShape(
            name=name, family="llama", n_layers=need("num_hidden_layers"), hidden=h,
            ffn=need("intermediate_size"), n_heads=heads,
            n_kv_heads=need("num_key_value_heads", heads), vocab=need("vocab_size"),
            max_positions=need("max_position_embeddings"),
            head_dim=need("head_dim", _head_dim(h, heads, where) if _get(config, "head_dim") is None else 0),
            tie_word_embeddings=bool(_get(config, "tie_word_embeddings", False)), linear_bias=False,
            sliding_window=window)
    raise ValueError(f"{where}: model_type must be one of 'opt', 'llama', 'mistral', got {mtype!r}")


def _head_dim(hidden: int, heads: int, where: str) -> int:
    if hidden % heads:
        raise ValueError(f"{where}: hidden_size ({hidden}) is not a multiple of num_attention_heads ({heads}) "
                         f"and no head_dim is given")
    return hidden // heads


def from_config_json(path: str | os.PathLike) -> ModelShape:
    """Shape from a local ``config.json`` (a file or a directory holding one). Never contacts a hub."""
    path = os.fspath(path)
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise FileNotFoundError(f"model: no config.json at {file!r}")
    cfg = read_json(file, what="model config")
    if not isinstance(cfg, dict):
        raise ValueError(f"model config {file}: expected a JSON object, got {type(cfg).__name__}")
    name = os.path.basename(os.path.dirname(os.path.abspath(file))) if os.path.isdir(path) else None
    return from_transformers(cfg, name=name or cfg.get("_name_or_path") or None, where=f"model config {file}")


def read_json(file: str, *, what: str):
    """``json.load`` of ``file``; unreadable or malformed JSON is a ValueError naming the file and the line."""
    try:
        with open(file, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {file}: not valid JSON: {exc.msg} at line {exc.lineno}, "
                         f"column {exc.colno}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{what} {file}: not a UTF-8 text file") from None
    except OSError as exc:
        raise ValueError(f"{what} {file}: cannot read it ({exc.strerror or exc})") from None


def get_shape(model: Any) -> ModelShape:
    """A :class:`ModelShape` from a built-in name, a local path, a config object/dict, or a ModelShape."""
    if isinstance(model, ModelShape):
        return model
    if isinstance(model, (str, os.PathLike)):
        key = os.fspath(model)
        low = key.lower().removeprefix("facebook/").removeprefix("meta-llama/").removeprefix("mistralai/")
        low = _ALIASES.get(low, low)
        if low in BUILTIN:
            return BUILTIN[low]
        if os.path.exists(key):
            return from_config_json(key)
        raise ValueError(f"model: unknown model {model!r}; known models: {', '.join(BUILTIN)} "
                         f"(or a local directory holding a config.json)")
    if isinstance(model, dict) or hasattr(model, "model_type"):
        return from_transformers(model)
    raise TypeError(f"model: expected a model name, a path, a transformers config or a ModelShape, "
                    f"got {type(model).__name__}")


def with_name(shape: ModelShape, name: str) -> ModelShape:
    return replace(shape, name=name)
