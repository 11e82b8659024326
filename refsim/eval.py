"""Perplexity of a whole model per configuration: windows, the per-configuration run, its cache, Dask.

Window rule (GPTQ's and RPTQ's evaluation loop, the same as benchmarks/bench_eval_float.py): the token
stream is cut from its start into non-overlapping windows of ``seqlen`` tokens; the incomplete tail is
dropped; ``max_tokens=N`` keeps the first N // seqlen windows. Each window is one forward pass from an
empty context; its first token is context only, the other seqlen - 1 are predicted.

Reduction: each predicted token's NLL is float64 (``refsim.models.model.token_nll``); a window's NLL
is their correctly rounded sum (``math.fsum``); the configuration's NLL is the correctly rounded sum
of the window sums, which does not depend on the order the windows finish in (Dask), and

    perplexity = exp(NLL / predicted tokens)     (float64; equal windows: exp of the mean token NLL)

A configuration is a name of ``refsim.schemes.CONFIGS`` (RPTQ) or ``SDR_CONFIGS`` (QRazor) with
options after ``@``: ``cN`` clusters of R1/R4/R5 (``c1``: the per-tensor baseline, no reordering, one
range per tensor and per head), ``hN`` clusters per head (R2/R3), ``rtn`` round-to-nearest weights
instead of GPTQ, ``gN`` QRazor's SDR group size. E.g. ``W4A4@c1``, ``W4A4@c8@rtn``, ``QRAZOR_W4A4@g32``.
``NATIVE_CONFIGS`` names (a GGUF model's own weight blocks as exact integer codes, docs/gguf.md) take
``cN`` and ``hN`` only: their weights are the file's, so ``rtn`` and ``gN`` do not apply.

Calibration (``refsim.rptq.calibrate.calibrate_layers``) is RPTQ's: layer by layer, each layer's
ranges and GPTQ Hessians measured by the float layer on its calibration inputs, which are the outputs
of the already quantized layers before it (``calib_inputs="quantized"``, RPTQ's
``opt_reorder_quantize``), or the float model's (``"float"``: one calibration shared by every
configuration).

A native configuration (``NATIVE_*``, on a model loaded from a .gguf file: ``Model.meta["gguf"]``) is
calibrated the same way, with the same ranges and chain, but the reorders that permute weight columns
(R1, R3 per KV head, R4, R5) are block-aligned (``refsim.rptq.native.native_reorders``: each 32-column
GGUF block lies in one activation cluster), there is no GPTQ, and each block carries the file's codes
(``refsim.rptq.native.native_block``). A native configuration whose activations and K/V are all float
(``NATIVE_W4A16``) needs no ranges: it runs the float blocks with the codes added (identity layout), so
its perplexity is W16A16's bit for bit (the GGUF model's float weights are those codes dequantized).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from refsim.outputs import UsageError, atomic_write_text, is_own_output, list_files, write_marker
from refsim.progress import report_progress

CALIB_INPUTS = ("quantized", "float")
CACHE_KIND = "eval"
_OPT = re.compile(r"^(c|h|g)(\d+)$|^rtn$")
NATIVE_OPTIONS = ("c", "h")  # a native configuration's weights are the file's: no rtn, no QRazor group


def windows(n_tokens: int, seqlen: int, max_tokens: int | None = None) -> list[tuple[int, int]]:
    """[start, stop) of each non-overlapping full window of ``seqlen`` tokens (the tail is dropped)."""
    if seqlen < 2:
        raise ValueError(f"seqlen={seqlen} is not allowed; allowed: an integer >= 2")
    n = n_tokens if max_tokens is None else min(n_tokens, max_tokens)
    return [(i * seqlen, (i + 1) * seqlen) for i in range(n // seqlen)]


@dataclass(frozen=True)
class EvalConfig:
    """One configuration to evaluate (module docstring)."""

    label: str
    name: str
    clusters: int = 32
    head_clusters: int = 4
    rtn: bool = False
    group_size: int = 16

    @property
    def is_qrazor(self) -> bool:
        from refsim.schemes import SDR_CONFIGS

        return self.name in SDR_CONFIGS

    @property
    def is_native(self) -> bool:
        from refsim.schemes import NATIVE_CONFIGS

        return self.name in NATIVE_CONFIGS

    @property
    def bits(self):
        from refsim.schemes import CONFIGS, NATIVE_CONFIGS

        if self.is_qrazor:
            return (None, None, None)
        return NATIVE_CONFIGS[self.name] if self.is_native else CONFIGS[self.name]

    @property
    def calibrated(self) -> bool:
        """Whether its blocks are calibrated: not W16A16, nor a native configuration with float activations
        and K/V (its weights are the file's and nothing else has a range)."""
        return self.name != "W16A16" and not (self.is_native and self.bits[1:] == (None, None))

    @property
    def reorder(self) -> bool:
        return not self.is_qrazor and self.clusters > 1

    def scheme(self, spec=None):
        from refsim.schemes import native_scheme, scheme

        if self.is_native:  # whole-model runs hold no per-(block x cluster) sums
            return native_scheme(self.name, keep_sums=False, spec=spec)
        # the given spec governs the RPTQ configurations; QRazor keeps its own preset
        return scheme(self.name, group_size=self.group_size, spec=None if self.is_qrazor else spec)


def parse_configs(text: str, *, clusters=32, head_clusters=4, group_size=16) -> list[EvalConfig]:
    """``--configs`` as EvalConfigs; a UsageError naming the bad entry and the allowed names."""
    from refsim.schemes import CONFIGS, NATIVE_CONFIGS, SDR_CONFIGS

    names = tuple(CONFIGS) + tuple(SDR_CONFIGS) + tuple(NATIVE_CONFIGS)
    out, seen = [], set()
    for label in (t.strip() for t in text.split(",")):
        if not label:
            continue
        name, *opts = label.split("@")
        if name not in names:
            raise UsageError(f"--configs entry {label!r} is not allowed; allowed names: {', '.join(names)}, "
                             "each with options @cN (clusters), @hN (clusters per head), @rtn, @gN (QRazor group)")
        kw = {"clusters": clusters, "head_clusters": head_clusters, "group_size": group_size}
        for o in opts:
            m = _OPT.match(o)
            if not m:
                raise UsageError(f"--configs entry {label!r}: option {o!r} is not allowed; allowed: cN, hN, rtn, gN")
            if name in NATIVE_CONFIGS and (m.group(1) or o) not in NATIVE_OPTIONS:
                raise UsageError(f"--configs entry {label!r}: option {o!r} does not apply to a NATIVE_* configuration "
                                 "(its weights are the GGUF file's own codes); allowed: cN, hN")
            if o == "rtn":
                kw["rtn"] = True
            else:
                v = int(m.group(2))
                if v < 1:
                    raise UsageError(f"--configs entry {label!r}: {o!r} must be at least 1")
                kw[{"c": "clusters", "h": "head_clusters", "g": "group_size"}[m.group(1)]] = v
        if label in seen:
            raise UsageError(f"--configs names {label!r} twice")
        seen.add(label)
        out.append(EvalConfig(label, name, **kw))
    if not out:
        raise UsageError("--configs is empty; give at least one configuration, e.g. W16A16,W4A4")
    return out


# --- the tasks --------------------------------------------------------------------------------------
def window_nll(model, ids, scheme) -> dict:
    """{"nll": fsum of the token NLLs, "tokens": predicted tokens} of one window (module docstring)."""
    from refsim.models.model import token_nll

    ids = np.asarray(ids)
    h = model.hidden(ids, scheme)["h"]
    nll = token_nll(model, h[:-1], ids[1:])
    if not np.all(np.isfinite(nll)):
        raise ValueError("the window's NLL is not finite (NaN or Inf logits)")
    return {"nll": math.fsum(nll.tolist()), "tokens": int(nll.size)}


def sqnr_stages(topology) -> tuple:
    """The float stages whose SQNR a result reports, in dataflow order, from the topology."""
    st = [n.name for n in topology.norms] + [lin.stage for lin in topology.linears]
    st += ["probs", "attn", "h1", topology.mlp.act_stage, "out"]
    return tuple(dict.fromkeys(s for s in topology.stages if s in st))


def model_sqnr(model, ids, scheme) -> dict:
    """{stage: SQNR dB over all layers, "logits": ...} of ``scheme`` against the float pass (W16A16 on the same
    blocks, so the same layout) on one token sequence; each layer runs on its own chain's input."""
    import refsim
    from refsim.schemes import scheme as make_scheme

    stages = sqnr_stages(model.topology)
    ref = model.hidden(ids, make_scheme("W16A16"), keep=stages)
    run = model.hidden(ids, scheme, keep=stages)
    out = {}
    for s in stages:
        a = np.concatenate([lay[s].ravel() for lay in ref["layers"]])
        b = np.concatenate([lay[s].ravel() for lay in run["layers"]])
        out[s] = refsim.sqnr_db(a, b)
    out["logits"] = refsim.sqnr_db(model.logits(ref["h"]), model.logits(run["h"]))
    return out


def build_config(base, calib_ids, cfg: EvalConfig, *, calib_inputs="quantized", seed=0, spec=None,
                 progress=False):
    """The model of one configuration: its blocks calibrated on ``calib_ids`` (n, t) (module docstring)."""
    wbits, abits, kvbits = cfg.bits
    if cfg.name == "W16A16":
        return base
    from refsim.rptq.calibrate import calibrate_layers

    check_native(base.meta.get("gguf"), [cfg])
    native = gguf_layers(base) if cfg.is_native else None
    if native is not None and not cfg.calibrated:
        from refsim.rptq.native import native_block

        return base.with_blocks([native_block(b, base.topology, t) for b, t in zip(base.blocks, native, strict=True)])
    chain = None if calib_inputs == "float" else cfg.scheme(spec)
    blocks = calibrate_layers(base, calib_ids, wbits=wbits, n_clusters=cfg.clusters,
                              head_clusters=cfg.head_clusters, seed=seed, reorder=cfg.reorder, rtn=cfg.rtn,
                              chain=chain, progress=progress, label=cfg.label, native=native)
    return base.with_blocks(blocks)


def check_native(gguf, configs) -> None:
    """A UsageError when a native configuration is asked of a model not loaded from a .gguf file (``gguf``: the
    file, a model's ``meta["gguf"]``, or None)."""
    bad = [c.label for c in configs if c.is_native]
    if bad and not gguf:
        raise UsageError(f"--configs {', '.join(bad)}: a NATIVE_* configuration runs a GGUF file's own weight "
                         "blocks and needs a .gguf MODEL; this MODEL is not one")


def gguf_layers(base) -> list:
    """[{linear: BlockTensor in transformers' row order}] per layer of the model's GGUF file (``meta["gguf"]``),
    the file's ``general.architecture`` deciding the q/k row un-permutation (``llama_layer_tensors``)."""
    from gguf import GGUFReader

    from refsim.formats import gguf as G

    path = base.meta.get("gguf")
    if not path:
        raise ValueError("the model was not loaded from a .gguf file (no meta['gguf']); native weights need one")
    field = GGUFReader(path).fields["general.architecture"]
    arch = bytes(field.parts[field.data[0]]).decode("utf-8")
    tensors = G.read_gguf(path, [G.gguf_linear_name(i, lin) for i in range(len(base.blocks))
                                 for lin in G.LLAMA_LINEARS])
    kv = int(base.meta.get("kv_heads", base.meta["heads"]))
    return [G.llama_layer_tensors(tensors, i, heads=int(base.meta["heads"]), kv_heads=kv, architecture=arch)
            for i in range(len(base.blocks))]


def native_weights(base) -> str:
    """What a native configuration's weights are: the GGUF types of the model's linear weights."""
    from gguf import GGUFReader

    from refsim.formats.gguf import LLAMA_LINEARS

    bases = tuple(f".{b}.weight" for b in LLAMA_LINEARS.values())
    types = sorted({t.tensor_type.name for t in GGUFReader(base.meta["gguf"]).tensors
                    if t.name.startswith("blk.") and t.name.endswith(bases)})
    return f"gguf native {'/'.join(types)} codes"


def calibration_key(cfg: EvalConfig, calib_inputs: str):
    """What a configuration's calibrated blocks depend on beyond the model, the calibration set and the seed:
    with float calibration inputs, the weight bits, clusters, reordering and RTN only (configurations that
    share them, e.g. W4A16 / W4A8 / W4A4 / W4A4KV, share one calibration); with quantized inputs also the
    chain's scheme, so each configuration has its own."""
    if cfg.name == "W16A16":
        return ("float",)
    if cfg.is_native and not cfg.calibrated:
        return ("native", "float blocks")
    # native calibrations (block-aligned reorders, no GPTQ) never share with RPTQ's
    key = ("native" if cfg.is_native else "rptq", cfg.bits[0], cfg.clusters, cfg.head_clusters, cfg.reorder,
           cfg.rtn)
    return key if calib_inputs == "float" else key + (cfg.label,)


def _weights(c: EvalConfig, native) -> str:
    if c.is_native:  # float activations: the codes dequantized (the GGUF float weights), a float product
        return native + (", exact integer GEMM" if c.bits[1] is not None else ", dequantized, float GEMM")
    if c.is_qrazor:
        return "qrazor absmax + SDR"
    return "float" if c.bits[0] is None else ("rtn" if c.rtn else "gptq")


# --- the cache ------------------------------------------------------------------------------------
def _safe(label):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", label)


class ResultCache:
    """A directory of cached results, one subdirectory per configuration key, one JSON file per window.

    Written file by file (each atomically: temporary name, then rename), so a run resumes where it stopped.
    The refsim marker (kind ``eval``) lists every file; it is updated before each rename, so what the
    directory holds is always listed: a directory refsim did not write (no marker, or a file the marker does
    not list) is refused, never written into."""

    def __init__(self, path):
        self.path = Path(os.path.abspath(os.fspath(path)))
        if self.path.exists():
            if not is_own_output(self.path, (CACHE_KIND,)):
                raise UsageError(f"--out {path} exists and is not a cache refsim eval wrote (no marker listing "
                                 "every file in it); choose a new directory")
        else:
            self.path.mkdir(parents=True)
            write_marker(self.path, CACHE_KIND, files=[])

    def _file(self, key, name) -> Path:
        return self.path / key / f"{name}.json"

    def get(self, key, name):
        f = self._file(key, name)
        if not f.is_file():
            return None
        with open(f, encoding="utf-8") as fh:
            return json.load(fh)

    def put(self, key, name, obj) -> None:
        f = self._file(key, name)
        f.parent.mkdir(exist_ok=True)
        rel = str(f.relative_to(self.path))
        files = sorted(set(list_files(self.path)) - {".refsim-output.json"} | {rel})
        write_marker(self.path, CACHE_KIND, files=files)
        atomic_write_text(f, json.dumps(obj, indent=1, default=_json_default))


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def config_key(cfg: EvalConfig, run_info: dict) -> str:
    """The cache subdirectory of a configuration: its label and a hash of everything its result depends on."""
    doc = json.dumps({"config": asdict(cfg), **run_info}, sort_keys=True, default=str)
    return f"{_safe(cfg.label)}-{hashlib.sha256(doc.encode()).hexdigest()[:16]}"


# --- the run ----------------------------------------------------------------------------------------
def evaluate(base, eval_ids, calib_ids, configs, *, seqlen=2048, max_tokens=None, calib_inputs="quantized",
             seed=0, spec=None, sqnr_tokens=256, cache: ResultCache | None = None, run_info=None, client=None,
             progress=True) -> list[dict]:
    """[{"config", "perplexity", "tokens", "windows", "nll", "sqnr_db", ...}] per configuration.

    ``client``: a dask.distributed Client (configurations and windows as tasks) or None (inline, in order).
    Both run the same functions on the same inputs, so their results are identical."""
    if calib_inputs not in CALIB_INPUTS:
        raise ValueError(f"calib_inputs={calib_inputs!r} is not allowed; allowed: {', '.join(CALIB_INPUTS)}")
    eval_ids = np.asarray(eval_ids)
    spans = windows(eval_ids.size, seqlen, max_tokens)
    if not spans:
        raise UsageError(f"the evaluation text has {eval_ids.size} tokens: no full window of --seqlen {seqlen}")
    check_native(base.meta.get("gguf"), configs)
    calib_ids = np.asarray(calib_ids)
    sq_ids = calib_ids[0, :sqnr_tokens]
    info = dict(run_info or {}, seqlen=seqlen, windows=len(spans), calib_inputs=calib_inputs, seed=seed,
                spec=None if spec is None else spec.to_dict(), sqnr_tokens=int(sq_ids.size))
    keys = {c.label: config_key(c, info) for c in configs}
    todo = {}  # label -> [window indices not cached]
    done = {c.label: {} for c in configs}
    for c in configs:
        for i in range(len(spans)):
            got = cache.get(keys[c.label], f"window-{i:05d}") if cache else None
            if got is not None:
                done[c.label][i] = got
            else:
                todo.setdefault(c.label, []).append(i)
        got = cache.get(keys[c.label], "sqnr") if cache else None
        if got is not None:
            done[c.label]["sqnr"] = got
        elif c.label not in todo:
            todo[c.label] = []
    total = sum(len(v) + ("sqnr" not in done[k]) for k, v in todo.items())
    count = [0]

    def record(label, name, value):
        done[label][name] = value
        if cache:
            cache.put(keys[label], name if name == "sqnr" else f"window-{name:05d}", value)
        count[0] += 1
        if progress:
            report_progress("eval", count[0], total, unit="tasks (configuration builds not counted)")

    by_label = {c.label: c for c in configs}
    built = {}  # calibration_key -> model future (Dask), or the last one built (inline: one model in memory)
    if client is None:
        for label, idx in todo.items():
            c = by_label[label]
            key = calibration_key(c, calib_inputs)
            if key not in built:  # consecutive configurations that share a calibration share it
                built = {key: build_config(base, calib_ids, c, calib_inputs=calib_inputs, seed=seed, spec=spec,
                                           progress=progress)}
            model = built[key]
            sch = c.scheme(spec)
            for i in idx:
                a, b = spans[i]
                record(label, i, window_nll(model, eval_ids[a:b], sch))
            if "sqnr" not in done[label]:
                record(label, "sqnr", model_sqnr(model, sq_ids, sch))
    else:
        from distributed import as_completed

        base_f = client.scatter(base, broadcast=True)
        calib_f = client.scatter(calib_ids, broadcast=True)
        futures = {}
        for label, idx in todo.items():
            c = by_label[label]
            sch = c.scheme(spec)
            key = calibration_key(c, calib_inputs)
            if key not in built:
                built[key] = client.submit(build_config, base_f, calib_f, c, calib_inputs=calib_inputs, seed=seed,
                                           spec=spec, pure=False)
            model_f = built[key]
            for i in idx:
                a, b = spans[i]
                futures[client.submit(window_nll, model_f, eval_ids[a:b], sch, pure=False)] = (label, i)
            if "sqnr" not in done[label]:
                futures[client.submit(model_sqnr, model_f, sq_ids, sch, pure=False)] = (label, "sqnr")
        for fut in as_completed(list(futures)):
            label, name = futures[fut]
            record(label, name, fut.result())
    native = native_weights(base) if any(c.is_native for c in configs) else None
    results = []
    for c in configs:
        ws = [done[c.label][i] for i in range(len(spans))]
        nll = math.fsum(w["nll"] for w in ws)
        tokens = sum(w["tokens"] for w in ws)
        wb, ab, kvb = c.bits
        results.append({"config": c.label, "perplexity": math.exp(nll / tokens), "tokens": tokens,
                        "windows": len(spans), "seqlen": seqlen, "nll": nll,
                        "scheme": c.name, "wbits": wb, "abits": ab, "kvbits": kvb,
                        "clusters": None if c.is_qrazor else c.clusters,
                        "head_clusters": None if c.is_qrazor else c.head_clusters,
                        "weights": _weights(c, native),
                        "group_size": c.group_size if c.is_qrazor else None,
                        "sqnr_db": done[c.label]["sqnr"], "cache": keys[c.label]})
        if c.is_native and c.calibrated and c.reorder:  # block-aligned: at most one cluster per block (per head)
            from refsim.rptq.native import block_clusters

            results[-1]["block_clusters"] = block_clusters(base.topology, base.blocks[0], c.clusters,
                                                           c.head_clusters)
    return results
