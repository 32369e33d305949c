"""Checkpoint URIs into source configs: one pure parser per scheme, and the table that picks it.

``source_from_uri`` reads any reference string; each source's ``from_uri`` is the parser for its own
schemes. An ``http(s)`` URL on an Azure blob service host (``<account>.blob.core.<suffix>``) names the
azure source, any other the http source; a string without a scheme is a local path. Nothing is looked
up. Messages show a URI without its userinfo (and, where it may hold a signature, its query).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit
from urllib.request import url2pathname

from returns.result import Failure, Result, Success

from ckptflow.config.schema import (
    AzureSource,
    GcsSource,
    HttpSource,
    LocalSource,
    MlflowSource,
    S3Source,
    SourceConfig,
)
from ckptflow.errors import InvalidConfig

__all__ = [
    "URI_SCHEMES",
    "account_of_endpoint",
    "azure_from_uri",
    "did_you_mean",
    "gcs_from_uri",
    "http_from_uri",
    "is_azure_blob_url",
    "local_from_uri",
    "mlflow_from_uri",
    "mlflow_problems",
    "s3_from_uri",
    "scheme_of",
    "shown_uri",
    "source_from_uri",
    "source_type_of",
    "split_model_uri",
    "split_run_uri",
    "unknown_choice",
    "without_userinfo",
]

UriParser = Callable[[str], Result[SourceConfig, InvalidConfig]]

URI_SCHEMES: Mapping[str, str] = {
    "file": "local",
    "http": "http",
    "https": "http",
    "s3": "s3",
    "gs": "gcs",
    "az": "azure",
    "runs": "mlflow",
    "models": "mlflow",
}
"""URI scheme → the ``type`` of the source it names (an Azure blob service URL is ``azure``)."""

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
# ``user:password@`` (a password may hold '/' or '@': take up to the last '@' of the token), or ``user@``.
_URL_USERINFO = re.compile(r"(?<=://)[^\s\"'@:/]*:[^\s\"']*@|(?<=://)[^/?#\s\"']*@")
_S3_BUCKET = re.compile(r"[A-Za-z0-9._-]{1,255}")
_GCS_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
_GENERATION = re.compile(r"[0-9]+")
_AZURE_HOST_STYLE = re.compile(r"(?P<account>[a-z0-9]{3,24})\.blob\.", re.IGNORECASE)
_AZURE_BLOB_SERVICE = re.compile(r"[a-z0-9]{3,24}\.blob\.core\.[a-z0-9.\-]+", re.IGNORECASE)
_SAFE_RUN_ID = re.compile(r"[A-Za-z0-9_\-]+")


# --- shared pieces ----------------------------------------------------------------------------------


def scheme_of(ref: str) -> str | None:
    """The URI scheme of ``ref``, or None for a bare path (a Windows drive letter is not a scheme)."""
    match = _SCHEME.match(ref)
    if match is None or len(match.group(1)) == 1:
        return None
    return match.group(1).lower()


def without_userinfo(text: str) -> str:
    """``text`` with any ``user:password@`` in the URLs it contains removed."""
    return _URL_USERINFO.sub("", text)


def shown_uri(uri: str) -> str:
    """A URI safe to echo: without userinfo, query or fragment, which may carry secrets."""
    return without_userinfo(re.split(r"[?#]", uri, maxsplit=1)[0])


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """`` → did you mean 'x'?`` for the known name closest to a misspelled ``word``, else ``""``."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" → did you mean {close[0]!r}?" if close else ""


def unknown_choice(value: str, known: Iterable[str], what: str = "") -> str:
    """``unknown <what>'value' (known: a, b) → did you mean 'a'?`` for a name that is not one of ``known``."""
    names = tuple(known)
    return f"unknown {what}{value!r} (known: {', '.join(names)}){did_you_mean(value, names)}"


def _invalid(*problems: str, source: str | None = None) -> InvalidConfig:
    return InvalidConfig(problems=problems, source=source)


def _split(uri: str, *, fragments: bool = True) -> SplitResult | None:
    """``urlsplit`` of ``uri``, or None when it cannot be read as a URL (an unclosed ``[``)."""
    try:
        return urlsplit(uri, allow_fragments=fragments)
    except ValueError:
        return None


# --- local paths and file:// ------------------------------------------------------------------------


def local_from_uri(uri: str) -> Result[LocalSource, InvalidConfig]:
    """A bare path, or ``file:///abs/path`` (host empty or ``localhost``), as a ``LocalSource``."""
    if scheme_of(uri) != "file":
        return Success(LocalSource(path=uri))
    parts = _split(uri)
    if parts is None:
        return Failure(_invalid(f"{shown_uri(uri)!r} is not a file:// URI; write file:///<absolute path>"))
    if parts.netloc not in ("", "localhost"):
        return Failure(_invalid(f"{shown_uri(uri)!r} names a remote host; only local file:// paths work"))
    path = url2pathname(parts.path)
    return Success(LocalSource(path=path)) if path else Failure(_invalid(f"{shown_uri(uri)!r} has no path"))


# --- http(s) ----------------------------------------------------------------------------------------


def http_from_uri(uri: str) -> Result[HttpSource, InvalidConfig]:
    """``http(s)://host/path`` as an ``HttpSource`` (the URL is kept whole; it may carry a signature)."""
    parts = _split(uri)
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return Failure(_invalid(f"not an http(s) URL with a host: {shown_uri(uri)}"))
    return Success(HttpSource(url=uri))


# --- s3:// ------------------------------------------------------------------------------------------


def s3_from_uri(uri: str) -> Result[S3Source, InvalidConfig]:
    """``s3://bucket/key`` (optionally ``?versionId=...``) as an ``S3Source``.

    The key is taken literally, as the AWS CLI does; the only query parameter understood is
    ``versionId``, in which ``+`` stays ``+`` (version ids contain it). Every problem is reported.
    """
    shown = without_userinfo(uri)
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.lower() != "s3":
        return Failure(_invalid(f"{shown!r} is not an s3:// URI; write s3://<bucket>/<key>"))
    location, _, query = rest.partition("?")
    bucket, _, key = location.partition("/")
    version_id, query_problems = _s3_version(query, shown)
    problems = (*_s3_bucket_problems(bucket, shown), *_s3_key_problems(key, shown), *query_problems)
    if problems:
        return Failure(_invalid(*problems, source=shown))
    return Success(S3Source(bucket=bucket, key=key, version_id=version_id))


def _s3_bucket_problems(bucket: str, shown: str) -> tuple[str, ...]:
    if not bucket:
        return (f"{shown!r} has no bucket; write s3://<bucket>/<key>",)
    if "@" in bucket or ":" in bucket:
        return (
            f"{shown!r}: credentials or a port do not belong in an s3:// URI; "
            "use the environment, a profile, or endpoint_url",
        )
    if not _S3_BUCKET.fullmatch(bucket):
        return (f"{shown!r}: {bucket!r} is not a valid bucket name (letters, digits, '.', '-', '_')",)
    return ()


def _s3_key_problems(key: str, shown: str) -> tuple[str, ...]:
    if not key:
        return (f"{shown!r} needs s3://<bucket>/<name>",)
    if key.endswith("/"):
        return (f"{shown!r} names a prefix (it ends with '/'), not an object; name the checkpoint file",)
    return ()


def _s3_version(query: str, shown: str) -> tuple[str | None, tuple[str, ...]]:
    """The ``versionId`` in a query; ``+`` stays ``+``, ``%XX`` is decoded."""
    if not query:
        return None, ()
    pairs = [part.partition("=") for part in query.split("&")]
    if any(not name or not sep for name, sep, _ in pairs):
        return None, (f"{shown!r}: cannot read the query {query!r}; the only parameter is versionId=<id>",)
    unknown = sorted({unquote(name) for name, _, _ in pairs} - {"versionId"})
    versions = [unquote(value) for name, _, value in pairs if unquote(name) == "versionId"]
    problems = [f"{shown!r}: unknown parameter {name!r}; the only parameter is versionId" for name in unknown]
    if len(versions) > 1:
        problems.append(f"{shown!r}: versionId is given more than once")
    if versions and not versions[0]:
        problems.append(f"{shown!r}: versionId is empty")
    return (versions[0] or None) if versions else None, tuple(problems)


# --- gs:// ------------------------------------------------------------------------------------------


def gcs_from_uri(uri: str) -> Result[GcsSource, InvalidConfig]:
    """``gs://bucket/object`` (optionally ``#<generation>``, as gsutil pins) as a ``GcsSource``."""
    shown = without_userinfo(uri)
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.lower() != "gs":
        return Failure(_invalid(f"{shown!r} is not a gs:// URI; write gs://<bucket>/<object>"))
    location, hash_sign, generation = rest.rpartition("#")
    if not (hash_sign and _GENERATION.fullmatch(generation)):
        location, generation = rest, ""
    bucket, _, blob = location.partition("/")
    problems = (
        *(() if _GCS_BUCKET.fullmatch(bucket) else (f"{shown!r}: {bucket!r} is not a valid bucket name",)),
        *(() if blob else (f"{shown!r} has no object name; write gs://<bucket>/<object>",)),
        *((f"{shown!r} names a folder (it ends with '/'), not an object",) if blob.endswith("/") else ()),
    )
    if problems:
        return Failure(_invalid(*problems, source=shown))
    return Success(GcsSource(bucket=bucket, blob=blob, generation=generation or None))


# --- az:// and Azure blob URLs ----------------------------------------------------------------------


def account_of_endpoint(endpoint: str) -> str | None:
    """The account an endpoint serves: the host label of ``<account>.blob.<suffix>``, else the first
    path segment of an emulator-style ``http://host:port/<account>``."""
    parts = _split(endpoint)
    if parts is None:
        return None
    match = _AZURE_HOST_STYLE.match(parts.hostname or "")
    if match:
        return match.group("account").lower()
    first = parts.path.strip("/").split("/", 1)[0]
    return first or None


def is_azure_blob_url(uri: str) -> bool:
    """Whether ``uri`` is an http(s) URL on an Azure blob service host (``<account>.blob.core.<suffix>``)."""
    parts = _split(uri)
    return (
        parts is not None
        and parts.scheme.lower() in ("http", "https")
        and _AZURE_BLOB_SERVICE.fullmatch(parts.hostname or "") is not None
    )


def azure_from_uri(uri: str) -> Result[AzureSource, InvalidConfig]:
    """``az://container/blob``, ``https://<account>.blob.core.windows.net/<container>/<blob>[?<SAS>]``
    or an emulator URL ``http://host:port/<account>/<container>/<blob>`` as an ``AzureSource``.

    An ``az://`` name is taken literally (a ``#`` is part of it); a URL's path is percent-decoded. The
    only query either may carry is a SAS token, which becomes ``sas_token`` and is never shown.
    """
    scheme = scheme_of(uri)
    parts = _split(uri, fragments=scheme != "az")
    web = scheme in ("http", "https") and parts is not None and bool(parts.hostname)
    if parts is None or not (scheme == "az" or web):
        return Failure(
            _invalid(f"{shown_uri(uri)!r} is not an Azure blob URI; write az://<container>/<blob>")
        )
    if "@" in parts.netloc:
        return Failure(
            _invalid(f"{shown_uri(uri)!r}: credentials do not belong in a blob URI; use sas_token")
        )
    return _blob_url(uri, parts) if web else _az_uri(uri, parts)


def _az_uri(uri: str, parts: SplitResult) -> Result[AzureSource, InvalidConfig]:
    container, blob = parts.netloc, parts.path.lstrip("/")
    return _azure_sas(uri, parts.query).bind(lambda sas: _azure_located(uri, container, blob, sas=sas))


def _blob_url(uri: str, parts: SplitResult) -> Result[AzureSource, InvalidConfig]:
    """A blob service URL: the account is the host's first label, or (emulator) the first path segment."""
    path = parts.path.lstrip("/")
    if _AZURE_HOST_STYLE.match(parts.hostname or ""):
        endpoint, rest = f"{parts.scheme}://{parts.netloc}", path
    else:
        account_segment, _, rest = path.partition("/")
        endpoint = f"{parts.scheme}://{parts.netloc}/{account_segment}"
    container, _, blob = rest.partition("/")
    return _azure_sas(uri, parts.query).bind(
        lambda sas: _azure_located(
            uri,
            unquote(container),
            unquote(blob),
            endpoint_url=endpoint,
            account=account_of_endpoint(endpoint),
            sas=sas,
        )
    )


def _azure_sas(uri: str, query: str) -> Result[str | None, InvalidConfig]:
    if not query:
        return Success(None)
    if "sig" not in {name.lower() for name, _ in parse_qsl(query, keep_blank_values=True)}:
        return Failure(
            _invalid(f"{shown_uri(uri)!r}: the only query a blob URL may carry is a SAS token (with sig=)")
        )
    return Success(query)


def _azure_located(
    uri: str,
    container: str,
    blob: str,
    *,
    endpoint_url: str | None = None,
    account: str | None = None,
    sas: str | None = None,
) -> Result[AzureSource, InvalidConfig]:
    shown = shown_uri(uri)
    problems = (
        *(() if container else (f"{shown!r} has no container; write az://<container>/<blob>",)),
        *(() if blob and not blob.endswith("/") else (f"{shown!r} does not name a blob",)),
    )
    if problems:
        return Failure(_invalid(*problems))
    return Success(
        AzureSource(container=container, blob=blob, account=account, endpoint_url=endpoint_url, sas_token=sas)
    )


# --- runs:/ and models:/ ----------------------------------------------------------------------------


def _artifact_path_problems(path: str) -> tuple[str, ...]:
    """Why an MLflow artifact path cannot be used as given (it must stay inside the run's artifacts)."""
    checks = (
        (path == "", "must not be empty"),
        ("\x00" in path, "must not contain NUL"),
        ("\\" in path, "must use '/' separators, not backslashes"),
        (path.startswith("/"), "must be relative to the run's artifact root, not absolute"),
        (".." in path.split("/"), "must not contain '..'"),
    )
    return tuple(msg for bad, msg in checks if bad)


def split_model_uri(uri: str) -> tuple[str, str] | None:
    """``models:/name/3`` → ``("name", "3")``; ``models:/name@alias`` or ``models:/name/alias`` → alias."""
    rest = uri.removeprefix("models:/")
    if rest == uri:
        return None
    name, sep, ref = rest.partition("@") if "@" in rest and "/" not in rest else rest.partition("/")
    ok = bool(sep and name and ref) and "/" not in ref and "\x00" not in rest and "\\" not in rest
    return (name, ref) if ok else None


def split_run_uri(uri: str) -> tuple[str, str]:
    """``runs:/<run_id>/<path>`` → ``(run_id, path)``, as written (``mlflow_problems`` says if it is safe)."""
    run_id, _, path = uri.removeprefix("runs:/").partition("/")
    return run_id, path


def _model_uri_problems(uri: str) -> tuple[str, ...]:
    if uri.startswith("runs:/"):
        run_id, path = split_run_uri(uri)
        bad_run = () if _SAFE_RUN_ID.fullmatch(run_id) else ("has no valid run id",)
        return tuple(f"{uri!r} {m}" for m in (*bad_run, *_artifact_path_problems(path)))
    if split_model_uri(uri) is None:
        return (f"{uri!r} is not models:/<name>/<version|alias> or runs:/<run_id>/<path>",)
    return ()


def mlflow_problems(source: MlflowSource) -> tuple[tuple[str, str], ...]:
    """Every reason ``source`` cannot name one MLflow artifact, as ``(field, message)``."""
    if source.model_uri is not None:
        both = source.run_id is not None or source.artifact_path is not None
        if both:
            return (("model_uri", "give either model_uri or run_id with artifact_path, not both"),)
        return tuple(("model_uri", m) for m in _model_uri_problems(source.model_uri))
    if source.run_id is None:
        return (("run_id", "missing (or give model_uri)"),)
    bad_run = not _SAFE_RUN_ID.fullmatch(source.run_id)
    run = (("run_id", "must be letters, digits, - or _"),) if bad_run else ()
    if source.artifact_path is None:
        return (*run, ("artifact_path", "missing"))
    return (*run, *(("artifact_path", m) for m in _artifact_path_problems(source.artifact_path)))


def mlflow_from_uri(uri: str) -> Result[MlflowSource, InvalidConfig]:
    """``runs:/<run_id>/<artifact_path>`` or ``models:/<name>/<version|alias>`` (``models:/name@alias``).

    Artifact paths with ``..``, a leading ``/``, NUL or backslashes are refused.
    """
    if uri.startswith("runs:/"):
        run_id, path = split_run_uri(uri)
        source = MlflowSource(run_id=run_id, artifact_path=path)
    elif uri.startswith("models:/"):
        source = MlflowSource(model_uri=uri)
    else:
        return Failure(_invalid(f"{shown_uri(uri)!r} is not an MLflow URI (runs:/… or models:/…)"))
    problems = mlflow_problems(source)
    if problems:
        return Failure(_invalid(*(f"{uri!r}: {field} {m}" for field, m in problems), source=uri))
    return Success(source)


# --- any reference ----------------------------------------------------------------------------------

_PARSERS: Mapping[str, UriParser] = {
    "local": local_from_uri,
    "http": http_from_uri,
    "s3": s3_from_uri,
    "gcs": gcs_from_uri,
    "azure": azure_from_uri,
    "mlflow": mlflow_from_uri,
}


def source_type_of(uri: str) -> str | None:
    """The ``type`` of the built-in source ``uri`` names; None for a scheme none of them reads."""
    scheme = scheme_of(uri)
    if scheme is None:
        return "local"
    if scheme in ("http", "https") and is_azure_blob_url(uri):
        return "azure"
    return URI_SCHEMES.get(scheme)


def source_from_uri(uri: str) -> Result[SourceConfig, InvalidConfig]:
    """The source config a URI string names (pure: nothing is looked up)."""
    if not uri:
        return Failure(_invalid("empty source; give a path or a URI"))
    tag = source_type_of(uri)
    if tag is None:
        scheme = scheme_of(uri) or ""
        return Failure(_invalid(f"{shown_uri(uri)!r}: {unknown_choice(scheme, URI_SCHEMES, 'scheme ')}"))
    return _PARSERS[tag](uri)
