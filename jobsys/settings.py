"""Process settings read from the environment (``JOBSYS_*``), resolved once.

Settings say *where* things are (database, home, config, application modules);
``jobsys.config`` says *what* the system is (lanes, schedule, policies).
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_HOME_DIRNAME = ".jobsys"
DEFAULT_CONFIG_DIRNAME = "config"


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    home: Path = field(default_factory=lambda: Path.cwd() / DEFAULT_HOME_DIRNAME)
    config_dir: Path = field(default_factory=lambda: Path.cwd() / DEFAULT_CONFIG_DIRNAME)
    app_modules: tuple[str, ...] = ()
    operator: str = "unknown"
    debug: bool = False
    #: Where ``database_url`` came from (``flag``, ``env``; None: not set), and whether
    #: ``config_dir`` was given (``flag``, ``env``) or is the ``default``: renderers and
    #: ``config show`` tell the operator what is in effect and why.
    database_url_source: str | None = None
    config_dir_source: str = "default"

    def with_overrides(
        self,
        *,
        database_url: str | None = None,
        config_dir: Path | None = None,
        app_modules: tuple[str, ...] | None = None,
        debug: bool | None = None,
        database_url_source: str = "flag",
        config_dir_source: str = "flag",
    ) -> Settings:
        return replace(
            self,
            database_url=database_url or self.database_url,
            database_url_source=database_url_source if database_url else self.database_url_source,
            config_dir=config_dir or self.config_dir,
            config_dir_source=config_dir_source if config_dir else self.config_dir_source,
            app_modules=app_modules if app_modules else self.app_modules,
            debug=self.debug if debug is None else debug,
        )


def _operator_name(env: dict[str, str]) -> str:
    for key in ("JOBSYS_OPERATOR", "SUDO_USER", "USER", "LOGNAME"):
        if env.get(key):
            return env[key]
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


def split_modules(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip())


def from_env(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    home = env.get("JOBSYS_HOME")
    config_dir = env.get("JOBSYS_CONFIG_DIR")
    return Settings(
        database_url=env.get("JOBSYS_DATABASE_URL") or None,
        database_url_source="env" if env.get("JOBSYS_DATABASE_URL") else None,
        config_dir_source="env" if config_dir else "default",
        home=Path(home).expanduser().resolve() if home else Path.cwd() / DEFAULT_HOME_DIRNAME,
        config_dir=(
            Path(config_dir).expanduser().resolve()
            if config_dir
            else Path.cwd() / DEFAULT_CONFIG_DIRNAME
        ),
        app_modules=split_modules(env.get("JOBSYS_APP")),
        operator=_operator_name(env),
        debug=env.get("JOBSYS_DEBUG", "") not in ("", "0", "false"),
    )
