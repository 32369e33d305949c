"""The Azure Blob edge: ``az://container/blob`` and blob URLs, through the generic HTTP object.

A HEAD describes the blob (ETag, size, Content-MD5); ranged GETs are pinned with ``If-Match: <etag>``.
Where the account lives and how to authenticate is decided purely (``resolve_target``) from the config
and the environment, in this order: SAS token, account key (SharedKey, signed per request), Azure AD
through azure-identity when installed (``ckptflow[azure]``, https endpoints only), else anonymous.
Cache, resume, retry and verification belong to ``ckptflow.sources.transfer``. SAS tokens, keys and
bearer tokens never appear in an identity, a message or a repr.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, urlsplit

import attrs
import httpx
from attrs import field, frozen
from returns.result import Failure, Result, Success

from ckptflow.config.schema import AzureSource
from ckptflow.config.uris import account_of_endpoint
from ckptflow.config.uris import azure_from_uri as from_uri
from ckptflow.errors import AccessDenied, Error, InvalidConfig
from ckptflow.sources.azure_auth import (
    API_VERSION,
    ConnectionInfo,
    SharedKey,
    parse_connection_string,
    shared_key,
    sign_request,
)
from ckptflow.sources.base import FetchSettings, ObjectInfo, SourceSpec
from ckptflow.sources.checksums import md5_hex
from ckptflow.sources.http import HttpObject, http_client, info_from_headers
from ckptflow.sources.transfer import download, is_offline

__all__ = [
    "ACCOUNT_ENV",
    "CONNECTION_ENV",
    "KEY_ENV",
    "SAS_ENV",
    "SOURCE",
    "STORAGE_SCOPE",
    "Ambient",
    "AzureCredential",
    "AzureTarget",
    "BearerToken",
    "SasToken",
    "SharedKeyAuth",
    "account_of_endpoint",
    "azure_object",
    "blob_info",
    "blob_url",
    "fetch",
    "from_uri",
    "identity_token",
    "if_match",
    "resolve_target",
]

ACCOUNT_ENV = "AZURE_STORAGE_ACCOUNT"
KEY_ENV = "AZURE_STORAGE_KEY"
SAS_ENV = "AZURE_STORAGE_SAS_TOKEN"
CONNECTION_ENV = "AZURE_STORAGE_CONNECTION_STRING"
STORAGE_SCOPE = "https://storage.azure.com/.default"

_CREDENTIAL_HINT = (
    "give sas_token, account_key or connection_string (or AZURE_STORAGE_SAS_TOKEN / AZURE_STORAGE_KEY / "
    "AZURE_STORAGE_CONNECTION_STRING), or install ckptflow[azure] to sign in with Azure AD"
)


# --- addresses -------------------------------------------------------------------------------------


def blob_url(endpoint: str, container: str, blob: str) -> str:
    """The blob's URL without any query: also its secret-free identity (it names account and blob)."""
    return f"{endpoint.rstrip('/')}/{quote(container, safe='')}/{quote(blob, safe='/')}"


# --- credentials and where the account lives (pure) ------------------------------------------------


@frozen
class SasToken:
    """A shared access signature, appended to every request's query; never shown."""

    token: str = field(repr=False)


@frozen
class BearerToken:
    """An Azure AD access token for ``Authorization: Bearer``; never shown."""

    token: str = field(repr=False)


@frozen
class Ambient:
    """No credential configured: use Azure AD if azure-identity is installed (https only), else none."""


AzureCredential = SasToken | SharedKey | BearerToken | Ambient


@frozen(kw_only=True)
class AzureTarget:
    """A blob with its account's endpoint and the credential to present."""

    endpoint: str
    container: str
    blob: str
    credential: AzureCredential

    @property
    def identity(self) -> str:
        return blob_url(self.endpoint, self.container, self.blob)


def _connection(
    config: AzureSource, environ: Mapping[str, str], account: str | None
) -> Result[ConnectionInfo, Error]:
    """The connection string that applies: the config's, else the environment's for the same account."""
    if config.connection_string:
        return parse_connection_string(config.connection_string).alt(_named("connection_string"))
    text = environ.get(CONNECTION_ENV)
    if not text:
        return Success(ConnectionInfo())
    parsed = parse_connection_string(text).alt(_named(CONNECTION_ENV))
    return parsed.map(lambda info: info if account is None or info.account == account else ConnectionInfo())


def _named(where: str) -> Callable[[InvalidConfig], Error]:
    return lambda error: attrs.evolve(
        error, problems=tuple(p.replace("connection_string", where) for p in error.problems)
    )


def resolve_target(config: AzureSource, environ: Mapping[str, str]) -> Result[AzureTarget, Error]:
    """Decide the endpoint and credential for ``config`` from it and ``environ``; no I/O."""
    named = config.account or (account_of_endpoint(config.endpoint_url) if config.endpoint_url else None)
    return _connection(config, environ, named).bind(lambda conn: _target(config, environ, named, conn))


def _target(
    config: AzureSource, environ: Mapping[str, str], named: str | None, conn: ConnectionInfo
) -> Result[AzureTarget, Error]:
    env_account = environ.get(ACCOUNT_ENV) or None
    account = named or conn.account or env_account
    endpoint = (
        config.endpoint_url
        or conn.blob_endpoint
        or (f"https://{account}.blob.core.windows.net" if account else None)
    )
    if endpoint is None:
        return Failure(
            InvalidConfig(
                problems=(
                    f"az://{config.container}/{config.blob}: no storage account; set account or "
                    f"endpoint_url, a connection_string, or {ACCOUNT_ENV} / {CONNECTION_ENV}",
                )
            )
        )
    env_applies = env_account is None or env_account == account
    sas = config.sas_token or conn.sas_token or (environ.get(SAS_ENV) if env_applies else None)
    key = config.account_key or conn.account_key or (environ.get(KEY_ENV) if env_applies else None)
    credential: Result[AzureCredential, Error] = (
        Success(SasToken(sas.lstrip("?"))) if sas else _signing(account, key) if key else Success(Ambient())
    )
    return credential.map(
        lambda chosen: AzureTarget(
            endpoint=endpoint.rstrip("/"), container=config.container, blob=config.blob, credential=chosen
        )
    )


def _signing(account: str | None, key: str) -> Result[AzureCredential, Error]:
    if account is None:
        return Failure(
            InvalidConfig(problems=("account_key: the account name to sign with is unknown; set account",))
        )
    return shared_key(account, key)


# --- requests (pure) --------------------------------------------------------------------------------


def if_match(info: ObjectInfo) -> Mapping[str, str]:
    """``PinHeaders`` for Azure: a ranged GET fails with 412 if the blob changed since the HEAD."""
    return {"If-Match": info.version} if info.version else {}


def blob_info(response: httpx.Response, identity: str) -> ObjectInfo:
    """``InfoReader`` for Azure: size, ETag and range support as for HTTP, plus the blob's Content-MD5."""
    base = info_from_headers(response, identity)
    stored = response.headers.get("x-ms-blob-content-md5") or (
        response.headers.get("Content-MD5") if response.status_code == 200 else None
    )
    md5 = md5_hex(stored) if stored else None
    return attrs.evolve(base, checksums={"md5": md5}) if md5 else base


# --- the edge ---------------------------------------------------------------------------------------


class SharedKeyAuth(httpx.Auth):
    """Signs each request as it is sent (the signature covers Range, If-Match and the date)."""

    def __init__(self, credential: SharedKey, clock: Callable[[], datetime] | None = None) -> None:
        self._credential = credential
        self._clock = clock or (lambda: datetime.now(timezone.utc))

    def __repr__(self) -> str:
        return f"SharedKeyAuth({self._credential!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        signed = sign_request(
            request.method, str(request.url), request.headers, self._credential, self._clock()
        )
        request.headers.update({"x-ms-date": signed["x-ms-date"], "Authorization": signed["Authorization"]})
        yield request


def identity_token() -> Result[BearerToken | None, Error]:
    """An Azure AD token from azure-identity's default chain; ``None`` when it is not installed or no
    credential is configured at all (then the request goes anonymously)."""
    try:
        from azure.core.exceptions import ClientAuthenticationError
        from azure.identity import CredentialUnavailableError, DefaultAzureCredential
    except ImportError:
        return Success(None)
    try:
        token = DefaultAzureCredential().get_token(STORAGE_SCOPE).token
    except CredentialUnavailableError:
        return Success(None)
    except ClientAuthenticationError as exc:
        detail = f"Azure AD sign-in failed ({type(exc).__name__}); {_CREDENTIAL_HINT}"
        return Failure(AccessDenied(what="Azure Blob Storage", detail=detail))
    return Success(BearerToken(str(token)))


def _settled(target: AzureTarget, offline: bool) -> Result[AzureTarget, Error]:
    """Replace ``Ambient`` by a bearer token (https, not offline) or by no credential."""
    if not isinstance(target.credential, Ambient):
        return Success(target)
    if offline or urlsplit(target.endpoint).scheme != "https":
        return Success(target)
    return identity_token().map(lambda token: attrs.evolve(target, credential=token) if token else target)


def azure_object(client: httpx.Client, target: AzureTarget) -> HttpObject:
    """Bind ``target`` to ``client``: the SAS joins the URL, a bearer token the headers, a SharedKey the
    client's per-request signing."""
    credential = target.credential
    url = target.identity + (f"?{credential.token}" if isinstance(credential, SasToken) else "")
    headers = {"x-ms-version": API_VERSION}
    if isinstance(credential, BearerToken):
        headers["Authorization"] = f"Bearer {credential.token}"
    if isinstance(credential, SharedKey):
        client.auth = SharedKeyAuth(credential)
    return HttpObject(
        client=client,
        url=url,
        identity=target.identity,
        headers=headers,
        read_info=blob_info,
        pin_headers=if_match,
    )


def _hinted(error: Error) -> Error:
    return (
        attrs.evolve(error, detail=f"{error.detail}; {_CREDENTIAL_HINT}")
        if isinstance(error, AccessDenied)
        else error
    )


def fetch(config: AzureSource, settings: FetchSettings) -> Result[Path, Error]:
    """Download the blob into the cache (or find it there) and return the verified blob path."""
    return (
        resolve_target(config, os.environ)
        .bind(lambda target: _settled(target, is_offline(settings)))
        .bind(lambda target: _download(target, settings))
    )


def _download(target: AzureTarget, settings: FetchSettings) -> Result[Path, Error]:
    with http_client(settings) as client:
        return download(azure_object(client, target), settings).alt(_hinted)


SOURCE = SourceSpec(
    name="azure",
    schemes=("az",),
    config_type=AzureSource,
    from_uri=from_uri,
    fetch=fetch,
    description="Azure Blob Storage (az://container/blob or blob URLs); SAS, account key, connection string",
)
