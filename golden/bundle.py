"""Writing a bundle: stimulus, stages, ``.npy`` + ``.hex`` files, and the manifest.

A bundle is a directory (docs/golden.md):

    manifest.json          schema version, tool version, preset, config, the numerics specs
                           its stages used (each with the fields they depend on), generator and
                           seed, level, shape, one entry per stage with the SHA-256 of its files
                           and the spec role it applies, and a seal over specs and config
    <stage>.npy            the stage as numpy saves it (fixed little-endian dtype, C order)
    <stage>.hex            the same values as ``$readmemh`` words (golden.hexio)

The manifest holds no timestamp and no absolute path: the same preset, seed, level and shape
give byte-identical files on any machine. The bundle is written to a temporary directory
beside the target and renamed into place, so a crash leaves no half-written bundle; an
existing target is replaced only when it is a bundle (its manifest lists every file in it) and
``force=True``; anything else is refused.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

import refsim
from golden import hexio
from golden.presets import Preset, Stage, get_preset
from golden.stimulus import GENERATOR, LEVELS, check_level, make_rng
from refsim.outputs import (
    UsageError,
    available_memory,
    check_memory,
    check_output,
    foreign_files,
    format_size,
    staged_output,
)

SCHEMA_VERSION = 3  # CHANGELOG.md: what each version changed
SUPPORTED_SCHEMA_VERSIONS = (1, 2, 3)
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


def resolve_specs(preset: Preset, specs=None) -> dict:
    """The preset's specs with ``specs`` ({role: NumericsSpec}) replacing some roles; unknown roles refused."""
    out = dict(preset.specs)
    for role, spec in (specs or {}).items():
        if role not in out:
            allowed = ", ".join(out) if out else "none (this preset applies no numerics spec)"
            raise ValueError(f"spec role {role!r} is not one of preset {preset.name}'s; allowed: {allowed}")
        if not isinstance(spec, refsim.NumericsSpec):
            raise TypeError(f"specs[{role!r}] must be a refsim.NumericsSpec, got {type(spec).__name__}")
        out[role] = spec
    return out


def build_stages(preset: Preset, *, seed=0, level=0, shape=None, specs=None) -> tuple[list[Stage], tuple]:
    """All stages (inputs then derived) of a preset under its specs (``specs`` replacing some roles),
    and the effective shape."""
    specs = resolve_specs(preset, specs)
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
    inputs = preset.inputs(rng, level, shape, preset.config, specs)
    arrays = {s.name: s.array for s in inputs}
    derived = preset.derive(arrays, specs, preset.config)
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
        "spec": s.spec,
    }


def _stderr_progress(msg: str) -> None:
    print(f"golden: {msg}", file=sys.stderr, flush=True)


def writer_note(writer: str) -> str:
    """The manifest note by which a command other than ``refsim golden`` (the demo) knows its own bundles."""
    return f"written by `{writer}`"


def is_bundle_dir(path, writer: str | None = None) -> bool:
    """True when ``path`` is a bundle refsim wrote: a manifest.json of refsim whose stage files,
    with the manifest, are everything the directory holds (a user's file put there makes it foreign).
    With ``writer``, only a bundle whose manifest carries that command's :func:`writer_note`."""
    path = Path(os.fspath(path))
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("tool", {}).get("name") != "refsim":
            return False
        if writer is not None and writer_note(writer) not in manifest.get("notes", []):
            return False
        written = [MANIFEST] + [e[k] for e in manifest["stages"] for k in ("npy", "hex")]
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return False
    return not foreign_files(path, written)


# A stage's words as the .hex holds them: hex digits and a newline; the .npy at most 8 bytes a word.
def _bytes_on_disk(words: int, word_bits: int = 64) -> int:
    return words * (8 + -(-word_bits // 4) + 1)


def _sizes(stages) -> tuple[int, int]:
    return (sum(s.array.nbytes for s in stages), sum(_bytes_on_disk(s.array.size, s.word_bits) for s in stages))


def estimate_bundle(p: Preset, *, seed=0, level=0, shape=None, bound_only=False,
                    specs=None) -> tuple[int, int] | None:
    """(bytes in memory, bytes on disk) of a bundle at ``shape``, from bundles built at small shapes.

    Every stage's size is a sum of products of powers of the shape's dimensions (M*K, K*N, M*N/g,
    T*T, ...) with non-negative coefficients, dimension i entering with power at most
    ``k_i = p.size_degree[i]`` (1 unless the preset says otherwise: the OPT block's T x T scores and
    hidden x hidden weights enter squared). So the size at the default shape d times
    prod_i max(s_i/d_i, 1)^k_i is an upper bound (``bound_only``: one small build). The estimate
    proper builds the bundle at every point t * d of the grid t_i in {1, ..., k_i + 1} and
    interpolates: a polynomial of degree k_i in each t_i is fixed by those prod_i (k_i + 1) values
    (tensor-product Lagrange interpolation), so the size at ``shape`` comes out exactly without
    building it. None when the small builds are not possible.
    """
    if shape is None:
        return None
    base = tuple(p.default_shape)
    degree = tuple(p.size_degree or (1,) * len(base))
    ratio = [s / d for s, d in zip(shape, base, strict=True)]
    grid = [(1,) * len(base)] if bound_only else list(itertools.product(*[range(1, k + 2) for k in degree]))
    try:
        sizes = {t: _sizes(build_stages(p, seed=seed, level=level, specs=specs,
                                        shape=tuple(d * ti for d, ti in zip(base, t, strict=True)))[0])
                 for t in grid}
    except (ValueError, TypeError, MemoryError, ArithmeticError):
        return None
    if bound_only:
        grow = 1.0
        for r, k in zip(ratio, degree, strict=True):
            grow *= max(r, 1.0) ** k
        return int(sizes[grid[0]][0] * grow), int(sizes[grid[0]][1] * grow)
    total = [0.0, 0.0]
    for t, (mem, disk) in sizes.items():
        w = 1.0
        for i, ti in enumerate(t):
            for node in range(1, degree[i] + 2):  # the Lagrange basis polynomial of node ti at ratio[i]
                if node != ti:
                    w *= (ratio[i] - node) / (ti - node)
        total[0] += mem * w
        total[1] += disk * w
    return max(int(round(total[0])), 0), max(int(round(total[1])), 0)


def check_bundle_size(p: Preset, out, *, seed, level, shape, specs=None) -> None:
    """Refuse, naming --shape, a bundle that would not fit in memory or on disk (before building it)."""
    if shape is None:
        return
    shown = ",".join(map(str, shape))
    avail = available_memory()
    free = shutil.disk_usage(_existing_parent(out)).free
    sizes = estimate_bundle(p, seed=seed, level=level, shape=shape, bound_only=True, specs=specs)
    if sizes is None or (avail is None or sizes[0] * WORKING_MEMORY_FACTOR <= avail) and sizes[1] <= free:
        return
    sizes = estimate_bundle(p, seed=seed, level=level, shape=shape, specs=specs)
    if sizes is None:
        return
    check_memory(sizes[0] * WORKING_MEMORY_FACTOR, flag="--shape", value=shown, what=f"preset {p.name} at {shown}")
    if sizes[1] > free:
        raise UsageError(f"--shape {shown}: the bundle would take about {format_size(sizes[1])} on disk but only "
                         f"{format_size(free)} is free under {out}; choose a smaller --shape")


def _existing_parent(path) -> Path:
    probe = Path(path)
    while not probe.exists():
        probe = probe.parent
    return probe


# Generating and deriving holds the stages plus float64/int64 intermediates of about the same size.
WORKING_MEMORY_FACTOR = 4


def write_bundle(preset=None, out=None, *, seed=0, level=0, shape=None, force=False, progress=None,
                 replace_flag="--force", writer: str | None = None, notes: tuple[str, ...] = (),
                 specs: dict | None = None) -> Path:
    """Write a bundle of ``preset`` (the default bundle when None) to directory ``out``; returns its path.

    The output is checked first (refsim.outputs.check_output): an existing directory is replaced
    only when it is a bundle refsim wrote (manifest and nothing else) and ``force`` is True; a
    user's directory or file is refused whatever ``force`` says. A ``shape`` whose bundle would not
    fit in memory or on disk is refused before anything is computed.
    progress: None (report on stderr when the bundle exceeds 16 MiB), True, False, or a
    callable taking one message string.
    writer: a command other than ``refsim golden`` that writes the bundle (``"refsim demo"``): its
    :func:`writer_note` is added to the manifest's notes, so that it replaces only its own bundles.
    notes: more lines for the manifest's notes (the demo records the numerics spec of what it printed).
    specs: {role: NumericsSpec} replacing the preset's spec of those roles (``refsim golden --spec``);
    the manifest records the specs the stages were made with.
    """
    if out is None and isinstance(preset, os.PathLike):
        preset, out = None, preset
    if out is None:
        raise TypeError("write_bundle needs out, the bundle directory to create")
    p = get_preset(preset)
    used_specs = resolve_specs(p, specs)
    check_level(level)
    parsed = parse_shape(shape, p)
    out = check_output(out, own=is_bundle_dir, replace=force, replace_flag=replace_flag)
    if level != 2 and not (level == 1 and p.pattern_shape is not None):
        check_bundle_size(p, out, seed=seed, level=level, shape=parsed, specs=used_specs)
    stages, shape = build_stages(p, seed=seed, level=level, shape=parsed, specs=used_specs)
    total = sum(s.array.nbytes for s in stages)
    if progress is None:
        progress = total > PROGRESS_BYTES
    report = _stderr_progress if progress is True else (progress or None)

    with staged_output(out, kind="golden-bundle", marker=False, own=is_bundle_dir) as tmp:
        entries = write_stage_files(tmp, stages, report=report)
        manifest = make_manifest(p, seed=seed, level=level, shape=shape, entries=entries, specs=used_specs)
        if writer is not None:
            manifest["notes"].append(writer_note(writer))
        manifest["notes"].extend(notes)
        (tmp / MANIFEST).write_text(dump_manifest(manifest), encoding="utf-8")
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


def recorded_specs(p: Preset, specs: dict, entries) -> dict:
    """The manifest's ``specs``: each role some stage applies, its full spec and the fields its stages use.

    The full spec is recorded so that verify re-derives with exactly it; ``uses`` lists the fields the
    preset's stages depend on (Preset.spec_use). A field not in ``uses`` changes no stage (the spec-edit
    test proves it); a role no stage applies is not recorded at all.
    """
    applied = {e["spec"] for e in entries if e.get("spec")}
    return {role: {"spec": spec.to_dict(), "uses": list(p.spec_use[role].fields)}
            for role, spec in specs.items() if role in applied}


SEALED = ("preset", "config", "specs")


def seal(manifest: dict) -> str:
    """SHA-256 of the manifest's preset, config and specs as canonical JSON (sorted keys, no spaces).

    verify recomputes it: a hand edit of a recorded spec or config that is not re-sealed is refused.
    """
    body = {k: manifest.get(k) for k in SEALED}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def make_manifest(p: Preset, *, seed, level, shape, entries, specs=None) -> dict:
    specs = resolve_specs(p, specs)
    manifest = {
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
        "specs": recorded_specs(p, specs, entries),
        "notes": list(p.notes),
        "stages": entries,
    }
    manifest["seal"] = seal(manifest)
    return manifest


def dump_manifest(manifest: dict) -> str:
    return json.dumps(manifest, indent=2, ensure_ascii=True) + "\n"
