"""Who may use the web console, and what they may do. Pure (no I/O but reading the file).

Two roles: ``admin`` acts (retry, resolve, cancel, pause); ``read-only`` sees every
page and changes nothing. Credentials come from the environment or a file:

- ``JOBSYS_WEB_TOKEN`` / ``JOBSYS_WEB_READONLY_TOKEN``: a bearer token per role
  (hashed in memory as soon as it is read; compared by hash), each with an optional
  name (``JOBSYS_WEB_TOKEN_NAME`` / ``JOBSYS_WEB_READONLY_TOKEN_NAME``): whoever logs
  in with it acts as that name (actor ``web:<name>``), by default ``token`` /
  ``token-read-only``;
- ``JOBSYS_WEB_USERS_FILE`` (or ``jobsys web --users-file``): one user a line,
  ``name role hash``, where ``hash`` comes from ``jobsys web-user`` (scrypt;
  the file never holds a password).

Nothing configured: the console serves loopback only, and whoever reaches it is the
local operator (an admin, as with a shell on the box). :func:`check_bind` refuses any
other address without credentials.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from limits import RateLimitItem, parse, storage, strategies

from jobsys.errors import ConfigError, UsageError

ADMIN = "admin"
READ_ONLY = "read-only"
ROLES = (ADMIN, READ_ONLY)
TOKEN_VARS = {ADMIN: "JOBSYS_WEB_TOKEN", READ_ONLY: "JOBSYS_WEB_READONLY_TOKEN"}
#: Who a token logs in as (actor ``web:<name>``) unless its ``..._NAME`` says.
TOKEN_USERS = {ADMIN: "token", READ_ONLY: "token-read-only"}
#: A token's name: what an audit row shows after ``web:``.
TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
#: Failed logins allowed per client address and, separately, per user name.
LOGIN_ATTEMPTS = "5/minute"
# scrypt cost: ~50 ms per check on a small server; checked once per login, then cached.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES = 16


@dataclass(frozen=True)
class User:
    name: str
    role: str

    @property
    def can_act(self) -> bool:
        return self.role == ADMIN


def hash_secret(secret: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64): what a users file stores."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.scrypt(
        secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(
            secret.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(want),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def _fast_hash(secret: str) -> bytes:
    """Tokens from the environment are long random strings: one SHA-256 suffices."""
    return hashlib.sha256(secret.encode()).digest()


@dataclass
class Credentials:
    """Every way in; empty means "loopback only, no login"."""

    tokens: dict[bytes, User] = field(default_factory=dict)
    users: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (role, hash)
    _verified: dict[bytes, User] = field(default_factory=dict, repr=False)

    @property
    def configured(self) -> bool:
        return bool(self.tokens or self.users)

    def by_token(self, token: str) -> User | None:
        return self.tokens.get(_fast_hash(token)) if token else None

    def by_password(self, name: str, password: str) -> User | None:
        entry = self.users.get(name)
        if entry is None or not password:
            return None
        key = _fast_hash(f"{name}\0{password}")
        cached = self._verified.get(key)
        if cached is not None:
            return cached
        role, stored = entry
        if not verify_secret(password, stored):
            return None
        user = User(name, role)
        self._verified[key] = user
        return user


def read_users_file(path: Path) -> dict[str, tuple[str, str]]:
    """``name role hash`` lines (``#`` comments); every problem reported at once."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(
            [f"{path}: cannot read the web users file ({exc.strerror or exc})"],
            hint="Create it with lines from `jobsys web-user NAME`.",
        ) from None
    users: dict[str, tuple[str, str]] = {}
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3:
            problems.append(f"{path}:{number}: expected `name role hash`, got {len(parts)} fields")
            continue
        name, role, stored = parts
        if role not in ROLES:
            problems.append(f"{path}:{number}: role {role!r} is not one of {', '.join(ROLES)}")
        elif not stored.startswith("scrypt$"):
            problems.append(f"{path}:{number}: the password must be a hash from `jobsys web-user`")
        else:
            users[name] = (role, stored)
    if problems:
        raise ConfigError(problems, hint="Fix the web users file, then start again.")
    return users


def load_credentials(
    env: Mapping[str, str] | None = None, users_file: Path | None = None
) -> Credentials:
    env = os.environ if env is None else env
    creds = Credentials()
    named: list[str] = []
    for role, var in TOKEN_VARS.items():
        token, name = env.get(var, ""), env.get(f"{var}_NAME", "")
        if name and not token:
            raise UsageError(f"{var}_NAME is set but {var} is not: it names no token.")
        if not token:
            continue
        if len(token) < 16:
            raise UsageError(
                f"{var} is shorter than 16 characters.",
                hint="Use a long random token, e.g. `python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`.",
            )
        if name and not TOKEN_NAME.fullmatch(name):
            raise UsageError(
                f"{var}_NAME {name!r} is not a name: letters, digits, '.', '_', '@', '-',"
                " at most 64, starting with a letter or digit.",
                hint="It is who acts in the audit (web:<name>), e.g. oncall or ci-bot.",
            )
        creds.tokens[_fast_hash(token)] = User(name or TOKEN_USERS[role], role)
        named += [name] if name else []
    path = users_file or (
        Path(env["JOBSYS_WEB_USERS_FILE"]) if env.get("JOBSYS_WEB_USERS_FILE") else None
    )
    if path is not None:
        creds.users = read_users_file(path.expanduser())
    _check_distinct(creds, named)
    return creds


def _check_distinct(creds: Credentials, named: list[str]) -> None:
    """A token named as another way in would read as one person in the audit: refused.
    (Unnamed tokens keep their names, as before, whatever the users file holds.)"""
    names = [user.name for user in creds.tokens.values()]
    for name in named:
        if names.count(name) > 1 or name in creds.users:
            also = "the other token's name" if names.count(name) > 1 else "a user's name"
            raise UsageError(
                f"the web token name {name!r} is also {also}: the audit (web:{name})"
                " could not tell them apart.",
                hint="Give JOBSYS_WEB_TOKEN_NAME / JOBSYS_WEB_READONLY_TOKEN_NAME a name of"
                " their own.",
            )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, creds: Credentials) -> None:
    """Refuse a non-loopback address unless someone must log in (exit 2)."""
    if not is_loopback(host) and not creds.configured:
        raise UsageError(
            f"refusing to serve the web console on {host} without authentication.",
            hint="Set JOBSYS_WEB_TOKEN (and JOBSYS_WEB_READONLY_TOKEN), or a users file "
            "(JOBSYS_WEB_USERS_FILE, lines from `jobsys web-user NAME`); "
            "or bind to 127.0.0.1.",
        )


class LoginLimiter:
    """At most ``rate`` failed logins per client address and per user name (a moving
    window, in this process's memory: one web process is one limit). Over the limit,
    even the right password is refused until the window has room again, so guessing
    is slowed for one address and for one account attacked from many addresses."""

    def __init__(self, rate: str = LOGIN_ATTEMPTS) -> None:
        self.item: RateLimitItem = parse(rate)
        self.limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())

    def _keys(self, client: str, user: str) -> list[tuple[str, str]]:
        return [("client", client), ("user", user)] if user else [("client", client)]

    def wait_seconds(self, client: str, user: str) -> int | None:
        """None when another attempt is allowed; else seconds until one is."""
        blocked = [
            key for key in self._keys(client, user) if not self.limiter.test(self.item, *key)
        ]
        if not blocked:
            return None
        import time

        reset = max(self.limiter.get_window_stats(self.item, *key).reset_time for key in blocked)
        return max(1, int(reset - time.time()) + 1)

    def failed(self, client: str, user: str) -> None:
        for key in self._keys(client, user):
            self.limiter.hit(self.item, *key)
