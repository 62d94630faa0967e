"""The frame launcher and its shepherds: the processes between the agent and a command.

Why a shepherd exists. A frame runs in a session and process group of its own, so that a
kill reaches everything it started and so that it keeps running through a lost connection
or a supervisor restart. But a group of its own also outlived the agent itself: when the
agent was killed (`kill -9`, the OOM killer), its frames ran on as orphans while the
supervisor, having lost the worker, handed them out again, and the same frame ran twice at
once. The shepherd ties the life of the frame's group to the life of the agent *process*.

Why a launcher. A shepherd used to be a fresh Python interpreter per frame (11-12 ms of
CPU a frame start: a farm of short frames spent its time starting interpreters). Now the
agent starts one long-lived launcher (`python -I -S -c BOOTSTRAP FARMD_DIR AGENT_PID
SOCKET_FD`, `command` builds it) once, in a session of its own, and the launcher *forks*
a shepherd per frame: no interpreter start-up per frame.

The chain of lives. agent → launcher → shepherd → command's group:

- the launcher asks the kernel for SIGCONT when its parent dies (`prctl(PR_SET_PDEATHSIG)`,
  Linux) and exits when `getppid()` is no longer AGENT_PID (then, or when the agent closes
  its socket); it checks once after asking, since the agent may have died before;
- each shepherd asks the same of the launcher, and when `getppid()` is no longer the
  launcher's pid it SIGKILLs its whole process group, itself included: the command and
  everything it started that stayed in the group.

So when the agent dies, the launcher exits, and every shepherd kills its frame's group.

Why SIGCONT as the parent-death signal: the kernel also delivers it to a *stopped* process
(a suspended frame: the agent stops the whole group, shepherd included), and SIGCONT is the
one catchable signal that also resumes the process, so its handler runs and a suspended
frame dies with its agent too. The handler also runs on every resume (the agent sends
SIGCONT to the group) and, for the launcher, when the *thread* that forked it ends (the
kernel's parent-death signal follows the thread, and trio starts processes from worker
threads that end after 10 s idle): it acts only when `getppid()` has changed, that is when
the parent process is gone (its orphans are then the child of init or of a subreaper).

The protocol (agent ↔ launcher, a Unix stream socketpair): each message is 4 bytes of
length (big-endian) and a JSON object (`encode`, `Decoder`).

- agent → launcher: `{"start": ID, "argv": [...], "env": {...}}` with one descriptor
  passed alongside (SCM_RIGHTS): the frame's log (its stdout and stderr; its stdin is
  /dev/null, which the launcher opens once);
- launcher → agent: `{"started": ID, "pid": PID, "report": TEXT}` once the shepherd has
  started the command (TEXT is empty) or could not (TEXT says why, and the shepherd exits
  127 or 126), or `{"started": ID, "error": TEXT}` if there is no shepherd (it could not
  be forked); then `{"exited": PID, "status": N}` when that shepherd ends: N as
  `subprocess` gives it, `exit(N)` as N and a death by signal N as -N. The launcher learns
  that the command started from the shepherd's report pipe, which it reads to its end
  (`_Starting`): the agent learns the pid only once the group exists, so its signals to
  the group reach it; one read, not a pipe and a task per frame in the agent.

A shepherd (forked by the launcher, `_shepherd`):

1. closes the launcher's descriptors, starts a new session (its own process group), takes
   the frame's descriptors as 0, 1 and 2, handles SIGCONT and asks for it when the
   launcher dies, then checks that its parent is still the launcher;
2. starts ARGV as `subprocess.Popen` would (looked up on the environment's PATH, with the
   environment exactly as the agent sent it, every caught signal and SIGPIPE and SIGXFSZ
   back at their default) in its own process group, with the C function Popen calls
   (`_spawn`: Popen's own Python work cost about 0.5 ms of CPU a frame); it uses vfork, so the
   shepherd's pages are not copied a second time;
3. writes to the report pipe why ARGV could not be started (and exits 127 if it was not
   found, 126 otherwise), or nothing once it has started; either way it closes the pipe
   then, and the launcher, at its end, tells the agent (a "started" reply);
4. waits for the command and exits with its status: `exit(N)` as N, and a death by signal
   N by raising N on itself, so the agent sees what it saw before there was a shepherd.

The signals the agent sends the group (SIGTERM for a kill, SIGSTOP and SIGCONT to suspend
and resume, SIGKILL when the grace period is over) reach the command directly. The shepherd
catches the catchable ones that would end it and does nothing with them, so that a kill
keeps its grace period and the shepherd never exits before its command (an ignored signal
would stay ignored in the command; a caught one is reset by exec, so the command sees the
dispositions it would have had). A signal ignored when the launcher started stays ignored,
as it would have been for the command (`nohup farmd worker`); the launcher changes only
SIGCHLD and SIGCONT, which the shepherd puts back for the command.

The environment travels on the socket, so Python's C-locale coercion (PEP 538: it sets
`LC_CTYPE=C.UTF-8` in the launcher's own environment at start-up) never reaches a command:
the command gets the frame's environment, byte for byte.

Limits: a process that leaves the group (`setsid`, `setpgid`) escapes the shepherd, as it
escapes a kill. If a shepherd alone is killed with SIGKILL, its command is orphaned (and
the agent reports the frame ended, killed by signal 9). If the launcher alone dies, every
shepherd kills its group; the agent reports those frames lost (see farmd/launcher.py) and
starts a new launcher for the next frame. Without `prctl` (any system but Linux) there is
no parent-death signal: the launcher still runs commands with the same statuses, but a
frame outlives a killed agent there; the agent says so when it starts.

Cost: the interpreter's start-up (about 8 ms of the 11-12 ms of CPU the old per-frame
shepherd took) is paid once per agent. A frame start is now one fork of the launcher (a
small process: no farmd imports, no site-packages; its objects are frozen out of the
collector so that a shepherd leaves their pages shared), a little Python in the shepherd
and a vfork and exec of the command. What runs in every fork is kept out: the launcher
never imports `threading` (its at-fork hook runs Python in each child, about 0.5 ms) and
a shepherd imports nothing (`os.get_exec_path` would import `warnings` in each one, about
1 ms). 1,000 frames of `true`, 4 at a time through a `Launcher` on the shared 2-core
machine (load 4-6), took per frame 1.2 ms of CPU in the launcher and 3.0 ms in the
shepherd and `true` (0.5-0.9 of it `true` itself), against 1.4 and 4.3 ms when the
shepherd used `subprocess.Popen`. Each running frame still holds one shepherd process,
its memory mostly shared with the launcher (copy-on-write).
"""

from __future__ import annotations

import _posixsubprocess
import _signal  # type: ignore[import-not-found]
import contextlib
import ctypes
import functools
import gc
import json
import os
import resource
import select
import signal
import socket
import sys
from collections import deque
from collections.abc import Callable

# What the command's exit status is when it could not be started (as a shell reports it).
NOT_FOUND = 127
CANNOT_START = 126
# What the launcher or a shepherd exits with when its input is wrong (a bug in the agent).
USAGE = 125

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
DEATH_SIGNAL = signal.SIGCONT
FDS_PER_START = 1  # the log: the descriptors passed with each start request
REPORT_LIMIT = 4096  # bytes of a shepherd's report kept: one line, why a command did not start
MESSAGE_LIMIT = 64 * 1024 * 1024  # bytes: a longer message is a bug, not an environment
HEADER = 4  # bytes of a message's length

# Signals whose default action would end the shepherd and that someone may send to the
# whole group (the agent's SIGTERM, an operator's `kill -USR1 -PGID`...): the shepherd
# catches them and lets the command decide. Faults (SIGSEGV...) are left alone.
PASSED_ON = (
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGTERM",
    "SIGUSR1",
    "SIGUSR2",
    "SIGALRM",
    "SIGVTALRM",
    "SIGPROF",
    "SIGPOLL",
    "SIGPWR",
)

# Imports this file as the top-level module `shepherd` (so from its cached bytecode, and
# without importing the farmd package or anything from site-packages).
BOOTSTRAP = (
    "import sys; sys.path.append(sys.argv.pop(1)); import shepherd; "
    "shepherd.os._exit(shepherd.main(sys.argv[1:]))"
)
# Whether a frame dies with its agent here (see parent_death_signal).
LINKED = sys.platform.startswith("linux")


def command(python: str, agent: int, sock: int) -> list[str]:
    """The command line of a launcher: `python` (the agent's own interpreter), the agent's
    pid, the launcher's end of the socketpair."""
    here = __file__.rpartition("/")[0]
    return [python, "-I", "-S", "-c", BOOTSTRAP, here, str(agent), str(sock)]


def encode(message: dict[str, object]) -> bytes:
    """One message on the wire: its length, then its JSON."""
    data = json.dumps(message, separators=(",", ":")).encode()
    return len(data).to_bytes(HEADER, "big") + data


class Decoder:
    """Messages out of a byte stream: `feed` bytes, then take `messages()`."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def messages(self) -> list[dict[str, object]]:
        found = []
        while len(self._buffer) >= HEADER:
            size = int.from_bytes(self._buffer[:HEADER], "big")
            if size > MESSAGE_LIMIT:
                msg = f"a launcher message of {size} bytes (at most {MESSAGE_LIMIT})"
                raise ValueError(msg)
            if len(self._buffer) < HEADER + size:
                break
            message = json.loads(self._buffer[HEADER : HEADER + size])
            del self._buffer[: HEADER + size]
            if not isinstance(message, dict):
                msg = f"a launcher message that is not an object: {message!r}"
                raise ValueError(msg)
            found.append(message)
        return found


def _signals(names: tuple[str, ...]) -> list[int]:
    """The numbers of the signals of `names` that this system has."""
    return [n for n in (getattr(signal, name, None) for name in names) if n is not None]


def parent_death_signal() -> bool:
    """Ask the kernel for DEATH_SIGNAL when this process's parent dies; False if this
    system has no such thing (or refused)."""
    prctl = _prctl()
    return prctl is not None and prctl(PR_SET_PDEATHSIG, DEATH_SIGNAL, 0, 0, 0) == 0


@functools.cache  # looked up once, in the launcher; its shepherds inherit it
def _prctl() -> Callable[..., int] | None:
    """libc's prctl, or None where there is none."""
    if not LINKED:
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except AttributeError:  # no prctl in this libc
        return None
    prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
    prctl.restype = ctypes.c_int
    result: Callable[..., int] = prctl
    return result


# The signals of PASSED_ON that a shepherd catches (not those ignored): set by `main`.
_CAUGHT: list[int] = []
# `signal.signal` without the `signal` module's enum conversions, which cost a shepherd
# about 0.3 ms of CPU (in a forked child, each first write to a page copies it).
_set_handler: Callable[[int, Callable[[int, object], None]], object] = _signal.signal


def _usage(text: str) -> int:
    os.write(2, f"farmd launcher: {text}\n".encode(errors="replace"))
    return USAGE


def _nothing(signum: int, frame: object) -> None:
    """A caught signal the command also received: the command decides what it means."""


# --------------------------------------------------------------------------- the launcher


def main(args: list[str]) -> int:
    """The launcher: start a shepherd per request until the agent closes the socket or
    dies; report each shepherd's end."""
    if len(args) != 2:
        return _usage(f"usage: shepherd.py AGENT_PID SOCKET_FD, not {args!r}")
    try:
        parent, fd = int(args[0]), int(args[1])
    except ValueError:
        return _usage(f"bad AGENT_PID or SOCKET_FD: {args!r}")
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    wake, wake_in = os.pipe()
    os.set_blocking(wake, False)
    os.set_blocking(wake_in, False)

    def agent_gone(signum: int, frame: object) -> None:
        # (a shepherd runs this too, until it has set its own handler: not it)
        if os.getppid() != parent and os.getpid() == launcher:
            os._exit(0)  # each shepherd hears of it and kills its frame's group

    if not _FORK_EXEC:  # once here rather than in each shepherd (see _spawn)
        import subprocess  # noqa: F401
    # the signals each shepherd catches: the launcher never changes them, so its
    # shepherds see what it sees now
    _CAUGHT.extend(s for s in _signals(PASSED_ON) if signal.getsignal(s) is not signal.SIG_IGN)
    launcher = os.getpid()
    signal.signal(signal.SIGCHLD, _nothing)  # wakes `select` through the wake-up pipe
    signal.set_wakeup_fd(wake_in)
    signal.signal(DEATH_SIGNAL, agent_gone)
    parent_death_signal()
    if os.getppid() != parent:  # the agent died before the kernel was asked to tell
        return 1
    try:
        return _serve(sock, wake, wake_in, launcher)
    except (BrokenPipeError, ConnectionResetError):  # the agent is gone: so are we
        return 0


def _serve(sock: socket.socket, wake: int, wake_in: int, launcher: int) -> int:
    # A shepherd shares the launcher's memory until it writes to it; the collector would
    # write to every object it scans: it leaves the launcher's objects alone, and does not
    # run at all in a shepherd (which makes little garbage and lives on one command).
    gc.disable()
    gc.freeze()
    stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)  # every frame's
    own = [sock.fileno(), wake, wake_in]  # what a shepherd closes first
    decoder = Decoder()
    fds: deque[int] = deque()
    starting: dict[int, _Starting] = {}  # by the read end of its report pipe
    while True:
        readable, _, _ = select.select([sock.fileno(), wake, *starting], [], [])
        replies = []  # sent together: one write for all this round has to say
        for fd in readable:
            if fd in starting and (reply := _read_report(fd, starting)):
                replies.append(reply)
        if wake in readable:
            while True:
                try:
                    if not os.read(wake, 512):
                        break
                except BlockingIOError:
                    break
            replies.extend(_reap(starting))
        if sock.fileno() in readable:
            data, received, flags, _ = socket.recv_fds(sock, 1 << 16, 16)
            for received_fd in received:
                os.set_inheritable(received_fd, False)
            fds.extend(received)
            if not data:  # the agent is done (or gone): the shepherds end their frames
                return 0
            if flags & socket.MSG_CTRUNC:
                return _usage("descriptors were cut off (more than 16 in one read)")
            decoder.feed(data)
            try:
                requests = decoder.messages()
            except ValueError as exc:
                return _usage(str(exc))
            for request in requests:
                if len(fds) < FDS_PER_START:
                    return _usage(f"a start request without its descriptors: {request!r}")
                output = fds.popleft()
                # a shepherd closes the launcher's own, the other reports', later requests'
                closed = [*own, *starting, *fds]
                if reply := _launch(request, stdin, output, closed, launcher, starting):
                    replies.append(reply)
        if replies:
            sock.sendall(b"".join(replies))


class _Starting:
    """A shepherd whose report pipe the launcher has not read to its end yet."""

    __slots__ = ("ident", "pid", "text")

    def __init__(self, ident: object, pid: int) -> None:
        self.ident, self.pid, self.text = ident, pid, b""


def _read_report(fd: int, starting: dict[int, _Starting]) -> bytes:
    """Read the report pipe `fd` once; at its end, close it and return the "started"
    reply of its shepherd (b"" until then)."""
    shepherd = starting[fd]
    chunk = os.read(fd, REPORT_LIMIT)
    if chunk:
        shepherd.text = (shepherd.text + chunk)[:REPORT_LIMIT]
        return b""
    del starting[fd]
    os.close(fd)
    report = shepherd.text.decode(errors="replace")
    return encode({"started": shepherd.ident, "pid": shepherd.pid, "report": report})


def _reap(starting: dict[int, _Starting]) -> list[bytes]:
    """The replies for every shepherd that has ended: its "started" first if it was not
    sent yet (its report pipe is at its end now: the shepherd held the only writer)."""
    replies = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        for fd in [fd for fd, shepherd in starting.items() if shepherd.pid == pid]:
            while not (reply := _read_report(fd, starting)):
                pass
            replies.append(reply)
        code = os.waitstatus_to_exitcode(status)
        replies.append(encode({"exited": pid, "status": code}))
    return replies


def _launch(
    request: dict[str, object],
    stdin: int,
    output: int,
    closed: list[int],
    me: int,
    starting: dict[int, _Starting],
) -> bytes:
    """Fork the shepherd of one start request (its "started" reply comes at the end of its
    report pipe), or return the reply that says why there is none."""
    ident, argv, env = request.get("start"), request.get("argv"), request.get("env")
    try:
        report, report_in = os.pipe()
    except OSError as exc:
        os.close(output)
        return encode({"started": ident, "error": f"pipe: {exc.strerror or exc}"})
    try:
        pid = os.fork()
    except OSError as exc:
        for fd in (output, report, report_in):
            os.close(fd)
        return encode({"started": ident, "error": f"fork: {exc.strerror or exc}"})
    if pid == 0:
        code = USAGE
        try:
            if not (isinstance(argv, list) and argv and isinstance(env, dict)):
                code = _usage(f"bad start request: {request!r}")
            else:
                passed = [stdin, output, report_in]
                user = request.get("user")
                code = _shepherd(me, [*closed, report], passed, argv, env, user)
        except Exception as exc:  # a bug: say so in the frame's log
            code = _usage(f"shepherd failed: {exc!r}")
        finally:
            os._exit(code)
    os.close(output)
    os.close(report_in)  # the shepherd's copy is the only one: the report's end is its
    starting[report] = _Starting(ident, pid)
    return b""


# --------------------------------------------------------------------------- a shepherd


def _shepherd(
    launcher: int,
    own: list[int],
    passed: list[int],
    argv: list[str],
    env: dict[str, str],
    user: object = None,
) -> int:
    """A frame's shepherd, in the launcher's forked child: run `argv` and exit as it did
    (as the account `user` names, [uid, gid, groups, directory], when it names one)."""
    signal.set_wakeup_fd(-1)
    for fd in own:
        os.close(fd)
    os.setsid()  # its own session and process group, which the agent signals
    stdin, output, report = passed
    os.dup2(stdin, 0)
    os.dup2(output, 1)
    os.dup2(output, 2)
    for fd in (stdin, output):
        if fd > 2:
            os.close(fd)
    shepherd = os.getpid()
    if user is not None:  # before the parent-death signal: a change of uid clears it
        why = _become(user)
        if why:
            os.write(report, why.encode(errors="replace"))
            os.close(report)
            return CANNOT_START

    def launcher_gone(signum: int, frame: object) -> None:
        # (a forked child runs this too, until it has reset its handlers: not it)
        if os.getppid() != launcher and os.getpid() == shepherd:
            os.killpg(os.getpgid(0), signal.SIGKILL)  # the command, its group, and this

    for signum in _CAUGHT:
        _set_handler(signum, _nothing)
    _set_handler(DEATH_SIGNAL, launcher_gone)
    parent_death_signal()
    if os.getppid() != launcher:  # the launcher died before the kernel was asked to tell
        return 1

    try:
        child = _spawn(argv, env)
    except OSError as exc:
        reason = f"could not start {argv[0]!r}: {exc.strerror or exc}"
        os.write(report, reason.encode(errors="replace"))  # a few bytes: one write
        os.close(report)
        return NOT_FOUND if isinstance(exc, FileNotFoundError) else CANNOT_START
    os.close(report)  # started: the agent reads an empty report

    _, status = os.waitpid(child, 0)  # retried after each signal handler (PEP 475)
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return code
    _die_of(-code)
    return 128 - code  # not reached: the signal ends this process


def _become(user: object) -> str:
    """Take the account `user` names ([uid, gid, groups, directory]: its groups, then its
    group, then its user, never root) and its directory (else /); why not, or ""."""
    if not (isinstance(user, list) and len(user) == 4):
        return f"bad account {user!r}"
    uid, gid, groups, directory = user
    if not (isinstance(uid, int) and isinstance(gid, int) and uid > 0):
        return f"refused to run a frame as uid {uid!r}: never as root"
    try:
        os.setgroups([g for g in groups if isinstance(g, int)] if isinstance(groups, list) else [])
        os.setgid(gid)
        os.setuid(uid)
    except OSError as exc:
        return f"could not become uid {uid}: {exc.strerror or exc}"
    try:
        os.chdir(directory if isinstance(directory, str) else "/")
    except OSError:
        os.chdir("/")
    return ""


# `subprocess.Popen` starts a command with `_posixsubprocess.fork_exec`, with these
# arguments on the Python versions that take them; called directly, it costs about half
# a millisecond of CPU less per frame (Popen's own Python work, measured on `true`).
_FORK_EXEC = (3, 11) <= sys.version_info[:2] <= (3, 13)
_fork_exec: Callable[..., int] = _posixsubprocess.fork_exec  # (typeshed's types are wrong)


def _spawn(argv: list[str], env: dict[str, str]) -> int:
    """Start `argv` as a child in this process group, as `subprocess.Popen(argv, env=env,
    close_fds=True, restore_signals=True)` does, and return its pid: it is looked up on
    the environment's PATH (the first error other than not found wins, else the last),
    started with vfork (no second copy of the shepherd's page tables), with every caught
    signal and SIGPIPE and SIGXFSZ back at their default and 0, 1 and 2 its only
    descriptors; the OSError that kept it from starting is raised. Not posix_spawn: glibc's
    leaves its internal signals (32 and 33) ignored in the command."""
    fs = sys.getfilesystemencoding()  # as os.fsencode, in one pass (a shepherd's CPU)
    if not _FORK_EXEC:  # another Python: Popen's own call of it (imported by `main`)
        import subprocess

        return subprocess.Popen(argv, env=env, close_fds=True, restore_signals=True).pid
    executable = argv[0].encode(fs, "surrogateescape")
    if b"/" in executable:
        candidates: tuple[bytes, ...] = (executable,)
    else:  # as subprocess (os.get_exec_path, which imports `warnings`: 1 ms a shepherd)
        path = env.get("PATH", os.defpath).encode(fs, "surrogateescape")
        candidates = tuple(
            folder + b"/" + executable if folder else executable for folder in path.split(b":")
        )
    env_list = []
    for key, value in env.items():
        if "=" in key:
            msg = f"an environment variable name with '=': {key!r}"
            raise ValueError(msg)
        env_list.append(f"{key}={value}".encode(fs, "surrogateescape"))
    # the child writes "ExceptionName:errno in hex:description" here if it cannot exec
    errors, errors_in = os.pipe()  # both above 2: 0, 1 and 2 are the frame's
    try:
        pid = _fork_exec(
            argv, candidates, True, (errors_in,), None, env_list,
            -1, -1, -1, -1, -1, -1,  # stdin, stdout, stderr: this process's
            errors, errors_in, True, False, -1, None, None, None, -1, None, True,
        )  # fmt: skip
    finally:
        os.close(errors_in)
    try:
        failure = b""
        while chunk := os.read(errors, 50000):
            failure += chunk
    finally:
        os.close(errors)
    if not failure:
        return pid
    os.waitpid(pid, 0)  # it exited 255 after it wrote why
    _, number, text = failure.split(b":", 2)
    errno = int(number, 16)
    if errno:
        raise OSError(errno, os.strerror(errno))  # FileNotFoundError for ENOENT...
    msg = f"the command's child failed before exec: {text.decode(errors='replace')}"
    raise RuntimeError(msg)


def _die_of(signum: int) -> None:
    """End this process by signal `signum`, as the command ended, without a core dump."""
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError, ValueError):  # SIGKILL cannot be changed (nor needs to)
        signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
