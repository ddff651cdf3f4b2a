"""Named pretrained checkpoints: where they live, where they are cached, how they are fetched.

Standard library only. Downloads resume an interrupted `.part` file with an HTTP Range
request, verify a sha256 when one is known, and fail within seconds (never minutes) as a
`VitcliError` when there is no network, so an offline user learns at once to pass a local file.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import http.client
import os
import re
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from vitcli.errors import VitcliError
from vitcli.files import home_dir, move_into_place
from vitcli.storage import location

Progress = Callable[[int, int | None], None]

BASE_URL = "https://storage.googleapis.com/vit_models/"
LICENCE = "Apache-2.0"  # the google-research/vision_transformer repository publishes them under it
CHUNK_BYTES = 1 << 20
DNS_DEADLINE_SECONDS = 4.0
LOCAL_FILE_HINT = "download it elsewhere and pass its path, e.g. --weights path/to/file.npz"


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """One published checkpoint file: its vitcli variant, URL and what it was trained on."""

    name: str
    variant: str
    url: str
    image_size: int
    num_classes: int
    dataset: str
    licence: str
    sha256: str | None = None
    size_mib: int | None = None


I21K = "ImageNet-21k"
I21K_I1K = "ImageNet-21k, fine-tuned on ImageNet-1k"

# (vitcli name, variant, upstream file stem) in gs://vit_models/imagenet21k/
_ORIGINAL_I21K = [
    ("vit-b8-i21k", "vit-b8", "ViT-B_8"),
    ("vit-b16-i21k", "vit-b16", "ViT-B_16"),
    ("vit-b32-i21k", "vit-b32", "ViT-B_32"),
    ("vit-l16-i21k", "vit-l16", "ViT-L_16"),
    ("vit-l32-i21k", "vit-l32", "ViT-L_32"),
    ("vit-h14-i21k", "vit-h14", "ViT-H_14"),
    ("r50-vit-b16-i21k", "r50-vit-b16", "R50+ViT-B_16"),
    ("r26-vit-b32-i21k", "r26-vit-b32", "R26+ViT-B_32"),
    ("r50-vit-l32-i21k", "r50-vit-l32", "R50+ViT-L_32"),
]

# (vitcli name, variant, upstream file stem, image size) in gs://vit_models/imagenet21k+imagenet2012/
_ORIGINAL_I1K = [
    ("vit-b8-i1k", "vit-b8", "ViT-B_8", 384),
    ("vit-b16-i1k", "vit-b16", "ViT-B_16", 384),
    ("vit-b32-i1k", "vit-b32", "ViT-B_32", 384),
    ("vit-l16-i1k", "vit-l16", "ViT-L_16", 384),
    ("vit-l32-i1k", "vit-l32", "ViT-L_32", 384),
    ("r50-vit-b16-i1k", "r50-vit-b16", "R50+ViT-B_16", 384),
    ("vit-b16-i1k-224", "vit-b16", "ViT-B_16-224", 224),
    ("vit-l16-i1k-224", "vit-l16", "ViT-L_16-224", 224),
]

# (variant, upstream ImageNet-21k stem, fine-tuning learning rate, MiB) of the recommended
# AugReg checkpoints (docs/reference.md §9); vitcli names are `<variant>-augreg[-i1k]`.
_AUGREG = [
    ("vit-ti16", "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0", "0.03", 37),
    ("vit-s16", "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0", "0.03", 115),
    ("vit-s32", "S_32-i21k-300ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0", "0.01", 118),
    ("vit-b16", "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0", "0.03", 391),
    ("vit-b32", "B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0", "0.01", 398),
    ("vit-l16", "L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0", "0.01", 1243),
    ("r-vit-ti16", "R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0", "0.03", 40),
    ("r26-vit-s32", "R26_S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0", "0.01", 170),
    ("r50-vit-l32", "R50_L_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1", "0.01", 1337),
]


def _entry(name: str, variant: str, path: str, image_size: int, size_mib=None) -> Pretrained:
    """One table row; a 384 px or `-i1k` file is the ImageNet-1k fine-tuned one."""
    fine_tuned = image_size == 384 or "-i1k" in name
    return Pretrained(
        name=name,
        variant=variant,
        url=BASE_URL + path,
        image_size=image_size,
        num_classes=1000 if fine_tuned else 21843,
        dataset=I21K_I1K if fine_tuned else I21K,
        licence=LICENCE,
        size_mib=size_mib,
    )


def _build_table() -> dict[str, Pretrained]:
    """Expand the compact rows above into one Pretrained entry per published file."""
    rows = [_entry(n, v, f"imagenet21k/{stem}.npz", 224) for n, v, stem in _ORIGINAL_I21K]
    rows += [
        _entry(n, v, f"imagenet21k+imagenet2012/{stem}.npz", size)
        for n, v, stem, size in _ORIGINAL_I1K
    ]
    for variant, stem, learning_rate, size_mib in _AUGREG:
        rows.append(_entry(f"{variant}-augreg", variant, f"augreg/{stem}.npz", 224, size_mib))
        # The fine-tuned file's size is not published (its head and position embedding differ).
        suffix = f"--imagenet2012-steps_20k-lr_{learning_rate}-res_384"
        rows.append(_entry(f"{variant}-augreg-i1k", variant, f"augreg/{stem}{suffix}.npz", 384))
    return {row.name: row for row in rows}


PRETRAINED: dict[str, Pretrained] = _build_table()

# What `finetune --model VARIANT` starts from without --weights: the AugReg ImageNet-21k
# file where one is published (better regularised, the upstream recommendation), else the
# original ImageNet-21k one; variants without a published file have no entry.
RECOMMENDED: dict[str, str] = {
    **{variant: f"{variant}-i21k" for _, variant, _ in _ORIGINAL_I21K},
    **{variant: f"{variant}-augreg" for variant, *_ in _AUGREG},
}


def recommended_checkpoint(variant: str) -> Pretrained | None:
    """The published checkpoint fine-tuning starts from by default, or None."""
    name = RECOMMENDED.get(variant.lower())
    return PRETRAINED[name] if name else None


def cache_path(name: str) -> Path:
    """Where the named checkpoint is (or will be) cached."""
    return home_dir() / "weights" / f"{name}.npz"


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _offline_error(url: str, reason: object) -> VitcliError:
    return VitcliError(f"could not download {url}: {reason}", hint=LOCAL_FILE_HINT)


def _cannot_fetch(error: VitcliError, dest: Path) -> VitcliError:
    """One line with everything an offline user needs: the URL, why, and where the file
    goes (or how to pass a local one instead)."""
    return VitcliError(f"{error.message}; put the file at {dest} or pass --weights FILE")


def _connect_host(url: str) -> str | None:
    """The host a request for `url` actually connects to: its proxy's, when one applies."""
    parsed = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(parsed.hostname or ""):
        return urllib.parse.urlsplit(proxy if "//" in proxy else f"//{proxy}").hostname
    return parsed.hostname


def _check_resolves(url: str, timeout: float) -> None:
    """Look the host up in a thread with a deadline: `timeout` does not cover DNS, which can
    hang for minutes on a machine whose resolver is unreachable."""
    host = _connect_host(url)
    if not host:
        raise _offline_error(url, "the URL has no host")
    failure: list[OSError] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, None)
        except OSError as error:
            failure.append(error)

    # A daemon thread, so a hung lookup never keeps the interpreter from exiting.
    thread = threading.Thread(target=lookup, name="vitcli-dns", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise _offline_error(url, f"DNS lookup of {host} timed out after {timeout:g} s")
    if failure:
        raise _offline_error(url, f"cannot resolve {host} ({failure[0]})")


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    """Open `url`, asking for the bytes from `offset` on when resuming."""
    headers = {"User-Agent": "vitcli"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            raise  # the caller restarts from zero
        raise _offline_error(url, f"HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise _offline_error(url, error.reason) from None
    except (OSError, http.client.HTTPException) as error:
        raise _offline_error(url, str(error) or type(error).__name__) from None


_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


def _resume_point(response: http.client.HTTPResponse, offset: int) -> tuple[int, int | None] | None:
    """(bytes of the .part to keep, total size or None) for this response; None when the
    server answered with a range other than the one asked for."""
    if response.status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != offset:
            return None
        total = match.group(2)
        return offset, None if total == "*" else int(total)
    # A 200 means the server ignored Range: the body is the whole file, rewritten from zero.
    length = response.headers.get("Content-Length")
    return 0, int(length) if length else None


def _open_resumable(url: str, part: Path, timeout: float):
    """(response, bytes of `part` to keep, total or None), resuming `part` where possible."""
    offset = part.stat().st_size if part.exists() else 0
    if offset:
        try:
            response = _open(url, offset, timeout)
        except urllib.error.HTTPError:
            response = None  # 416: the .part is no prefix of the server's file
        resumed = _resume_point(response, offset) if response is not None else None
        if resumed is not None:
            return response, *resumed
        if response is not None:
            response.close()
        part.unlink(missing_ok=True)
    response = _open(url, 0, timeout)
    resumed = _resume_point(response, 0)
    if resumed is None:
        response.close()
        raise _offline_error(url, "the server answered a whole-file request with a part")
    return response, *resumed


def _stream(response, part: Path, kept: int, total: int | None, url: str, progress) -> None:
    """Append the response body to `part` (after its first `kept` bytes), reporting progress."""
    done = kept
    with open(part, "r+b" if kept else "wb") as file:
        file.truncate(kept)
        file.seek(kept)
        if progress:
            progress(done, total)
        try:
            while chunk := response.read(CHUNK_BYTES):
                file.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        except (OSError, http.client.HTTPException) as error:
            raise _interrupted(url, done, total, error) from None
    if total is not None and done != total:
        raise _interrupted(url, done, total, "connection closed early")


def _interrupted(url: str, done: int, total: int | None, reason: object) -> VitcliError:
    of_total = f" of {total}" if total is not None else ""
    return VitcliError(
        f"download of {url} stopped at {done}{of_total} bytes: {str(reason) or 'interrupted'}",
        hint=f"run again to resume, or {LOCAL_FILE_HINT}",
    )


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in chunks so multi-GiB checkpoints fit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(part: Path, url: str, sha256: str) -> None:
    actual = file_sha256(part)
    if actual != sha256.lower():
        part.unlink(missing_ok=True)
        raise VitcliError(
            f"sha256 mismatch for {url}: expected {sha256.lower()}, got {actual}",
            hint="the file was removed; run again to download it afresh, or " + LOCAL_FILE_HINT,
        )


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    progress: Progress | None = None,
    timeout: float = 10.0,
) -> Path:
    """Download `url` to `dest` through `dest.part`, resuming a previous partial download.

    `progress(bytes_done, total_or_None)` is called as bytes arrive; `dest` only ever appears
    complete (and verified, when `sha256` is given), via an atomic rename.
    """
    dest = Path(dest)
    part = _part_path(dest)
    try:
        # A short DNS deadline: an offline machine should know within seconds.
        _check_resolves(url, min(timeout, DNS_DEADLINE_SECONDS))
        dest.parent.mkdir(parents=True, exist_ok=True)
        response, kept, total = _open_resumable(url, part, timeout)
    except VitcliError as error:
        raise _cannot_fetch(error, dest) from None
    with response:
        _stream(response, part, kept, total, url, progress)
    if sha256:
        _verify(part, url, sha256)
    move_into_place(part, dest)  # flushed to the disk, then renamed
    return dest


def _unknown_name(name: str) -> VitcliError:
    close = difflib.get_close_matches(name, PRETRAINED, n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "`vitcli weights` lists them"
    return VitcliError(f"unknown pretrained checkpoint '{name}'", hint=hint)


def fetch(name: str, *, progress: Progress | None = None) -> Path:
    """The cached file of a named checkpoint, downloaded (and verified) on first use."""
    entry = PRETRAINED.get(name) or PRETRAINED.get(name.lower())
    if entry is None:
        raise _unknown_name(name)
    dest = cache_path(entry.name)
    if dest.is_file():
        return dest
    return download(entry.url, dest, sha256=entry.sha256, progress=progress)


def _url_cache_path(url: str) -> Path:
    """Cache path of an arbitrary URL: its file name, in a folder keyed by the whole URL so that
    `.../imagenet21k/ViT-B_16.npz` and `.../imagenet21k+imagenet2012/ViT-B_16.npz` differ."""
    file_name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    if not file_name or file_name in (".", ".."):
        raise VitcliError(f"cannot tell a file name from the URL {url}", hint=LOCAL_FILE_HINT)
    key = hashlib.sha256(url.encode()).hexdigest()[:12]
    return home_dir() / "weights" / "urls" / key / file_name


def resolve_weights(spec: str, *, progress: Progress | None = None) -> Path:
    """A local checkpoint path for `spec`: an existing path, a PRETRAINED name or an http(s) URL."""
    path = location(spec)
    if path.exists():
        return path
    if spec in PRETRAINED or spec.lower() in PRETRAINED:
        return fetch(spec, progress=progress)
    if spec.startswith(("http://", "https://")):
        # A published URL shares the named entry's cache (and its sha256).
        for entry in PRETRAINED.values():
            if entry.url == spec:
                return fetch(entry.name, progress=progress)
        dest = _url_cache_path(spec)
        return dest if dest.is_file() else download(spec, dest, progress=progress)
    close = difflib.get_close_matches(spec, PRETRAINED, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "give a .npz path, a name or a URL"
    raise VitcliError(f"no such file or named checkpoint: '{spec}'", hint=hint)
