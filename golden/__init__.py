"""Golden-vector bundles for accelerator RTL teams: generators, writers/readers, verify, compare.

    write_bundle(preset=None, out, *, seed=0, level=0, shape=None, force=False, specs=None) -> Path
    verify_bundle(path) -> VerifyReport (``.ok``)
    compare(bundle, stage, dut) -> CompareResult (``.ok``)
    PRESETS, DEFAULT_PRESET

docs/golden.md describes the bundle layout and every stage.
"""

from golden.bundle import SCHEMA_VERSION, write_bundle
from golden.compare import compare
from golden.presets import DEFAULT_PRESET, PRESETS
from golden.verify import BundleError, VerifyReport, verify_bundle

__all__ = ["BundleError", "DEFAULT_PRESET", "PRESETS", "SCHEMA_VERSION", "VerifyReport", "compare", "verify_bundle",
           "write_bundle"]
