"""Committed SHA-256 digests of small canonical bundles (tests/data/golden_digests.json).

CI regenerates every canonical bundle and compares. A change that alters any file of a
canonical bundle changes the numerics a hardware team signed off on, so it needs a bump of
the bundle schema version (golden.bundle.SCHEMA_VERSION) or of the numerics spec version
(refsim.spec.SPEC_SCHEMA_VERSION), a CHANGELOG.md entry, and regenerated digests:

    python -m golden.digests --update tests/data/golden_digests.json

The manifest digest leaves out ``tool.version`` (a release number is not a numerics change).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

from golden.bundle import MANIFEST, SCHEMA_VERSION, write_bundle
from golden.presets import PRESETS
from refsim.spec import SPEC_SCHEMA_VERSION

SEED = 0


def canonical_bundles() -> list[tuple[str, int]]:
    """(preset, level) of every canonical bundle: each preset at the levels its metadata commits
    (``Preset.digest_levels``: none for a preset that is not portable, no level too big for CI)."""
    return [(name, lv) for name, p in PRESETS.items() for lv in p.digest_levels]


def bundle_digest(path) -> dict:
    path = Path(path)
    manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    stages = {e["name"]: dict(e["sha256"]) for e in manifest["stages"]}
    manifest["tool"] = {"name": manifest["tool"]["name"], "version": "*"}
    text = json.dumps(manifest, indent=2, ensure_ascii=True).encode("ascii")
    return {"manifest": hashlib.sha256(text).hexdigest(), "stages": stages}


def compute_all() -> dict:
    result = {"schema_version": SCHEMA_VERSION, "spec_schema_version": SPEC_SCHEMA_VERSION, "seed": SEED,
              "bundles": {}}
    with tempfile.TemporaryDirectory(prefix="refsim-digests-") as tmp:
        for name, level in canonical_bundles():
            out = write_bundle(name, Path(tmp) / f"{name}-{level}", seed=SEED, level=level, progress=False)
            result["bundles"][f"{name}/level{level}"] = bundle_digest(out)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Compute (or --update) the canonical bundle digests.")
    ap.add_argument("path", nargs="?", default="tests/data/golden_digests.json")
    ap.add_argument("--update", action="store_true", help="write the file (after a version bump + CHANGELOG entry)")
    args = ap.parse_args(argv)
    digests = compute_all()
    text = json.dumps(digests, indent=1, sort_keys=True) + "\n"
    if args.update:
        p = Path(args.path)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(p)
        print(f"wrote {p}: {len(digests['bundles'])} bundles")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
