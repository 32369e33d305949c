"""Deserialization edge: read a checkpoint file without running code from it.

torch files load with ``weights_only=True`` (memory-mapped when they are zip archives). A file whose
pickle needs globals outside torch's safe set is refused with ``UnsafeCheckpoint`` naming them, found
by a static scan before anything is unpickled. ``allow_globals`` widens the safe set for one call only;
``trusted=True`` lifts the restriction for one call only. safetensors files are read with the
``safetensors`` package into a ``SafetensorsPayload``. Both keep tensors in the file's mapping (no copy
in memory); ``release_mapped_pages`` lets the one mutator drop a tensor's pages from this process once
it has copied them, so a load never holds the whole file resident on top of the model.
"""

from __future__ import annotations

import _compat_pickle
import ctypes
import functools
import importlib
import os
import pickle
import re
import struct
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from attrs import evolve, frozen
from returns.result import Failure, Result, Success

from ckptflow.context import Context
from ckptflow.errors import (
    AccessDenied,
    CorruptCheckpoint,
    Error,
    InvalidConfig,
    NotFound,
    StageFailed,
    UnsafeCheckpoint,
)
from ckptflow.pipeline import NamedStage
from ckptflow.stages.formats import SafetensorsPayload

__all__ = ["CheckpointFile", "Container", "read", "read_checkpoint", "release_mapped_pages", "sniff"]

Container = Literal["zip", "legacy", "safetensors"]

_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGICS = tuple(
    pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=p) for p in range(2, pickle.HIGHEST_PROTOCOL + 1)
)
_HEAD_BYTES = 32
_SAFETENSORS_SUFFIX = ".safetensors"

_GLOBAL_REFUSED = (
    re.compile(r"GLOBAL (\S+) was not an allowed global"),
    re.compile(r"unsupported GLOBAL (\S+) whose module"),
)
_OTHER_REFUSALS = (
    "Can only create new object",
    "Can only build",
    "unrecognized function",
    "must be imported",
)

# The weights-only unpickler and torch's archive readers report malformed bytes with these
# (torch's own consistency checks on a damaged pickle raise AssertionError or TypeError).
_MALFORMED = (
    AssertionError,
    TypeError,
    RuntimeError,
    EOFError,
    OSError,
    ValueError,
    KeyError,
    IndexError,
    struct.error,
    UnicodeDecodeError,
)

# ``torch.serialization.safe_globals`` edits one process-wide allow-list; this lock keeps one call's
# allowed globals from applying to another call running at the same time in another thread.
_ALLOW_LIST_LOCK = threading.Lock()


@frozen
class CheckpointFile:
    """What the first bytes of a file say it is, and its size in bytes."""

    container: Container
    size: int


@frozen
class _Loaded:
    payload: Any
    file: CheckpointFile
    mmap: bool


def _corrupt(path: Path, detail: str) -> Failure[Error]:
    return Failure(CorruptCheckpoint(path=str(path), detail=detail))


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    """An 8-byte little-endian header length that fits the file, followed by a JSON object."""
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return 2 <= header_len <= size - 8 and head[8:9] == b"{"


def _classify(path: Path, head: bytes, size: int) -> Result[CheckpointFile, Error]:
    if size == 0:
        return _corrupt(path, "the file is empty")
    if path.suffix == _SAFETENSORS_SUFFIX or _looks_like_safetensors(head, size):
        return Success(CheckpointFile("safetensors", size))
    if head.startswith(_ZIP_MAGIC):
        return Success(CheckpointFile("zip", size))
    if head.startswith(_LEGACY_MAGICS):
        return Success(CheckpointFile("legacy", size))
    return _corrupt(path, "not a torch.save archive, a legacy torch file or a safetensors file")


def sniff(path: Path) -> Result[CheckpointFile, Error]:
    """Open ``path`` and tell its container from its first bytes (nothing is deserialized)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(_HEAD_BYTES)
            size = os.fstat(handle.fileno()).st_size
    except (FileNotFoundError, NotADirectoryError):
        return Failure(NotFound(what=str(path), hint="check the path, or fetch the checkpoint first"))
    except IsADirectoryError:
        problem = f"path: {path} is a directory; give the checkpoint file inside it"
        return Failure(InvalidConfig(problems=(problem,)))
    except PermissionError:
        return Failure(AccessDenied(what=str(path), detail="this user may not read the file"))
    except OSError as err:
        return _corrupt(path, f"cannot read the file ({err.strerror or err})")
    return _classify(path, head, size)


def _resolve_global(name: str) -> Result[object, Error]:
    """Import exactly the object ``package.module.Name`` (or ``package.module.Outer.Inner``) names."""
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            return Success(functools.reduce(getattr, parts[split:], module))
        except AttributeError:
            break
    problem = f"allow_globals: cannot import {name!r}; name it as 'package.module.Name'"
    return Failure(InvalidConfig(problems=(problem,)))


def _resolve_globals(names: Sequence[str | object]) -> Result[list[Any], Error]:
    resolved: list[Any] = []
    for item in names:
        match _resolve_global(item) if isinstance(item, str) else Success(item):
            case Success(obj):
                resolved.append(obj)
            case Failure(_) as failed:
                return failed
    return Success(resolved)


def _unpickler_reason(text: str) -> str:
    """The unpickler's own words inside torch's long 'Weights only load failed' message."""
    parts = [p.strip() for p in text.split("\n\n") if p.strip()]
    kept = [p for p in parts if not p.startswith(("Weights only load failed", "Check the documentation"))]
    reason = kept[-1] if kept else (parts[-1] if parts else text)
    return reason.split("WeightsUnpickler error:")[-1].strip() or "unreadable pickle"


def _python3_name(name: str) -> str:
    """The name Python 3 resolves a global to (protocol-2 pickles spell some the Python 2 way)."""
    module, _, attr = name.rpartition(".")
    if (module, attr) in _compat_pickle.NAME_MAPPING:
        return ".".join(_compat_pickle.NAME_MAPPING[(module, attr)])
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{attr}"


def _refused(path: Path, names: list[str]) -> Error:
    named = sorted({_python3_name(n) for n in names})
    return UnsafeCheckpoint(path=str(path), globals=named)


def _unpickling_failure(path: Path, text: str, *, trusted: bool) -> Error:
    if not trusted:
        for pattern in _GLOBAL_REFUSED:
            if found := pattern.search(text):
                name = found.group(1)
                return _refused(path, [name if "." in name else f"builtins.{name}"])
        if any(marker in text for marker in _OTHER_REFUSALS):
            return _refused(path, [])
    return CorruptCheckpoint(path=str(path), detail=f"unreadable pickle: {_unpickler_reason(text)}")


def _first_line(err: BaseException) -> str:
    if isinstance(err, EOFError):
        return "the file ends too early (truncated)"
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror} while reading it (truncated or damaged)"
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _torch_load(path: Path, *, weights_only: bool, mmap: bool) -> Result[Any, Error]:
    try:
        return Success(torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap))
    except pickle.UnpicklingError as err:
        return Failure(_unpickling_failure(path, str(err), trusted=not weights_only))
    except (ImportError, AttributeError) as err:
        detail = f"the pickle refers to code that cannot be imported here ({err}); install or import it first"
        return Failure(StageFailed(detail=detail, stage="read"))
    except _MALFORMED as err:
        return _corrupt(path, _first_line(err))


def _unsafe_globals(path: Path) -> Result[list[str], Error]:
    """Statically list the pickle's globals outside the safe set (no code runs)."""
    try:
        return Success(sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path)))
    except pickle.UnpicklingError as err:
        return _corrupt(path, f"unreadable pickle: {_unpickler_reason(str(err))}")
    except _MALFORMED as err:
        return _corrupt(path, _first_line(err))


def _load_restricted(path: Path, file: CheckpointFile, allowed: list[Any], mmap: bool) -> Result[Any, Error]:
    already = torch.serialization.get_safe_globals()
    scoped = [g for g in allowed if g not in already]
    with _ALLOW_LIST_LOCK, torch.serialization.safe_globals(scoped):
        if file.container == "zip":
            match _unsafe_globals(path):
                case Success([]):
                    pass
                case Success(names):
                    return Failure(_refused(path, names))
                case failed:
                    return failed
        return _torch_load(path, weights_only=True, mmap=mmap)


def _load_safetensors(path: Path) -> Result[SafetensorsPayload, Error]:
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError:
        detail = (
            f"{path} is a safetensors file; reading it needs the safetensors package: pip install safetensors"
        )
        return Failure(StageFailed(detail=detail, stage="read"))
    try:
        with safe_open(str(path), framework="pt", device="cpu") as opened:
            tensors = {key: opened.get_tensor(key) for key in opened.keys()}  # noqa: SIM118 - not a dict
            metadata = dict(opened.metadata() or {})
    except (SafetensorError, OSError) as err:
        return _corrupt(path, f"unreadable safetensors file: {_first_line(err)}")
    return Success(SafetensorsPayload(tensors, metadata))


def _load(
    path: Path, file: CheckpointFile, *, trusted: bool, allow_globals: Sequence[str | object], mmap: bool
) -> Result[_Loaded, Error]:
    if file.container == "safetensors":
        return _load_safetensors(path).map(lambda payload: _Loaded(payload, file, mmap=True))
    use_mmap = mmap and file.container == "zip"
    if trusted:
        loaded = _torch_load(path, weights_only=False, mmap=use_mmap)
    else:
        loaded = _resolve_globals(allow_globals).bind(
            lambda allowed: _load_restricted(path, file, allowed, use_mmap)
        )
    return loaded.map(lambda payload: _Loaded(payload, file, use_mmap))


def _read_file(
    path: Path | str, *, trusted: bool, allow_globals: Sequence[str | object], mmap: bool
) -> Result[_Loaded, Error]:
    target = Path(path)
    return sniff(target).bind(
        lambda file: _load(target, file, trusted=trusted, allow_globals=allow_globals, mmap=mmap)
    )


def read_checkpoint(
    path: Path | str,
    *,
    trusted: bool = False,
    allow_globals: Sequence[str | object] = (),
    mmap: bool = True,
) -> Result[Any, Error]:
    """Deserialize a checkpoint file safely: a torch payload, or a ``SafetensorsPayload``.

    ``allow_globals`` names (``"pkg.mod.Name"``, imported for exactly those names) or objects to allow
    for this call only; ``trusted=True`` unpickles anything, for this call only. Legacy (non-zip) torch
    files cannot be memory-mapped and are read without ``mmap``.
    """
    return _read_file(path, trusted=trusted, allow_globals=allow_globals, mmap=mmap).map(
        lambda loaded: loaded.payload
    )


def _read(ctx: Context) -> Result[Context, Error]:
    if ctx.path is None:
        return Failure(
            StageFailed(detail="the context has no local path: put read after fetch", stage="read")
        )
    options = ctx.options
    return _read_file(ctx.path, trusted=options.trusted, allow_globals=options.allow_globals, mmap=True).map(
        lambda loaded: evolve(ctx, raw=loaded.payload).with_event(
            "checkpoint.read",
            "read",
            bytes=loaded.file.size,
            container=loaded.file.container,
            mmap=loaded.mmap,
            trusted=options.trusted,
            allowed_globals=list(options.allow_globals),
        )
    )


read = NamedStage("read", _read, edge=True)
"""ctx.path → ctx.raw, honouring ctx.options.trusted and ctx.options.allow_globals."""


# --- releasing mapped pages -------------------------------------------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_RELEASE_AT_LEAST = 1 << 20
_MADV_DONTNEED = 4
_IN_MEMORY = -(1 << 62)  # pagemap bits 63 (present) and 62 (swapped), as an int64 mask
_FILE_PAGE = 1 << 61


@functools.cache
def _madvise() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    libc.madvise.restype = ctypes.c_int
    return libc.madvise


def _only_file_pages(start: int, pages: int) -> bool:
    """Every page of ``[start, start + pages * _PAGE)`` is either absent or a clean page of a file.

    ``/proc/self/pagemap`` says so per page; a page copied on write (or swapped out) is anonymous and
    would be lost by ``MADV_DONTNEED``, so any such page vetoes the release.
    """
    try:
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    except OSError:
        return False
    try:
        entries = os.pread(fd, pages * 8, (start // _PAGE) * 8)
    except OSError:
        return False
    finally:
        os.close(fd)
    if len(entries) != pages * 8:
        return False
    flags = torch.frombuffer(bytearray(entries), dtype=torch.int64)
    in_memory = (flags & _IN_MEMORY) != 0
    file_page = (flags & _FILE_PAGE) != 0
    return not bool((in_memory & ~file_page).any())


def release_mapped_pages(tensor: torch.Tensor) -> int:
    """Unmap from this process the pages of a memory-mapped ``tensor`` (they stay in the page cache and
    come back on the next access); returns the bytes released.

    Only whole pages inside a contiguous CPU tensor of at least 1 MiB, and only when every one of them
    is a clean file page, so the tensor's values can never change. Anything else (ordinary memory,
    pages written to, other platforms) is left alone and 0 is returned.
    """
    if sys.platform != "linux" or tensor.device.type != "cpu" or not tensor.is_contiguous():
        return 0
    nbytes = tensor.numel() * tensor.element_size()
    if nbytes < _RELEASE_AT_LEAST:
        return 0
    begin = tensor.data_ptr()
    start = -(-begin // _PAGE) * _PAGE
    end = (begin + nbytes) // _PAGE * _PAGE
    if end <= start or not _only_file_pages(start, (end - start) // _PAGE):
        return 0
    return end - start if _madvise()(start, end - start, _MADV_DONTNEED) == 0 else 0
