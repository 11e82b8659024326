"""Cost model: model shapes, memory footprint, traffic, roofline throughput, energy.

For hardware architects weighing hypothetical 3- and 4-bit hardware for real LLMs (DESIGN.md,
"Cost model"). Sizes are bytes; every report also gives GiB (2^30 bytes) and GB (10^9 bytes).

Modules, each named for what it holds:

=================  ==========================================================================
``shapes``         model dimensions and per-tensor parameter counts (built-in table, config.json,
                   transformers config objects)
``quantconfig``    bit widths per tensor class and their metadata (RPTQ, QRazor, GPTQ presets)
``footprint``      memory: weights, KV cache, dynamic activations (:func:`memory`)
``hardware``       peaks per (weight bits, activation bits), bandwidth, buffer, clock (A100, H100,
                   H200, hypothetical int4/int3 parts, user-defined accelerators)
``traffic``        per-layer operations and bytes, arithmetic intensity, roofline time, energy
``energy``         MAC energies (BitFusion 45 nm, 3-bit interpolated) and their sources
``calib``          calibration tensors for the error figures (synthetic or an .npz)
``errors``         quantization error (SQNR) of a design point, measured with ``refsim``
``sweep``          the co-design sweep on Dask and its Pareto fronts
``plots``          matplotlib figures; ``report``: tables, JSON, CSV; ``cli``: ``refsim cost``
``outputs``        where ``refsim cost`` writes: its own plots recognised by a PNG tag, CSV directories
=================  ==========================================================================

Quick use::

    import hwmodel
    m = hwmodel.memory("opt-66b", "W4A4KV", batch=64, seq=8192)
    m.total_gib, m.kv_cache_gib          # 395.3, 288.0
    hwmodel.throughput("llama-3-8b", "W4A4", "H200", batch=16, seq=4096)["decode"]["tokens_per_s"]

Only numpy is imported here; matplotlib, dask and refsim are imported by the functions that use them.
"""

from .footprint import GB, GIB, MemoryReport, memory
from .hardware import Hardware, get_hardware, known_hardware
from .quantconfig import PRESETS, QuantConfig, custom, gptq, parse_config, qrazor, rptq
from .shapes import ModelShape, from_config_json, from_transformers, get_shape, known_models
from .traffic import layer_table, stage_totals, throughput

__all__ = [
    "GB", "GIB", "MemoryReport", "memory", "Hardware", "get_hardware", "known_hardware", "PRESETS",
    "QuantConfig", "custom", "gptq", "parse_config", "qrazor", "rptq", "ModelShape", "from_config_json",
    "from_transformers", "get_shape", "known_models", "layer_table", "stage_totals", "throughput",
]
