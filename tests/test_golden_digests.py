"""Canonical bundles regenerate to their committed SHA-256 digests (tests/data/golden_digests.json)."""

import json
from pathlib import Path

import pytest

from golden import digests
from golden.bundle import SCHEMA_VERSION
from refsim.spec import SPEC_SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = json.loads((ROOT / "tests" / "data" / "golden_digests.json").read_text())
HOWTO = ("bump golden.bundle.SCHEMA_VERSION or refsim.spec.SPEC_SCHEMA_VERSION, add a CHANGELOG.md entry, and "
         "run `python -m golden.digests --update tests/data/golden_digests.json`")


def test_versions_match_the_committed_digests():
    assert (COMMITTED["schema_version"], COMMITTED["spec_schema_version"]) == (SCHEMA_VERSION, SPEC_SCHEMA_VERSION), (
        f"the versions changed: regenerate the digests ({HOWTO})")


def test_changelog_states_the_current_versions():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert f"schema_version {SCHEMA_VERSION}" in text and f"spec_schema_version {SPEC_SCHEMA_VERSION}" in text


def test_every_canonical_bundle_is_listed():
    assert sorted(COMMITTED["bundles"]) == sorted(f"{n}/level{lv}" for n, lv in digests.canonical_bundles())


@pytest.fixture(scope="module")
def fresh():
    return digests.compute_all()["bundles"]


@pytest.mark.parametrize("key", sorted(COMMITTED["bundles"]))
def test_bundle_digest_unchanged(fresh, key):
    want, got = COMMITTED["bundles"][key], fresh[key]
    changed = sorted(n for n in set(want["stages"]) | set(got["stages"])
                     if want["stages"].get(n) != got["stages"].get(n))
    assert not changed, f"{key}: stages {changed} changed; a numerics change needs a version bump: {HOWTO}"
    assert want["manifest"] == got["manifest"], f"{key}: manifest.json changed: {HOWTO}"
