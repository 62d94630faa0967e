"""Release bundles: a release directory packed into a deterministic `.tar.gz`, its
digest, and unpacking one that may be hostile.

Theory of operation
-------------------
A bundle is a gzip-compressed tar of a release directory, `farmd-release.yaml` at its
root. `pack` makes the same bytes from the same tree, whoever packs it and whenever: the
entries sorted by path, mtime, uid and gid 0, no user or group names, modes 0o755 (a
directory, or a file with any execute bit) or 0o644, and a gzip header with no name or
time. So a bundle's `digest` (`sha256:<hex>`) names its content, and a release can be
stored content-addressed and compared by digest.

Only regular files and directories are bundled. Symbolic links are refused, both by
`pack` and by `unpack`: a release that needs one can make it at run time, and a bundle
without links cannot point a worker at anything outside the directory it unpacks to.
`__pycache__` directories are left out by `pack` (they change with every run).

`unpack` (and `inspect`, which checks a bundle without writing it) trust nothing:

- the compressed bundle is at most `Limits.compressed_bytes` (`MAX_COMPRESSED_BYTES`);
  it is decompressed in memory, stopping past a bound derived from
  `Limits.unpacked_bytes` (a gzip bomb costs no more than that bound), and must be one
  complete gzip stream with nothing after it;
- members are regular files or directories only (no symlinks, hardlinks, devices,
  fifos); a name is relative, has no `..`, `.` (other than a leading `./`), empty or
  NUL-holding segment, is valid UTF-8, at most `Limits.path_chars` (`MAX_PATH_CHARS`)
  long and `MAX_PATH_DEPTH` deep, and appears once;
- at most `Limits.files` (`MAX_FILES`) members, whose sizes add up to at most
  `Limits.unpacked_bytes` (`MAX_UNPACKED_BYTES`);
- the manifest must be there and parse.

`unpack` writes into a fresh temporary directory beside `dest` (`.NAME.partial-*`),
fsyncs it, and renames it to `dest` in one step: a crash leaves either the whole
release or a partial directory that `remove_partials` clears, never a half release at
`dest`. Every refusal is one line (`ReleaseError`) naming the bad member.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Final

import attrs

from farmd.errors import ReleaseError
from farmd.releases.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, parse_manifest
from farmd.releases.model import Release

MAX_COMPRESSED_BYTES: Final = 64 * 1024 * 1024
MAX_UNPACKED_BYTES: Final = 256 * 1024 * 1024
MAX_FILES: Final = 10_000
MAX_PATH_CHARS: Final = 1024
MAX_PATH_DEPTH: Final = 32
_SKIPPED_DIRS: Final = frozenset({"__pycache__"})
_BLOCK: Final = 512


@attrs.frozen(kw_only=True)
class Limits:
    """What one bundle may cost; the module's MAX_* constants by default."""

    compressed_bytes: int = MAX_COMPRESSED_BYTES
    unpacked_bytes: int = MAX_UNPACKED_BYTES
    files: int = MAX_FILES
    path_chars: int = MAX_PATH_CHARS

    @property
    def tar_bytes(self) -> int:
        """The most a valid tar of these limits can be: the files' content rounded up
        to blocks, three header blocks a member (a pax header may precede one), the
        end-of-archive blocks and tarfile's padding to a 10 KiB record."""
        return self.unpacked_bytes + (4 * _BLOCK) * (self.files + 1) + 20 * _BLOCK


DEFAULT_LIMITS: Final = Limits()


def digest(data: bytes) -> str:
    """`sha256:<hex>` of a bundle's bytes: the name it is stored under."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- pack


def pack(directory: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> bytes:
    """A release directory as a deterministic `.tar.gz`. Its manifest is read first
    (a bad one is refused), and the bundle is held to `limits`, so that `pack` never
    makes what `unpack` would refuse."""
    root = Path(directory)
    load_directory_manifest(root)
    entries = sorted(_walk(root, root))
    if len(entries) > limits.files:
        msg = f"{root}: {len(entries)} files and directories, over the {limits.files} limit"
        raise ReleaseError(msg)
    raw = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path, is_dir in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if is_dir:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
                continue
            data = path.read_bytes()
            total += len(data)
            if total > limits.unpacked_bytes:
                msg = f"{root}: files over the {limits.unpacked_bytes} byte limit at {name}"
                raise ReleaseError(msg)
            executable = path.stat().st_mode & 0o111
            info.type, info.mode, info.size = (
                tarfile.REGTYPE,
                0o755 if executable else 0o644,
                len(data),
            )
            tar.addfile(info, io.BytesIO(data))
    packed = gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)
    if len(packed) > limits.compressed_bytes:
        msg = f"{root}: bundle is {len(packed)} bytes, over the {limits.compressed_bytes} limit"
        raise ReleaseError(msg)
    return packed


def _walk(root: Path, here: Path) -> list[tuple[str, Path, bool]]:
    """(name in the bundle, path, is a directory) of everything under `here`."""
    found = []
    for path in here.iterdir():
        name = path.relative_to(root).as_posix()
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            msg = f"{path}: symbolic links are not bundled (make it at run time)"
            raise ReleaseError(msg)
        if stat.S_ISDIR(mode):
            if path.name in _SKIPPED_DIRS:
                continue
            found.append((name, path, True))
            found.extend(_walk(root, path))
        elif stat.S_ISREG(mode):
            found.append((name, path, False))
        else:
            msg = f"{path}: only regular files and directories are bundled"
            raise ReleaseError(msg)
    return found


# --------------------------------------------------------------------------- read


def load_directory_manifest(directory: Path) -> Release:
    return _manifest_file(directory / MANIFEST_NAME)


def _manifest_file(path: Path) -> Release:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        msg = f"{path.parent}: no {MANIFEST_NAME} at the release's root"
        raise ReleaseError(msg) from None
    except OSError as exc:
        msg = f"{path}: cannot read the release manifest: {exc.strerror or exc}"
        raise ReleaseError(msg) from None
    return parse_manifest(data, str(path))


def read_manifest_from(path: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> Release:
    """The release of a directory or of a `.tar.gz` bundle (checked whole, as `unpack`
    would check it)."""
    target = Path(path)
    if target.is_dir():
        return load_directory_manifest(target)
    try:
        with open(target, "rb") as file:
            data = file.read(limits.compressed_bytes + 1)
    except OSError as exc:
        msg = f"{target}: cannot read the release: {exc.strerror or exc}"
        raise ReleaseError(msg) from None
    return inspect(data, limits, label=str(target))


@attrs.frozen
class _Member:
    name: str  # normalised: no leading './'
    info: tarfile.TarInfo


def inspect(data: bytes, limits: Limits = DEFAULT_LIMITS, label: str = "bundle") -> Release:
    """Check a bundle whole, without writing anything; its release."""
    tar_bytes = _decompress(data, limits, label)
    with _open_tar(tar_bytes, label) as tar:
        members = _members(tar, limits, label)
        return _bundled_manifest(tar, members, label)


def _decompress(data: bytes, limits: Limits, label: str) -> bytes:
    if len(data) > limits.compressed_bytes:
        msg = f"{label}: {len(data)} bytes, over the {limits.compressed_bytes} byte limit"
        raise ReleaseError(msg)
    inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip only
    try:
        out = inflate.decompress(data, limits.tar_bytes + 1)
    except zlib.error as exc:
        msg = f"{label}: not a gzip-compressed tar ({exc})"
        raise ReleaseError(msg) from None
    if len(out) > limits.tar_bytes:
        msg = f"{label}: unpacks to more than the {limits.unpacked_bytes} byte limit"
        raise ReleaseError(msg)
    if not inflate.eof:
        msg = f"{label}: the gzip stream is cut short"
        raise ReleaseError(msg)
    if inflate.unused_data:
        msg = f"{label}: {len(inflate.unused_data)} bytes after the end of the gzip stream"
        raise ReleaseError(msg)
    return out


def _open_tar(tar_bytes: bytes, label: str) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:")
    except tarfile.TarError as exc:
        msg = f"{label}: not a tar archive ({exc})"
        raise ReleaseError(msg) from None


def _members(tar: tarfile.TarFile, limits: Limits, label: str) -> list[_Member]:
    members: list[_Member] = []
    seen: dict[str, bool] = {}  # name -> is a directory
    total = 0
    try:
        for info in tar:
            if len(members) >= limits.files:
                msg = f"{label}: more than {limits.files} members"
                raise ReleaseError(msg)
            name = _member_name(info, limits, label)
            if name is None:  # the archive's root, `.` or `./`
                continue
            where = f"{label}: member {name!r}"
            if info.issym() or info.islnk():
                what = "a symbolic link" if info.issym() else "a hard link"
                msg = f"{where} is {what}; bundles hold only files and directories"
                raise ReleaseError(msg)
            if not (info.isreg() or info.isdir()) or info.type == tarfile.CONTTYPE:
                msg = f"{where} is a device, fifo or other special file; only files and directories"
                raise ReleaseError(msg)
            if name in seen:
                msg = f"{where} appears twice"
                raise ReleaseError(msg)
            parents = name.split("/")[:-1]
            for i in range(len(parents)):
                parent = "/".join(parents[: i + 1])
                if seen.get(parent) is False:
                    msg = f"{where} is below {parent!r}, which is a file"
                    raise ReleaseError(msg)
            seen[name] = info.isdir()
            if info.isreg():
                total += info.size
                if total > limits.unpacked_bytes:
                    msg = f"{where}: files add up to over the {limits.unpacked_bytes} byte limit"
                    raise ReleaseError(msg)
            members.append(_Member(name, info))
    except tarfile.TarError as exc:
        msg = f"{label}: a broken tar archive ({exc})"
        raise ReleaseError(msg) from None
    return members


def _member_name(info: tarfile.TarInfo, limits: Limits, label: str) -> str | None:
    raw = info.name
    shown = repr(raw[:80] + "..." if len(raw) > 80 else raw)
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        msg = f"{label}: member {shown} is not named in UTF-8"
        raise ReleaseError(msg) from None
    if len(raw) > limits.path_chars:
        msg = f"{label}: member {shown} is {len(raw)} characters long, over {limits.path_chars}"
        raise ReleaseError(msg)
    if raw.startswith("/") or "\\" in raw or "\0" in raw:
        msg = f"{label}: member {shown} must be a relative path with '/' separators"
        raise ReleaseError(msg)
    name = raw
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/") if info.isdir() else name
    if name in ("", "."):
        if info.isdir():
            return None
        msg = f"{label}: member {shown} has no name"
        raise ReleaseError(msg)
    segments = name.split("/")
    if any(s in ("", ".", "..") for s in segments):
        msg = f"{label}: member {shown} has an empty, '.' or '..' segment"
        raise ReleaseError(msg)
    if len(segments) > MAX_PATH_DEPTH:
        msg = f"{label}: member {shown} is {len(segments)} levels deep, over {MAX_PATH_DEPTH}"
        raise ReleaseError(msg)
    return name


def _bundled_manifest(tar: tarfile.TarFile, members: list[_Member], label: str) -> Release:
    found = next((m for m in members if m.name == MANIFEST_NAME), None)
    if found is None or not found.info.isreg():
        msg = f"{label}: no {MANIFEST_NAME} at the bundle's root"
        raise ReleaseError(msg)
    if found.info.size > MAX_MANIFEST_BYTES:
        msg = (
            f"{label}/{MANIFEST_NAME}: {found.info.size} bytes, over the {MAX_MANIFEST_BYTES} limit"
        )
        raise ReleaseError(msg)
    file = tar.extractfile(found.info)
    assert file is not None  # a regular file
    return parse_manifest(file.read(), f"{label}/{MANIFEST_NAME}")


# --------------------------------------------------------------------------- unpack


def unpack(
    data: bytes, dest_dir: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS
) -> Release:
    """Check a bundle whole, then write it to `dest_dir` (which must not exist) in one
    atomic rename; its release. Nothing is left at `dest_dir` if it is refused."""
    dest = Path(dest_dir)
    label = f"bundle for {dest}"
    tar_bytes = _decompress(data, limits, label)
    with _open_tar(tar_bytes, label) as tar:
        members = _members(tar, limits, label)
        release = _bundled_manifest(tar, members, label)
        if dest.exists():
            msg = f"{dest}: already exists; a release is unpacked once"
            raise ReleaseError(msg)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
        try:
            _write(tar, members, partial)
            try:
                os.rename(partial, dest)
            except OSError as exc:
                msg = f"{dest}: cannot move the unpacked release in place: {exc.strerror or exc}"
                raise ReleaseError(msg) from None
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    _fsync_dir(dest.parent)
    return release


def _write(tar: tarfile.TarFile, members: list[_Member], root: Path) -> None:
    """Members already checked: names relative and clean, only files and directories.
    Files are created exclusively and without following links (there are none)."""
    os.chmod(root, 0o755)
    dirs = {root}
    for member in members:
        path = root.joinpath(*member.name.split("/"))
        if member.info.isdir():
            path.mkdir(mode=0o755, parents=True, exist_ok=True)
            dirs.add(path)
            continue
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        dirs.add(path.parent)
        mode = 0o755 if member.info.mode & 0o111 else 0o644
        source = tar.extractfile(member.info)
        assert source is not None  # a regular file
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(path, flags, mode)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(path, mode)  # the umask may have narrowed it
    for directory in dirs:
        os.chmod(directory, 0o755)
        _fsync_dir(directory)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_partials(parent: str | os.PathLike[str]) -> list[Path]:
    """Clear what unpacks cut short by a crash left in `parent`; what was removed."""
    removed = []
    for path in Path(parent).glob(".*.partial-*"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return sorted(removed)
