"""The agent's side of its frame launcher (the process side is farmd/shepherd.py).

The agent holds one `Launcher`. Its first `start` starts the launcher process (in a
session of its own, tied to the agent's life) over a Unix socketpair; every `start` then
sends one request with the frame's log descriptor and returns a `Child` (the frame's
shepherd: its pid is the frame's process group) once the command has started, or with
why it could not. One reader task per launcher process takes its replies: the pid of each
new shepherd once its command has started (or why it could not), then each shepherd's
exit status, which resolves that `Child`.

If the launcher process dies while frames run (someone killed it; it never exits on its
own while the agent holds its socket), each of its shepherds has killed its frame's group
(the launcher is their parent: see farmd/shepherd.py). The reader then resolves every
`Child` of that launcher as killed by SIGKILL, with `lost` saying why, the agent sends
SIGKILL to those groups as well (in case a shepherd could not), and the next `start`
starts a new launcher. If no launcher can be started, each frame fails to start with why,
as a frame whose command cannot start does.

The reader runs shielded from the agent's cancellation: a stopping agent still kills its
frames and waits for their statuses, which come through the launcher; `close` ends it.
"""

from __future__ import annotations

import array
import contextlib
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
from typing import BinaryIO

import attrs
import trio

from farmd import shepherd
from farmd.logs import log_event

log = logging.getLogger("farmd.agent")

EXIT_TIMEOUT = 5.0  # seconds for a launcher whose socket was closed to exit, then SIGKILL


@attrs.define(eq=False)
class Child:
    """A frame's shepherd, as `trio.Process` would show it: `pid` leads the frame's
    process group; `returncode` is None until it ended."""

    pid: int
    returncode: int | None = None
    lost: str = ""  # why the status is not the command's own (its launcher died)
    _ended: trio.Event = attrs.field(factory=trio.Event)

    async def wait(self) -> int:
        await self._ended.wait()
        assert self.returncode is not None
        return self.returncode

    def _end(self, status: int, lost: str = "") -> None:
        if self.returncode is None:
            self.returncode, self.lost = status, lost
            self._ended.set()


@attrs.define(eq=False)
class _Process:
    """One launcher process, its socket and what it has not answered yet."""

    process: trio.Process
    sock: trio.socket.SocketType
    starting: dict[int, trio.MemorySendChannel[tuple[Child | None, str]]] = attrs.field(
        factory=dict
    )
    children: dict[int, Child] = attrs.field(factory=dict)
    closing: bool = False
    done: trio.Event = attrs.field(factory=trio.Event)


class Launcher:
    """Starts frames through a launcher process; `nursery` runs its reader tasks."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._current: _Process | None = None
        self._starting = trio.Lock()  # one launcher started at a time
        self._sending = trio.Lock()  # one request on the socket at a time
        self._ids = itertools.count(1)

    @property
    def pid(self) -> int | None:
        """The current launcher process's pid, if one runs."""
        return self._current.process.pid if self._current is not None else None

    async def start(
        self,
        argv: list[str],
        env: dict[str, str],
        output: BinaryIO,
        user: tuple[int, int, list[int], str] | None = None,
    ) -> tuple[Child | None, str]:
        """Start `argv` under a shepherd with stdout and stderr to `output`, stdin from
        /dev/null and exactly `env`, in a session and process group of its own; return
        once the command itself has started, or with why it could not: the shepherd then
        exits 127 (not found) or 126. None if there is no shepherd at all (no launcher,
        or it could not fork one). With `user` (uid, gid, groups, working directory) the
        shepherd becomes that account before it starts the command."""
        try:
            current = await self._launcher()
        except OSError as exc:
            return None, f"could not start the frame launcher: {exc.strerror or exc}"
        ident = next(self._ids)
        send, receive = trio.open_memory_channel[tuple[Child | None, str]](1)
        current.starting[ident] = send
        fields: dict[str, object] = {"start": ident, "argv": argv, "env": env}
        if user is not None:
            fields["user"] = list(user)
        request = shepherd.encode(fields)
        # Shielded: a request goes whole or not at all (half of one would garble every
        # later one), and its answer comes soon: the reader's, once the shepherd has
        # started the command or could not, or when the launcher ends.
        with trio.CancelScope(shield=True):
            try:
                await self._send(current, request, [output.fileno()])
            except (OSError, trio.ClosedResourceError) as exc:  # it died meanwhile
                why = (exc.strerror if isinstance(exc, OSError) else "") or str(exc) or "closed"
                if current.starting.pop(ident, None) is not None:  # else the reader answered
                    send.send_nowait((None, f"the frame launcher is gone: {why}"))
            child, reason = await receive.receive()
        return child, reason

    def close(self) -> None:
        """Close the socket of the launcher: it exits, and its reader with it."""
        if self._current is not None:
            self._current.closing = True
            self._current.sock.close()
            self._current = None

    async def _launcher(self) -> _Process:
        if self._current is not None:  # (the lock is for starting one)
            return self._current
        async with self._starting:
            if self._current is None:
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    process = await trio.lowlevel.open_process(
                        shepherd.command(sys.executable, os.getpid(), theirs.fileno()),
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        pass_fds=(theirs.fileno(),),
                        start_new_session=True,  # a terminal's ^C is for the agent only
                    )
                except BaseException:
                    ours.close()
                    raise
                finally:
                    theirs.close()
                current = _Process(process, trio.socket.from_stdlib_socket(ours))
                self._current = current
                self._nursery.start_soon(self._read, current)
            return self._current

    async def _send(self, current: _Process, data: bytes, fds: list[int]) -> None:
        async with self._sending:
            sent = await current.sock.sendmsg(
                [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            )
            while sent < len(data):  # the descriptors went with the first byte
                sent += await current.sock.send(data[sent:])

    async def _read(self, current: _Process) -> None:
        decoder = shepherd.Decoder()
        why = "it closed its socket"
        with trio.CancelScope(shield=True):
            try:
                while data := await current.sock.recv(1 << 16):
                    decoder.feed(data)
                    for message in decoder.messages():
                        self._on_reply(current, message)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                why = f"its replies broke off: {exc!r}"
            except trio.ClosedResourceError:
                pass  # `close`: the agent is done with it
            await self._ended(current, why)

    def _on_reply(self, current: _Process, message: dict[str, object]) -> None:
        match message:
            case {"started": int(ident), "pid": int(pid), "report": str(report)}:
                child = current.children[pid] = Child(pid)  # its end comes after this
                current.starting.pop(ident).send_nowait((child, report))
            case {"started": int(ident), "error": str(error)}:
                reason = f"the frame launcher could not start a shepherd: {error}"
                current.starting.pop(ident).send_nowait((None, reason))
            case {"exited": int(pid), "status": int(status)}:
                current.children.pop(pid)._end(status)
            case _:
                msg = f"unexpected message from the frame launcher: {message!r}"
                raise ValueError(msg)

    async def _ended(self, current: _Process, why: str) -> None:
        """The launcher's socket is closed: reap it, and if the agent did not ask for
        that, report its frames lost (their shepherds have killed them)."""
        if self._current is current:
            self._current = None
        with contextlib.suppress(OSError):
            current.sock.close()  # it exits at the end of its socket, if it still runs
        with trio.move_on_after(EXIT_TIMEOUT) as waiting:
            status = await current.process.wait()
        if waiting.cancelled_caught:
            current.process.kill()
            status = await current.process.wait()
        if current.closing:  # the agent is stopping: a frame still starting is not run
            for waiter in current.starting.values():
                waiter.send_nowait((None, "could not start: the agent is stopping"))
            return
        lost = f"lost: the frame launcher {current.process.pid} ended ({why}, status {status})"
        log_event(
            log,
            "warning",
            "frame launcher ended",
            pid=current.process.pid,
            status=status,
            frames=len(current.children),
        )
        for waiter in current.starting.values():
            # it may have started before its answer was lost with the launcher: if so,
            # its shepherd killed it, as it killed the frames below (LOST_STARTING)
            waiter.send_nowait((None, f"{lost}; the frame was starting: {LOST_STARTING}"))
        for pid, child in current.children.items():
            _kill_group(pid)  # its shepherd did; this covers one that could not
            child._end(-signal.SIGKILL, f"{lost}; its shepherd killed the frame's group")


LOST_STARTING = "if it had started, its shepherd killed its group"


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
