"""Database URLs: choose one, and print one without its password."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_PASSWORD_KV = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)
#: ``scheme://user:PASSWORD@host`` in a free text: the password runs to the last '@'
#: before the next '/' or space (the end of the URL's user info); every repeat is bounded
#: by a character class, so the scan stays linear in the text.
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s:/@]*:)[^\s/]*@")
_SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]*):")
_CONNINFO = re.compile(r"^\s*[A-Za-z_]+\s*=")
#: URL schemes libpq accepts.
POSTGRES_SCHEMES = ("postgresql", "postgres")
#: Where a database URL comes from, for messages about an unreachable one.
UNREACHABLE_HINT = (
    "Is the server running, and the URL right (--database-url, JOBSYS_DATABASE_URL or "
    "database.url in queues.yaml)?"
)
EXPECTED_FORM = (
    "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE (or postgres://...), "
    "or key=value conninfo such as 'host=HOST dbname=DATABASE user=USER'"
)


def form_problem(url: str) -> str | None:
    """Why ``url`` is not a PostgreSQL connection string, or None when it is one
    (a ``postgresql://``/``postgres://`` URL or a ``key=value`` conninfo). PURE."""
    if _CONNINFO.match(url):
        return None
    scheme = _SCHEME.match(url)
    if scheme is None:
        return "is neither a postgresql:// URL nor a key=value conninfo"
    if scheme.group(1).lower() not in POSTGRES_SCHEMES:
        return f"is a {scheme.group(1)}:// URL, not a PostgreSQL one"
    return None


def mask(url: str | None) -> str:
    """``url`` with any password replaced by ``***`` (URL or key=value conninfo)."""
    if not url:
        return "(none)"
    text = _PASSWORD_KV.sub(r"\1***", url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return "(unparseable database URL)"
    if parts.password is not None and parts.password != "":
        # The user info runs to the netloc's LAST '@' (urlsplit reads it so): an
        # unencoded '@' in the password must not leave the rest of it printed.
        userinfo, _, hostinfo = parts.netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{hostinfo}"
        text = urlunsplit(parts._replace(netloc=netloc))
    return text


def scrub(text: str, *urls: str | None) -> str:
    """Remove the passwords of ``urls`` from a free text (driver messages quote
    conninfo), and any password written in a URL or as ``password=`` in it."""
    for url in urls:
        if not url:
            continue
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password:
            text = text.replace(password, "***")
            # libpq ends the password at its first '@' and reads the rest as the host,
            # which its messages quote ("failed to resolve host 'Pw@127.0.0.1'").
            _, at, rest = password.partition("@")
            if at:
                text = text.replace(f"{rest}@", "***@")
    if "://" in text:
        text = _URL_PASSWORD.sub(r"\1***@", text)
    return _PASSWORD_KV.sub(r"\1***", text)


def with_database(url: str, database: str) -> str:
    """The same server with another database name (query string kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))
