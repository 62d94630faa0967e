"""farmd.releases.bundle: deterministic packing, digests, and unpacking hostile archives
(each built here with tarfile) without leaving anything behind."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from farmd.errors import ReleaseError
from farmd.releases import (
    Limits,
    digest,
    inspect,
    pack,
    read_manifest_from,
    remove_partials,
    unpack,
)

EXAMPLES = Path(__file__).parent.parent / "examples" / "releases"
MANIFEST = b"name: tool\nversion: '1.0'\njob_types:\n  run:\n    command: ['{release}/run.sh']\n"


def make_release(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "farmd-release.yaml").write_bytes(MANIFEST)
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o700)
    (root / "bin" / "data.txt").write_text("data\n")
    (root / "bin" / "data.txt").chmod(0o600)
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.pyc").write_bytes(b"\0")
    return root


def tar_gz(*members: tuple[tarfile.TarInfo, bytes | None], manifest: bool = True) -> bytes:
    """A .tar.gz of these members, the manifest first unless `manifest` is False."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if manifest:
            info = tarfile.TarInfo("farmd-release.yaml")
            info.size = len(MANIFEST)
            tar.addfile(info, io.BytesIO(MANIFEST))
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return gzip.compress(raw.getvalue())


def member(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info


# --------------------------------------------------------------------------- pack


def test_pack_is_deterministic(tmp_path: Path) -> None:
    first = pack(make_release(tmp_path / "a"))
    second_root = make_release(tmp_path / "b")
    os.utime(second_root / "run.sh", (1, 1))
    assert pack(second_root) == first
    assert digest(first) == digest(pack(second_root))
    assert digest(first).startswith("sha256:")
    assert len(digest(first)) == len("sha256:") + 64
    with tarfile.open(fileobj=io.BytesIO(first), mode="r:gz") as tar:
        infos = tar.getmembers()
    names = [i.name for i in infos]
    assert names == sorted(names) == ["bin", "bin/data.txt", "farmd-release.yaml", "run.sh"]
    modes = {i.name: i.mode for i in infos}
    assert modes == {
        "bin": 0o755,
        "bin/data.txt": 0o644,
        "farmd-release.yaml": 0o644,
        "run.sh": 0o755,
    }
    assert {(i.mtime, i.uid, i.gid, i.uname, i.gname) for i in infos} == {(0, 0, 0, "", "")}
    assert first[4:8] == b"\0\0\0\0"  # the gzip header's time


def test_pack_refuses_links_and_a_missing_manifest(tmp_path: Path) -> None:
    root = make_release(tmp_path / "r")
    (root / "link").symlink_to("run.sh")
    with pytest.raises(ReleaseError, match="link: symbolic links are not bundled"):
        pack(root)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReleaseError, match=f"{empty}: no farmd-release.yaml at the release's root"):
        pack(empty)


def test_pack_refuses_a_bad_manifest_located(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / "farmd-release.yaml").write_text("name: tool\nversion: 1\nextra: 2\n")
    with pytest.raises(ReleaseError, match=r"farmd-release.yaml:3:1: top level: unknown key"):
        pack(root)


def test_pack_holds_to_the_limits(tmp_path: Path) -> None:
    root = make_release(tmp_path / "r")
    with pytest.raises(ReleaseError, match="over the 3 limit"):
        pack(root, Limits(files=3))
    with pytest.raises(ReleaseError, match="over the 10 byte limit"):
        pack(root, Limits(unpacked_bytes=10))


# --------------------------------------------------------------------------- read / unpack


def test_roundtrip_and_read_manifest(tmp_path: Path) -> None:
    root = make_release(tmp_path / "r")
    data = pack(root)
    bundle = tmp_path / "tool-1.0.tar.gz"
    bundle.write_bytes(data)
    assert read_manifest_from(bundle) == read_manifest_from(root) == inspect(data)
    dest = tmp_path / "cache" / "tool-1.0"
    release = unpack(data, dest)
    assert release.label == "tool 1.0"
    assert (dest / "run.sh").read_text() == "#!/bin/sh\necho hi\n"
    assert (dest / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (dest / "bin" / "data.txt").stat().st_mode & 0o777 == 0o644
    assert not (dest / "__pycache__").exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["tool-1.0"]
    with pytest.raises(ReleaseError, match="already exists"):
        unpack(data, dest)


def test_examples_pack_and_unpack(tmp_path: Path) -> None:
    for source in sorted(EXAMPLES.iterdir()):
        data = pack(source)
        release = unpack(data, tmp_path / source.name)
        assert release == read_manifest_from(source)
    encode = tmp_path / "pipeline-2.3" / "scripts" / "encode.sh"
    assert encode.stat().st_mode & 0o111


def test_tar_made_by_hand_with_dot_prefix(tmp_path: Path) -> None:
    data = tar_gz(
        (member(".", tarfile.DIRTYPE), None),
        (member("./lib", tarfile.DIRTYPE), None),
        (member("./lib/x.py"), b"x = 1\n"),
    )
    unpack(data, tmp_path / "d")
    assert (tmp_path / "d" / "lib" / "x.py").read_text() == "x = 1\n"


HOSTILE = [
    ((member("/etc/passwd"), b"x"), "member '/etc/passwd' must be a relative path"),
    ((member("../escape"), b"x"), "member '../escape' has an empty, '.' or '..' segment"),
    ((member("a/../../escape"), b"x"), "member 'a/../../escape' has an empty"),
    ((member("a//b"), b"x"), "member 'a//b' has an empty"),
    ((member("a\\b"), b"x"), "member 'a\\\\b' must be a relative path"),
    ((member("link", tarfile.SYMTYPE, linkname="/etc"), None), "member 'link' is a symbolic"),
    ((member("in", tarfile.SYMTYPE, linkname="run.sh"), None), "member 'in' is a symbolic link"),
    ((member("hard", tarfile.LNKTYPE, linkname="x"), None), "member 'hard' is a hard link"),
    ((member("dev", tarfile.CHRTYPE), None), "member 'dev' is a device, fifo"),
    ((member("blk", tarfile.BLKTYPE), None), "member 'blk' is a device, fifo"),
    ((member("fifo", tarfile.FIFOTYPE), None), "member 'fifo' is a device, fifo"),
    ((member("farmd-release.yaml"), b"x"), "member 'farmd-release.yaml' appears twice"),
    ((member("x" * 2000), b"x"), "is 2000 characters long, over 1024"),
    ((member("/".join(["d"] * 40)), b"x"), "40 levels deep, over 32"),
]


@pytest.mark.parametrize(("entry", "words"), HOSTILE)
def test_hostile_members_are_refused(
    tmp_path: Path, entry: tuple[tarfile.TarInfo, bytes | None], words: str
) -> None:
    data = tar_gz(entry)
    dest = tmp_path / "cache" / "rel"
    dest.parent.mkdir()
    with pytest.raises(ReleaseError) as info:
        unpack(data, dest)
    assert words in str(info.value)
    assert "\n" not in str(info.value)
    assert not dest.exists()
    assert list((tmp_path / "cache").iterdir()) == []  # no partial directory either
    with pytest.raises(ReleaseError):
        inspect(data)
    assert not (tmp_path / "escape").exists()


def test_a_file_below_a_file_is_refused(tmp_path: Path) -> None:
    data = tar_gz((member("a"), b"x"), (member("a/b"), b"y"))
    with pytest.raises(ReleaseError, match="member 'a/b' is below 'a', which is a file"):
        unpack(data, tmp_path / "d")


def test_missing_manifest(tmp_path: Path) -> None:
    data = tar_gz((member("x"), b"x"), manifest=False)
    with pytest.raises(ReleaseError, match=r"no farmd-release\.yaml at the bundle's root"):
        unpack(data, tmp_path / "d")
    nested = tar_gz((member("sub/farmd-release.yaml"), MANIFEST), manifest=False)
    with pytest.raises(ReleaseError, match=r"no farmd-release\.yaml at the bundle's root"):
        inspect(nested)


def test_bad_manifest_in_a_bundle_is_located(tmp_path: Path) -> None:
    bundle = tmp_path / "x.tar.gz"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        text = b"name: tool\nversion: 1\njob_types: 3\n"
        info = member("farmd-release.yaml", size=len(text))
        tar.addfile(info, io.BytesIO(text))
    bundle.write_bytes(gzip.compress(raw.getvalue()))
    with pytest.raises(ReleaseError) as info_:
        read_manifest_from(bundle)
    assert str(info_.value).startswith(f"{bundle}/farmd-release.yaml:3:12: job_types:")


@pytest.mark.parametrize(
    ("limits", "entries", "words"),
    [
        (Limits(files=3), [(member(f"f{i}"), b"x") for i in range(5)], "more than 3 members"),
        (
            Limits(unpacked_bytes=len(MANIFEST) + 100),
            [(member("big"), b"x" * 200)],
            "member 'big': files add up to over the",
        ),
        (
            Limits(unpacked_bytes=len(MANIFEST) + 10_000),
            [(member("a"), b"x" * 6000), (member("b"), b"x" * 6000)],
            "member 'b': files add up to over the",
        ),
        (Limits(path_chars=10), [(member("a" * 11), b"x")], "over 10"),
    ],
)
def test_limits(
    tmp_path: Path,
    limits: Limits,
    entries: list[tuple[tarfile.TarInfo, bytes | None]],
    words: str,
) -> None:
    with pytest.raises(ReleaseError) as info:
        unpack(tar_gz(*entries), tmp_path / "d", limits)
    assert words in str(info.value)
    assert not (tmp_path / "d").exists()


def test_gzip_bomb_stops_at_the_bound(tmp_path: Path) -> None:
    # 64 MiB of zeros compresses to ~64 KiB; the bound stops inflating long before
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))
    limits = Limits(unpacked_bytes=1024 * 1024, files=10)
    with pytest.raises(ReleaseError, match="unpacks to more than the 1048576 byte limit"):
        unpack(bomb, tmp_path / "d", limits)


def test_compressed_size_bound(tmp_path: Path) -> None:
    data = pack(make_release(tmp_path / "r"))
    with pytest.raises(ReleaseError, match=f"{len(data)} bytes, over the 100 byte limit"):
        unpack(data, tmp_path / "d", Limits(compressed_bytes=100))


@pytest.mark.parametrize(
    ("mangle", "words"),
    [
        (lambda d: d[:-20], "cut short"),
        (lambda d: d + b"junk", "4 bytes after the end of the gzip stream"),
        (lambda d: b"not gzip at all", "not a gzip-compressed tar"),
        (lambda d: gzip.compress(b"not a tar" * 100), "tar"),
    ],
)
def test_corrupt_bundles(tmp_path: Path, mangle: object, words: str) -> None:
    data = mangle(pack(make_release(tmp_path / "r")))  # type: ignore[operator]
    with pytest.raises(ReleaseError) as info:
        unpack(data, tmp_path / "d")
    assert words in str(info.value)
    assert not (tmp_path / "d").exists()


def test_remove_partials(tmp_path: Path) -> None:
    (tmp_path / ".rel.partial-abc" / "x").mkdir(parents=True)
    (tmp_path / "rel").mkdir()
    assert remove_partials(tmp_path) == [tmp_path / ".rel.partial-abc"]
    assert [p.name for p in tmp_path.iterdir()] == ["rel"]


def test_a_failed_rename_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = pack(make_release(tmp_path / "r"))
    cache = tmp_path / "cache"
    cache.mkdir()

    def refuse(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", refuse)
    with pytest.raises(ReleaseError, match="cannot move the unpacked release in place: No space"):
        unpack(data, cache / "rel")
    assert list(cache.iterdir()) == []
