"""Shared test configuration: hypothesis profiles (GPU tests skip themselves without a device)."""

import os

from hypothesis import HealthCheck, settings

# CI (CI=true, which .ci/run exports) runs the "ci" profile: derandomize=True makes every run draw
# the same examples, so a CI result is reproducible and a red build stays red until the code changes;
# max_examples is fixed so the suite's time is bounded on 2 cores; deadline=None because shared
# machines stall unpredictably; print_blob=True prints the @reproduce_failure blob of a failing
# example, so it can be replayed locally under any profile; no example database is kept (a
# derandomized run neither reads nor needs one).
# Elsewhere the "dev" profile draws fresh examples each run, to find new failures; HYPOTHESIS_PROFILE
# chooses any profile explicitly ("long" for a campaign). Each profile names derandomize itself:
# hypothesis's own CI detection (any CI variable) would otherwise make it the inherited default.
settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True, print_blob=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=60, deadline=None, derandomize=False, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=5000, deadline=None, derandomize=False, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if _in_ci() else "dev"))
