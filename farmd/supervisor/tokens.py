"""The farm's tokens, and who a presented token stands for.

Three kinds of token open a session: the farm's (admin) token and the user token, each
written once to the state dir (`ensure_token`), and a job token, which a frame gets in
FARMD_TOKEN and which is derived from the farm token (`job_token`), so it needs no
storage and survives restarts. `principal_for` turns the token a `hello` presents into
the core's `Principal`, or refuses it; what that principal may then do is not decided
here but by the core (`Scheduler.authorize` and its door), so the rules stay in one
place and a role scoped to a cluster subtree is a change to the core alone.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from farmd.core import ADMIN, Principal
from farmd.core.identities import TOKEN_MARK
from farmd.errors import ProtocolError, UserError
from farmd.store import restrict_mode

TOKEN_FILE = "token"
USER_TOKEN_FILE = "user_token"  # for artists: submit and read, nothing else


def ensure_token(state_dir: Path, name: str = TOKEN_FILE, mode: int = 0o600) -> str:
    """A token, written on first start as STATE/NAME: the farm's (admin) token with mode
    0600, the user token with 0640 (an admin may share it through the file's group)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        restrict_mode(path, mode)  # an older farmd, or a hand, may have left it open
        token = path.read_text().strip()
        if not token:
            msg = f"token file {path} is empty: remove it to make a new token"
            raise UserError(msg) from None
        return token
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


@functools.lru_cache(maxsize=4096)  # one per dispatch otherwise: frames of a job share it
def job_token(farm_token: str, job_id: int) -> str:
    """The token a frame of `job_id` gets (FARMD_TOKEN): it opens a session that may
    submit sub-jobs of that job and read the queue, nothing else. Derived from the farm
    token, so it needs no storage and survives restarts."""
    mac = hmac.new(farm_token.encode(), f"farmd-job:{job_id}".encode(), hashlib.sha256)
    return f"job.{job_id}.{mac.hexdigest()}"


# A personal token's hash: scrypt (about 40 ms here) with a salt of its own. The secret
# is 256 random bits, so the cost is a second wall behind the randomness, not the first.
SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


def personal_token(name: str) -> tuple[str, str, str]:
    """A new personal token for user `name` (`NAME~SECRET`), and the salt and digest of
    its secret the farm keeps instead of it (hex). Slow: call it from a thread."""
    return _hashed_token(f"{name}{TOKEN_MARK}")


def worker_token(token_id: int) -> tuple[str, str, str]:
    """A new worker token (`worker.ID.SECRET`) and its salt and digest. Slow: a thread."""
    return _hashed_token(f"worker.{token_id}.")


def _hashed_token(prefix: str) -> tuple[str, str, str]:
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    return prefix + secret, salt, token_digest(secret, salt)


def token_digest(secret: str, salt: str) -> str:
    """The digest kept for a token's `secret` (personal or worker). Slow: a thread."""
    return hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), **SCRYPT).hex()


def principal_for(
    farm_token: str,
    user_token: str,
    presented: str,
    highest_user_priority: int,
) -> Principal:
    """Who a presented token stands for (the core decides what it may do); a token
    that is none of the farm's is refused."""
    if hmac.compare_digest(presented.encode(), farm_token.encode()):
        return ADMIN
    if user_token and hmac.compare_digest(presented.encode(), user_token.encode()):
        return Principal.shared_user(highest_priority=highest_user_priority)
    parts = presented.split(".")
    if len(parts) == 3 and parts[0] == "job" and parts[1].isdigit() and len(parts[1]) < 20:
        job_id = int(parts[1])
        if hmac.compare_digest(presented.encode(), job_token(farm_token, job_id).encode()):
            return Principal.job_token(job_id, highest_priority=highest_user_priority)
    raise ProtocolError("wrong token", code="bad_token")
