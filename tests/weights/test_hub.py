"""Tests of the checkpoint hub against a real HTTP server on 127.0.0.1 (no mocks of urllib)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vitcli.errors import VitcliError
from vitcli.models.registry import VARIANTS
from vitcli.weights import hub

PAYLOAD = bytes(range(256)) * 1000 + b"tail"  # 256,004 bytes: several reads, not one
VARIANT_NAME = re.compile(r"^(r\d*-)?vit-(ti|s|b|l|h)\d+$")


class FileServer:
    """A tiny HTTP server: bytes per path, Range support (unless ignored), truncation on demand."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.ignore_range: set[str] = set()
        self.truncate_at: dict[str, int] = {}  # path -> bytes sent before the connection drops
        self.ranges: list[str | None] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def _handler_class(self):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the name http.server dispatches to)
                owner.ranges.append(self.headers.get("Range"))
                body = owner.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = owner._range_start(self.path, self.headers.get("Range"))
                if start >= len(body):
                    self.send_error(416)
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                sent = body[start : owner.truncate_at.get(self.path, len(body))]
                self.wfile.write(sent)

            def log_message(self, *args):
                pass  # keep pytest output clean

        return Handler

    def _range_start(self, path: str, header: str | None) -> int:
        match = re.fullmatch(r"bytes=(\d+)-", header or "")
        return int(match.group(1)) if match and path not in self.ignore_range else 0


@pytest.fixture
def server():
    file_server = FileServer()
    file_server.thread.start()
    yield file_server
    file_server.server.shutdown()
    file_server.server.server_close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("VITCLI_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def closed_port_url() -> str:
    """A URL on a 127.0.0.1 port that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/ViT-B_16.npz"


def test_fresh_download_writes_exact_bytes_and_reports_progress(server, tmp_path):
    server.files["/a.npz"] = PAYLOAD
    calls = []
    dest = hub.download(
        server.url("/a.npz"), tmp_path / "a.npz", progress=lambda *c: calls.append(c)
    )
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "a.npz.part").exists()
    assert server.ranges == [None]
    assert calls[0] == (0, len(PAYLOAD)) and calls[-1] == (len(PAYLOAD), len(PAYLOAD))


def test_existing_part_is_resumed_with_range(server, tmp_path):
    server.files["/a.npz"] = PAYLOAD
    (tmp_path / "a.npz.part").write_bytes(PAYLOAD[:1000])
    calls = []
    dest = hub.download(
        server.url("/a.npz"), tmp_path / "a.npz", progress=lambda *c: calls.append(c)
    )
    assert dest.read_bytes() == PAYLOAD
    assert server.ranges == ["bytes=1000-"]
    assert calls[0] == (1000, len(PAYLOAD))


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.files["/a.npz"] = PAYLOAD
    server.ignore_range.add("/a.npz")
    (tmp_path / "a.npz.part").write_bytes(PAYLOAD[:1000])
    dest = hub.download(server.url("/a.npz"), tmp_path / "a.npz")
    assert server.ranges == ["bytes=1000-"]
    assert dest.read_bytes() == PAYLOAD


def test_stale_part_longer_than_file_restarts_from_zero(server, tmp_path):
    server.files["/a.npz"] = PAYLOAD
    (tmp_path / "a.npz.part").write_bytes(PAYLOAD + b"stale")
    dest = hub.download(server.url("/a.npz"), tmp_path / "a.npz")
    assert server.ranges == [f"bytes={len(PAYLOAD) + 5}-", None]
    assert dest.read_bytes() == PAYLOAD


def test_interrupted_transfer_keeps_part_then_resumes(server, tmp_path):
    server.files["/a.npz"] = PAYLOAD
    server.truncate_at["/a.npz"] = 5000
    dest = tmp_path / "a.npz"
    with pytest.raises(VitcliError, match="stopped at 5000 of 256004 bytes") as error:
        hub.download(server.url("/a.npz"), dest)
    assert "resume" in error.value.hint
    assert not dest.exists() and (tmp_path / "a.npz.part").stat().st_size == 5000
    del server.truncate_at["/a.npz"]
    assert hub.download(server.url("/a.npz"), dest).read_bytes() == PAYLOAD
    assert server.ranges == [None, "bytes=5000-"]


def test_sha256_match_passes(server, tmp_path):
    server.files["/a.npz"] = PAYLOAD
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    dest = hub.download(server.url("/a.npz"), tmp_path / "a.npz", sha256=digest)
    assert dest.read_bytes() == PAYLOAD


def test_sha256_mismatch_raises_and_leaves_nothing(server, tmp_path):
    server.files["/a.npz"] = PAYLOAD
    wrong = "0" * 64
    with pytest.raises(VitcliError) as error:
        hub.download(server.url("/a.npz"), tmp_path / "a.npz", sha256=wrong)
    assert wrong in error.value.message
    assert hashlib.sha256(PAYLOAD).hexdigest() in error.value.message
    assert not (tmp_path / "a.npz").exists() and not (tmp_path / "a.npz.part").exists()


def test_http_404_names_the_url(server, tmp_path):
    url = server.url("/missing.npz")
    with pytest.raises(VitcliError, match="404") as error:
        hub.download(url, tmp_path / "missing.npz")
    assert url in error.value.message
    assert not (tmp_path / "missing.npz").exists()


def test_closed_port_fails_fast_with_local_file_hint(tmp_path):
    url = closed_port_url()
    started = time.monotonic()
    with pytest.raises(VitcliError) as error:
        hub.download(url, tmp_path / "b.npz", timeout=2.0)
    assert time.monotonic() - started < 5
    # One line: the URL, why, where the file goes, and the local alternative.
    assert url in error.value.message and "\n" not in error.value.message
    assert f"put the file at {tmp_path / 'b.npz'}" in error.value.message
    assert "--weights FILE" in error.value.message


def test_unresolvable_host_fails_fast(tmp_path):
    # RFC 6761 reserves .invalid: no resolver may answer it, with or without a network.
    url = "https://vitcli-test.invalid/ViT-B_16.npz"
    started = time.monotonic()
    with pytest.raises(VitcliError, match=re.escape(url)):
        hub.download(url, tmp_path / "c.npz", timeout=2.0)
    assert time.monotonic() - started < 5


def test_fetch_unknown_name_suggests_close_names(home):
    with pytest.raises(VitcliError, match="vit-b16-i21kk") as error:
        hub.fetch("vit-b16-i21kk")
    assert "vit-b16-i21k" in error.value.hint


def test_fetch_downloads_into_cache_once(server, home, monkeypatch):
    server.files["/ViT-B_16.npz"] = PAYLOAD
    entry = dataclasses.replace(
        hub.PRETRAINED["vit-b16-i21k"],
        url=server.url("/ViT-B_16.npz"),
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
    )
    monkeypatch.setitem(hub.PRETRAINED, "vit-b16-i21k", entry)
    path = hub.fetch("vit-b16-i21k")
    assert path == home / "weights" / "vit-b16-i21k.npz"
    assert path.read_bytes() == PAYLOAD
    assert hub.fetch("vit-b16-i21k") == path
    assert server.ranges == [None]  # the second call used the cache


def test_resolve_weights_existing_path_is_returned_unchanged(tmp_path, home):
    local = tmp_path / "mine.npz"
    local.write_bytes(b"x")
    assert hub.resolve_weights(str(local)) == local


def test_resolve_weights_url_downloads_into_cache(server, home):
    server.files["/dir/other.npz"] = PAYLOAD
    path = hub.resolve_weights(server.url("/dir/other.npz"))
    assert path.name == "other.npz" and path.is_relative_to(home / "weights")
    assert path.read_bytes() == PAYLOAD


def test_resolve_weights_unknown_spec(home):
    with pytest.raises(VitcliError, match="no such file or named checkpoint"):
        hub.resolve_weights("does/not/exist.npz")


def test_home_dir_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("VITCLI_HOME", str(tmp_path))
    assert hub.home_dir() == tmp_path
    monkeypatch.delenv("VITCLI_HOME")
    assert hub.home_dir() == Path.home() / ".cache" / "vitcli"


def test_pretrained_table_is_well_formed():
    assert len(hub.PRETRAINED) == 9 + 8 + 18
    for name, entry in hub.PRETRAINED.items():
        assert entry.name == name
        assert entry.url.startswith(hub.BASE_URL) and entry.url.endswith(".npz")
        assert hub.BASE_URL == "https://storage.googleapis.com/vit_models/"
        assert VARIANT_NAME.match(entry.variant) and entry.variant in VARIANTS, entry.variant
        assert name.startswith(entry.variant + "-")
        assert entry.image_size in {224, 384}
        fine_tuned = "i1k" in name
        assert entry.num_classes == (1000 if fine_tuned else 21843)
        assert fine_tuned or entry.image_size == 224
        assert entry.licence == "Apache-2.0"


def test_pretrained_table_known_urls():
    base = hub.BASE_URL
    assert hub.PRETRAINED["r50-vit-b16-i21k"].url == f"{base}imagenet21k/R50+ViT-B_16.npz"
    assert hub.PRETRAINED["vit-l16-i1k-224"].url == (
        f"{base}imagenet21k+imagenet2012/ViT-L_16-224.npz"
    )
    assert "vit-h14-i1k" not in hub.PRETRAINED
    augreg = hub.PRETRAINED["vit-s32-augreg-i1k"]
    assert augreg.url == (
        f"{base}augreg/S_32-i21k-300ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0"
        "--imagenet2012-steps_20k-lr_0.01-res_384.npz"
    )
    assert (augreg.image_size, augreg.num_classes) == (384, 1000)
    assert hub.PRETRAINED["r50-vit-l32-augreg"].size_mib == 1337
