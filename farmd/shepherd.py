"""The frame shepherd: one small process per running frame, between the agent and the command.

Why it exists. A frame runs in a session and process group of its own, so that a kill
reaches everything it started and so that it keeps running through a lost connection or a
supervisor restart. But a group of its own also outlived the agent itself: when the agent
was killed (`kill -9`, the OOM killer), its frames ran on as orphans while the supervisor,
having lost the worker, handed them out again, and the same frame ran twice at once. The
shepherd ties the life of the frame's group to the life of the agent *process*.

How. The agent starts `python -I -S -c BOOTSTRAP FARMD_DIR AGENT_PID REPORT_FD [--lc-ctype
VALUE] -- ARGV...` (`command` builds it) as the leader of a new session
(`start_new_session=True`), with the frame's environment, stdin and log file. The shepherd

1. handles SIGCONT and asks the kernel to send it SIGCONT when its parent dies
   (`prctl(PR_SET_PDEATHSIG)`, Linux), then checks that its parent is still AGENT_PID: the
   agent may have died before the request was made;
2. starts ARGV (fork and exec, looked up on the environment's PATH as `subprocess` does)
   in its own process group, with the environment exactly as the agent gave it (see
   `--lc-ctype` below); not `posix_spawn`, which leaves glibc's internal signals ignored
   in the command;
3. writes to REPORT_FD why ARGV could not be started (and exits 127 if it was not found,
   126 otherwise), or nothing once it has started; either way REPORT_FD is closed then,
   and the agent reads it to tell "could not start" from an exit status;
4. waits for the command and exits with its status: `exit(N)` as N, and a death by signal
   N by raising N on itself, so the agent sees what it saw before there was a shepherd.

When the agent process dies, the shepherd SIGKILLs its whole process group, itself
included: the command and everything it started that stayed in the group.

Why SIGCONT as the parent-death signal: the kernel also delivers it to a *stopped* process
(a suspended frame: the agent stops the whole group, shepherd included), and SIGCONT is the
one catchable signal that also resumes the process, so its handler runs and a suspended
frame dies with its agent too. The handler also runs on every resume (the agent sends
SIGCONT to the group) and when the *thread* that forked the shepherd ends (the kernel's
parent-death signal follows the thread, and trio starts processes from worker threads that
end after 10 s idle): it acts only when `getppid()` is no longer AGENT_PID, that is when the
agent process is gone (its orphans are then the child of init or of a subreaper).

The signals the agent sends the group (SIGTERM for a kill, SIGSTOP and SIGCONT to suspend
and resume, SIGKILL when the grace period is over) reach the command directly. The shepherd
catches the catchable ones that would end it and does nothing with them, so that a kill
keeps its grace period and the shepherd never exits before its command (an ignored signal
would stay ignored in the command; a caught one is reset by exec, so the command sees the
dispositions it would have had). A signal ignored when the shepherd started stays ignored,
as it would have been for the command (`nohup farmd worker`).

`--lc-ctype`: Python coerces a C locale by setting `LC_CTYPE=C.UTF-8` in its own
environment at start-up (PEP 538; `-I` ignores `PYTHONCOERCECLOCALE`). The agent passes the
frame's own `LC_CTYPE` (absent if it has none) and the shepherd puts it back, so the command
gets the environment of the frame and not the shepherd's.

Limits: a process that leaves the group (`setsid`, `setpgid`) escapes the shepherd, as it
escapes a kill. If the shepherd alone is killed with SIGKILL, its command is orphaned (and
the agent reports the frame ended, killed by signal 9). Without `prctl` (any system but
Linux) there is no parent-death signal: the shepherd still runs the command with the same
statuses, but a frame outlives a killed agent there; the agent says so when it starts.

Cost: one Python start-up per frame, kept small: about 11 ms of CPU on the 2-core machine
of the README's figures, of which 8 ms is the bare interpreter's start. The
shepherd runs with `-I -S` (no site-packages, no farmd imports), is imported from its cached
bytecode, uses the modules the interpreter has loaded at start-up already (`posix`,
`_signal`) and `_ctypes` rather than `os`, `signal` and `ctypes` (which import `enum`,
`functools` and more), and exits without the interpreter's clean-up; run as a plain script
with those modules it took 24 ms.
"""

from __future__ import annotations

import posix
import sys

TYPE_CHECKING = False  # `typing` is not imported at run time: it costs 3 ms
if TYPE_CHECKING:
    from typing import Any

# `signal` imports enum (5 ms); the interpreter has loaded `_signal` at start-up already.
# It has no type stubs: its functions are those of `signal`, with plain ints.
_signal: Any = __import__("_signal")

# What the command's exit status is when it could not be started (as a shell reports it).
NOT_FOUND = 127
CANNOT_START = 126
# What the shepherd exits with when its own arguments are wrong (a bug in the agent).
USAGE = 125

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
DEATH_SIGNAL: int = _signal.SIGCONT
SIGKILL: int = _signal.SIGKILL
DEFAULT_PATH = "/bin:/usr/bin"  # os.defpath: where a command is looked for without PATH

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
# Signals Python itself ignores at start-up; the command gets them back at their default,
# as subprocess's `restore_signals` does.
RESTORED = ("SIGPIPE", "SIGXFSZ")


# Imports this file as the top-level module `shepherd` (so from its cached bytecode: a script
# run by path is compiled at each start) without importing the farmd package, and exits
# without the interpreter's clean-up (1.5 ms; the shepherd has nothing to flush).
BOOTSTRAP = (
    "import sys; sys.path.append(sys.argv.pop(1)); import shepherd; "
    "shepherd.posix._exit(shepherd.main(sys.argv[1:]))"
)
# Whether a frame dies with its agent here (see parent_death_signal).
LINKED = sys.platform.startswith("linux")


def command(
    python: str, agent: int, report: int, argv: list[str], env: dict[str, str]
) -> list[str]:
    """The command line that runs `argv` under a shepherd: `python` (the agent's own
    interpreter), the agent's pid, the write end of the report pipe, the frame's `env`."""
    here = __file__.rpartition("/")[0]
    lc_ctype = ["--lc-ctype", env["LC_CTYPE"]] if "LC_CTYPE" in env else []
    return [
        python,
        "-I",
        "-S",
        "-c",
        BOOTSTRAP,
        here,
        str(agent),
        str(report),
        *lc_ctype,
        "--",
        *argv,
    ]


def _signals(names: tuple[str, ...]) -> list[int]:
    """The numbers of the signals of `names` that this system has."""
    return [n for n in (getattr(_signal, name, None) for name in names) if n is not None]


def parent_death_signal() -> bool:
    """Ask the kernel for DEATH_SIGNAL when this process's parent dies; False if this
    system has no such thing (or refused)."""
    if not LINKED:
        return False
    # `ctypes` costs 3 ms more than `_ctypes`; this builds a function as `ctypes.CDLL` does.
    # `_ctypes` is typed as Any: its stubs want ctypes' own classes where these stand in.
    c: Any = __import__("_ctypes")
    int_type = type(c._SimpleCData)("Int", (c._SimpleCData,), {"_type_": "i"})
    ulong_type = type(c._SimpleCData)("ULong", (c._SimpleCData,), {"_type_": "L"})
    function_type = type(c.CFuncPtr)(
        "Function",
        (c.CFuncPtr,),
        {"_flags_": c.FUNCFLAG_CDECL | c.FUNCFLAG_USE_ERRNO, "_restype_": int_type},
    )
    libc = type("Libc", (), {"_handle": c.dlopen(None, posix.RTLD_NOW)})
    try:
        prctl = function_type(("prctl", libc()))
    except AttributeError:  # no prctl in this libc
        return False
    prctl.argtypes = (int_type, ulong_type, ulong_type, ulong_type, ulong_type)
    return bool(prctl(PR_SET_PDEATHSIG, DEATH_SIGNAL, 0, 0, 0) == 0)


def _usage(text: str) -> int:
    posix.write(2, f"farmd shepherd: {text}\n".encode(errors="replace"))
    return USAGE


def _nothing(signum: int, frame: object) -> None:
    """A caught signal the command also received: the command decides what it means."""


def main(args: list[str]) -> int:
    try:
        split = args.index("--")
    except ValueError:
        return _usage("usage: shepherd.py AGENT_PID REPORT_FD [--lc-ctype VALUE] -- ARGV...")
    head, argv = args[:split], args[split + 1 :]
    if len(head) not in (2, 4) or (len(head) == 4 and head[2] != "--lc-ctype") or not argv:
        return _usage(f"bad arguments: {args!r}")
    try:
        parent, report = int(head[0]), int(head[1])
    except ValueError:
        return _usage(f"bad AGENT_PID or REPORT_FD: {head[:2]!r}")
    posix.set_inheritable(report, False)  # the command must not hold the report open
    shepherd = posix.getpid()

    def agent_gone(signum: int, frame: object) -> None:
        # (a forked child runs this too, until it has reset its handlers: not it)
        if posix.getppid() != parent and posix.getpid() == shepherd:
            posix.killpg(posix.getpgid(0), SIGKILL)  # the command, its group, and this

    caught = [s for s in _signals(PASSED_ON) if _signal.getsignal(s) is not _signal.SIG_IGN]
    for signum in caught:
        _signal.signal(signum, _nothing)
    _signal.signal(DEATH_SIGNAL, agent_gone)
    parent_death_signal()
    if posix.getppid() != parent:  # the agent died before the kernel was asked to tell
        return 1

    env = dict(posix.environ)  # bytes to bytes: passed on exactly
    if len(head) == 4:
        env[b"LC_CTYPE"] = head[3].encode(sys.getfilesystemencoding(), "surrogateescape")
    else:
        env.pop(b"LC_CTYPE", None)
    try:
        child = _spawn(argv, env, [*caught, DEATH_SIGNAL, *_signals(RESTORED)])
    except OSError as exc:
        reason = f"could not start {argv[0]!r}: {exc.strerror or exc}"
        posix.write(report, reason.encode(errors="replace"))  # a few bytes: one write
        posix.close(report)
        return NOT_FOUND if isinstance(exc, FileNotFoundError) else CANNOT_START
    posix.close(report)  # started: the agent reads an empty report

    _, status = posix.waitpid(child, 0)  # retried after each signal handler (PEP 475)
    code = posix.waitstatus_to_exitcode(status)
    if code >= 0:
        return code
    _die_of(-code)
    return 128 - code  # not reached: the signal ends this process


def _spawn(argv: list[str], env: dict[bytes, bytes], defaults: list[int]) -> int:
    """Start `argv` as a child in this process group, as `subprocess.Popen` would (same
    PATH search, signals in `defaults` back at their default); its pid, or the OSError
    that kept it from starting (the child reports its `errno` through a pipe)."""
    errors, errors_in = posix.pipe()  # both close-on-exec: EOF means it started
    pid = posix.fork()
    if pid == 0:
        try:
            posix.close(errors)
            for signum in defaults:
                _signal.signal(signum, _signal.SIG_DFL)
            _exec(argv, env)
        except OSError as exc:
            posix.write(errors_in, str(exc.errno or 0).encode())
        finally:
            posix._exit(CANNOT_START)
    posix.close(errors_in)
    try:
        number = posix.read(errors, 64)
    finally:
        posix.close(errors)
    if not number:
        return pid
    posix.waitpid(pid, 0)
    errno = int(number)
    raise OSError(errno, posix.strerror(errno))  # FileNotFoundError for ENOENT...


def _exec(argv: list[str], env: dict[bytes, bytes]) -> None:
    """execve `argv[0]`, looked up on the environment's PATH as os.execvpe does: the first
    error other than not found wins, else the last one."""
    file = argv[0].encode(sys.getfilesystemencoding(), "surrogateescape")
    if b"/" in file:
        posix.execve(file, argv, env)
    path = env.get(b"PATH", DEFAULT_PATH.encode())
    first: OSError | None = None
    last: OSError | None = None
    for directory in path.split(b":"):
        try:
            posix.execve(directory.rstrip(b"/") + b"/" + file if directory else file, argv, env)
        except (FileNotFoundError, NotADirectoryError) as exc:
            last = exc
        except OSError as exc:
            last = exc
            first = first or exc
    raise first or last or FileNotFoundError(2, posix.strerror(2))


def _die_of(signum: int) -> None:
    """End this process by signal `signum`, as the command ended, without a core dump."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, OSError, ValueError):
        pass
    try:  # noqa: SIM105 (contextlib would cost an import of 2 ms)
        _signal.signal(signum, _signal.SIG_DFL)
    except (OSError, ValueError):  # SIGKILL cannot be changed, and needs no change
        pass
    posix.kill(posix.getpid(), signum)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
