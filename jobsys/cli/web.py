"""``jobsys web``: the operator console in a browser (dashboard, failures, jobs, issues)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jobsys.cli._context import settings


def web(
    ctx: typer.Context,
    host: Annotated[
        str,
        typer.Option("--host", help="Address to listen on (other than loopback: needs a login)."),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port (0: any free one).")
    ] = 8080,
    users_file: Annotated[
        Path | None,
        typer.Option(
            "--users-file",
            envvar="JOBSYS_WEB_USERS_FILE",
            help="Users, one `name role hash` a line (see `jobsys web-user`).",
        ),
    ] = None,
    secure_cookies: Annotated[
        bool,
        typer.Option(
            "--secure-cookies",
            help="Mark the session cookie Secure (served behind TLS); "
            "also JOBSYS_WEB_SECURE_COOKIES=1.",
        ),
    ] = False,
    trust_proxy: Annotated[
        bool,
        typer.Option(
            "--trust-proxy",
            help="Believe X-Forwarded-Proto/-For from a reverse proxy (Secure cookie on "
            "https, login limit per real client); only when the proxy alone reaches the "
            "console. Also JOBSYS_WEB_TRUST_PROXY=1.",
        ),
    ] = False,
) -> None:
    """Serve the web console until Ctrl-C (default http://127.0.0.1:8080/admin/background_jobs).

    Logins: JOBSYS_WEB_TOKEN (admin) and JOBSYS_WEB_READONLY_TOKEN (read-only), each
    named for the audit by JOBSYS_WEB_TOKEN_NAME / JOBSYS_WEB_READONLY_TOKEN_NAME
    (web:<name>; default web:token), or a users file. Without any, only a loopback
    address is served.
    """
    from jobsys.cli import _output
    from jobsys.cli._pipe import serving
    from jobsys.web.server import prepare, run_foreground

    serving()  # its output is logs (uvicorn's access log on stdout): never a reason to stop

    web_app, sock, url = prepare(
        settings(ctx),
        host,
        port,
        users_file,
        secure_cookies=secure_cookies,
        trust_proxy=trust_proxy,
    )
    _output.say(f"jobsys web console: {url} (Ctrl-C to stop)")
    run_foreground(web_app, sock)


def web_user(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The user's login name.")],
    role: Annotated[str, typer.Option("--role", help="admin or read-only.")] = "admin",
) -> None:
    """Ask for a password and print the users-file line for it (only the hash is kept)."""
    from jobsys.cli import _output
    from jobsys.errors import UsageError
    from jobsys.web.auth import ROLES, hash_secret

    if role not in ROLES:
        raise UsageError(f"--role {role!r} is not one of {', '.join(ROLES)}.")
    if not name or any(c.isspace() for c in name):
        raise UsageError("NAME must be non-empty and without spaces.")
    password = typer.prompt("password", hide_input=True, confirmation_prompt=True, err=True)
    if len(password) < 8:
        raise UsageError("the password is shorter than 8 characters.")
    _output.print_text(f"{name} {role} {hash_secret(password)}")
