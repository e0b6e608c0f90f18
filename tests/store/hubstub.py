"""A local stand-in for the Hugging Face Hub, for the real huggingface_hub client.

It serves the endpoints huggingface_hub asks for (see notes §5.5): repo info with
siblings and LFS sha256 (``/api/models/{repo}[/revision/{rev}]``), the tree listing,
and ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with ETag, X-Repo-Commit,
Content-Length, X-Linked-Etag/-Size and Range. Real bytes, from memory or a file.

Faults are set per file path on a repo (``Fault``): a flipped byte with the true
headers, a connection dropped after N bytes (a number of times), a throttled body,
ignored Range headers, error statuses, and a hook run when a GET starts.
Runs its own event loop in a thread, so synchronous tests and benchmarks can use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

CHUNK = 1024 * 1024


@dataclass
class Fault:
    corrupt: bool = False  # flip one byte in the middle, keep the true sha256 in headers
    drop_after: int | None = None  # close the connection after this many body bytes ...
    drops: int = 1  # ... this many times
    rate: float | None = None  # bytes per second
    ignore_range: bool = False
    status: int | None = None  # answer GETs with this status ...
    statuses: int = 1_000_000  # ... this many times
    on_get: Callable[[], None] | None = None
    short_by: int = 0  # a whole response (Content-Length too) this many bytes short ...
    shorts: int = 1  # ... this many times
    trickle: float | None = None  # one byte, then this many seconds of silence, forever
    oversize: int = 0  # this many bytes past the listed size (Content-Length says so) ...
    chunked: bool = False  # ... or no Content-Length at all (chunked encoding)


@dataclass
class HubFile:
    path: str
    size: int
    sha256: str
    blob_id: str
    lfs: bool
    data: bytes | None = None
    source: Path | None = None

    def chunks(self, start: int) -> Iterator[bytes]:
        if self.data is not None:
            for offset in range(start, self.size, CHUNK):
                yield self.data[offset : offset + CHUNK]
            return
        assert self.source is not None
        with self.source.open("rb") as handle:
            handle.seek(start)
            while block := handle.read(CHUNK):
                yield block


@dataclass
class Repo:
    repo_id: str
    commit: str
    files: dict[str, HubFile] = field(default_factory=dict)
    extra_siblings: list[dict[str, Any]] = field(default_factory=list)  # hostile listings
    faults: dict[str, Fault] = field(default_factory=dict)
    token: str | None = None  # private repo: this bearer token is required
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit

    def add(self, path: str, content: bytes | Path, *, lfs: bool | None = None) -> HubFile:
        if isinstance(content, Path):
            size, sha256, blob = _hash_file(content)
            item = HubFile(path, size, sha256, blob, True if lfs is None else lfs, source=content)
        else:
            sha256 = hashlib.sha256(content).hexdigest()
            blob = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
            big = len(content) > 10 * 1024 or path.endswith((".gguf", ".rkllm"))
            item = HubFile(path, len(content), sha256, blob, big if lfs is None else lfs, content)
        self.files[path] = item
        return item

    def sibling(self, f: HubFile) -> dict[str, Any]:
        entry: dict[str, Any] = {"rfilename": f.path, "size": f.size, "blobId": f.blob_id}
        if f.lfs:
            entry["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": 134}
            entry["blobId"] = hashlib.sha1(f.sha256.encode()).hexdigest()  # the pointer's
        return entry


def _hash_file(path: Path) -> tuple[int, str, str]:
    sha256, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            sha256.update(block)
            size += len(block)
    return size, sha256.hexdigest(), "0" * 40


def new_commit() -> str:
    return secrets.token_hex(20)


class HubStub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Range
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_repo(self, repo_id: str, files: dict[str, bytes | Path] | None = None) -> Repo:
        repo = Repo(repo_id, new_commit())
        for path, content in (files or {}).items():
            repo.add(path, content)
        self.repos[repo_id] = repo
        return repo

    def gets(self, path_part: str = "/resolve/") -> list[tuple[str, str, str | None]]:
        return [r for r in list(self.requests) if r[0] == "GET" and path_part in r[1]]

    # --- lifecycle ---

    def start(self) -> HubStub:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application(middlewares=[_errors])
        app.router.add_get("/api/models/{owner}/{name}", self._info)
        app.router.add_get("/api/models/{owner}/{name}/revision/{rev}", self._info)
        app.router.add_get("/api/models/{owner}/{name}/tree/{rev}", self._tree)
        app.router.add_route("*", "/{owner}/{name}/resolve/{rev}/{path:.+}", self._resolve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # --- routes ---

    def _repo(self, request: web.Request) -> tuple[Repo, str]:
        repo_id = f"{request.match_info['owner']}/{request.match_info['name']}"
        self.requests.append((request.method, request.path, request.headers.get("Range")))
        repo = self.repos.get(repo_id)
        if repo is None:
            raise _error(404, "RepoNotFound", f"Repository {repo_id} not found")
        if repo.token and request.headers.get("Authorization") != f"Bearer {repo.token}":
            raise _error(401, "RepoNotFound", "Invalid credentials")
        rev = request.match_info.get("rev", "main")
        known = {"main": repo.commit, repo.commit: repo.commit, **repo.branches}
        known.update({c: c for c in repo.branches.values()})
        commit = known.get(rev)
        if commit is None:
            raise _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo, commit

    async def _info(self, request: web.Request) -> web.Response:
        repo, commit = self._repo(request)
        siblings = [repo.sibling(f) for f in repo.files.values()] + repo.extra_siblings
        body = {
            "_id": "x",
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "sha": commit,
            "private": repo.token is not None,
            "siblings": siblings,
            "tags": [],
        }
        return web.json_response(body)

    async def _tree(self, request: web.Request) -> web.Response:
        repo, _ = self._repo(request)
        items = []
        for f in repo.files.values():
            item: dict[str, Any] = {
                "type": "file",
                "oid": f.blob_id,
                "size": f.size,
                "path": f.path,
            }
            if f.lfs:
                item["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
            items.append(item)
        return web.json_response(items)

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        repo, commit = self._repo(request)
        f = repo.files.get(request.match_info["path"])
        if f is None:
            raise _error(404, "EntryNotFound", "Entry not found")
        fault = repo.faults.get(f.path, Fault())
        headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{f.sha256 if f.lfs else f.blob_id}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if f.lfs:
            headers.update({"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size)})
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(f.size)})
        if fault.on_get is not None:
            await asyncio.get_running_loop().run_in_executor(None, fault.on_get)
        if fault.status is not None and fault.statuses > 0:
            fault.statuses -= 1
            raise _error(fault.status, None, "injected failure")
        return await self._send(request, f, fault, headers)

    async def _send(
        self, request: web.Request, f: HubFile, fault: Fault, headers: dict[str, str]
    ) -> web.StreamResponse:
        start = _range_start(request.headers.get("Range"))
        if fault.ignore_range or start is None or start >= f.size:
            start, status = 0, 200
        else:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{f.size - 1}/{f.size}"
        end = f.size
        if fault.short_by and fault.shorts > 0:
            fault.shorts -= 1
            end -= fault.short_by
        if not fault.chunked:
            headers["Content-Length"] = str(max(end - start, 0) + fault.oversize)
        response = web.StreamResponse(status=status, headers=headers)
        if fault.chunked:
            response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):  # the client went away: fine
            if fault.trickle is not None:
                await self._trickle(response, f, start, fault.trickle)
            elif fault.oversize:
                await self._oversize(response, f, start, fault.oversize)
            elif end < f.size:
                await self._short_body(response, f, start, end)
            else:
                await self._body(request, response, f, fault, start)
        return response

    @staticmethod
    async def _trickle(response: web.StreamResponse, f: HubFile, start: int, pause: float) -> None:
        """A byte at a time with long pauses: the connection never times out."""
        for chunk in f.chunks(start):
            for i in range(len(chunk)):
                await response.write(chunk[i : i + 1])
                await asyncio.sleep(pause)

    @staticmethod
    async def _oversize(response: web.StreamResponse, f: HubFile, start: int, extra: int) -> None:
        """The file, then ``extra`` more bytes than its listing says."""
        for chunk in f.chunks(start):
            await response.write(chunk)
        for _ in range(0, extra, CHUNK):
            await response.write(b"\0" * min(CHUNK, extra))
        await response.write_eof()

    @staticmethod
    async def _short_body(response: web.StreamResponse, f: HubFile, start: int, end: int) -> None:
        """A well-formed response that simply ends before the file does."""
        position = start
        for chunk in f.chunks(start):
            if position >= end:
                break
            await response.write(chunk[: end - position])
            position += len(chunk)
        await response.write_eof()

    async def _body(
        self,
        request: web.Request,
        response: web.StreamResponse,
        f: HubFile,
        fault: Fault,
        start: int,
    ) -> None:
        drop = fault.drop_after if fault.drop_after is not None and fault.drops > 0 else None
        sent, position = 0, start
        for chunk in f.chunks(start):
            if fault.corrupt and position <= f.size // 2 < position + len(chunk):
                i = f.size // 2 - position
                chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
            if drop is not None and sent + len(chunk) > drop:
                await response.write(chunk[: max(drop - sent, 0)])
                fault.drops -= 1
                assert request.transport is not None
                request.transport.abort()  # the client sees a body cut short
                return
            await response.write(chunk)
            sent += len(chunk)
            position += len(chunk)
            if fault.rate:
                await asyncio.sleep(len(chunk) / fault.rate)
        await response.write_eof()


def _range_start(header: str | None) -> int | None:
    if not header or not header.startswith("bytes=") or not header.endswith("-"):
        return None
    value = header[len("bytes=") : -1]
    return int(value) if value.isdigit() else None


class _HubError(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _error(status: int, code: str | None, message: str) -> _HubError:
    headers = {"X-Error-Code": code} if code else {}
    headers["X-Error-Message"] = message
    return _HubError(web.json_response({"error": message}, status=status, headers=headers))


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except _HubError as exc:
        return exc.response


def main() -> None:
    """Serve files as one repo from a separate process (benchmarks): prints the URL."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("repo")
    parser.add_argument("files", nargs="+", metavar="PATH", help="served under their names")
    args = parser.parse_args()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # for sigwait
    stub = HubStub().start()
    stub.add_repo(args.repo, {Path(p).name: Path(p) for p in args.files})
    print(stub.url, flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    stub.stop()


if __name__ == "__main__":
    main()
