"""The Google Cloud Storage edge: ``gs://bucket/object`` over the JSON API, through the generic HTTP object.

The object is described by a metadata GET (size, generation, md5/crc32c) and read from the media URL
pinned to that generation, so a resumed download can never splice two versions. Cache, resume,
retry and verification belong to ``ckptflow.sources.transfer``. Tokens travel only in headers and
never appear in a message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import attrs
import httpx
from attrs import frozen
from returns.result import Failure, Result, Success

from ckptflow.config.schema import GcsSource
from ckptflow.config.uris import gcs_from_uri as from_uri
from ckptflow.errors import AccessDenied, Error, InvalidConfig, NetworkError
from ckptflow.sources.base import Body, FetchSettings, ObjectInfo, SourceSpec, TransferError
from ckptflow.sources.checksums import md5_hex
from ckptflow.sources.http import HttpObject, http_client
from ckptflow.sources.transfer import download, is_offline

__all__ = [
    "DEFAULT_ENDPOINT",
    "EMULATOR_ENV",
    "READ_SCOPE",
    "SOURCE",
    "TOKEN_ENV",
    "GcsObject",
    "auth_headers",
    "default_credentials_token",
    "endpoint_for",
    "fetch",
    "from_uri",
    "gcs_object",
    "identity_of",
    "info_from_metadata",
    "media_url",
    "metadata_url",
    "object_info",
]

DEFAULT_ENDPOINT = "https://storage.googleapis.com"
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
TOKEN_ENV = "GOOGLE_OAUTH_ACCESS_TOKEN"
"""An OAuth2 access token to send as a bearer token when the config gives none."""
READ_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"


def identity_of(bucket: str, blob: str) -> str:
    """The secret-free name of an object, as ``gsutil`` writes it."""
    return f"gs://{bucket}/{blob}"


def endpoint_for(configured: str | None, environ: Mapping[str, str]) -> str:
    """The JSON API root: ``endpoint_url``, else ``STORAGE_EMULATOR_HOST`` (scheme optional), else Google."""
    if configured:
        return configured.rstrip("/")
    emulator = environ.get(EMULATOR_ENV, "").strip()
    if emulator:
        return (emulator if "://" in emulator else f"http://{emulator}").rstrip("/")
    return DEFAULT_ENDPOINT


def _object_path(bucket: str, blob: str) -> str:
    return f"/storage/v1/b/{quote(bucket, safe='')}/o/{quote(blob, safe='')}"


def metadata_url(endpoint: str, bucket: str, blob: str, generation: str | None = None) -> str:
    """The object's JSON metadata resource, pinned to ``generation`` when given."""
    query = f"?{urlencode({'generation': generation})}" if generation else ""
    return f"{endpoint}{_object_path(bucket, blob)}{query}"


def media_url(endpoint: str, bucket: str, blob: str, generation: str | None) -> str:
    """The object's bytes (``alt=media``), pinned to ``generation`` so every range reads one version."""
    params = {"alt": "media", **({"generation": generation} if generation else {})}
    return f"{endpoint}{_object_path(bucket, blob)}?{urlencode(params)}"


def object_info(identity: str, metadata: Mapping[str, Any], *, pinned: bool) -> ObjectInfo:
    """Describe an object from its JSON metadata.

    ``version`` is the generation; ``md5`` (hex) and ``crc32c`` (base64, as GCS reports it) are the
    store's checksums. Composite objects have no ``md5Hash``, only ``crc32c``. ``pinned`` (the caller
    named a generation) makes the content immutable.
    """
    md5 = md5_hex(str(metadata["md5Hash"])) if metadata.get("md5Hash") else None
    crc32c = metadata.get("crc32c")
    size = str(metadata.get("size", ""))
    return ObjectInfo(
        identity=identity,
        size=int(size) if size.isdigit() else None,
        version=str(metadata["generation"]) if metadata.get("generation") else None,
        checksums={
            **({"md5": md5} if md5 else {}),
            **({"crc32c": str(crc32c)} if crc32c else {}),
        },
        immutable=pinned,
    )


def info_from_metadata(response: httpx.Response, identity: str, *, pinned: bool = False) -> ObjectInfo:
    """``InfoReader`` for the JSON API: a body that is not object metadata yields no generation."""
    try:
        metadata = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        metadata = None
    if not isinstance(metadata, dict):
        return ObjectInfo(identity=identity, size=None)
    return object_info(identity, metadata, pinned=pinned)


# --- credentials --------------------------------------------------------------------------------------

TokenProvider = Callable[[], Result[str, Error]]

_ADC_HINT = (
    "no Google application default credentials: run `gcloud auth application-default login`, "
    "set GOOGLE_APPLICATION_CREDENTIALS, pass token (or GOOGLE_OAUTH_ACCESS_TOKEN), "
    "or set anonymous: true for a public bucket"
)


def default_credentials_token() -> Result[str, Error]:
    """An access token from google-auth's application default credentials (the ``gcs`` extra)."""
    try:
        import google.auth
        import google.auth.transport.requests
        from google.auth.exceptions import DefaultCredentialsError, RefreshError, TransportError
    except ImportError:
        return Failure(
            InvalidConfig(
                problems=(
                    "gs:// with application default credentials needs google-auth: "
                    "pip install 'ckptflow[gcs]', or pass token / set anonymous: true",
                )
            )
        )
    try:
        credentials, _ = google.auth.default(scopes=[READ_SCOPE])
        credentials.refresh(google.auth.transport.requests.Request())  # type: ignore[no-untyped-call]
    except DefaultCredentialsError:
        return Failure(AccessDenied(what="Google Cloud Storage", detail=_ADC_HINT))
    except (RefreshError, TransportError) as exc:
        detail = f"refreshing application default credentials failed ({type(exc).__name__}); {_ADC_HINT}"
        return Failure(AccessDenied(what="Google Cloud Storage", detail=detail))
    return Success(str(credentials.token))


def auth_headers(
    config: GcsSource,
    endpoint: str,
    environ: Mapping[str, str],
    adc: TokenProvider = default_credentials_token,
) -> Result[dict[str, str], Error]:
    """The ``Authorization`` to send: none when anonymous, the given token, or application defaults.

    Ambient (application default) credentials go only to Google's own endpoint, never to an emulator
    or another ``endpoint_url``; those get a token only when one is given explicitly.
    """
    token = config.token or environ.get(TOKEN_ENV)
    if config.anonymous:
        return Success({})
    if token:
        return Success({"Authorization": f"Bearer {token}"})
    if endpoint != DEFAULT_ENDPOINT:
        return Success({})
    return adc().map(lambda value: {"Authorization": f"Bearer {value}"})


# --- the edge -----------------------------------------------------------------------------------------


@frozen
class GcsObject:
    """A ``RemoteObject``: ``stat`` reads the JSON metadata; ``open`` reads media pinned to its generation."""

    http: HttpObject
    endpoint: str
    bucket: str
    blob: str

    @property
    def identity(self) -> str:
        return self.http.identity

    def stat(self) -> Result[ObjectInfo, TransferError]:
        return self.http.stat().bind(self._checked)

    def _checked(self, info: ObjectInfo) -> Result[ObjectInfo, TransferError]:
        if info.version is None:
            cause = f"{self.endpoint} did not answer with GCS object metadata; check endpoint_url"
            return Failure(NetworkError(what=info.identity, attempts=1, cause=cause, source=info.identity))
        return Success(info)

    def open(self, info: ObjectInfo, start: int = 0, end: int | None = None) -> Result[Body, TransferError]:
        pinned = attrs.evolve(self.http, url=media_url(self.endpoint, self.bucket, self.blob, info.version))
        return pinned.open(info, start, end)


def _no_pin_headers(info: ObjectInfo) -> Mapping[str, str]:
    """The media URL names the generation itself, so a ranged GET needs no conditional header."""
    return {}


def gcs_object(
    client: httpx.Client, config: GcsSource, endpoint: str, headers: Mapping[str, str]
) -> GcsObject:
    """Bind ``config`` to ``client``: metadata by GET on the JSON resource, media by ranged GET."""
    identity = identity_of(config.bucket, config.blob)
    http = HttpObject(
        client=client,
        url=media_url(endpoint, config.bucket, config.blob, config.generation),
        identity=identity,
        headers=headers,
        read_info=partial(info_from_metadata, pinned=config.generation is not None),
        pin_headers=_no_pin_headers,
        stat_url=metadata_url(endpoint, config.bucket, config.blob, config.generation),
        stat_method="GET",
    )
    return GcsObject(http, endpoint, config.bucket, config.blob)


def fetch(config: GcsSource, settings: FetchSettings) -> Result[Path, Error]:
    """Download the object into the cache (or find it there) and return the verified blob path."""
    endpoint = endpoint_for(config.endpoint_url, os.environ)
    credentials: Result[dict[str, str], Error] = (
        Success({}) if is_offline(settings) else auth_headers(config, endpoint, os.environ)
    )
    return credentials.bind(lambda headers: _download(config, endpoint, headers, settings))


def _download(
    config: GcsSource, endpoint: str, headers: Mapping[str, str], settings: FetchSettings
) -> Result[Path, Error]:
    with http_client(settings) as client:
        return download(gcs_object(client, config, endpoint, headers), settings)


SOURCE = SourceSpec(
    name="gcs",
    schemes=("gs",),
    config_type=GcsSource,
    from_uri=from_uri,
    fetch=fetch,
    description="Google Cloud Storage (gs://bucket/object[#generation]); STORAGE_EMULATOR_HOST honoured",
)
