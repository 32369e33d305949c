"""Shared pytest setup: fixture modules for the real loopback servers and small models."""

pytest_plugins = [
    "tests.fixtures.models",
    "tests.fixtures.http_server",
    "tests.fixtures.s3_server",
    "tests.fixtures.gcs_server",
    "tests.fixtures.azurite",
    "tests.fixtures.mlflow_server",
]
