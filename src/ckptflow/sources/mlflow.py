"""The MLflow source edge: ``runs:/<run_id>/<path>`` and ``models:/<name>/<version|alias>`` into the cache.

Artifacts come through the MLflow client (``MlflowClient`` / ``mlflow.artifacts``) into a fresh temp dir
inside the cache's ``tmp/``, then ``ingest_file`` hashes, verifies and moves them into ``blobs/``.
A run's artifacts are immutable, so ``mlflow:runs:/<run_id>/<path>`` is the cache identity and a second
fetch is answered from the cache without contacting the server. ``models:/`` references are resolved to
a model version (and, when it points at a run, to that run's artifact) before anything is downloaded; the
requested reference gets its own ref too, so offline mode can answer it. A directory artifact resolves to
the single checkpoint file in it.

MLflow's own HTTP retries (7 with a doubling backoff by default: minutes against a dead server) are
bounded for the duration of a fetch: ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` (default 2, or
``options["mlflow_max_retries"]``), ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` 1 and
``MLFLOW_HTTP_REQUEST_TIMEOUT`` (``settings.timeout``), unless the user set those variables, which win.
"""

from __future__ import annotations

import contextlib
import math
import os
import posixpath
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import mlflow.artifacts
import requests  # type: ignore[import-untyped]
from attrs import frozen
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from returns.result import Failure, Result, Success

from ckptflow.cache import (
    Cache,
    Ref,
    blob_path,
    identity_lock,
    ingest_file,
    is_sha256,
    lookup,
    open_cache,
    write_ref,
)
from ckptflow.config.converter import validate_mlflow
from ckptflow.config.schema import MlflowSource
from ckptflow.config.uris import mlflow_from_uri as from_uri
from ckptflow.config.uris import split_model_uri, split_run_uri
from ckptflow.errors import (
    AccessDenied,
    CacheUnavailable,
    Error,
    InvalidConfig,
    NetworkError,
    NotFound,
    StageFailed,
)
from ckptflow.sources.base import FetchSettings, Progress, SourceSpec
from ckptflow.sources.http import redact_url, scrub, secrets_of, url_identity
from ckptflow.sources.progress import progress_sink
from ckptflow.sources.transfer import is_offline, log_event, resolve_offline, use_cached

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "DEFAULT_MAX_RETRIES",
    "SOURCE",
    "ModelRef",
    "RunArtifact",
    "choose_checkpoint",
    "fetch",
    "from_uri",
    "http_bounds",
    "model_identity",
    "run_identity",
    "target_of",
    "tracking_uri_of",
    "translate_error",
]

T = TypeVar("T")

CHECKPOINT_SUFFIXES: tuple[str, ...] = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")
"""File extensions a directory artifact is searched for."""

DEFAULT_MAX_RETRIES = 2
"""MLflow HTTP retries per request during a fetch, unless ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` is set."""

_SECRET_ENV = (
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "DATABRICKS_TOKEN",
    "DATABRICKS_CLIENT_SECRET",
)
_NOT_FOUND = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "ENDPOINT_NOT_FOUND"})
_DENIED = frozenset({"PERMISSION_DENIED", "UNAUTHENTICATED", "CUSTOMER_UNAUTHORIZED"})
_TRANSIENT = frozenset(
    {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}
)
_REJECTED = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "INVALID_STATE"})
_HTTP_DENIED = re.compile(r"error code (401|403)\b")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
_MAX_DETAIL = 400


def _invalid(*problems: str) -> InvalidConfig:
    return InvalidConfig(problems=problems)


# --- what is asked for (pure) -----------------------------------------------------------------------


@frozen
class RunArtifact:
    """One artifact (file or directory) of one run; runs never change, so this names fixed content."""

    run_id: str
    path: str

    @property
    def identity(self) -> str:
        return run_identity(self.run_id, self.path)


@frozen
class ModelRef:
    """A registered model at a version (digits) or an alias (which may move: resolved before use)."""

    name: str
    ref: str

    @property
    def is_version(self) -> bool:
        return self.ref.isdigit()

    @property
    def uri(self) -> str:
        """As MLflow writes it: ``models:/name/3`` or ``models:/name@alias``."""
        return f"models:/{self.name}/{self.ref}" if self.is_version else f"models:/{self.name}@{self.ref}"


def run_identity(run_id: str, path: str) -> str:
    """The cache identity of a run artifact: ``mlflow:runs:/<run_id>/<path>``."""
    return f"mlflow:runs:/{run_id}/{path.strip('/')}"


def model_identity(tracking_uri: str, name: str, ref: str) -> str:
    """The cache identity of a model reference; model names are per server, so the server is part of it."""
    return f"mlflow:{url_identity(tracking_uri).rstrip('/')}/models:/{name}/{ref}"


def target_of(source: MlflowSource) -> RunArtifact | ModelRef:
    """What a validated ``MlflowSource`` asks for (``validate_mlflow`` has accepted it)."""
    uri = source.model_uri
    if uri is None:
        return RunArtifact(str(source.run_id), str(source.artifact_path).strip("/"))
    if uri.startswith("runs:/"):
        run_id, path = split_run_uri(uri)
        return RunArtifact(run_id, path.strip("/"))
    name, ref = split_model_uri(uri) or ("", "")
    return ModelRef(name, ref)


def tracking_uri_of(source: MlflowSource, environ: Mapping[str, str]) -> Result[str, Error]:
    """The tracking server: the config's ``tracking_uri``, else ``MLFLOW_TRACKING_URI``."""
    uri = source.tracking_uri or environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:
        return Success(uri)
    return Failure(_invalid("source.tracking_uri: missing; set it in the config or set MLFLOW_TRACKING_URI"))


def choose_checkpoint(where: str, names: Sequence[str]) -> Result[str, Error]:
    """The one checkpoint among the file names in a directory artifact, by extension."""
    candidates = sorted(n for n in names if n.lower().endswith(CHECKPOINT_SUFFIXES))
    if len(candidates) == 1:
        return Success(candidates[0])
    if candidates:
        listed = ", ".join(candidates)
        return Failure(_invalid(f"artifact_path: {where} holds several checkpoints ({listed}); name one"))
    held = ", ".join(sorted(names)) or "nothing"
    return Failure(
        NotFound(
            what=f"a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}) in {where}",
            hint=f"it holds {held}; name the checkpoint file in artifact_path",
        )
    )


def http_bounds(settings: FetchSettings) -> dict[str, str]:
    """MLflow's settings for one fetch: few retries, short backoff, the fetch's timeout, no file-count bar."""
    retries = int(settings.options.get("mlflow_max_retries", DEFAULT_MAX_RETRIES))
    return {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(max(0, retries)),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(settings.timeout))),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }


def _clean(text: str, secrets: tuple[str, ...]) -> str:
    """A library message safe to show: secrets scrubbed, URL credentials redacted, length bounded."""
    redacted = _URL.sub(lambda m: redact_url(m.group(0)), scrub(text, secrets))
    first = redacted.strip().splitlines()[0] if redacted.strip() else ""
    return first if len(first) <= _MAX_DETAIL else f"{first[:_MAX_DETAIL]}…"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status of a ``requests`` error anywhere in the exception's chain (artifact downloads)."""
    for link in _chain(exc):
        status = getattr(getattr(link, "response", None), "status_code", None)
        if isinstance(status, int):
            return status
    return None


def translate_error(exc: Exception, what: str, *, attempts: int, secrets: tuple[str, ...] = ()) -> Error:
    """The failure value for an exception raised by the MLflow client while getting ``what``."""
    detail = _clean(str(exc), secrets) or type(exc).__name__
    code = getattr(exc, "error_code", None)
    status = _http_status(exc)
    if code in _NOT_FOUND or status == 404 or (code in _REJECTED and "not found" in detail.lower()):
        return NotFound(
            what=what, hint=f"MLflow says: {detail}; check the run id, artifact path or model name"
        )
    if code in _DENIED or status in (401, 403) or _HTTP_DENIED.search(detail):
        return AccessDenied(what=what, detail=detail)
    if any(isinstance(link, requests.RequestException) for link in _chain(exc)) or code in _TRANSIENT:
        return NetworkError(what=what, attempts=attempts, cause=detail)
    if code in _REJECTED:
        return _invalid(f"{what}: MLflow rejected the request: {detail}")
    return StageFailed(detail=f"MLflow could not provide {what}: {detail}")


# --- effects ----------------------------------------------------------------------------------------


class _EnvBounds:
    """Process-wide MLflow HTTP settings held while any fetch runs; user-set variables are never touched.

    MLflow reads these only from the environment, so they are set while the first fetch starts and
    restored when the last concurrent one ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._ours: tuple[str, ...] = ()

    @contextlib.contextmanager
    def hold(self, values: Mapping[str, str]) -> Iterator[Mapping[str, str]]:
        with self._lock:
            if self._users == 0:
                self._ours = tuple(k for k in values if k not in os.environ)
                os.environ.update({k: values[k] for k in self._ours})
            self._users += 1
            effective = {k: os.environ.get(k, v) for k, v in values.items()}
        try:
            yield effective
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    for key in self._ours:
                        os.environ.pop(key, None)
                    self._ours = ()


_BOUNDS = _EnvBounds()


@frozen(kw_only=True)
class _Session:
    """One fetch's connection to the tracking server and how to report its failures."""

    client: Any
    tracking_uri: str
    registry_uri: str
    attempts: int
    secrets: tuple[str, ...]
    progress: Progress | bool | None = None

    def call(self, what: str, action: Callable[[], T]) -> Result[T, Error]:
        """Run one MLflow client call, translating the library's exceptions into failure values."""
        try:
            return Success(action())
        except (MlflowException, requests.RequestException) as exc:
            return Failure(translate_error(exc, what, attempts=self.attempts, secrets=self.secrets))

    def download(
        self, what: str, cache: Cache, size: int | None, action: Callable[[], str]
    ) -> Result[Path, Error]:
        """Run one MLflow download into the cache's tmp/, reporting progress at its start and end.

        A failed local write there means the cache is unusable.
        """
        sink = progress_sink(self.progress, what)
        try:
            sink.update(0, size)
            result = self.call(what, lambda: Path(action()))
            if isinstance(result, Success) and result.unwrap().is_file():
                sink.update(result.unwrap().stat().st_size, size)
            return result
        except OSError as exc:
            detail = exc.strerror or type(exc).__name__
            return Failure(CacheUnavailable(directory=str(cache.root), detail=detail))
        finally:
            sink.close()


def _secrets(tracking_uri: str) -> tuple[str, ...]:
    from_env = tuple(v for k in _SECRET_ENV if len(v := os.environ.get(k, "")) >= 4)
    return tuple(sorted({*secrets_of(tracking_uri), *from_env}, key=len, reverse=True))


def _sha256(settings: FetchSettings) -> Result[str | None, Error]:
    if not settings.sha256:
        return Success(None)
    digest = settings.sha256.strip().lower()
    if is_sha256(digest):
        return Success(digest)
    return Failure(_invalid("sha256: expected 64 hex digits"))


def _cached(
    cache: Cache, identity: str, version: str | None, settings: FetchSettings, sha: str | None
) -> Path | None:
    found = lookup(cache, identity, version)
    if found is None or (sha is not None and found.name != sha):
        return None
    return use_cached(found, identity, settings)


def _entry(session: _Session, run: RunArtifact) -> Result[Any, Error]:
    """The run's listing entry (``FileInfo``) for ``run.path``, or NotFound naming what is there."""
    parent = posixpath.dirname(run.path)
    where = f"run {run.run_id}"

    def find(listing: Sequence[Any]) -> Result[Any, Error]:
        for info in listing:
            if info.path == run.path:
                return Success(info)
        names = ", ".join(sorted(posixpath.basename(i.path) + ("/" if i.is_dir else "") for i in listing))
        return Failure(
            NotFound(
                what=f"artifact {run.path} in MLflow run {run.run_id}",
                hint=f"{parent or 'the artifact root'} holds {names or 'nothing'}; check artifact_path",
            )
        )

    return session.call(where, lambda: list(session.client.list_artifacts(run.run_id, parent or None))).bind(
        find
    )


def _file_of(session: _Session, run: RunArtifact) -> Result[tuple[str, int | None], Error]:
    """The artifact file to download (the single checkpoint of a directory) and its size."""

    def resolve(info: Any) -> Result[tuple[str, int | None], Error]:
        if not info.is_dir:
            return Success((run.path, info.file_size))
        listing = session.call(
            f"artifact {run.path} in run {run.run_id}",
            lambda: list(session.client.list_artifacts(run.run_id, run.path)),
        )
        files = listing.map(lambda items: {posixpath.basename(i.path): i for i in items if not i.is_dir})
        where = f"runs:/{run.run_id}/{run.path}"
        return files.bind(
            lambda by_name: choose_checkpoint(where, tuple(by_name)).map(
                lambda name: (f"{run.path}/{name}", by_name[name].file_size)
            )
        )

    return _entry(session, run).bind(resolve)


@contextlib.contextmanager
def _scratch(cache: Cache) -> Iterator[Path]:
    """A fresh directory inside the cache's tmp/ for one download, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="mlflow-", dir=cache.tmp))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _downloaded(local: Path, size: int | None, what: str, attempts: int) -> Result[Path, Error]:
    actual = local.stat().st_size if local.is_file() else None
    if actual is None:
        return Failure(NotFound(what=what, hint="MLflow returned no file for it"))
    if size is not None and actual != size:
        cause = f"got {actual} of {size} bytes"
        return Failure(NetworkError(what=what, attempts=attempts, cause=cause))
    return Success(local)


def _download_run(
    session: _Session, cache: Cache, run: RunArtifact, settings: FetchSettings, sha: str | None
) -> Result[Path, Error]:
    def download(found: tuple[str, int | None]) -> Result[Path, Error]:
        path, size = found
        what = f"runs:/{run.run_id}/{path}"
        with identity_lock(cache, run.identity, wait=settings.options.get("lock_wait")):
            cached = _cached(cache, run.identity, run.run_id, settings, sha)
            if cached is not None:
                return Success(cached)
            log_event("fetch.start", run.identity, file=path, size=size)
            with _scratch(cache) as scratch:
                local = session.download(
                    what,
                    cache,
                    size,
                    lambda: session.client.download_artifacts(run.run_id, path, str(scratch)),
                )
                placed = (
                    local.bind(lambda p: _downloaded(p, size, what, session.attempts))
                    .bind(
                        lambda p: ingest_file(cache, p, identity=run.identity, version=run.run_id, sha256=sha)
                    )
                    .bind(lambda blob: _also_as(cache, blob, run_identity(run.run_id, path), run.run_id))
                )
        if isinstance(placed, Success):
            log_event(
                "fetch.done", run.identity, size=placed.unwrap().stat().st_size, sha256=placed.unwrap().name
            )
        return placed

    return _file_of(session, run).bind(download)


def _also_as(cache: Cache, blob: Path, identity: str, version: str | None) -> Result[Path, Error]:
    """Record that ``identity`` is this blob too (no copy): a resolved file, or a model reference."""
    if lookup(cache, identity, version) == blob:
        return Success(blob)
    ref = Ref(
        identity=identity, version=version, sha256=blob.name, size=blob.stat().st_size, created=time.time()
    )
    return write_ref(cache, ref).map(lambda _: blob)


def _model_file(session: _Session, what: str, location: str) -> Result[tuple[str, int | None], Error]:
    """The artifact URI of the checkpoint at a model version's location (a file, or a directory with one)."""

    def pick(listing: Sequence[Any]) -> Result[tuple[str, int | None], Error]:
        if not listing:
            return Success((location, None))
        files = {posixpath.basename(i.path): i for i in listing if not i.is_dir}
        return choose_checkpoint(what, tuple(files)).map(
            lambda name: (f"{location.rstrip('/')}/{name}", files[name].file_size)
        )

    return session.call(
        what,
        lambda: list(
            mlflow.artifacts.list_artifacts(artifact_uri=location, tracking_uri=session.tracking_uri)
        ),
    ).bind(pick)


def _download_model_version(
    session: _Session, cache: Cache, model: ModelRef, version: str, settings: FetchSettings, sha: str | None
) -> Result[Path, Error]:
    """A model version whose source is not a run artifact: its storage location, listed then downloaded.

    (Not ``download_artifacts("models:/…")``: MLflow resolves those with the process-wide registry URI.)
    """
    identity = model_identity(session.tracking_uri, model.name, version)
    cached = _cached(cache, identity, version, settings, sha)
    if cached is not None:
        return Success(cached)
    what = f"models:/{model.name}/{version}"

    def download(found: tuple[str, int | None]) -> Result[Path, Error]:
        uri, size = found
        with (
            identity_lock(cache, identity, wait=settings.options.get("lock_wait")),
            _scratch(cache) as scratch,
        ):
            return (
                session.download(
                    what,
                    cache,
                    size,
                    lambda: mlflow.artifacts.download_artifacts(
                        artifact_uri=uri, dst_path=str(scratch), tracking_uri=session.tracking_uri
                    ),
                )
                .bind(lambda p: _downloaded(p, size, what, session.attempts))
                .bind(lambda p: ingest_file(cache, p, identity=identity, version=version, sha256=sha))
            )

    return (
        session.call(what, lambda: str(session.client.get_model_version_download_uri(model.name, version)))
        .bind(lambda location: _model_file(session, what, location))
        .bind(download)
    )


def _fetch_model(
    session: _Session, cache: Cache, model: ModelRef, settings: FetchSettings, sha: str | None
) -> Result[Path, Error]:
    what = model.uri
    client = session.client
    resolved = session.call(
        what,
        (lambda: client.get_model_version(model.name, model.ref))
        if model.is_version
        else (lambda: client.get_model_version_by_alias(model.name, model.ref)),
    )

    def get(version: Any) -> Result[Path, Error]:
        number = str(version.version)
        source = str(version.source or "")
        log_event("mlflow.resolved", what, version=number, source=source)
        if source.startswith("runs:/"):
            run_id, _, path = source.removeprefix("runs:/").partition("/")
            return _download_run_cached(session, cache, RunArtifact(run_id, path.strip("/")), settings, sha)
        return _download_model_version(session, cache, model, number, settings, sha)

    requested = model_identity(session.tracking_uri, model.name, model.ref)
    return resolved.bind(
        lambda version: get(version).bind(lambda blob: _also_as(cache, blob, requested, str(version.version)))
    )


def _download_run_cached(
    session: _Session, cache: Cache, run: RunArtifact, settings: FetchSettings, sha: str | None
) -> Result[Path, Error]:
    cached = _cached(cache, run.identity, run.run_id, settings, sha)
    return Success(cached) if cached is not None else _download_run(session, cache, run, settings, sha)


def _online(
    source: MlflowSource,
    target: RunArtifact | ModelRef,
    cache: Cache,
    settings: FetchSettings,
    sha: str | None,
) -> Result[Path, Error]:
    def run(tracking_uri: str) -> Result[Path, Error]:
        with _BOUNDS.hold(http_bounds(settings)) as effective:
            attempts = 1 + int(effective["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
            secrets = _secrets(tracking_uri)
            registry_uri = os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri
            try:
                client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
            except MlflowException as exc:
                return Failure(
                    translate_error(exc, f"tracking server {redact_url(tracking_uri)}", attempts=1)
                )
            session = _Session(
                client=client,
                tracking_uri=tracking_uri,
                registry_uri=registry_uri,
                attempts=attempts,
                secrets=secrets,
                progress=settings.progress,
            )
            if isinstance(target, RunArtifact):
                return _download_run(session, cache, target, settings, sha)
            return _fetch_model(session, cache, target, settings, sha)

    return tracking_uri_of(source, os.environ).bind(run)


def _fetch_in(
    cache: Cache, source: MlflowSource, settings: FetchSettings, sha: str | None
) -> Result[Path, Error]:
    known = blob_path(cache, sha) if sha is not None else None
    if known is not None and known.is_file():
        hit = use_cached(known, known.name, settings)
        if hit is not None:
            return Success(hit)
    target = target_of(source)
    if isinstance(target, RunArtifact):
        cached = _cached(cache, target.identity, target.run_id, settings, sha)
        if cached is not None:
            return Success(cached)
        if is_offline(settings):
            return resolve_offline(cache, target.identity, settings, sha)
    elif is_offline(settings):
        return tracking_uri_of(source, os.environ).bind(
            lambda uri: resolve_offline(cache, model_identity(uri, target.name, target.ref), settings, sha)
        )
    return _online(source, target, cache, settings, sha)


def fetch(source: MlflowSource, settings: FetchSettings) -> Result[Path, Error]:
    """The cached blob holding the artifact ``source`` names, downloading it through MLflow if needed."""
    checked: Result[MlflowSource, Error] = validate_mlflow(source)
    return checked.bind(
        lambda valid: _sha256(settings).bind(
            lambda sha: open_cache(settings.cache_dir).bind(
                lambda cache: _fetch_in(cache, valid, settings, sha)
            )
        )
    )


SOURCE = SourceSpec(
    name="mlflow",
    schemes=("runs", "models"),
    config_type=MlflowSource,
    from_uri=from_uri,
    fetch=fetch,
    description="MLflow run artifacts (runs:/) and registered models (models:/) via the MLflow client",
)
