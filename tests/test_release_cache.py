"""farmd.releases.cache: a worker's releases fetched in chunks from a fake supervisor
(serving a real `bundle.pack`), checked, unpacked, shared between concurrent callers,
refused in one line without leaving anything behind, and pruned."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import trio
import trio.testing

from farmd.errors import ConnectionLostError, ReleaseError, ReleaseFetchError
from farmd.releases import Limits, digest, pack
from farmd.releases.cache import ReleaseCache, ReleaseRef


def make_release(root: Path, name: str = "tool", version: str = "1.0") -> Path:
    root.mkdir(parents=True)
    manifest = f"name: {name}\nversion: '{version}'\njob_types:\n  {name}-run:\n"
    manifest += "    command: ['{release}/run.sh', '{frame}']\n"
    (root / "farmd-release.yaml").write_text(manifest)
    (root / "run.sh").write_text("#!/bin/sh\necho frame $1\n")
    (root / "run.sh").chmod(0o755)
    (root / "lib").mkdir()
    # Incompressible-ish content, so the bundle spans several small chunks.
    (root / "lib" / "data.bin").write_bytes(os.urandom(5000))
    return root


class FakeSupervisor:
    """Serves bundles by digest, as the agent's fetch would ask the supervisor; records
    every request. `break_at` makes a fetch at or past that offset raise, `short` caps
    what it ever sends, `oversend` adds bytes to every answer, and `gate`, while not
    set, holds every fetch."""

    def __init__(self) -> None:
        self.bundles: dict[str, bytes] = {}
        self.requests: list[tuple[str, int, int]] = []
        self.break_at: int | None = None
        self.short: int | None = None
        self.oversend = 0
        self.gate: trio.Event | None = None  # when set, fetches wait for it

    def add(self, directory: Path, name: str = "tool", version: str = "1.0") -> ReleaseRef:
        data = pack(directory)
        self.bundles[digest(data)] = data
        return ReleaseRef(name=name, version=version, digest=digest(data), size=len(data))

    async def fetch(self, release_digest: str, offset: int, length: int) -> bytes:
        self.requests.append((release_digest, offset, length))
        if self.gate is not None:
            await self.gate.wait()
        await trio.lowlevel.checkpoint()
        if self.break_at is not None and offset >= self.break_at:
            msg = "the supervisor closed the connection"
            raise ConnectionLostError(msg)
        data = self.bundles[release_digest]
        if self.short is not None:
            data = data[: self.short]
        return data[offset : offset + length + self.oversend]

    def downloads(self, release_digest: str) -> int:
        return sum(1 for d, offset, _ in self.requests if d == release_digest and offset == 0)


@pytest.fixture
def farm() -> FakeSupervisor:
    return FakeSupervisor()


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


async def test_ensure_downloads_in_chunks_and_unpacks(tmp_path: Path, farm: FakeSupervisor) -> None:
    ref = farm.add(make_release(tmp_path / "src"))
    cache = ReleaseCache(tmp_path / "cache", farm.fetch, chunk=1000)
    assert cache.path(ref.digest) is None

    path = await cache.ensure(ref)

    assert path == tmp_path / "cache" / ref.digest.removeprefix("sha256:")
    assert cache.path(ref.digest) == path
    assert (path / "run.sh").read_text() == "#!/bin/sh\necho frame $1\n"
    assert os.access(path / "run.sh", os.X_OK)
    assert (path / "lib" / "data.bin").read_bytes() == (tmp_path / "src/lib/data.bin").read_bytes()
    offsets = [(offset, length) for _, offset, length in farm.requests]
    assert offsets == [(o, min(1000, ref.size - o)) for o in range(0, ref.size, 1000)]
    assert len(offsets) > 2
    assert cache.cached() == [ref.digest]

    # Present: nothing is asked again.
    assert await cache.ensure(ref) == path
    assert farm.downloads(ref.digest) == 1


async def test_root_is_private(tmp_path: Path, farm: FakeSupervisor) -> None:
    (tmp_path / "cache").mkdir(mode=0o755)
    (tmp_path / "cache").chmod(0o755)
    ReleaseCache(tmp_path / "cache", farm.fetch)
    assert stat.S_IMODE((tmp_path / "cache").stat().st_mode) == 0o700
    ReleaseCache(tmp_path / "fresh" / "cache", farm.fetch)
    assert stat.S_IMODE((tmp_path / "fresh" / "cache").stat().st_mode) == 0o700


async def test_short_pieces_are_asked_for_again(tmp_path: Path, farm: FakeSupervisor) -> None:
    ref = farm.add(make_release(tmp_path / "src"))
    served = farm.fetch

    async def stingy(release_digest: str, offset: int, length: int) -> bytes:
        return (await served(release_digest, offset, length))[:700]

    cache = ReleaseCache(tmp_path / "cache", stingy, chunk=1000)
    path = await cache.ensure(ref)
    assert (path / "farmd-release.yaml").is_file()
    assert [offset for _, offset, _ in farm.requests] == list(range(0, ref.size, 700))


async def test_digest_mismatch_names_both_digests(tmp_path: Path, farm: FakeSupervisor) -> None:
    ref = farm.add(make_release(tmp_path / "src"))
    other = farm.add(make_release(tmp_path / "other", version="2.0"), version="2.0")
    # The supervisor serves version 2.0's bytes under 1.0's digest, cut to 1.0's size.
    farm.bundles[ref.digest] = farm.bundles[other.digest][: ref.size].ljust(ref.size, b"x")
    got = digest(farm.bundles[ref.digest])
    cache = ReleaseCache(tmp_path / "cache", farm.fetch)

    with pytest.raises(ReleaseFetchError) as info:
        await cache.ensure(ref)

    assert str(info.value) == (
        f"release tool 1.0 ({ref.digest}): digest mismatch: expected {ref.digest}, got {got}"
    )
    assert info.value.code == "release_fetch"
    assert leftovers(tmp_path / "cache") == []


async def test_short_download_is_refused(tmp_path: Path, farm: FakeSupervisor) -> None:
    ref = farm.add(make_release(tmp_path / "src"))
    farm.short = 1500
    cache = ReleaseCache(tmp_path / "cache", farm.fetch, chunk=1000)

    with pytest.raises(ReleaseFetchError) as info:
        await cache.ensure(ref)

    message = str(info.value)
    assert message.startswith("release tool 1.0 (sha256:")
    assert f"the supervisor sent 1500 of its {ref.size} bytes, then no more" in message
    assert leftovers(tmp_path / "cache") == []

    # A later ensure tries again, and succeeds once the supervisor has it all.
    farm.short = None
    assert (await cache.ensure(ref)).is_dir()


async def test_more_than_asked_is_refused(tmp_path: Path, farm: FakeSupervisor) -> None:
    ref = farm.add(make_release(tmp_path / "src"))
    farm.oversend = 1
    cache = ReleaseCache(tmp_path / "cache", farm.fetch, chunk=1000)
    with pytest.raises(ReleaseFetchError, match="asked for 1000 bytes at 0, the supervisor sent"):
        await cache.ensure(ref)
    assert leftovers(tmp_path / "cache") == []


async def test_a_failing_fetch_is_one_error(tmp_path: Path, farm: FakeSupervisor) -> None:
    ref = farm.add(make_release(tmp_path / "src"))
    farm.break_at = 2000
    cache = ReleaseCache(tmp_path / "cache", farm.fetch, chunk=1000)

    with pytest.raises(ReleaseFetchError) as info:
        await cache.ensure(ref)

    assert str(info.value) == (
        f"release tool 1.0 ({ref.digest}): fetching bytes 2000+1000 failed: "
        "the supervisor closed the connection"
    )
    assert isinstance(info.value.__cause__, ConnectionLostError)
    assert leftovers(tmp_path / "cache") == []


async def test_an_os_error_from_fetch_is_one_error(tmp_path: Path, farm: FakeSupervisor) -> None:
    ref = farm.add(make_release(tmp_path / "src"))

    async def broken(release_digest: str, offset: int, length: int) -> bytes:
        raise ConnectionResetError("connection reset by peer")

    cache = ReleaseCache(tmp_path / "cache", broken)
    expected = r"tool 1\.0 .*: fetching bytes 0\+.* reset by peer"
    with pytest.raises(ReleaseFetchError, match=expected):
        await cache.ensure(ref)


async def test_oversized_ref_is_refused_before_fetching(
    tmp_path: Path, farm: FakeSupervisor
) -> None:
    ref = farm.add(make_release(tmp_path / "src"))
    cache = ReleaseCache(tmp_path / "cache", farm.fetch, limits=Limits(compressed_bytes=100))
    with pytest.raises(ReleaseFetchError, match=f"its bundle is {ref.size} bytes, over the 100"):
        await cache.ensure(ref)
    assert farm.requests == []


async def test_a_hostile_bundle_is_refused(tmp_path: Path, farm: FakeSupervisor) -> None:
    data = b"this is not a gzip stream at all"
    ref = ReleaseRef(name="tool", version="1.0", digest=digest(data), size=len(data))
    farm.bundles[ref.digest] = data
    cache = ReleaseCache(tmp_path / "cache", farm.fetch)
    expected = r"tool 1\.0 .*: the bundle is refused: .*not a gzip"
    with pytest.raises(ReleaseFetchError, match=expected):
        await cache.ensure(ref)
    assert leftovers(tmp_path / "cache") == []


async def test_a_bundle_of_another_release_is_refused(tmp_path: Path, farm: FakeSupervisor) -> None:
    real = farm.add(make_release(tmp_path / "src"))
    ref = ReleaseRef(name="tool", version="9.9", digest=real.digest, size=real.size)
    cache = ReleaseCache(tmp_path / "cache", farm.fetch)
    expected = r"the bundle holds release tool 1\.0, not tool 9\.9"
    with pytest.raises(ReleaseFetchError, match=expected):
        await cache.ensure(ref)
    assert leftovers(tmp_path / "cache") == []


async def test_concurrent_ensures_share_one_download(tmp_path: Path, farm: FakeSupervisor) -> None:
    ref = farm.add(make_release(tmp_path / "src"))
    cache = ReleaseCache(tmp_path / "cache", farm.fetch, chunk=1000)
    farm.gate = trio.Event()
    paths: list[Path] = []

    async def one() -> None:
        paths.append(await cache.ensure(ref))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()
        assert len(farm.requests) == 1  # one asks; four wait for it
        farm.gate.set()

    assert paths == [paths[0]] * 5
    assert farm.downloads(ref.digest) == 1


async def test_sync_reports_ready_and_failed(tmp_path: Path, farm: FakeSupervisor) -> None:
    good = farm.add(make_release(tmp_path / "good", name="good"), name="good")
    bad = ReleaseRef(name="bad", version="1.0", digest="sha256:" + "0" * 64, size=10)
    farm.bundles[bad.digest] = b"0123456789"
    cache = ReleaseCache(tmp_path / "cache", farm.fetch)

    ready, failed = await cache.sync([good, bad])

    assert ready == [good]
    assert [(ref, why.split(": ", 1)[1]) for ref, why in failed] == [
        (bad, f"digest mismatch: expected {bad.digest}, got {digest(b'0123456789')}")
    ]
    assert failed[0][1].startswith("release bad 1.0 (")
    assert cache.cached() == [good.digest]


async def test_prune_keeps_only_what_is_listed(tmp_path: Path, farm: FakeSupervisor) -> None:
    one = farm.add(make_release(tmp_path / "one", version="1.0"))
    two = farm.add(make_release(tmp_path / "two", version="2.0"), version="2.0")
    cache = ReleaseCache(tmp_path / "cache", farm.fetch)
    await cache.sync([one, two])
    (tmp_path / "cache" / "not-a-release").mkdir()  # not the cache's: left alone

    assert cache.prune({two.digest}) == [one.digest]

    assert cache.path(one.digest) is None
    assert cache.path(two.digest) is not None
    assert leftovers(tmp_path / "cache") == sorted(["not-a-release", two.digest[7:]])
    assert cache.prune({two.digest}) == []
    # A pruned release comes back when listed again.
    assert (await cache.ensure(one)).is_dir()
    assert farm.downloads(one.digest) == 2


async def test_prune_spares_a_release_being_ensured(tmp_path: Path, farm: FakeSupervisor) -> None:
    ref = farm.add(make_release(tmp_path / "src"))
    cache = ReleaseCache(tmp_path / "cache", farm.fetch)
    farm.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cache.ensure, ref)
        await trio.testing.wait_all_tasks_blocked()
        assert cache.prune(set()) == []
        farm.gate.set()
    assert cache.prune(set()) == [ref.digest]
    assert leftovers(tmp_path / "cache") == []


async def test_crash_leftovers_are_removed_at_start(tmp_path: Path, farm: FakeSupervisor) -> None:
    ref = farm.add(make_release(tmp_path / "src"))
    root = tmp_path / "cache"
    cache = ReleaseCache(root, farm.fetch)
    await cache.ensure(ref)
    # What a crash mid-unpack and one mid-prune leave behind.
    partial = root / f".{'a' * 64}.partial-x1y2z3"
    (partial / "lib").mkdir(parents=True)
    (partial / "lib" / "half.bin").write_bytes(b"half")
    (root / f".{'b' * 64}.partial-pruned-0123abcd").mkdir()

    again = ReleaseCache(root, farm.fetch)

    assert leftovers(root) == [ref.digest.removeprefix("sha256:")]
    assert again.path(ref.digest) is not None
    assert again.path("sha256:" + "a" * 64) is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"digest": "sha256:../../etc"}, "digest 'sha256:../../etc' must be"),
        ({"digest": "md5:" + "0" * 32}, "must be 'sha256:' and 64 lowercase hex digits"),
        ({"digest": "sha256:" + "A" * 64}, "64 lowercase hex digits"),
        ({"size": -1}, "size -1 must be a whole number of bytes"),
        ({"size": True}, "size True must be a whole number"),
        ({"name": "../x"}, "bad release reference: name '../x'"),
        ({"version": "1 0"}, "bad release reference: version '1 0'"),
    ],
)
def test_bad_refs_are_refused(fields: dict[str, object], message: str) -> None:
    good: dict[str, object] = {
        "name": "tool",
        "version": "1.0",
        "digest": "sha256:" + "0" * 64,
        "size": 10,
    }
    with pytest.raises(ReleaseError, match="bad release reference") as info:
        ReleaseRef(**{**good, **fields})  # type: ignore[arg-type]
    assert message in str(info.value)


def test_path_refuses_a_bad_digest(tmp_path: Path, farm: FakeSupervisor) -> None:
    cache = ReleaseCache(tmp_path / "cache", farm.fetch)
    with pytest.raises(ReleaseError, match=r"bad release digest '\.\./x'"):
        cache.path("../x")
