"""systemd unit files rendered from the lane configuration. Pure: no I/O.

By default a template ``jobsys-worker@.service`` whose instance is the lane
(``systemctl enable --now jobsys-worker@base``); with ``per_lane`` one
``jobsys-worker-<lane>.service`` per lane instead. Always a ``jobsys.target`` that
wants every lane, so one host can start them all and ``systemctl restart
jobsys.target`` restarts them together.

Timings come from ``worker`` settings:

- ``TimeoutStopSec`` = ``shutdown_grace_seconds`` + :data:`STOP_MARGIN_SECONDS`, so
  systemd never SIGKILLs a worker that is still inside its grace period;
- ``WatchdogSec`` = 2/3 of ``dead_after_seconds`` (at least
  :data:`MIN_WATCHDOG_SECONDS`): a worker whose event loop hangs is killed and
  restarted before other hosts' reapers take it for dead;
- ``TimeoutStartSec`` = ``startup_wait_seconds`` + :data:`START_MARGIN_SECONDS`
  (``READY=1`` comes once connected and listening).

Restarts: a worker that exits 2 (bad configuration or lane name) is never restarted
(``RestartPreventExitStatus=2``): restarting cannot fix a file. Any other crash loop
stops after :data:`START_LIMIT_BURST` starts within :data:`START_LIMIT_INTERVAL_SECONDS`;
``RestartSec`` is chosen so that the limit is only reached after about
:data:`START_LIMIT_BURST` x :data:`RESTART_SECONDS` of failing starts (a database away
for a few minutes at start does not stop the unit). Recovery: fix the cause, then
``systemctl reset-failed <unit>`` and ``systemctl start <unit>``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from jobsys.config import Config
from jobsys.errors import UsageError

TEMPLATE_UNIT = "jobsys-worker@.service"
TARGET_UNIT = "jobsys.target"
DEFAULT_ENVIRONMENT_FILE = "/etc/jobsys/jobsys.env"
RESTART_SECONDS = 15
#: A unit failing this many starts within the interval stops (state ``failed``).
START_LIMIT_BURST = 20
START_LIMIT_INTERVAL_SECONDS = 600
#: The worker's exit code for a configuration or usage error (never restarted).
CONFIG_ERROR_EXIT = 2
STOP_MARGIN_SECONDS = 30
START_MARGIN_SECONDS = 60
MIN_WATCHDOG_SECONDS = 10

# Paths go into unit files verbatim: no whitespace, quotes, backslashes or controls.
_SAFE_PATH = re.compile(r"^/[^\s\"'\\\x00-\x1f]*$")
_SAFE_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class RenderOptions:
    #: Absolute path of the ``jobsys`` executable the units run.
    exec_path: str
    working_directory: str
    #: Exported as ``JOBSYS_CONFIG_DIR`` so the units run the configuration they came from.
    config_dir: str | None = None
    environment_file: str = DEFAULT_ENVIRONMENT_FILE
    user: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class Unit:
    name: str
    content: str
    #: The lane the unit runs (None for the template and the target).
    lane: str | None = None


def _path(value: str, what: str) -> str:
    if not _SAFE_PATH.match(value):
        raise UsageError(
            f"{what} {value!r} cannot go into a unit file as is",
            hint="Use an absolute path without spaces, quotes or backslashes.",
        )
    return value.replace("%", "%%")  # '%' starts a systemd specifier


def _account(value: str | None, what: str) -> str | None:
    if value is not None and not _SAFE_USER.match(value):
        raise UsageError(f"{what} {value!r} is not a valid user or group name.")
    return value


def timings(config: Config) -> dict[str, int]:
    worker = config.queues.worker
    return {
        "restart_sec": RESTART_SECONDS,
        "start_limit_interval_sec": START_LIMIT_INTERVAL_SECONDS,
        "start_limit_burst": START_LIMIT_BURST,
        "timeout_stop_sec": math.ceil(worker.shutdown_grace_seconds) + STOP_MARGIN_SECONDS,
        "timeout_start_sec": math.ceil(worker.startup_wait_seconds) + START_MARGIN_SECONDS,
        "watchdog_sec": max(MIN_WATCHDOG_SECONDS, math.floor(worker.dead_after_seconds * 2 / 3)),
    }


def _service(
    config: Config,
    options: RenderOptions,
    *,
    lane: str,
    description: str,
    syslog_identifier: str,
    header: list[str],
) -> str:
    t = timings(config)
    exec_path = _path(options.exec_path, "the jobsys executable")
    service = [
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={exec_path} worker --lane {lane} --log-format json",
        f"WorkingDirectory={_path(options.working_directory, 'the working directory')}",
        f"EnvironmentFile=-{_path(options.environment_file, 'the environment file')}",
        "Environment=PYTHONUNBUFFERED=1",
    ]
    if options.config_dir:
        service.append(
            f"Environment=JOBSYS_CONFIG_DIR={_path(options.config_dir, 'the config directory')}"
        )
    if user := _account(options.user, "--user"):
        service.append(f"User={user}")
    if group := _account(options.group, "--group"):
        service.append(f"Group={group}")
    service += [
        "Restart=always",
        f"RestartSec={t['restart_sec']}",
        "# Exit 2 is a configuration or usage error: restarting cannot fix it.",
        f"RestartPreventExitStatus={CONFIG_ERROR_EXIT}",
        f"TimeoutStartSec={t['timeout_start_sec']}",
        "# SIGTERM drains: running jobs get worker.shutdown_grace_seconds "
        f"({config.queues.worker.shutdown_grace_seconds:g} s) to finish.",
        "KillSignal=SIGTERM",
        "# Only the worker gets SIGTERM; children are left to it until the stop timeout.",
        "KillMode=mixed",
        f"TimeoutStopSec={t['timeout_stop_sec']}",
        f"WatchdogSec={t['watchdog_sec']}",
        "StandardOutput=journal",
        "StandardError=journal",
        f"SyslogIdentifier={syslog_identifier}",
        "NoNewPrivileges=yes",
    ]
    lines = [
        *header,
        "",
        "[Unit]",
        f"Description={description}",
        "After=network-online.target",
        "Wants=network-online.target",
        f"PartOf={TARGET_UNIT}",
        f"# A crash loop stops after {t['start_limit_burst']} starts in "
        f"{t['start_limit_interval_sec']} s (about "
        f"{t['start_limit_burst'] * t['restart_sec'] // 60} min of failing starts).",
        "# Recover: fix the cause (`jobsys config check`, `journalctl -u <unit>`), then",
        "#   systemctl reset-failed <unit> && systemctl start <unit>",
        f"StartLimitIntervalSec={t['start_limit_interval_sec']}",
        f"StartLimitBurst={t['start_limit_burst']}",
        "",
        "[Service]",
        *service,
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def _header(config: Config, first: str) -> list[str]:
    where = f"{config.directory}/queues.yaml"
    return [
        f"# {first}",
        f"# Generated by `jobsys systemd render` from {where}; re-render when lanes change.",
    ]


def worker_unit_name(lane: str, *, per_lane: bool) -> str:
    return f"jobsys-worker-{lane}.service" if per_lane else f"jobsys-worker@{lane}.service"


def render(config: Config, options: RenderOptions, *, per_lane: bool = False) -> list[Unit]:
    """The unit files for every lane of ``config``."""
    units: list[Unit] = []
    if per_lane:
        for name, lane in config.lanes.items():
            units.append(
                Unit(
                    name=worker_unit_name(name, per_lane=True),
                    lane=name,
                    content=_service(
                        config,
                        options,
                        lane=name,
                        description=f"jobsys worker, lane {name} ({', '.join(lane.queues)})",
                        syslog_identifier=f"jobsys-worker-{name}",
                        header=_header(config, f"jobsys worker for lane {name}."),
                    ),
                )
            )
    else:
        enable = " ".join(worker_unit_name(n, per_lane=False) for n in config.lanes)
        header = [
            *_header(config, "jobsys worker; the instance name is the lane."),
            f"# Lanes: {', '.join(config.lanes)}.",
            f"#   systemctl enable --now {enable}",
        ]
        units.append(
            Unit(
                name=TEMPLATE_UNIT,
                content=_service(
                    config,
                    options,
                    lane="%i",
                    description="jobsys worker, lane %i",
                    syslog_identifier="jobsys-worker-%i",
                    header=header,
                ),
            )
        )
    wants = " ".join(worker_unit_name(n, per_lane=per_lane) for n in config.lanes)
    target = [
        *_header(config, "Every jobsys lane on this host: systemctl enable --now jobsys.target"),
        "",
        "[Unit]",
        "Description=jobsys workers (every lane)",
        f"Wants={wants}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    units.append(Unit(name=TARGET_UNIT, content="\n".join(target) + "\n"))
    return units
