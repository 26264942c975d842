"""`moodgate install-service`: the system user, the unit, /etc/moodgate, and what to do next.

Every change goes through one Plan, so `--dry-run` prints exactly what a real run would do
and `--root DIR` does it under DIR (tests, image builds) without touching this system.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from moodgate.emotion.registry import default_model_dir

CHECKOUT = Path(__file__).resolve().parents[2]
UNIT_TEMPLATE = CHECKOUT / "systemd" / "moodgate.service"
EXAMPLES = CHECKOUT / "policies"
USER = "moodgate"
CONFIG_DIR = Path("/etc/moodgate")
STATE_DIR = Path("/var/lib/moodgate")
UNIT_DIR = Path("/etc/systemd/system")
# ProtectHome=yes hides these from the service: a moodgate installed there cannot start.
HIDDEN_BY_PROTECT_HOME = (Path("/home"), Path("/root"), Path("/run/user"))


class InstallError(RuntimeError):
    """The installation cannot go ahead; the message says why in one line."""


@dataclass
class Plan:
    """The steps of one installation, each a line to show and an action to run."""

    root: Path
    dry_run: bool
    lines: list[str] = field(default_factory=list)

    def path(self, absolute: Path) -> Path:
        return self.root / absolute.relative_to("/")

    def write(self, target: Path, text: str, mode: int, keep_existing: bool = False) -> None:
        real = self.path(target)
        if keep_existing and real.exists():
            self.lines.append(f"keep   {target} (exists)")
            return
        self.lines.append(f"write  {target} (mode {mode:04o})")
        if self.dry_run:
            return
        real.parent.mkdir(parents=True, exist_ok=True)
        temporary = real.with_name(f".{real.name}.tmp")
        temporary.write_text(text, encoding="utf-8")
        temporary.chmod(mode)
        temporary.replace(real)

    def run(self, command: list[str], why: str) -> None:
        self.lines.append(f"run    {' '.join(command)}  # {why}")
        if self.dry_run:
            return
        try:
            subprocess.run(command, check=True, capture_output=True, text=True)
        except FileNotFoundError as exc:
            raise InstallError(f"{command[0]} is not installed: {exc}") from exc
        except subprocess.CalledProcessError as exc:
            raise InstallError(f"{' '.join(command)} failed: {exc.stderr.strip()}") from exc

    def note(self, text: str) -> None:
        self.lines.append(f"note   {text}")


def render_unit(template: str, executable: Path) -> str:
    """The shipped unit with ExecStart= pointing at this moodgate."""
    line = f"ExecStart={executable} serve --config {CONFIG_DIR / 'moodgate.yaml'}"
    rendered, count = re.subn(r"^ExecStart=.*$", line, template, count=1, flags=re.MULTILINE)
    if count != 1:
        raise InstallError("the unit template has no ExecStart= line")
    return rendered


def default_executable() -> Path:
    found = shutil.which("moodgate") or shutil.which(Path(sys.argv[0]).name) or sys.argv[0]
    return Path(found).absolute()


def config_text(model_dir: Path, listen: str) -> str:
    host, _, port = listen.rpartition(":")
    return f"""\
# moodgate settings (see README.md). Restart after a change: systemctl restart moodgate
# Listen on the LAN address the children's devices use as their proxy, e.g. 192.168.1.2.
# moodgate refuses a public address unless allow_public: true and proxyauth are both set.
listen_host: {host}
listen_port: {port}
policy: {CONFIG_DIR / "policy.yaml"}
model_dir: {model_dir}
# Per-child proxy logins (the user name picks the child); create with htpasswd -c -B or -5.
# proxyauth: "@{CONFIG_DIR / "htpasswd"}"
# allow_public: false
"""


class ServiceInstaller:
    """Creates the user, installs the unit and an example policy, and says what is next."""

    def __init__(
        self,
        root: Path = Path("/"),
        dry_run: bool = False,
        executable: Path | None = None,
        listen: str = "127.0.0.1:8080",
        create_user: bool = True,
    ) -> None:
        self.plan = Plan(root, dry_run)
        self.executable = executable or default_executable()
        self.listen = listen
        self.create_user = create_user

    def check(self) -> None:
        if not UNIT_TEMPLATE.exists():
            raise InstallError(f"the unit template {UNIT_TEMPLATE} is missing from this checkout")
        for hidden in HIDDEN_BY_PROTECT_HOME:
            if self.executable.is_relative_to(hidden):
                raise InstallError(
                    f"{self.executable} is under {hidden}, which the service cannot see "
                    "(ProtectHome=yes): install moodgate under /opt, e.g. "
                    "git clone … /opt/moodgate && /opt/moodgate/run serve --help"
                )
        real_root = self.plan.root.resolve() == Path("/")
        if real_root and not self.plan.dry_run and os.geteuid() != 0:
            raise InstallError("installing the service needs root: run it with sudo")

    def install(self) -> list[str]:
        self.check()
        plan = self.plan
        self._user()
        unit = render_unit(UNIT_TEMPLATE.read_text(encoding="utf-8"), self.executable)
        plan.write(UNIT_DIR / "moodgate.service", unit, 0o644)
        plan.write(CONFIG_DIR / "moodgate.yaml", config_text(default_model_dir(), self.listen),
                   0o644, keep_existing=True)  # fmt: skip
        default = resources.files("moodgate").joinpath("data/default-policy.yaml")
        plan.write(CONFIG_DIR / "policy.yaml", default.read_text(encoding="utf-8"), 0o644,
                   keep_existing=True)  # fmt: skip
        if EXAMPLES.is_dir():
            for example in sorted(EXAMPLES.glob("*.yaml")) + sorted(EXAMPLES.glob("*.json")):
                plan.write(CONFIG_DIR / "examples" / example.name,
                           example.read_text(encoding="utf-8"), 0o644)  # fmt: skip
        return plan.lines

    def _user(self) -> None:
        plan = self.plan
        if not self.create_user:
            plan.note(f"user {USER} not created (--no-user)")
            return
        command = [
            "useradd", "--system", "--user-group", "--home-dir", str(STATE_DIR),
            "--no-create-home", "--shell", "/usr/sbin/nologin",
            "--comment", "moodgate content filter", USER,
        ]  # fmt: skip
        if plan.root.resolve() != Path("/"):
            if not plan.path(Path("/etc/passwd")).exists():
                plan.note(f"user {USER} not created: {plan.root} has no etc/passwd")
                return
            command[1:1] = ["--root", str(plan.root.resolve())]
        if _user_exists(plan.path(Path("/etc/passwd"))):
            plan.lines.append(f"keep   user {USER} (exists)")
            return
        plan.run(command, "the unprivileged user the service runs as")

    def next_steps(self) -> list[str]:
        return [
            "Next steps:",
            f"  1. Edit {CONFIG_DIR / 'moodgate.yaml'}: listen_host = this box's LAN address.",
            f"  2. Edit {CONFIG_DIR / 'policy.yaml'} (examples in {CONFIG_DIR / 'examples'}),",
            f"     then check it: moodgate policy check {CONFIG_DIR / 'policy.yaml'}",
            "  3. systemctl daemon-reload && systemctl enable --now moodgate",
            f"  4. moodgate status --state-dir {STATE_DIR}    (health, scorer, policy, queue)",
            "  5. journalctl -u moodgate -f                (one line per decision)",
            "  6. On each child's device: set the Wi-Fi proxy to this box and install the CA",
            "     from http://mitm.it (README.md, 'Pointing a device at the proxy').",
            "  After editing the policy: moodgate reload (or systemctl reload moodgate).",
        ]


def _user_exists(passwd: Path) -> bool:
    try:
        return any(line.split(":", 1)[0] == USER for line in passwd.read_text().splitlines())
    except OSError:
        return False
