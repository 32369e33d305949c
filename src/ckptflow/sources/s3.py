"""The S3 edge: describe an object (``head_object``) and open a pinned byte range of it (``get_object``).

Everything else — cache, resume, retry with backoff, hashing, verification — is the engine's
(``ckptflow.sources.transfer.download``). This module only speaks botocore and translates its
failures into ``ckptflow.errors`` values, or ``Transient`` ones the engine retries. Credentials come
from botocore's standard chain (or are skipped with ``anonymous``) and never appear in a message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import botocore
import botocore.session
from attrs import define, field, frozen
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from returns.result import Failure, Result, Success
from urllib3.exceptions import ProtocolError as Urllib3ProtocolError
from urllib3.exceptions import ReadTimeoutError as Urllib3ReadTimeoutError

from ckptflow.config.schema import S3Source
from ckptflow.config.uris import s3_from_uri as from_uri
from ckptflow.config.uris import without_userinfo
from ckptflow.errors import AccessDenied, Error, InvalidConfig, NotFound, StageFailed
from ckptflow.sources.base import FetchSettings, Interrupted, ObjectInfo, SourceSpec, TransferError, Transient
from ckptflow.sources.http import parse_content_range, parse_retry_after
from ckptflow.sources.parts import connection_pool_size
from ckptflow.sources.transfer import download

__all__ = [
    "CHUNK_SIZE",
    "SOURCE",
    "S3Body",
    "S3Object",
    "body_start",
    "endpoint_for",
    "fetch",
    "from_uri",
    "identity_of",
    "make_client",
    "object_info",
    "pin_arguments",
    "range_header",
    "translate_error",
]

CHUNK_SIZE = 1024 * 1024
"""Bytes per read from a response body: large enough that per-chunk overhead is negligible."""

_PLAIN_MD5_ETAG = re.compile(r'"?([0-9a-fA-F]{32})"?')
_NO_MD5_ENCRYPTION = frozenset({"aws:kms", "aws:kms:dsse"})

_READ_ERRORS = (HTTPClientError, IncompleteReadError, Urllib3ProtocolError, Urllib3ReadTimeoutError)
"""What reading a body raises when the connection fails mid-stream (read timeout, reset, short body)."""

_CREDENTIAL_HINT = (
    "no usable AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or a profile "
    "in the config, or set anonymous: true for a public bucket"
)


# --- addresses -------------------------------------------------------------------------------------


def identity_of(bucket: str, key: str, version_id: str | None = None) -> str:
    """The secret-free name of an object: ``s3://bucket/key``, plus ``?versionId=`` when pinned."""
    base = f"s3://{bucket}/{key}"
    return f"{base}?versionId={quote(version_id, safe='+/=')}" if version_id else base


# --- the pure parts of talking to S3 ------------------------------------------------------------------


def object_info(identity: str, head: Mapping[str, Any], *, pinned: bool = False) -> ObjectInfo:
    """Describe an object from a ``head_object`` response.

    ``version`` is the VersionId when the bucket keeps versions, else the ETag. The ETag is an MD5 of
    the content only for single-part uploads without KMS or customer-key encryption; then it is
    offered as the ``md5`` checksum.
    """
    etag = head.get("ETag")
    version_id = head.get("VersionId")
    md5 = _etag_md5(etag, head)
    return ObjectInfo(
        identity=identity,
        size=head.get("ContentLength"),
        version=version_id if version_id and version_id != "null" else etag,
        supports_range=head.get("AcceptRanges", "bytes") != "none",
        checksums={"md5": md5} if md5 else {},
        immutable=pinned,
    )


def _etag_md5(etag: str | None, head: Mapping[str, Any]) -> str | None:
    if (
        etag is None
        or head.get("SSECustomerAlgorithm")
        or head.get("ServerSideEncryption") in _NO_MD5_ENCRYPTION
    ):
        return None
    match = _PLAIN_MD5_ETAG.fullmatch(etag)
    return match.group(1).lower() if match else None


def pin_arguments(version: str | None) -> dict[str, str]:
    """``get_object`` arguments that pin the read to ``version``.

    An ETag (always a quoted string in S3) pins with ``IfMatch``: a changed object fails with 412.
    A VersionId (never quoted) names immutable content directly.
    """
    if not version:
        return {}
    return {"IfMatch": version} if version.startswith('"') else {"VersionId": version}


def range_header(start: int, end: int | None) -> str | None:
    """The ``Range`` for bytes ``[start, end)``; ``None`` for the whole object."""
    if start < 0 or (end is not None and end <= start):
        raise ValueError(f"empty or negative byte range [{start}, {end})")
    if end is None:
        return f"bytes={start}-" if start else None
    return f"bytes={start}-{end - 1}"


def body_start(content_range: str | None) -> int | None:
    """Where a response body begins: the Content-Range start, 0 without one, ``None`` when unreadable."""
    if content_range is None:
        return 0
    parsed = parse_content_range(content_range)
    return parsed[0] if parsed is not None else None


# --- failure translation (a table, read by one function) --------------------------------------------

Outcome = Literal["not_found", "denied", "transient"]

_OUTCOME_BY_CODE: Mapping[str, Outcome] = {
    **dict.fromkeys(("NoSuchKey", "NoSuchBucket", "NoSuchVersion", "NotFound", "404"), "not_found"),
    **dict.fromkeys(
        (
            "AccessDenied",
            "AllAccessDisabled",
            "AccountProblem",
            "ExpiredToken",
            "Forbidden",
            "InvalidAccessKeyId",
            "InvalidToken",
            "SignatureDoesNotMatch",
            "TokenRefreshRequired",
            "Unauthorized",
            "401",
            "403",
        ),
        "denied",
    ),
    **dict.fromkeys(
        (
            "PreconditionFailed",
            "InvalidRange",
            "SlowDown",
            "ServiceUnavailable",
            "InternalError",
            "RequestTimeout",
            "Throttling",
            "ThrottlingException",
            "RequestLimitExceeded",
            "TooManyRequests",
            "408",
            "412",
            "416",
            "429",
        ),
        "transient",
    ),
}

_HINTS: Mapping[str, str] = {
    "NoSuchBucket": "the bucket does not exist at this endpoint; check its name, the region and endpoint_url",
    "NoSuchVersion": "that versionId does not exist for this key; list the key's versions and pick one",
    "NoSuchKey": "the key does not exist in the bucket; check the key (S3 keys are case-sensitive)",
    "InvalidAccessKeyId": "the access key id is not known to this endpoint",
    "SignatureDoesNotMatch": "the secret key does not match the access key id",
    "ExpiredToken": "the session token has expired; refresh the credentials",
    "PreconditionFailed": "the object changed while it was being read; starting over",
    "412": "the object changed while it was being read; starting over",
    "InvalidRange": "the object no longer has the requested range; it changed while it was being read",
    "416": "the object no longer has the requested range; it changed while it was being read",
}
_DEFAULT_NOT_FOUND_HINT = "the bucket or key does not exist; check both (S3 keys are case-sensitive)"


def translate_error(error: ClientError | BotoCoreError, identity: str) -> TransferError:
    """The ckptflow value for a botocore failure on ``identity``; ``Transient`` when a retry may help."""
    if isinstance(error, ClientError):
        return _translate_client_error(error, identity)
    return _translate_botocore_error(error, identity)


def _translate_client_error(error: ClientError, identity: str) -> TransferError:
    response: Mapping[str, Any] = error.response
    details: Mapping[str, Any] = response.get("Error", {})
    metadata: Mapping[str, Any] = response.get("ResponseMetadata", {})
    code = str(details.get("Code") or metadata.get("HTTPStatusCode") or "Unknown")
    status = metadata.get("HTTPStatusCode")
    where = f"{code} (HTTP {status})" if status and str(status) != code else code
    outcome = _OUTCOME_BY_CODE.get(code) or (
        "transient" if isinstance(status, int) and status >= 500 else None
    )
    hint = _HINTS.get(code)
    if outcome == "not_found":
        return NotFound(what=identity, hint=hint or _DEFAULT_NOT_FOUND_HINT, source=identity)
    if outcome == "denied":
        return AccessDenied(what=identity, detail=f"{where}: {hint}" if hint else where, source=identity)
    if outcome == "transient":
        cause = f"S3 {where}: {hint}" if hint else f"S3 {where}"
        return Transient(
            cause=cause, retry_after=parse_retry_after(metadata.get("HTTPHeaders", {}).get("retry-after"))
        )
    message = without_userinfo(str(details.get("Message") or "no message"))
    return StageFailed(detail=f"S3 refused the request for {identity}: {where}: {message}", source=identity)


def _translate_botocore_error(error: BotoCoreError, identity: str) -> TransferError:
    text = without_userinfo(str(error))
    if isinstance(error, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
        return AccessDenied(what=identity, detail=_CREDENTIAL_HINT, source=identity)
    if isinstance(error, (ProfileNotFound, NoRegionError)):
        return _configuration_failure(error, identity)
    if isinstance(error, ParamValidationError):
        return InvalidConfig(problems=(f"{identity}: {text}",), source=identity)
    if isinstance(error, SSLError):
        return StageFailed(
            detail=f"TLS failure talking to S3 for {identity}: {text}; check endpoint_url and AWS_CA_BUNDLE",
            source=identity,
        )
    if isinstance(error, (BotoConnectionError, HTTPClientError, IncompleteReadError)):
        return Transient(cause=f"{type(error).__name__}: {text}")
    return StageFailed(
        detail=f"botocore failed for {identity}: {type(error).__name__}: {text}", source=identity
    )


def _configuration_failure(error: BotoCoreError, identity: str) -> InvalidConfig:
    """The AWS configuration itself (profile, region, config files) is unusable."""
    text = without_userinfo(str(error))
    if isinstance(error, ProfileNotFound):
        return InvalidConfig(
            problems=(f"profile: {text}; name a profile from ~/.aws/config",), source=identity
        )
    if isinstance(error, NoRegionError):
        return InvalidConfig(problems=("region: no AWS region is configured; set region or AWS_REGION",))
    return InvalidConfig(problems=(f"AWS configuration: {text}",), source=identity)


# --- the edge -----------------------------------------------------------------------------------------


@define
class S3Body:
    """An open ``get_object`` body; reading failures become ``Interrupted`` so the engine resumes."""

    start: int
    stream: Any = field(repr=False)
    chunk_size: int = CHUNK_SIZE

    def chunks(self) -> Iterator[bytes]:
        read = 0
        try:
            for chunk in self.stream.iter_chunks(self.chunk_size):
                read += len(chunk)
                yield chunk
        except _READ_ERRORS as error:
            raise Interrupted(f"S3 body interrupted after {read} bytes: {type(error).__name__}") from error

    def close(self) -> None:
        self.stream.close()


@frozen(kw_only=True)
class S3Object:
    """One S3 object bound to a botocore client; implements ``RemoteObject``."""

    client: Any = field(repr=False)
    bucket: str
    key: str
    version_id: str | None = None
    chunk_size: int = CHUNK_SIZE

    @property
    def identity(self) -> str:
        return identity_of(self.bucket, self.key, self.version_id)

    def _address(self) -> dict[str, str]:
        address = {"Bucket": self.bucket, "Key": self.key}
        return {**address, "VersionId": self.version_id} if self.version_id else address

    def stat(self) -> Result[ObjectInfo, TransferError]:
        try:
            head = self.client.head_object(**self._address())
        except (ClientError, BotoCoreError) as error:
            return Failure(translate_error(error, self.identity))
        return Success(object_info(self.identity, head, pinned=self.version_id is not None))

    def open(self, info: ObjectInfo, start: int = 0, end: int | None = None) -> Result[S3Body, TransferError]:
        requested = range_header(start, end)
        arguments = {**self._address(), **pin_arguments(info.version)}
        try:
            response = self.client.get_object(**arguments, **({"Range": requested} if requested else {}))
        except (ClientError, BotoCoreError) as error:
            return Failure(translate_error(error, self.identity))
        begins = body_start(response.get("ContentRange"))
        if begins is None:
            response["Body"].close()
            return Failure(Transient(cause=f"malformed Content-Range from {self.identity}"))
        return Success(S3Body(start=begins, stream=response["Body"], chunk_size=self.chunk_size))


def endpoint_for(config: S3Source, options: Mapping[str, Any], environ: Mapping[str, str]) -> str | None:
    """The endpoint to use: the config's, then ``options["s3_endpoint_url"]``, then the AWS env vars."""
    return (
        config.endpoint_url
        or options.get("s3_endpoint_url")
        or environ.get("AWS_ENDPOINT_URL_S3")
        or environ.get("AWS_ENDPOINT_URL")
        or None
    )


def _endpoint_problems(endpoint: str | None) -> list[str]:
    if endpoint is None:
        return []
    parts = urlsplit(endpoint)
    if parts.scheme in ("http", "https") and parts.hostname:
        return []
    return [f"endpoint_url: {without_userinfo(endpoint)!r} is not an http(s)://host[:port] URL"]


def make_client(config: S3Source, settings: FetchSettings) -> Result[Any, Error]:
    """One botocore S3 client for this source (or the ready one in ``options["s3_client"]``).

    Timeouts come from ``settings``; botocore makes a single attempt because the engine retries; the
    connection pool holds one connection per parallel part.
    """
    given = settings.options.get("s3_client")
    if given is not None:
        return Success(given)
    endpoint = endpoint_for(config, settings.options, os.environ)
    problems = _endpoint_problems(endpoint)
    if problems:
        return Failure(InvalidConfig(problems=tuple(problems)))
    session = botocore.session.get_session()
    if config.profile:
        session.set_config_variable("profile", config.profile)
    client_config = Config(
        connect_timeout=settings.timeout,
        read_timeout=settings.timeout,
        retries={"total_max_attempts": 1, "mode": "standard"},
        response_checksum_validation="when_required",
        user_agent_extra="ckptflow",
        max_pool_connections=connection_pool_size(settings.options),
        **({"signature_version": botocore.UNSIGNED} if config.anonymous else {}),
    )
    try:
        client = session.create_client(
            "s3", region_name=config.region, endpoint_url=endpoint, config=client_config
        )
    except BotoCoreError as error:
        return Failure(
            _configuration_failure(error, identity_of(config.bucket, config.key, config.version_id))
        )
    return Success(client)


def fetch(config: S3Source, settings: FetchSettings) -> Result[Path, Error]:
    """Fetch the object ``config`` names into the cache through the engine; the verified path."""
    return make_client(config, settings).bind(
        lambda client: download(
            S3Object(client=client, bucket=config.bucket, key=config.key, version_id=config.version_id),
            settings,
        )
    )


SOURCE = SourceSpec(
    name="s3",
    schemes=("s3",),
    config_type=S3Source,
    from_uri=from_uri,
    fetch=fetch,
    description="Amazon S3 and S3-compatible stores (botocore): s3://bucket/key[?versionId=...]",
)
