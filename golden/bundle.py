"""Writing a bundle: stimulus, stages, ``.npy`` + ``.hex`` files, and the manifest.

A bundle is a directory (docs/golden.md):

    manifest.json          schema version, tool version, preset, config, numerics specs,
                           generator and seed, level, shape, and one entry per stage with the
                           SHA-256 of its files
    <stage>.npy            the stage as numpy saves it (fixed little-endian dtype, C order)
    <stage>.hex            the same values as ``$readmemh`` words (golden.hexio)

The manifest holds no timestamp and no absolute path: the same preset, seed, level and shape
give byte-identical files on any machine. The bundle is written to a temporary directory
beside the target and renamed into place, so a crash leaves no half-written bundle; an
existing target is replaced only with ``force=True``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import refsim
from golden import hexio
from golden.presets import Preset, Stage, get_preset
from golden.stimulus import GENERATOR, LEVELS, check_level, make_rng

SCHEMA_VERSION = 2  # CHANGELOG.md: what each version changed
SUPPORTED_SCHEMA_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
# Bundles bigger than this report progress on stderr by default.
PROGRESS_BYTES = 16 << 20


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def parse_shape(shape, preset: Preset) -> tuple | None:
    """``None``, a sequence of ints, or text like ``8,64,8`` / ``8x64x8``, checked against the preset."""
    if shape is None:
        return None
    if isinstance(shape, str):
        parts = shape.replace("x", ",").replace("X", ",").split(",")
        try:
            shape = tuple(int(p) for p in parts if p.strip())
        except ValueError:
            raise ValueError(f"shape={shape!r} is not allowed; allowed: integers like "
                             f"{','.join(map(str, preset.default_shape))}") from None
    shape = tuple(int(s) for s in shape)
    names = ",".join(preset.shape_names)
    if len(shape) != len(preset.shape_names) or any(s < 1 for s in shape):
        raise ValueError(f"shape={shape!r} is not allowed for preset {preset.name}; allowed: {len(names.split(','))} "
                         f"positive integers ({names})")
    return shape


def build_stages(preset: Preset, *, seed=0, level=0, shape=None) -> tuple[list[Stage], tuple]:
    """All stages (inputs then derived) of a preset, and the effective shape."""
    level = check_level(level)
    if level not in preset.levels:
        raise ValueError(f"level={level} is not allowed for preset {preset.name}; allowed: "
                         f"{', '.join(map(str, preset.levels))}")
    shape = parse_shape(shape, preset)
    if level == 2:
        if shape is not None:
            raise ValueError(f"shape is not allowed at level 2 (exhaustive): preset {preset.name} fixes it at "
                             f"{preset.exhaustive_shape(preset.config)}")
        shape = tuple(preset.exhaustive_shape(preset.config))
    elif level == 1 and preset.pattern_shape is not None:
        if shape is not None:
            raise ValueError(f"shape is not allowed at level 1 for preset {preset.name}: its patterns fix it at "
                             f"{preset.pattern_shape(preset.config)}")
        shape = tuple(preset.pattern_shape(preset.config))
    elif shape is None:
        shape = tuple(preset.default_shape)
    rng = make_rng(seed)
    inputs = preset.inputs(rng, level, shape, preset.config, preset.specs)
    arrays = {s.name: s.array for s in inputs}
    derived = preset.derive(arrays, preset.specs, preset.config)
    return list(inputs) + list(derived), shape


def stage_entry(s: Stage) -> dict:
    return {
        "name": s.name,
        "role": s.role,
        "doc": s.doc,
        "npy": f"{s.name}.npy",
        "hex": f"{s.name}.hex",
        "dtype": s.array.dtype.str,
        "shape": list(s.array.shape),
        "word_bits": s.word_bits,
        "signed": s.signed,
        "layout": s.layout,
        "words": int(s.array.size),
    }


def _stderr_progress(msg: str) -> None:
    print(f"golden: {msg}", file=sys.stderr, flush=True)


def write_bundle(preset=None, out=None, *, seed=0, level=0, shape=None, force=False, progress=None) -> Path:
    """Write a bundle of ``preset`` (the default bundle when None) to directory ``out``; returns its path.

    progress: None (report on stderr when the bundle exceeds 16 MiB), True, False, or a
    callable taking one message string.
    """
    if out is None and isinstance(preset, os.PathLike):
        preset, out = None, preset
    if out is None:
        raise TypeError("write_bundle needs out, the bundle directory to create")
    p = get_preset(preset)
    out = Path(os.fspath(out))
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass force=True (--force) to replace it")
    stages, shape = build_stages(p, seed=seed, level=level, shape=shape)
    total = sum(s.array.nbytes for s in stages)
    if progress is None:
        progress = total > PROGRESS_BYTES
    report = _stderr_progress if progress is True else (progress or None)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        entries = write_stage_files(tmp, stages, report=report)
        manifest = make_manifest(p, seed=seed, level=level, shape=shape, entries=entries)
        (tmp / MANIFEST).write_text(dump_manifest(manifest), encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a bundle is for sharing
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "bundle")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if report:
        report(f"wrote {out} ({len(stages)} stages, preset {p.name}, level {level}, seed {seed})")
    return out


def write_stage_files(directory, stages, *, report=None, timings=None) -> list[dict]:
    """Write each stage's .npy and .hex into ``directory``; returns the manifest's stage entries.

    timings: an optional dict that receives the seconds spent in ``np.save`` (``npy``), in
    word conversion plus the hex writer (``hex``) and in hashing (``sha256``).
    """
    directory = Path(directory)
    t = timings if timings is not None else {}
    for k in ("npy", "hex", "sha256"):
        t.setdefault(k, 0.0)
    entries = []
    for i, s in enumerate(stages):
        if report:
            report(f"[{i + 1}/{len(stages)}] {s.name}: {s.array.size} words of {s.word_bits} bits")
        e = stage_entry(s)
        t0 = time.perf_counter()
        np.save(directory / e["npy"], s.array, allow_pickle=False)
        t1 = time.perf_counter()
        hex_progress = None
        if report and s.array.size > (4 << 20):
            def hex_progress(done, n, _name=s.name):
                if done == n or done % (16 * hexio.CHUNK_WORDS) == 0:
                    report(f"    {_name}.hex {100 * done // n}%")
        hexio.write_array_hex(directory / e["hex"], s.array, s.word_bits, progress=hex_progress,
                              sign_magnitude=s.layout == "sign_magnitude")
        t2 = time.perf_counter()
        e["sha256"] = {"npy": sha256_file(directory / e["npy"]), "hex": sha256_file(directory / e["hex"])}
        t["npy"] += t1 - t0
        t["hex"] += t2 - t1
        t["sha256"] += time.perf_counter() - t2
        entries.append(e)
    return entries


def make_manifest(p: Preset, *, seed, level, shape, entries) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "refsim", "version": refsim.__version__},
        "preset": p.name,
        "summary": p.summary,
        "generator": {"name": GENERATOR, "seed": int(seed)},
        "level": int(level),
        "level_name": LEVELS[int(level)],
        "exhaustive": int(level) == 2,
        "shape": {n: int(v) for n, v in zip(p.shape_names, shape, strict=True)},
        "config": dict(p.config),
        "specs": {role: spec.to_dict() for role, spec in p.specs.items()},
        "notes": list(p.notes),
        "stages": entries,
    }


def dump_manifest(manifest: dict) -> str:
    return json.dumps(manifest, indent=2, ensure_ascii=True) + "\n"
