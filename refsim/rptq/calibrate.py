"""Calibration on real model code: load an OPT checkpoint with ``transformers`` and collect, with
forward hooks, the per-channel running min/max at RPTQ's points and GPTQ's input Hessians.

Points per decoder layer (names used everywhere in refsim.rptq):
    ln1     self_attn_layer_norm output           R1
    q       q_proj output * head_dim^-0.5          R2 (the tensor the QK^T product quantizes)
    k       k_proj output                          R2 (clustered jointly with q)
    v       v_proj output                          R3 (its quantization uses R3's clusters)
    attn    out_proj input                         R3 (clustered)
    ln2     final_layer_norm output                R4
    fc2_in  fc2 input (after ReLU)                 R5
Hessians (``refsim.rptq.gptq.Hessian``): "qkv" (q/k/v input), "out", "fc1", "fc2".
torch and transformers are imported here, so import this module only when they are needed.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from refsim.models import opt as opt_family
from refsim.models.opt import OPT
from refsim.progress import report_progress
from refsim.rptq.gptq import Hessian

SUPPORTED_MODEL_TYPES = ("opt",)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def check_model_dir(path):
    """A clear error for a missing directory, config or weights, a truncated or unreadable weights
    file, and for unsupported models; returns the model's config."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"MODEL_DIR {path!r} is not a directory")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"MODEL_DIR {path!r} has no config.json (save_pretrained writes one)")
    if not any(os.path.isfile(os.path.join(path, f)) for f in WEIGHT_FILES):
        raise FileNotFoundError(f"MODEL_DIR {path!r} has no weights; expected one of {', '.join(WEIGHT_FILES)}")
    for f in weight_files(path):
        if f.endswith(".safetensors"):
            check_safetensors(f)
    cfg = load_config(path)
    check_config(cfg)
    return cfg


def load_config(path):
    """transformers' AutoConfig of MODEL_DIR, with one line naming the file when it cannot be read."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, KeyError, JSON errors
        raise ValueError(f"MODEL_DIR {path!r}: config.json cannot be read by transformers "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def weight_files(path) -> list[str]:
    """The weight files MODEL_DIR holds (a sharded checkpoint's shards from its index)."""
    files = []
    for name in WEIGHT_FILES:
        f = os.path.join(path, name)
        if not os.path.isfile(f):
            continue
        if name.endswith(".index.json"):
            try:
                with open(f, encoding="utf-8") as fh:
                    shards = sorted(set(json.load(fh)["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"MODEL_DIR {path!r}: {name} is not a readable index ({exc})") from None
            for shard in shards:
                sp = os.path.join(path, shard)
                if not os.path.isfile(sp):
                    raise FileNotFoundError(f"MODEL_DIR {path!r}: shard {shard} named in {name} is missing")
                files.append(sp)
        else:
            files.append(f)
        break  # transformers loads the first kind found, in WEIGHT_FILES' order
    return files


def check_safetensors(path) -> None:
    """A safetensors file is an 8-byte little-endian header length, a JSON header giving every tensor's
    byte range, then the data: refuse a file shorter than its header says (a copy cut short)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 2 or 8 + n > size:
            raise ValueError(f"{path}: not a complete safetensors file ({size} bytes; its header is cut short)")
        try:
            header = json.loads(f.read(n))
            end = max([int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"], default=0)
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            raise ValueError(f"{path}: not a safetensors file (its header is not safetensors JSON)") from None
    if 8 + n + end > size:
        raise ValueError(f"{path}: truncated: its header describes {8 + n + end} bytes, the file has {size}; "
                         "copy the checkpoint again")


def check_config(cfg) -> None:
    mt = getattr(cfg, "model_type", None)
    if mt not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"model_type={mt!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)} "
                         "(pre-LayerNorm OPT decoders)")
    if not cfg.do_layer_norm_before:
        raise ValueError("do_layer_norm_before=False (OPT-350m's post-LayerNorm layout) is not supported; "
                         "supported: pre-LayerNorm OPT (125m, 1.3b, 2.7b, 6.7b, 13b, 30b, 66b, 175b)")
    if cfg.activation_function != "relu":
        raise ValueError(f"activation_function={cfg.activation_function!r} is not supported; supported: 'relu'")
    if not getattr(cfg, "enable_bias", True) or not getattr(cfg, "layer_norm_elementwise_affine", True):
        raise ValueError("OPT without linear biases or LayerNorm affine parameters is not supported")


def load_opt(path):
    """OPTForCausalLM from a local directory (the same path a user takes with a real checkpoint), float32, eager."""
    check_model_dir(path)
    from transformers import OPTForCausalLM

    try:
        model = OPTForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    except Exception as exc:  # noqa: BLE001 - one line naming the directory instead of transformers' traceback
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(f"MODEL_DIR {path!r}: transformers could not load the weights ({type(exc).__name__}: "
                         f"{first})") from None
    model.eval()
    return model


def decoder_layers(model):
    return opt_family.decoder_layers(model)


layer_arrays = opt_family.layer_arrays  # one OPTDecoderLayer's float32 arrays (refsim.models.opt)


class _MinMax:
    def __init__(self):
        self.lo = None
        self.hi = None

    def add(self, t):
        t = t.detach().float().reshape(-1, t.shape[-1])
        if not torch.isfinite(t).all():
            raise ValueError("calibration produced NaN or Inf activations")
        lo, hi = t.min(dim=0).values, t.max(dim=0).values
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)

    def result(self):
        return self.lo.numpy().astype(np.float32), self.hi.numpy().astype(np.float32)


class Calibration:
    """Hooks on every decoder layer; ``run(batches)``; then ``stats[i][point] = (min, max)``,
    ``hessians[i][name]`` (torch) and ``inputs[i]`` (the first ``keep_inputs`` sequences entering layer i)."""

    def __init__(self, model, *, hessians=True, keep_inputs=1):
        self.model = model
        self.layers = decoder_layers(model)
        self.minmax = [{p.name: _MinMax() for p in OPT.points} for _ in self.layers]
        self.want_h = hessians
        self.h = [dict() for _ in self.layers]
        self.keep_inputs = keep_inputs
        self.inputs = [[] for _ in self.layers]
        self.handles = []

    def _hess(self, i, name, x):
        if not self.want_h:
            return
        if name not in self.h[i]:
            self.h[i][name] = Hessian(x.shape[-1])
        self.h[i][name].add_batch(x.detach())

    def attach(self):
        for i, layer in enumerate(self.layers):
            mm = self.minmax[i]
            a = layer.self_attn
            scaling = a.scaling

            def hook(point, fn=None, mm=mm):
                return lambda mod, inp, out: mm[point].add(out if fn is None else fn(out))

            def pre(point, hname, i=i, mm=mm):
                def f(mod, inp):
                    if point:
                        mm[point].add(inp[0])
                    self._hess(i, hname, inp[0])
                return f

            def layer_in(mod, args, i=i):
                kept = sum(x.shape[0] for x in self.inputs[i])
                if kept < self.keep_inputs:
                    self.inputs[i].append(args[0].detach()[: self.keep_inputs - kept].float().numpy().copy())

            self.handles += [
                layer.register_forward_pre_hook(layer_in),
                layer.self_attn_layer_norm.register_forward_hook(hook("ln1")),
                a.q_proj.register_forward_pre_hook(pre(None, "qkv")),
                a.q_proj.register_forward_hook(hook("q", lambda o, s=scaling: o * s)),
                a.k_proj.register_forward_hook(hook("k")),
                a.v_proj.register_forward_hook(hook("v")),
                a.out_proj.register_forward_pre_hook(pre("attn", "out")),
                layer.final_layer_norm.register_forward_hook(hook("ln2")),
                layer.fc1.register_forward_pre_hook(pre(None, "fc1")),
                layer.fc2.register_forward_pre_hook(pre("fc2_in", "fc2")),
            ]
        return self

    def detach(self):
        for h in self.handles:
            h.remove()
        self.handles = []

    @torch.no_grad()
    def run(self, token_ids, *, batch_size=1, progress=True):
        ids = np.asarray(token_ids)
        if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
            raise ValueError(f"the calibration set is empty or not (sequences, tokens): shape {ids.shape}")
        self.attach()
        try:
            n = ids.shape[0]
            for b0 in range(0, n, batch_size):
                self.model(input_ids=torch.from_numpy(ids[b0:b0 + batch_size].astype(np.int64)), use_cache=False)
                if progress:
                    report_progress("calibrate", min(b0 + batch_size, n), n, unit="sequences")
        finally:
            self.detach()
        return self

    @property
    def stats(self):
        return [{p: m.result() for p, m in mm.items()} for mm in self.minmax]

    @property
    def hessians(self):
        return [{k: v.h for k, v in h.items()} for h in self.h]

    def layer_inputs(self, i):
        return np.concatenate(self.inputs[i], axis=0) if self.inputs[i] else None


# --- whole-model calibration in refsim's own dataflow (refsim eval) ----------------------------------
def layer_statistics(topology, block, xs, *, hessians=True) -> tuple[dict, dict, list]:
    """(stats {point: (min, max)}, hessians {group: torch H}, outputs) of a float block (original channel
    order, ``refsim.models.model.float_block``) on the sequences ``xs``: the per-channel running min / max of
    each calibration point's stage and GPTQ's H = 2/n sum X X^T of each Hessian group's input (the stage its
    linears' calibration point measures), read from the forward pass's stages: the topology gives the
    points, so no framework hooks are needed. ``hessians=False``: none ({}), for weights that need no GPTQ."""
    from refsim.models.forward import forward
    from refsim.schemes import scheme

    w16 = scheme("W16A16")
    lo, hi, hess, outs = {}, {}, {}, []
    groups = {}
    for lin in topology.linears:
        groups.setdefault(lin.hessian, topology.point(lin.point).stage)
    for x in xs:
        st = forward(topology, block, x, w16)
        for p in topology.points:
            t = st[p.stage].reshape(-1, st[p.stage].shape[-1])
            if not np.all(np.isfinite(t)):
                raise ValueError(f"calibration produced NaN or Inf activations at {p.name}")
            a, b = t.min(axis=0), t.max(axis=0)
            lo[p.name] = a if p.name not in lo else np.minimum(lo[p.name], a)
            hi[p.name] = b if p.name not in hi else np.maximum(hi[p.name], b)
        for g, stage in groups.items() if hessians else ():
            if g not in hess:
                hess[g] = Hessian(st[stage].shape[-1])
            hess[g].add_batch(torch.from_numpy(np.ascontiguousarray(st[stage]))[None])
        outs.append(st["out"])
    stats = {p: (lo[p].astype(np.float32), hi[p].astype(np.float32)) for p in lo}
    return stats, {g: h.h for g, h in hess.items()}, outs


def calibrate_layers(base, calib_ids, *, wbits=4, n_clusters=32, head_clusters=4, seed=0, reorder=True, rtn=False,
                     chain=None, progress=False, label="", native=None) -> list:
    """The quantized blocks of every layer of ``base`` (a ``refsim.models.model.Model`` of float blocks),
    calibrated layer by layer on the token sequences ``calib_ids`` (n, t) (RPTQ's ``opt_reorder_quantize``):

        x_0 = embed(calibration tokens)
        layer i: ranges and Hessians from the float layer i on x_{i-1} (``layer_statistics``),
                 k-means reorders, GPTQ (or RTN) weights (``refsim.rptq.pipeline.build_block``);
                 x_i = the quantized layer i on x_{i-1} under ``chain`` (a scheme), or the float layer's
                 output when ``chain`` is None (float calibration inputs).

    ``native``: native GGUF weights (docs/gguf.md), one {linear: BlockTensor} per layer
    (``refsim.formats.gguf.llama_layer_tensors``). The same ranges and chain, but the reorders that
    permute weight columns are block-aligned (``refsim.rptq.native.native_reorders``: R1, R3 per KV
    head, R4, R5; R2 is RPTQ's own), there is no GPTQ (no Hessians, ``wbits`` unused: the weights are
    the file's codes), and each block carries its native arrays (``refsim.rptq.native.native_block``),
    so a ``NativeWeightsScheme`` chain runs it.

    torch runs with one thread here (GPTQ, the Hessians), so the result does not depend on the machine's or a
    Dask worker's thread count."""
    import inspect

    from refsim.models.forward import forward
    from refsim.rptq.pipeline import build_block

    ids = np.asarray(calib_ids)
    if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"the calibration set is empty or not (sequences, tokens): shape {ids.shape}")
    topology = base.topology
    params = inspect.signature(build_block).parameters
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        xs = [base.embed(s) for s in ids]
        blocks = []
        if native is not None and len(native) != len(base.blocks):
            raise ValueError(f"native has {len(native)} layers of tensors; the model has {len(base.blocks)}")
        for i, fb in enumerate(base.blocks):
            stats, hess, outs = layer_statistics(topology, fb, xs, hessians=native is None)
            layer = {k: v for k, v in fb.arrays.items()
                     if k.split(".")[0] not in topology.reorder_names and not k.startswith("stat.")}
            kw = {}
            if "topology" in params:  # a build_block that takes any family's topology and meta
                kw["topology"] = topology
            if "family_meta" in params:
                kw["family_meta"] = {k: v for k, v in fb.meta.items() if k not in ("wbits", "layout", "reorder")}
            if native is not None:
                from refsim.rptq.native import native_reorders

                kw["reorders"] = native_reorders(topology, stats, heads=fb.heads, n_clusters=n_clusters,
                                                 head_clusters=head_clusters, seed=seed, reorder=reorder,
                                                 head_dim=fb.meta.get("head_dim"))
            block = build_block(layer, stats, hess, heads=fb.heads, eps=float(fb.meta["eps"]),
                                wbits=None if native is not None else wbits, n_clusters=n_clusters,
                                head_clusters=head_clusters, seed=seed, reorder=reorder, rtn=rtn, **kw)
            if native is not None:
                from refsim.rptq.native import native_block

                block = native_block(block, topology, native[i])
            blocks.append(block)
            xs = outs if chain is None else [forward(topology, block, x, chain, record_sums=False)["out"] for x in xs]
            if progress:
                report_progress(f"calibrate {label}: layer", i + 1, len(base.blocks))
        return blocks
    finally:
        torch.set_num_threads(threads)


def load_causal_lm(path):
    """(hf model float32 eager, config, gguf file name or None) of a transformers directory or a ``.gguf`` file
    (transformers dequantizes a GGUF's blocks to float32: ``from_pretrained(dir, gguf_file=...)``)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    kw = {}
    if str(path).endswith(".gguf"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"MODEL {path!r} is not a file")
        kw["gguf_file"] = os.path.basename(path)
        path = os.path.dirname(os.path.abspath(path))
    else:
        if not os.path.isdir(path):
            raise FileNotFoundError(f"MODEL {path!r} is neither a directory nor a .gguf file")
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"MODEL {path!r} has no config.json (save_pretrained writes one)")
        for f in weight_files(path):
            if f.endswith(".safetensors"):
                check_safetensors(f)
    try:
        cfg = AutoConfig.from_pretrained(path, **kw)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager", **kw)
    except Exception as exc:  # noqa: BLE001 - one line naming the model instead of transformers' traceback
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(f"MODEL {path!r}: transformers could not load it ({type(exc).__name__}: {first})") from None
    model.eval()
    return model, cfg, kw.get("gguf_file")


def float_model(hf_model, *, head_dtype="float32", gguf=None):
    """The ``refsim.models.model.Model`` of a transformers causal LM: its family's arrays, float blocks.
    ``gguf``: the .gguf file the model was loaded from (``load_causal_lm``), kept as ``meta["gguf"]`` (its
    absolute path) for the native-weights configurations, which read the file's own blocks."""
    from refsim.models import family_of
    from refsim.models.model import Model, float_block

    cfg = hf_model.config
    fam = family_of(cfg.model_type)
    if fam.__name__.endswith(".opt"):
        check_config(cfg)
    meta = fam.block_meta(cfg)
    layers = fam.decoder_layers(hf_model) if hasattr(fam, "decoder_layers") else hf_model.model.layers
    blocks = [float_block(fam.TOPOLOGY, fam.layer_arrays(layer), meta) for layer in layers]
    mmeta = {**meta, "vocab": int(cfg.vocab_size), "pos_offset": int(getattr(fam, "POS_OFFSET", 0)),
             "head_dtype": head_dtype, "family": fam.__name__.rsplit(".", 1)[-1], "model_type": cfg.model_type,
             "layers": len(blocks)}
    if gguf is not None:
        mmeta["gguf"] = os.path.abspath(os.fspath(gguf))
    return Model(fam.TOPOLOGY, fam.model_arrays(hf_model), blocks, mmeta)
