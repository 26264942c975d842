"""`moodgate install-service`, `moodgate reload`, `moodgate status`: the service's commands."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import click

from moodgate.config import ConfigError, Settings, load_settings
from moodgate.install import STATE_DIR, InstallError, ServiceInstaller
from moodgate.runtime.status import runtime_status, runtime_status_lines
from moodgate.service import PidFile
from moodgate.status import STATUS_FILE, StatusReport, format_report


def _state_dir(config: Path | None, state_dir: Path | None) -> Settings:
    """The settings whose state dir to look in: given, else this user's, else the service's."""
    try:
        settings = load_settings(config, state_dir=state_dir)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    mine, service = settings.state_dir / STATUS_FILE, STATE_DIR / STATUS_FILE
    if state_dir is None and not mine.exists() and service.exists():
        settings = settings.merged({"state_dir": STATE_DIR})  # an admin asking about the service
    return settings


@click.command("install-service")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("/"),
              show_default=True, help="Install under this directory instead of /.")
@click.option("--dry-run", is_flag=True, help="Print what would be done; change nothing.")
@click.option("--listen", default="127.0.0.1:8080", show_default=True,
              help="listen_host:listen_port written to a new /etc/moodgate/moodgate.yaml.")
@click.option("--executable", type=click.Path(dir_okay=False, path_type=Path),
              help="The moodgate the unit runs [this one].")
@click.option("--no-user", is_flag=True, help="Do not create the moodgate system user.")
def install_service(
    root: Path, dry_run: bool, listen: str, executable: Path | None, no_user: bool
) -> None:
    """Install moodgate as a hardened systemd service (user, unit, /etc/moodgate)."""
    installer = ServiceInstaller(root, dry_run, executable, listen, create_user=not no_user)
    try:
        lines = installer.install()
    except (InstallError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    if dry_run:
        click.echo("dry run: nothing was changed")
    for line in lines:
        click.echo(line)
    click.echo()
    for line in installer.next_steps():
        click.echo(line)


@click.command("reload")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--systemd", "use_systemd", is_flag=True, help="Use systemctl reload moodgate.")
def reload_command(config: Path | None, state_dir: Path | None, use_systemd: bool) -> None:
    """Make the running daemon re-read its policy now (SIGHUP)."""
    settings = _state_dir(config, state_dir)
    pid = None if use_systemd else PidFile(settings.state_dir).read()
    if pid is not None and not _is_moodgate(pid):
        # A stale pid file after a crash: that pid may belong to something else by now.
        raise click.ClickException(
            f"pid {pid} in {settings.state_dir / 'moodgate.pid'} is not a running moodgate"
        )
    if pid is not None:
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            raise click.ClickException(
                f"no moodgate with pid {pid} (stale {settings.state_dir / 'moodgate.pid'})"
            ) from None
        except PermissionError:
            raise click.ClickException(
                f"not allowed to signal pid {pid}: run as root or as the moodgate user"
            ) from None
        click.echo(f"sent SIGHUP to moodgate (pid {pid})")
        return
    if shutil.which("systemctl") is None:
        raise click.ClickException(
            f"moodgate is not running (no pid file in {settings.state_dir}) and there is no "
            "systemctl"
        )
    result = subprocess.run(["systemctl", "reload", "moodgate"], capture_output=True, text=True)
    if result.returncode:
        raise click.ClickException(f"systemctl reload moodgate: {result.stderr.strip()}")
    click.echo("systemctl reload moodgate: done")


def _is_moodgate(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"moodgate" in command


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path))
def status_command(as_json: bool, config: Path | None, state_dir: Path | None) -> None:
    """Health of the running daemon. Exit 0: healthy, 1: degraded, 3: not running."""
    settings = _state_dir(config, state_dir)
    report = StatusReport(settings.state_dir, settings.database).collect()
    budget = settings.latency_budget_ms
    if as_json:
        report["slices"] = runtime_status(settings.state_dir, budget, report)
        click.echo(json.dumps(report, sort_keys=True))
    else:
        for line in format_report(report):
            click.echo(line)
        for line in runtime_status_lines(settings.state_dir, budget, report):
            click.echo(line)
    sys.exit(0 if report["healthy"] else 1 if report["running"] else 3)
