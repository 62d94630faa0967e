"""farmd.supervisor.shelf's bundles on a store that keeps them (PostgreSQL's, faked
here): a digest missing from the state dir is fetched from the store once however many
workers ask at once, checked against its digest, cached atomically and served in
chunks; a damaged or missing row is one line to the worker; without such a store (SQLite)
the files are all there is. The core is a stand-in that knows which digests the farm
holds: the shelf asks it nothing else here.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from farmd.errors import UserError
from farmd.protocol_releases import MAX_CHUNK_BYTES
from farmd.supervisor.shelf import ReleaseShelf


class FakeBundles:
    """A store that keeps bundles: counts the reads; `gate`, while not set, holds them
    (in their worker thread, as the real store's would block)."""

    def __init__(self) -> None:
        self.rows: dict[str, bytes] = {}
        self.reads = 0
        self.gate = threading.Event()
        self.gate.set()

    def keep_bundle(self, digest: str, data: bytes) -> None:
        self.rows[digest] = data

    def read_bundle(self, digest: str) -> bytes | None:
        self.reads += 1
        assert self.gate.wait(10), "the test never opened the gate"
        return self.rows.get(digest)

    def drop_bundle(self, digest: str) -> None:
        self.rows.pop(digest, None)

    def bundle_digests(self) -> list[str]:
        return sorted(self.rows)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def shelf_knowing(state: Path, *digests: str) -> ReleaseShelf:
    known = [SimpleNamespace(digest=d) for d in digests]
    core: Any = SimpleNamespace(
        rollout=SimpleNamespace(deployments=SimpleNamespace(releases=lambda: known))
    )
    return ReleaseShelf(state, core)


async def test_a_missing_bundle_is_fetched_from_the_store_once_and_served_in_chunks(
    tmp_path: Path,
) -> None:
    data = bytes(range(256)) * (MAX_CHUNK_BYTES // 256 + 100)  # past one chunk
    digest = digest_of(data)
    shelf = shelf_knowing(tmp_path, digest)
    bundles = FakeBundles()
    bundles.rows[digest] = data
    bundles.gate.clear()
    shelf.bundles = bundles
    async with trio.open_nursery() as nursery:
        shelf.start(nursery)
        got: list[tuple[bytes, int]] = []

        async def reader(offset: int) -> None:
            got.append(await shelf.read(digest, offset, MAX_CHUNK_BYTES))

        nursery.start_soon(reader, 0)
        nursery.start_soon(reader, MAX_CHUNK_BYTES)
        await trio.testing.wait_all_tasks_blocked()  # both wait: one fetch, one waiter
        bundles.gate.set()
    assert bundles.reads == 1
    assert set(got) == {(data[:MAX_CHUNK_BYTES], len(data)), (data[MAX_CHUNK_BYTES:], len(data))}
    cached = shelf.path(digest)
    assert cached.read_bytes() == data
    assert cached.stat().st_mode & 0o777 == 0o600
    assert list(shelf.uploads.iterdir()) == []
    # from now on, the cache serves it: the store is not asked again
    assert await shelf.read(digest, 5, 10) == (data[5:15], len(data))
    assert bundles.reads == 1


async def test_a_damaged_or_missing_row_is_one_line_and_caches_nothing(tmp_path: Path) -> None:
    damaged, missing = digest_of(b"what it should be"), digest_of(b"nowhere")
    shelf = shelf_knowing(tmp_path, damaged, missing)
    bundles = FakeBundles()
    bundles.rows[damaged] = b"something else"
    shelf.bundles = bundles
    async with trio.open_nursery() as nursery:
        shelf.start(nursery)
        with pytest.raises(UserError, match=f"the bundle {damaged} in the store is damaged"):
            await shelf.read(damaged, 0, 100)
        with pytest.raises(UserError, match="in neither this supervisor's state dir nor"):
            await shelf.read(missing, 0, 100)
        with pytest.raises(UserError, match="no release the farm holds has the digest"):
            await shelf.read(digest_of(b"unknown"), 0, 100)
    assert not shelf.path(damaged).exists()
    assert not shelf.path(missing).exists()
    assert list(shelf.uploads.iterdir()) == []


async def test_without_a_bundle_store_the_files_are_all_there_is(tmp_path: Path) -> None:
    digest = digest_of(b"gone")
    shelf = shelf_knowing(tmp_path, digest)
    async with trio.open_nursery() as nursery:
        shelf.start(nursery)
        with pytest.raises(UserError, match="cannot read the bundle"):
            await shelf.read(digest, 0, 100)
        shelf.path(digest).write_bytes(b"gone")
        assert await shelf.read(digest, 0, 100) == (b"gone", 4)


async def test_a_dropped_bundle_loses_its_file_and_its_row(tmp_path: Path) -> None:
    digest = digest_of(b"old")
    shelf = shelf_knowing(tmp_path)  # the farm no longer holds it
    bundles = FakeBundles()
    bundles.rows[digest] = b"old"
    shelf.bundles = bundles
    async with trio.open_nursery() as nursery:
        shelf.start(nursery)
        shelf.path(digest).write_bytes(b"old")
        shelf.drop(digest)
    assert not shelf.path(digest).exists()
    assert bundles.rows == {}


async def test_bundles_only_the_disk_has_are_put_in_the_store_once_active(
    tmp_path: Path,
) -> None:
    # uploaded before the store kept bundles: on this supervisor's disk only
    old, kept, damaged = b"old bundle", b"kept bundle", b"damaged bundle"
    shelf = shelf_knowing(tmp_path, digest_of(old), digest_of(kept), digest_of(damaged))
    shelf.folder.mkdir()
    for data in (old, kept):
        shelf.path(digest_of(data)).write_bytes(data)
    shelf.path(digest_of(damaged)).write_bytes(b"not what its name says")
    bundles = FakeBundles()
    bundles.rows[digest_of(kept)] = kept
    shelf.bundles = bundles
    async with trio.open_nursery() as nursery:
        shelf.start(nursery)
    assert bundles.rows == {digest_of(old): old, digest_of(kept): kept}
