"""A local Cloud Storage for TensorFlow's own `gs://` file system (`tf.io.gfile`, tf.data,
SavedModel, summaries, Keras saving), with no network and no credentials.

TensorFlow's GCS client has its endpoints compiled in (`https://www.googleapis.com/storage/v1/`,
`https://www.googleapis.com/upload/storage/v1/`, `https://storage.googleapis.com/`): no
environment variable points it elsewhere. But its libcurl honours `HTTPS_PROXY`, TensorFlow
passes `CURL_CA_BUNDLE` to curl, and `GOOGLE_AUTH_TOKEN_FOR_TESTING` is taken as the token. So:

    TF --CONNECT www.googleapis.com:443--> the proxy below (TLS with a throw-away self-signed
    certificate for the Google host names) --plain HTTP--> gcp-storage-emulator (PyPI)

Both run in one subprocess on 127.0.0.1 (free ports), which exits when its parent does.
Besides forwarding, the proxy de-chunks request bodies (curl uploads with `Transfer-Encoding:
chunked`, which the emulator does not read), sends the resumable-upload `Location` back through
itself, and covers two gaps of the emulator: an empty `uploadType=media` upload (TensorFlow's
directory marker `DIR/`) and `GET b/BUCKET/storageLayout` (asked before a directory rename).

TensorFlow reads the proxy, CA bundle and token variables per request, so setting them in
`os.environ` of a process that has already imported TensorFlow works (even after a failed
`gs://` call), as does passing them to a subprocess (`gcs_environ`). The GCS_RETRY_CONFIG_*
ones are read once, when TensorFlow loads: they only shorten the retries (10, up to 32 s apart)
of a process started with them.

Needs the `gcp-storage-emulator` package and the `openssl` command; `start_gcs_emulator` skips
the calling test (pytest.skip) when either is missing. Run as a script (`python gcs_emulator.py
serve ...`) this module is that subprocess.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import os
import re
import shutil
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

EMULATOR_PACKAGE = "gcp-storage-emulator"
EMULATOR_MODULE = "gcp_storage_emulator"
GOOGLE_HOSTS = ("www.googleapis.com", "storage.googleapis.com", "oauth2.googleapis.com")
DEFAULT_BUCKET = "vitcli-test-bucket"
START_TIMEOUT_S = 30.0
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "expect",
               "te", "trailer", "upgrade", "content-length"}


@dataclass
class GcsEmulator:
    """A running emulator and proxy: `root` is `gs://BUCKET`, `environ` the variables to set."""

    root: str
    bucket: str
    emulator_url: str
    environ: dict[str, str]
    processes: list[subprocess.Popen] = field(default_factory=list)
    workdir: Path | None = None
    startup_s: float = 0.0

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes.clear()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def missing_requirement() -> str | None:
    """Why the emulator cannot run here, or None."""
    if importlib.util.find_spec(EMULATOR_MODULE) is None:
        return f"{EMULATOR_PACKAGE} is not installed (pip install {EMULATOR_PACKAGE})"
    if shutil.which("openssl") is None:
        return "the openssl command (for the proxy's throw-away certificate) is not installed"
    return None


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports on 127.0.0.1 (held together while chosen)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                   for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def write_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate (and key) for GOOGLE_HOSTS, valid for a day."""
    cert, key = directory / "proxy-cert.pem", directory / "proxy-key.pem"
    names = ",".join(f"DNS:{host}" for host in GOOGLE_HOSTS)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={GOOGLE_HOSTS[0]}", "-addext", f"subjectAltName={names}",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return cert, key


def start_gcs_emulator(bucket: str = DEFAULT_BUCKET) -> GcsEmulator:
    """Starts the emulator (in memory, with `bucket`) and the proxy in one subprocess; skips the
    calling test when a requirement is missing. The caller stops it (`GcsEmulator.stop`); the
    subprocess also ends by itself when its parent does."""
    reason = missing_requirement()
    if reason is not None:
        import pytest

        pytest.skip(reason)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="gcs-emulator-"))
    emulator = GcsEmulator(root=f"gs://{bucket}", bucket=bucket, emulator_url="", environ={},
                           workdir=workdir)
    try:
        cert, key = write_certificate(workdir)
        ready, log_path = workdir / "ready.json", workdir / "serve.log"
        clean_env = {name: value for name, value in os.environ.items()
                     if name.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "serve", "--bucket", bucket,
                 "--cert", str(cert), "--key", str(key), "--ready-file", str(ready),
                 "--parent-pid", str(os.getpid())],
                cwd=workdir, env=clean_env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        emulator.processes.append(process)
        while not ready.exists():
            if process.poll() is not None:
                output = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the GCS emulator exited with {process.returncode}: {output}")
            if time.monotonic() - started > START_TIMEOUT_S:
                raise RuntimeError(f"the GCS emulator did not start in {START_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
        ports = json.loads(ready.read_text())
    except BaseException:
        emulator.stop()
        raise
    emulator.emulator_url = f"http://127.0.0.1:{ports['emulator']}"
    proxy_url = f"http://127.0.0.1:{ports['proxy']}"
    emulator.environ = {
        "HTTPS_PROXY": proxy_url, "https_proxy": proxy_url,
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        "CURL_CA_BUNDLE": str(cert),
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator-token",
        "NO_GCE_CHECK": "true",
        # Read when TF loads its GCS file system: they only take effect in a fresh process.
        "GCS_RETRY_CONFIG_MAX_RETRIES": "2",
        "GCS_RETRY_CONFIG_INIT_DELAY_TIME_US": "100000",
    }
    emulator.startup_s = time.monotonic() - started
    return emulator


@contextlib.contextmanager
def running_gcs_emulator(bucket: str = DEFAULT_BUCKET) -> Iterator[GcsEmulator]:
    """`start_gcs_emulator`, stopped on exit (for a session-scoped fixture)."""
    emulator = start_gcs_emulator(bucket)
    try:
        yield emulator
    finally:
        emulator.stop()


def gcs_environ(emulator: GcsEmulator, base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: os.environ) with the emulator's variables, for a subprocess."""
    environ = dict(os.environ if base is None else base)
    environ.pop("http_proxy", None)
    environ.pop("HTTP_PROXY", None)
    environ.update(emulator.environ)
    return environ


# ---------------------------------------------------------------------------------------------
# The proxy: CONNECT -> TLS (throw-away certificate) -> HTTP/1.1 requests forwarded to the
# emulator. Standard library only; one thread per client connection.


def _read_head(stream) -> tuple[str, list[tuple[str, str]]] | None:
    line = stream.readline(65537)
    while line in (b"\r\n", b"\n"):
        line = stream.readline(65537)
    if not line:
        return None
    headers = []
    while True:
        header = stream.readline(65537)
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    return line.decode("latin-1").rstrip("\r\n"), headers


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _read_body(stream, headers) -> bytes:
    if (_header(headers, "transfer-encoding") or "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int(stream.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while stream.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(body)
            body += stream.read(size)
            stream.readline()
    length = int(_header(headers, "content-length") or 0)
    return stream.read(length) if length else b""


class _ProxyHandler(socketserver.StreamRequestHandler):
    upstream_port: int
    tls: ssl.SSLContext
    verbose: bool = bool(os.environ.get("GCS_PROXY_VERBOSE"))

    def handle(self) -> None:
        head = _read_head(self.rfile)
        if head is None:
            return
        request_line, _ = head
        method, _target, _ = request_line.split(" ", 2)
        if method != "CONNECT":
            self.wfile.write(b"HTTP/1.1 405 Only CONNECT\r\nContent-Length: 0\r\n\r\n")
            return
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.wfile.flush()
        tunnel = self.tls.wrap_socket(self.connection, server_side=True)
        rfile, wfile = tunnel.makefile("rb"), tunnel.makefile("wb")
        try:
            while self._forward_one(rfile, wfile):
                pass
        except (OSError, ValueError) as error:
            print(f"gcs proxy: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        finally:
            rfile.close()
            wfile.close()
            tunnel.close()

    def _upstream(self, method: str, path: str, body: bytes, headers: dict[str, str]):
        headers = {**headers, "Content-Length": str(len(body))}
        connection = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.reason, response.getheaders(), response.read()
        finally:
            connection.close()

    def _empty_upload(self, path: str, headers: dict[str, str]):
        """An empty `uploadType=media` POST (how TensorFlow writes a directory marker, `DIR/`)
        made as a resumable upload: gcp-storage-emulator fails on an empty media upload."""
        split = urllib.parse.urlsplit(path)
        query = [(key, "resumable" if key == "uploadType" else value)
                 for key, value in urllib.parse.parse_qsl(split.query, keep_blank_values=True)]
        start = urllib.parse.urlunsplit(("", "", split.path, urllib.parse.urlencode(query), ""))
        status, reason, reply_headers, payload = self._upstream("POST", start, b"", headers)
        location = dict((name.lower(), value) for name, value in reply_headers).get("location")
        if status != 200 or not location:
            return status, reason, reply_headers, payload
        target = urllib.parse.urlsplit(location)
        session = urllib.parse.urlunsplit(("", "", target.path, target.query, ""))
        return self._upstream("PUT", session, b"", headers)

    def _storage_layout(self, path: str, headers: dict[str, str], not_found):
        """`GET b/BUCKET/storageLayout`, which TensorFlow asks before renaming a directory (a
        bucket with a hierarchical namespace has a folder-rename call): gcp-storage-emulator
        has no such route, and a 404 there fails the rename. Answers as GCS does for a plain
        bucket that exists."""
        match = re.fullmatch(r"/storage/v1/b/([^/?]+)/storageLayout(\?.*)?", path)
        if match is None:
            return not_found
        bucket = urllib.parse.unquote(match.group(1))
        if self._upstream("GET", f"/storage/v1/b/{match.group(1)}", b"", headers)[0] != 200:
            return not_found
        layout = {"kind": "storage#storageLayout", "bucket": bucket, "location": "US",
                  "locationType": "multi-region", "hierarchicalNamespace": {"enabled": False}}
        return 200, "OK", [("Content-Type", "application/json")], json.dumps(layout).encode()

    def _forward_one(self, rfile, wfile) -> bool:
        head = _read_head(rfile)
        if head is None:
            return False
        request_line, headers = head
        method, path, _ = request_line.split(" ", 2)
        if (_header(headers, "expect") or "").lower() == "100-continue":
            wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            wfile.flush()
        body = _read_body(rfile, headers)
        host = _header(headers, "host") or ""
        forwarded = {name: value for name, value in headers if name.lower() not in _HOP_BY_HOP}
        if method == "POST" and not body and _is_media_upload(path):
            status, reason, reply_headers, payload = self._empty_upload(path, forwarded)
        else:
            status, reason, reply_headers, payload = self._upstream(method, path, body, forwarded)
            if status == 404 and method == "GET":
                status, reason, reply_headers, payload = self._storage_layout(
                    path, forwarded, (status, reason, reply_headers, payload))
        lines = [f"HTTP/1.1 {status} {reason}"]
        for name, value in reply_headers:
            if name.lower() in _HOP_BY_HOP:
                continue
            if name.lower() == "location" and value.startswith(f"http://{host}/"):
                # The emulator answers the Host it was sent: send the upload back through us.
                value = "https://" + value[len("http://"):]
            lines.append(f"{name}: {value}")
        if method != "HEAD":
            lines.append(f"Content-Length: {len(payload)}")
        if self.verbose:
            print(f"gcs proxy: {method} {host}{path} -> {status}", file=sys.stderr, flush=True)
        wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if method != "HEAD":
            wfile.write(payload)
        wfile.flush()
        return True


def _is_media_upload(path: str) -> bool:
    split = urllib.parse.urlsplit(path)
    query = urllib.parse.parse_qs(split.query)
    return split.path.startswith("/upload/") and query.get("uploadType") == ["media"]


def serve(bucket: str, cert: str, key: str, ready_file: Path, parent_pid: int) -> None:
    """The emulator (gcp-storage-emulator's documented `create_server`, in memory) and the proxy
    in this process; writes {"emulator": PORT, "proxy": PORT} to `ready_file` once both answer,
    and exits when the parent process is gone (removing `ready_file`'s folder, its workdir)."""
    from gcp_storage_emulator.server import create_server

    emulator_port = free_ports(1)[0]
    emulator = create_server("127.0.0.1", emulator_port, in_memory=True, default_bucket=bucket)
    emulator.start()
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    handler = type("Handler", (_ProxyHandler,), {"upstream_port": emulator_port, "tls": tls})
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    proxy = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    connection = http.client.HTTPConnection("127.0.0.1", emulator_port, timeout=10)
    connection.request("GET", f"/storage/v1/b/{bucket}")
    if connection.getresponse().status != 200:
        raise RuntimeError(f"the emulator has no bucket {bucket}")
    connection.close()
    partial = ready_file.with_suffix(".tmp")
    partial.write_text(json.dumps({"emulator": emulator_port,
                                   "proxy": proxy.server_address[1]}))
    partial.replace(ready_file)
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    shutil.rmtree(ready_file.parent, ignore_errors=True)  # the parent died without `stop()`
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    command = sub.add_parser("serve", help="serve the emulator and the TLS-terminating proxy")
    command.add_argument("--bucket", required=True)
    command.add_argument("--cert", required=True)
    command.add_argument("--key", required=True)
    command.add_argument("--ready-file", type=Path, required=True)
    command.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    serve(args.bucket, args.cert, args.key, args.ready_file, args.parent_pid)


if __name__ == "__main__":
    main()
