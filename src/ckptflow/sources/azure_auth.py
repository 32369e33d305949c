"""Azure Blob credentials as values: connection strings and SharedKey request signing, all pure.

The signing follows the documented SharedKey scheme for the Blob service (version 2015-02-21 and
later): a string-to-sign built from the verb, twelve standard headers, the canonicalized ``x-ms-*``
headers and the canonicalized resource, signed with HMAC-SHA256 under the base64-decoded account key.
The clock is an argument, so the same request always signs the same way.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from email.utils import format_datetime
from urllib.parse import parse_qsl, urlsplit

from attrs import field, frozen
from returns.result import Failure, Result, Success

from ckptflow.errors import InvalidConfig

__all__ = [
    "API_VERSION",
    "DEV_ACCOUNT",
    "DEV_ACCOUNT_KEY",
    "DEV_BLOB_ENDPOINT",
    "ConnectionInfo",
    "SharedKey",
    "canonicalized_headers",
    "canonicalized_resource",
    "parse_connection_string",
    "shared_key",
    "sign_request",
    "sign_string",
    "string_to_sign",
]

API_VERSION = "2021-08-06"
"""The ``x-ms-version`` ckptflow speaks; supported by Azure Storage and Azurite."""

DEV_ACCOUNT = "devstoreaccount1"
DEV_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
"""The emulator's published well-known development account and key (not a secret)."""
DEV_BLOB_ENDPOINT = f"http://127.0.0.1:10000/{DEV_ACCOUNT}"

_SIGNED_HEADERS = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)


@frozen
class SharedKey:
    """An account name with its decoded key; the key never appears in ``repr``."""

    account: str
    key: bytes = field(repr=False)


def shared_key(account: str, account_key: str) -> Result[SharedKey, InvalidConfig]:
    """Decode a base64 account key; a key that is not base64 is a configuration problem."""
    try:
        decoded = base64.b64decode(account_key, validate=True)
    except (binascii.Error, ValueError):
        return Failure(
            InvalidConfig(
                problems=(f"account_key for account {account!r}: not valid base64; copy the key exactly",)
            )
        )
    if not decoded:
        return Failure(InvalidConfig(problems=(f"account_key for account {account!r}: empty",)))
    return Success(SharedKey(account, decoded))


@frozen(kw_only=True)
class ConnectionInfo:
    """What a storage connection string says about the Blob service; secrets stay out of ``repr``."""

    blob_endpoint: str | None = None
    account: str | None = None
    account_key: str | None = field(default=None, repr=False)
    sas_token: str | None = field(default=None, repr=False)


def _connection_fields(text: str) -> Result[dict[str, str], InvalidConfig]:
    pairs: dict[str, str] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            # The part may hold a secret: name only its position-independent shape.
            return Failure(
                InvalidConfig(
                    problems=("connection_string: every entry must be Name=Value separated by ';'",)
                )
            )
        pairs[name.strip().lower()] = value.strip()
    return Success(pairs)


def _dev_storage(pairs: Mapping[str, str]) -> ConnectionInfo:
    proxy = pairs.get("developmentstorageproxyuri")
    endpoint = f"{proxy.rstrip('/')}:10000/{DEV_ACCOUNT}" if proxy else DEV_BLOB_ENDPOINT
    return ConnectionInfo(
        blob_endpoint=pairs.get("blobendpoint", endpoint),
        account=DEV_ACCOUNT,
        account_key=DEV_ACCOUNT_KEY,
    )


def _account_endpoint(pairs: Mapping[str, str]) -> str | None:
    account = pairs.get("accountname")
    if not account:
        return None
    protocol = pairs.get("defaultendpointsprotocol", "https")
    suffix = pairs.get("endpointsuffix", "core.windows.net")
    return f"{protocol}://{account}.blob.{suffix}"


def parse_connection_string(text: str) -> Result[ConnectionInfo, InvalidConfig]:
    """Read ``AccountName``/``AccountKey``/``BlobEndpoint``/``SharedAccessSignature`` and friends.

    ``UseDevelopmentStorage=true`` means the emulator's well-known account on 127.0.0.1:10000,
    unless ``BlobEndpoint`` says where it really listens.
    """
    return _connection_fields(text).bind(_connection_info)


def _connection_info(pairs: Mapping[str, str]) -> Result[ConnectionInfo, InvalidConfig]:
    if pairs.get("usedevelopmentstorage", "").lower() == "true":
        return Success(_dev_storage(pairs))
    info = ConnectionInfo(
        blob_endpoint=(pairs.get("blobendpoint") or _account_endpoint(pairs) or "").rstrip("/") or None,
        account=pairs.get("accountname") or None,
        account_key=pairs.get("accountkey") or None,
        sas_token=(pairs.get("sharedaccesssignature") or "").lstrip("?") or None,
    )
    if info.blob_endpoint is None:
        return Failure(
            InvalidConfig(
                problems=("connection_string: needs AccountName or BlobEndpoint to locate the service",)
            )
        )
    if info.account_key and not info.account:
        return Failure(
            InvalidConfig(problems=("connection_string: AccountKey given without AccountName to sign with",))
        )
    return Success(info)


def canonicalized_headers(headers: Mapping[str, str]) -> str:
    """The ``x-ms-*`` headers, lower-cased and sorted, one ``name:value`` line each."""
    ms = sorted(
        (name.lower(), re.sub(r"\s+", " ", value.strip()))
        for name, value in headers.items()
        if name.lower().startswith("x-ms-")
    )
    return "".join(f"{name}:{value}\n" for name, value in ms)


def canonicalized_resource(account: str, url: str) -> str:
    """``/account/path`` then each query parameter as ``\\nname:v1,v2`` (names lower-cased, sorted)."""
    parts = urlsplit(url)
    resource = f"/{account}{parts.path or '/'}"
    params: dict[str, list[str]] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        params.setdefault(name.lower(), []).append(value)
    return resource + "".join(f"\n{name}:{','.join(sorted(params[name]))}" for name in sorted(params))


def string_to_sign(method: str, url: str, headers: Mapping[str, str], account: str) -> str:
    """The documented SharedKey string-to-sign for one Blob service request."""
    lowered = {name.lower(): value for name, value in headers.items()}
    standard = [lowered.get(name, "") for name in _SIGNED_HEADERS]
    if standard[2] == "0":
        standard[2] = ""  # Content-Length 0 signs as empty since version 2015-02-21.
    lines = "".join(f"{value}\n" for value in standard)
    return f"{method.upper()}\n{lines}{canonicalized_headers(headers)}{canonicalized_resource(account, url)}"


def sign_request(
    method: str, url: str, headers: Mapping[str, str], credential: SharedKey, now: datetime
) -> dict[str, str]:
    """New headers: ``headers`` plus ``x-ms-date`` (from ``now``) and the SharedKey ``Authorization``."""
    stamped = {
        **{k: v for k, v in headers.items() if k.lower() not in ("x-ms-date", "authorization")},
        "x-ms-date": format_datetime(now.astimezone(timezone.utc), usegmt=True),
    }
    signature = sign_string(credential, string_to_sign(method, url, stamped, credential.account))
    return {**stamped, "Authorization": f"SharedKey {credential.account}:{signature}"}


def sign_string(credential: SharedKey, text: str) -> str:
    """Base64 HMAC-SHA256 of ``text`` under the account key: the signature of SharedKey and SAS alike."""
    digest = hmac.new(credential.key, text.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")
