"""Saving and loading quantized OPT blocks: safetensors for the arrays, JSON for everything else.

A quantized model directory holds
    model.safetensors     every block's arrays as "layers.{i}.{name}" (QuantizedOPTBlock.arrays):
                          integer codes, scales, zero points, permutations R1..R5 and cluster ids
                          and sizes, float LayerNorm / bias / float weights, calibration ranges
    quant_config.json     format and version, per-layer metadata, the numerics specs (RPTQ
                          activations, GPTQ weights), calibration description, anything given
plus whatever the caller writes (reports, plots). The directory is written under a temporary
name beside the target and renamed, so a crash leaves nothing half-written; modes follow the umask. Only the decoder
layers are stored; embeddings, final LayerNorm and lm_head stay those of the original checkpoint.
"""

from __future__ import annotations

import json
import os

import numpy as np

import refsim
from refsim.outputs import atomic_write_text, check_output, staged_output
from refsim.rptq.block import QuantizedOPTBlock

FORMAT = "refsim-rptq-opt"
FORMAT_VERSION = 1


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def write_json(path, obj) -> None:
    """JSON to a temporary name, then renamed."""
    atomic_write_text(path, json.dumps(obj, indent=1, default=_json_default))


OUTPUT_KIND = "calibrate"  # the refsim.outputs marker kind of a quantized model directory


def save_quantized(out_dir, blocks, *, info=None, write_extra=None, overwrite=False, inputs=None) -> str:
    """Write blocks (and ``write_extra(tmp_dir)``'s files) to ``out_dir`` atomically; returns out_dir.

    ``out_dir`` is checked by refsim.outputs.check_output: replaced only when it is an earlier
    quantized-model directory (its marker lists every file in it) and ``overwrite`` is True; never
    when it is, lies inside or contains one of ``inputs`` ({flag: path})."""
    from safetensors.numpy import save_file

    out_dir = str(check_output(out_dir, kinds=(OUTPUT_KIND,), replace=overwrite, replace_flag="--overwrite",
                               inputs=inputs))
    with staged_output(out_dir, kind=OUTPUT_KIND) as tmp:
        tensors = {}
        for i, b in enumerate(blocks):
            for k, v in b.arrays.items():
                tensors[f"layers.{i}.{k}"] = np.ascontiguousarray(v)
        save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": FORMAT})
        config = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "refsim_version": refsim.__version__,
            "n_layers": len(blocks), "layers": [b.meta for b in blocks],
            "numerics": {"activations": refsim.preset("rptq").to_dict(), "weights": refsim.preset("gptq").to_dict()},
            "permutation_convention": "new[j] = old[perm[j]]",
            **(info or {}),
        }
        write_json(os.path.join(tmp, "quant_config.json"), config)
        if write_extra is not None:
            write_extra(tmp)
    return out_dir


def load_quantized(path):
    """(blocks, config) from a directory written by ``save_quantized``."""
    from safetensors.numpy import load_file

    cfg_path = os.path.join(path, "quant_config.json")
    st_path = os.path.join(path, "model.safetensors")
    for p in (cfg_path, st_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{p!r} is missing: not a quantized model directory written by refsim calibrate")
    with open(cfg_path) as f:
        config = json.load(f)
    if config.get("format") != FORMAT or config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{cfg_path}: format {config.get('format')!r} v{config.get('format_version')} is not "
                         f"supported; supported: {FORMAT!r} v{FORMAT_VERSION}")
    tensors = load_file(st_path)
    blocks = []
    for i, meta in enumerate(config["layers"]):
        prefix = f"layers.{i}."
        arrays = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        blocks.append(QuantizedOPTBlock(arrays, meta))
    return blocks, config
