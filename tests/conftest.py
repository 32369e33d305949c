"""Shared pytest setup: fixture modules for the real loopback servers and small models, and the
hypothesis profile (no deadline on shared machines; no shrinking, so a law check that is expected
to catch a violation reports it at once — set HYPOTHESIS_PROFILE=debug to shrink to a minimal case)."""

import os

from hypothesis import Phase, settings

settings.register_profile(
    "ckptflow", deadline=None, phases=(Phase.explicit, Phase.reuse, Phase.generate), print_blob=True
)
settings.register_profile("debug", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ckptflow"))

pytest_plugins = [
    "tests.fixtures.models",
    "tests.fixtures.http_server",
    "tests.fixtures.s3_server",
    "tests.fixtures.gcs_server",
    "tests.fixtures.azurite",
    "tests.fixtures.mlflow_server",
]
