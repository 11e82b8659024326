"""``refsim verify DIR``: checksums, schema, hex == npy, then every stage re-derived.

Order of the checks (each reported, stage by stage):

    1. manifest.json exists, is JSON, has a known ``schema_version`` and validates against
       golden/manifest.schema.json; its seal (schema 3) matches its preset, config and specs, so
       a hand-edited spec that was not re-sealed is refused before anything is re-derived
    2. every stage's .npy and .hex exist and match their SHA-256 in the manifest
    3. every .npy has the manifest's dtype and shape; every .hex holds the same words
    4. the manifest's top-level fields agree with the stages: the input stages regenerated from
       the recorded seed, level and ``shape`` have the stored stages' shapes, dtypes, word widths,
       signedness and layouts (and, for a portable preset, their values), so the ``shape`` RTL
       teams size their memories from is the one the stages have
    5. the derived stages equal what the preset computes from the input stages, the RECORDED
       numerics specs (never the preset's own) and the recorded config (``np.array_equal``, dtype
       included); each stage names the spec role it applies, and each role's ``uses`` is the
       preset's declared field list

A bundle whose manifest is missing, unreadable or of an unknown schema version is refused at
once with a message naming the file; later failures are collected so the report shows all.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from golden import hexio
from golden.bundle import MANIFEST, SUPPORTED_SCHEMA_VERSIONS, seal, sha256_file
from golden.presets import get_preset
from refsim.spec import NumericsSpec

SCHEMA_FILE = Path(__file__).with_name("manifest.schema.json")


class BundleError(ValueError):
    """A bundle that cannot be read at all (the message names the file)."""


@dataclass
class Check:
    stage: str
    what: str
    ok: bool
    detail: str = ""

    def __str__(self):
        return f"{'ok  ' if self.ok else 'FAIL'} {self.stage:<18} {self.what:<10} {self.detail}".rstrip()


@dataclass
class VerifyReport:
    path: Path
    preset: str = ""
    checks: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failures(self) -> list:
        return [c for c in self.checks if not c.ok]

    def add(self, stage, what, ok, detail=""):
        self.checks.append(Check(stage, what, bool(ok), detail))

    def to_dict(self) -> dict:
        return {"bundle": str(self.path), "preset": self.preset, "ok": self.ok,
                "passed": len(self.checks) - len(self.failures), "total": len(self.checks),
                "checks": [{"stage": c.stage, "what": c.what, "ok": c.ok, "detail": c.detail} for c in self.checks]}

    def __str__(self):
        lines = [f"bundle {self.path} (preset {self.preset})"] + [str(c) for c in self.checks]
        lines.append(f"{'OK' if self.ok else 'FAILED'}: {len(self.checks) - len(self.failures)} of "
                     f"{len(self.checks)} checks pass")
        return "\n".join(lines)


def load_manifest(path) -> dict:
    """The manifest of bundle ``path``, checked for schema version and against the JSON Schema."""
    path = Path(os.fspath(path))
    mf = path / MANIFEST
    if not path.is_dir():
        raise BundleError(f"{path}: not a bundle directory")
    if not mf.is_file():
        raise BundleError(f"{mf}: missing (a bundle has a manifest.json)")
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{mf}: not valid JSON ({exc})") from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise BundleError(f"{mf}: schema_version {version!r} is not supported; allowed: "
                          f"{', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}")
    errors = schema_errors(manifest)
    if errors:
        raise BundleError(f"{mf}: does not match {SCHEMA_FILE.name}: " + "; ".join(errors[:5]))
    return manifest


def schema_errors(manifest: dict) -> list[str]:
    try:
        import jsonschema
    except ImportError:  # a core dependency; missing only in a broken install
        raise BundleError("verify needs the jsonschema package, a core dependency of refsim "
                          "(pip install 'jsonschema>=4')") from None
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.path)))]


def load_stage(path: Path, entry: dict) -> np.ndarray:
    return np.load(path / entry["npy"], allow_pickle=False)


def verify_bundle(path) -> VerifyReport:
    """Check bundle ``path`` (see the module docstring); ``report.ok`` is True when all checks pass."""
    path = Path(os.fspath(path))
    manifest = load_manifest(path)
    report = VerifyReport(path=path, preset=manifest["preset"])
    report.add("manifest", "schema", True, f"schema_version {manifest['schema_version']}")
    if not _check_seal(manifest, report):
        return report
    arrays: dict[str, np.ndarray] = {}
    for e in manifest["stages"]:
        name = e["name"]
        files_ok = True
        for kind in ("npy", "hex"):
            f = path / e[kind]
            if not f.is_file():
                report.add(name, kind, False, f"{f}: missing")
                files_ok = False
                continue
            digest = sha256_file(f)
            good = digest == e["sha256"][kind]
            files_ok &= good
            report.add(name, kind, good, "sha256 ok" if good else
                       f"{f}: sha256 {digest[:16]}... does not match the manifest's {e['sha256'][kind][:16]}...")
        if not files_ok:
            continue
        try:
            a = load_stage(path, e)
        except ValueError as exc:
            report.add(name, "npy", False, f"{path / e['npy']}: unreadable ({exc})")
            continue
        if a.dtype.str != e["dtype"] or list(a.shape) != e["shape"]:
            report.add(name, "npy", False, f"{path / e['npy']}: {a.dtype.str} {list(a.shape)}, manifest says "
                       f"{e['dtype']} {e['shape']}")
            continue
        arrays[name] = a
        try:
            if e["layout"] != "sign_magnitude":
                hexio.check_stage_range(a, e["word_bits"], e["signed"], name=f"{path / e['npy']}")
            words = hexio.read_hex(path / e["hex"], word_bits=e["word_bits"])
            want = hexio.words_from_array(a, e["word_bits"], name=name, sign_magnitude=e["layout"] == "sign_magnitude")
            same = words.shape == want.shape and np.array_equal(words, want.astype(np.uint64))
            report.add(name, "hex==npy", same, "" if same else f"{path / e['hex']}: words differ from {e['npy']}")
        except (ValueError, TypeError) as exc:
            report.add(name, "hex==npy", False, str(exc))
    _check_top_level(manifest, arrays, report)
    _rederive(manifest, arrays, report)
    return report


def _check_top_level(manifest, arrays, report) -> None:
    """The manifest's shape, layouts and word widths against the stages (module docstring, step 4)."""
    from golden.stimulus import make_rng

    recorded = _recorded_preset(manifest, report, "manifest", "top-level")
    if recorded is None:
        return
    preset, specs = recorded
    shape = manifest["shape"]
    if list(shape) != list(preset.shape_names):
        report.add("manifest", "shape", False, f"shape names {list(shape)} are not the preset's "
                   f"{list(preset.shape_names)}")
        return
    entries = {e["name"]: e for e in manifest["stages"]}
    # every dimension is the length of some axis of an input stage: checked before regenerating,
    # so an edited shape never makes verify build something huge
    axes = {n for e in entries.values() if e["role"] == "input" for n in e["shape"]}
    stray = {k: v for k, v in shape.items() if v not in axes}
    if stray:
        report.add("manifest", "shape", False, f"shape {shape}: {stray} is the length of no axis of any input stage")
        return
    try:
        fresh = preset.inputs(make_rng(manifest["generator"]["seed"]), manifest["level"], tuple(shape.values()),
                              manifest["config"], specs)
    except (ValueError, TypeError, LookupError, MemoryError) as exc:
        report.add("manifest", "shape", False, f"the preset cannot generate inputs at shape {shape}: {exc}")
        return
    bad = []
    values_differ = []
    for s in fresh:
        e = entries.get(s.name)
        if e is None or e["role"] != "input":
            bad.append(f"input stage {s.name} is missing from the manifest")
            continue
        want = {"shape": list(s.array.shape), "dtype": s.array.dtype.str, "word_bits": s.word_bits,
                "signed": s.signed, "layout": s.layout}
        diff = {k: (e[k], v) for k, v in want.items() if e[k] != v}
        if diff:
            bad.append(f"{s.name}: " + ", ".join(f"{k} {got} (shape {shape} gives {v})"
                                                 for k, (got, v) in diff.items()))
        elif preset.portable and s.name in arrays and not same_bits(arrays[s.name], s.array):
            values_differ.append(s.name)
    extra = [n for n, e in entries.items() if e["role"] == "input" and n not in {s.name for s in fresh}]
    bad += [f"input stage {n} is not one the preset generates" for n in extra]
    report.add("manifest", "shape", not bad, "; ".join(bad) if bad else
               f"shape {shape}, layouts and word widths agree with the input stages")
    if not bad and preset.portable:
        report.add("manifest", "seed", not values_differ,
                   f"input stages {values_differ} do not regenerate from the recorded seed "
                   f"{manifest['generator']['seed']} and level {manifest['level']}" if values_differ else
                   f"the inputs regenerate from seed {manifest['generator']['seed']}, level {manifest['level']}")


def _check_seal(manifest, report) -> bool:
    """Schema 3 manifests carry a seal over preset, config and specs; False (a failed check) when it differs."""
    if manifest["schema_version"] < 3:
        report.add("manifest", "seal", True, f"schema_version {manifest['schema_version']} manifests carry no seal")
        return True
    want = seal(manifest)
    if manifest.get("seal") != want:
        report.add("manifest", "seal", False,
                   f"{MANIFEST}: the seal {str(manifest.get('seal'))[:16]}... does not match its preset, config and "
                   f"specs (sha256 {want[:16]}...): they were edited by hand after the bundle was written; write a "
                   "new bundle with `refsim golden PRESET --spec ROLE=FILE.json` instead of editing the manifest")
        return False
    report.add("manifest", "seal", True, "preset, config and specs are as written")
    return True


def _spec_dicts(manifest) -> dict:
    """{role: spec dict}: schema 3 records {"spec", "uses"} per role, schemas 1 and 2 the spec itself."""
    if manifest["schema_version"] < 3:
        return dict(manifest["specs"])
    return {role: entry["spec"] for role, entry in manifest["specs"].items()}


def _recorded_preset(manifest, report, stage, what):
    """(preset, {role: NumericsSpec}) the manifest records, or None with a failed check."""
    try:
        specs = {role: NumericsSpec.from_dict(d) for role, d in _spec_dicts(manifest).items()}
        preset = get_preset(manifest["preset"])
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        report.add(stage, what, False, f"{type(exc).__name__}: {exc}")
        return None
    if manifest["schema_version"] >= 3:
        for role, entry in manifest["specs"].items():
            declared = preset.spec_use.get(role)
            if declared is not None and list(entry["uses"]) != list(declared.fields):
                report.add(stage, what, False, f"specs.{role}.uses {entry['uses']} is not what preset {preset.name}'s "
                           f"stages use: {list(declared.fields)}")
                return None
    # an edited manifest that drops or adds a role or a config key is a failed check, not a crash later
    for key, recorded, want in (("specs", specs, preset.specs), ("config", manifest.get("config"), preset.config)):
        if not isinstance(recorded, dict) or set(recorded) != set(want):
            got = sorted(recorded) if isinstance(recorded, dict) else recorded
            report.add(stage, what, False, f"manifest {key} has keys {got}; preset {preset.name} records "
                       f"{sorted(want)}")
            return None
    return preset, specs


def _rederive(manifest, arrays, report) -> None:
    recorded = _recorded_preset(manifest, report, "derive", "setup")
    if recorded is None:
        return
    preset, specs = recorded
    entries = {e["name"]: e for e in manifest["stages"]}
    inputs = [n for n, e in entries.items() if e["role"] == "input"]
    missing = [n for n in inputs if n not in arrays]
    if missing:
        report.add("derive", "inputs", False, f"cannot re-derive: input stages {missing} failed their checks")
        return
    try:
        derived = preset.derive({n: arrays[n] for n in inputs}, specs, manifest["config"])
    except (ValueError, TypeError, LookupError, ArithmeticError) as exc:
        report.add("derive", "run", False, f"the preset cannot re-derive the stages from the recorded inputs and "
                   f"specs: {type(exc).__name__}: {exc}")
        return
    names = {s.name for s in derived}
    for n, e in entries.items():
        if e["role"] == "derived" and n not in names:
            report.add(n, "derive", False, "the preset no longer computes this stage")
    for s in derived:
        e = entries.get(s.name)
        if e is None:
            report.add(s.name, "derive", False, "computed by the preset but absent from the manifest")
            continue
        if s.name not in arrays:
            report.add(s.name, "derive", False, "stored stage failed its file checks")
            continue
        meta = {"word_bits": s.word_bits, "signed": s.signed, "layout": s.layout}
        if manifest["schema_version"] >= 3:
            meta["spec"] = s.spec
        bad_meta = {k: (e[k], v) for k, v in meta.items() if e[k] != v}
        stored = arrays[s.name]
        same = same_bits(stored, s.array)
        if same and not bad_meta:
            report.add(s.name, "derive", True, "re-derived bit for bit")
        elif bad_meta:
            report.add(s.name, "derive", False, f"manifest fields differ from the preset: {bad_meta}")
        else:
            diff = _first_difference(stored, s.array)
            report.add(s.name, "derive", False, f"re-derived values differ: {diff}")


def _bits(a: np.ndarray) -> np.ndarray:
    """Integers as they are; floats as their bit patterns (so -0.0 != 0.0 and NaN == same NaN)."""
    return a.view(f"u{a.dtype.itemsize}") if a.dtype.kind == "f" else a


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-exact equality: same dtype, same shape, same bits in every element."""
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(_bits(a), _bits(b))


def _first_difference(stored, fresh) -> str:
    if stored.shape != fresh.shape or stored.dtype != fresh.dtype:
        return f"stored {stored.dtype} {stored.shape}, re-derived {fresh.dtype} {fresh.shape}"
    idx = np.argwhere(_bits(stored) != _bits(fresh))
    i = tuple(int(j) for j in idx[0])
    return f"{len(idx)} elements, first at {i}: stored {stored[i]!r}, re-derived {fresh[i]!r}"
