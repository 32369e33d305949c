"""Loopback servers the benchmarks share: a fast file server using ``socket.sendfile``, and ``moto_server``.

The file server answers HEAD and GET with ``Content-Length``, ``ETag``, ``Accept-Ranges`` and single
``Range`` requests (206 + ``Content-Range``, honouring ``If-Range``), sending bodies straight from the
page cache with ``sendfile`` so that the server costs little CPU and every client is measured against
the same fast peer.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

__all__ = ["FileServer", "file_server_process", "free_port", "running_moto", "serve_files"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _etag(path: Path) -> str:
    stat = path.stat()
    return '"' + hashlib.sha256(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16] + '"'


def _byte_range(spec: str | None, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` as ``(first, end_exclusive)``; None for the whole body."""
    if spec is None or not spec.startswith("bytes="):
        return None
    first, _, last = spec[len("bytes=") :].partition("-")
    if not first.isdigit() or "," in last:
        return None
    end = min(size, int(last) + 1) if last.isdigit() else size
    return int(first), end


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        return None

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, *, body: bool) -> None:
        path = self.server.root / self.path.split("?", 1)[0].lstrip("/")
        if not path.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = path.stat().st_size
        etag = _etag(path)
        wanted = _byte_range(self.headers.get("Range"), size)
        validator = self.headers.get("If-Range")
        if validator is not None and validator != etag:
            wanted = None
        start, end = wanted if wanted is not None else (0, size)
        if start >= size and wanted is not None:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if wanted is not None else 200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", formatdate(path.stat().st_mtime, usegmt=True))
        self.send_header("Content-Length", str(end - start))
        if wanted is not None:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if body and end > start:
            self.wfile.flush()
            with path.open("rb") as f, contextlib.suppress(OSError):
                self.connection.sendfile(f, offset=start, count=end - start)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
    root: Path


class FileServer:
    """Serves the files under ``root`` on 127.0.0.1 until ``stop``."""

    def __init__(self, root: Path) -> None:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.root = root
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="bench-files", daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/{name}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)


@contextlib.contextmanager
def serve_files(root: Path) -> Iterator[FileServer]:
    """A running ``FileServer`` for ``root``, stopped on exit."""
    server = FileServer(root)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def _answering(
    process: subprocess.Popen[bytes], url: str, probe: Callable[[str], object], name: str, timeout: float
) -> Iterator[str]:
    """Wait until ``probe(url)`` succeeds (``process`` still running), yield ``url``, then stop it."""
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}")
            try:
                probe(url)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not answer at {url}") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_moto(log: Path, *, timeout: float = 60.0) -> Iterator[str]:
    """``moto_server`` on a free loopback port (dummy credentials); yields its endpoint; stopped on exit.
    Its output goes to ``log``."""
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    probe = lambda url: httpx.get(f"{url}/moto-api/", timeout=1.0)  # noqa: E731
    with _answering(process, f"http://127.0.0.1:{port}", probe, f"moto_server (log: {log})", timeout) as url:
        yield url


@contextlib.contextmanager
def file_server_process(root: Path, *, timeout: float = 30.0) -> Iterator[str]:
    """The file server in its own process (so it never competes for this one's GIL); yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.servers", str(root), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parent.parent,
    )
    probe = lambda url: httpx.head(f"{url}/", timeout=1.0)  # noqa: E731
    with _answering(process, f"http://127.0.0.1:{port}", probe, "the bench file server", timeout) as url:
        yield url


def _serve_forever(root: Path, port: int) -> None:
    httpd = _Server(("127.0.0.1", port), _Handler)
    httpd.root = root
    httpd.serve_forever()


if __name__ == "__main__":
    _serve_forever(Path(sys.argv[1]), int(sys.argv[2]))
