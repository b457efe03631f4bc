"""The attack harness's laboratory: a gateway set up as an administrator would, and its neighbours.

Takes a checkout (its `gateway/` and `config.toml`); produces a running daemon on temporary
state with senders, schools and pupils registered, the schools' mail servers and the relay,
and the means to attack it. Nothing here imports the gateway: the daemon and every
administrator verb run as separate processes (`PYTHONPATH=REPO python -m gateway ...`, with the
Python running the harness), keys are made with the gpg command line in throwaway homes, the
school servers and the relay are small aiosmtpd servers with STARTTLS and a CA of their own,
and the SMTP client writes raw bytes on a socket. Loopback (127.0.0.1) only. A missing tool
(gpg, gpgconf, openssl) or a set-up step the checkout refuses raises `RuntimeError` with one
line saying which.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab_mail import (
    CONTACTS,
    GATEWAY,
    OTHER_SENDERS,
    PASSWORD,
    PLAINTEXT_SCHOOLS,
    SCHOOL_NAMES,
    SENDER,
    SENDER_ADDRESS,
    Party,
    build_signal,
    gpg,
    json_entity,
    pupils,
    stop_agent,
)
from lab_smtp import (
    HOST,
    FakeServer,
    Raw,
    Reply,
    ServerThread,
    auth_plain_line,
    dot_stuff,
    free_port,
    make_school_ca,
)

# The daemon and the verbs run with the interpreter running the harness (the project's .venv
# under `make attack`), so that they find the same aiosmtpd, python-gnupg, ... as the tests.
PY = sys.executable


# -- the gateway under test -----------------------------------------------------------------


def set_key(text: str, section: str, key: str, value: str) -> str:
    """Set `key = value` in `[section]` of a TOML text, keeping everything else as it is."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == f"[{section}]"), None)
    if start is None:
        return text.rstrip("\n") + f"\n\n[{section}]\n{key} = {value}\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")),
               len(lines))
    for i in range(start + 1, end):
        if re.match(rf"\s*{re.escape(key)}\s*=", lines[i]):
            lines[i] = f"{key} = {value}"
            return "\n".join(lines) + "\n"
    lines.insert(start + 1, f"{key} = {value}")
    return "\n".join(lines) + "\n"


def toml_str(value: str | Path) -> str:
    return json.dumps(str(value))


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


class Lab:
    """A gateway in a temp directory, set up from its README, and its neighbours."""

    def __init__(self, repo: Path, keep: bool = False) -> None:
        self.repo = repo
        self.keep = keep
        self.base = Path(tempfile.mkdtemp(prefix="hwc-attack-"))
        self.base.chmod(0o700)
        self.port = free_port()
        self.config = self.base / "config.toml"
        self.keys = self.base / "keys"
        self.db = self.base / "var" / "hwc-gateway.sqlite3"
        self.log = self.base / "gateway.log"
        self.daemon: Daemon | None = None
        self.servers: ServerThread | None = None
        self.homes: list[Path] = []
        self.cli_log: list[str] = []
        self.gateway_fpr = ""
        self.canaries: set[str] = set()
        self.web: Any = None  # lab_web.Web once [web] is on (the first web attack)

    # -- processes

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("HWC_GATEWAY_CONFIG",)}
        env.update({"PYTHONPATH": str(self.repo), "PYTHONUNBUFFERED": "1",
                    "TMPDIR": str(self.base / "tmp")})
        env.update(extra or {})
        return env

    def cli(self, *args: str, stdin: bytes = b"", config: Path | None = None,
            env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, str, str]:
        cmd = [PY, "-m", "gateway", "--config", str(config or self.config), *args]
        proc = subprocess.run(cmd, input=stdin, capture_output=True, env=self.env(env),
                              timeout=timeout, check=False)
        out = proc.stdout.decode("utf-8", "surrogateescape")
        err = proc.stderr.decode("utf-8", "surrogateescape")
        self.cli_log.append(f"$ hwc-gateway {' '.join(args)} -> {proc.returncode}")
        return proc.returncode, out, err

    def must(self, *args: str, stdin: bytes = b"") -> str:
        rc, out, err = self.cli(*args, stdin=stdin)
        if rc != 0:
            raise RuntimeError(f"hwc-gateway {' '.join(args)} exited {rc}: {err.strip()[-500:]}")
        return out

    def start_daemon(self, wait: float = 60) -> Daemon:
        out = self.log.open("ab")
        proc = subprocess.Popen([PY, "-m", "gateway", "--config", str(self.config), "serve"],
                                stdout=out, stderr=subprocess.STDOUT, env=self.env())
        out.close()
        self.daemon = Daemon(proc, self.log)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited {proc.returncode}: "
                                   + self.log.read_text(errors="replace")[-1500:])
            try:
                with socket.create_connection((HOST, self.port), timeout=2) as s:
                    s.settimeout(5)
                    if s.recv(100).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return self.daemon
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the daemon did not start listening")

    def stop_daemon(self) -> int | None:
        if self.daemon is None:
            return None
        proc = self.daemon.proc
        self.daemon = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait(timeout=10)
        return proc.returncode

    def restart_daemon(self) -> None:
        self.stop_daemon()
        self.start_daemon()

    def proc_status(self, field_name: str) -> int:
        """A field of /proc/PID/status of the daemon, in kB (0 if gone)."""
        if self.daemon is None:
            return 0
        try:
            text = Path(f"/proc/{self.daemon.pid}/status").read_text()
        except OSError:
            return 0
        m = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.MULTILINE)
        return int(m.group(1)) if m else 0

    # -- set-up, as README "For the administrator" says

    def setup(self) -> None:
        (self.base / "tmp").mkdir(mode=0o700)
        ca, cert, key = make_school_ca(self.base / "school-tls")
        self.school_ca = ca
        self.servers = ServerThread(cert, key)
        self.inbox = {code: self.servers.add(FakeServer(code), tls=code not in PLAINTEXT_SCHOOLS)
                      for code in CONTACTS}
        self.relay = self.servers.add(FakeServer("relay"))

        text = (self.repo / "config.toml").read_text()
        for section, k, v in [
            ("smtp", "listen", toml_str(f"{HOST}:{self.port}")),
            ("smtp", "tls_cert", toml_str(self.keys / "tls" / "server.pem")),
            ("smtp", "tls_key", toml_str(self.keys / "tls" / "server.key")),
            ("delivery", "relay", toml_str(f"{HOST}:{self.relay.port}")),
            ("delivery", "ca_file", toml_str(ca)),
            ("delivery", "retry_min_seconds", "2"),
            ("delivery", "retry_max_seconds", "4"),
            ("delivery", "timeout_seconds", "10"),
            ("storage", "path", toml_str(self.db)),
            ("keys", "dir", toml_str(self.keys)),
            ("metrics", "listen", '""'),
        ]:
            text = set_key(text, section, k, v)
        self.config.write_text(text)
        self.must("check-config")
        self.must("keys", "init")
        gateway_public = self.must("keys", "export").encode()
        (self.base / "gateway.asc").write_bytes(gateway_public)
        self.register(gateway_public)

    def register(self, gateway_public: bytes) -> None:
        """Senders, schools and pupils with keys of their own, added as an administrator would."""
        people = self.base / "people"
        self.sender = Party.create(people / "sender", f"Veilig Thuis Utrecht <{SENDER_ADDRESS}>",
                                   rsa=True)
        self.others = {name: Party.create(people / name, f"{name} <{addr}>")
                       for name, addr in OTHER_SENDERS.items()}
        self.schools = {code: Party.create(people / code, f"{SCHOOL_NAMES[code]} <{addr}>")
                        for code, addr in CONTACTS.items()}
        self.homes = [self.sender.home, *(p.home for p in self.others.values()),
                      *(p.home for p in self.schools.values())]
        for party in [self.sender, *self.others.values(), *self.schools.values()]:
            party.import_key(gateway_public)  # senders encrypt to it, schools verify with it
        shown = gpg(self.sender.home, "--with-colons", "--list-keys").decode()
        fprs = [line.split(":")[9] for line in shown.splitlines() if line.startswith("fpr:")]
        pubs = [line for line in shown.splitlines() if line.startswith("pub:")]
        # The gateway's key is the one whose user ID is not ours.
        listing = gpg(self.sender.home, "--with-colons", "--list-keys", GATEWAY).decode()
        self.gateway_fpr = next(line.split(":")[9] for line in listing.splitlines()
                                if line.startswith("fpr:"))
        assert self.gateway_fpr in fprs and len(pubs) == 2, "gateway key not found"

        def keyfile(party: Party, name: str) -> Path:
            path = self.base / f"{name}.asc"
            path.write_bytes(party.public())
            return path

        self.must("senders", "add", SENDER, "--key", str(keyfile(self.sender, SENDER)),
                  "--fingerprint", self.sender.fpr, "--allow-from", SENDER_ADDRESS,
                  "--password-stdin", stdin=(PASSWORD + "\n").encode())
        for name, addr in OTHER_SENDERS.items():
            self.must("senders", "add", name, "--key", str(keyfile(self.others[name], name)),
                      "--fingerprint", self.others[name].fpr, "--allow-from", addr,
                      "--password-stdin", stdin=(PASSWORD + name + "\n").encode())
        for code, addr in CONTACTS.items():
            self.must("schools", "add", code, "--name", SCHOOL_NAMES[code], "--email", addr,
                      "--key", str(keyfile(self.schools[code], code)), "--fingerprint",
                      self.schools[code].fpr, "--route", f"{HOST}:{self.inbox[code].port}")

        self.pupils = pupils()
        csv = "bsn;naam;geboortedatum;vestigingscode\n" + "".join(
            f"{b};{n};{d:%d-%m-%Y};{s}\n" for b, n, d, s in self.pupils)
        (self.base / "leerlingen.csv").write_text(csv)
        self.must("pupils", "import", str(self.base / "leerlingen.csv"))
        for b, n, d, _ in self.pupils:
            self.add_canary(n, d, b)

    def pupil(self, name: str) -> dict[str, str]:
        b, n, d, _ = next(p for p in self.pupils if p[1] == name)
        child = {"name": n, "birthdate": d.isoformat()}
        if b:
            child["bsn"] = b
        return child

    def add_canary(self, name: str, birthdate: dt.date | None = None, bsn: str = "") -> None:
        for part in name.split():
            if len(part) > 3:
                self.canaries.add(part)
        if birthdate:
            self.canaries.update({birthdate.isoformat(), f"{birthdate:%d-%m-%Y}"})
        if bsn:
            self.canaries.add(bsn)

    # -- sending

    @property
    def gw_ca(self) -> Path:
        return self.keys / "tls" / "ca.pem"

    def session(self, user: str | None = SENDER, password: str | None = PASSWORD,
                timeout: float = 30) -> tuple[Raw, Reply]:
        """Connected, EHLO, STARTTLS, EHLO, and AUTH PLAIN when a user is given."""
        c = Raw(self.port, timeout=timeout)
        if c.greeting is None or c.greeting.code != 220:
            return c, c.greeting or Reply(-1, "no greeting")
        c.cmd("EHLO sender.example")
        r = c.starttls(self.gw_ca)
        if r.code != 220:
            return c, r
        r = c.cmd("EHLO sender.example")
        if user is not None and password is not None:
            r = c.cmd(auth_plain_line(user, password))
        return c, r

    def submit(self, message: bytes, *, user: str = SENDER, password: str = PASSWORD,
               mail_from: str = SENDER_ADDRESS, rcpt: str = GATEWAY,
               timeout: float = 90) -> Reply:
        c, r = self.session(user, password, timeout=timeout)
        try:
            if r.code != 235:
                return r
            for line in (f"MAIL FROM:<{mail_from}>", f"RCPT TO:<{rcpt}>"):
                r = c.cmd(line)
                if r.code >= 400 or r.code < 0:
                    return r
            r = c.cmd("DATA")
            if r.code != 354:
                return r
            c.send(dot_stuff(message) + (b"" if message.endswith(b"\r\n") else b"\r\n")
                   + b".\r\n")
            r = c.reply()
            c.cmd("QUIT", timeout=5)
            return r
        finally:
            c.close()

    def signal(self, body: dict[str, Any] | str | bytes, **kwargs: Any) -> bytes:
        return build_signal(json_entity(body), self.sender, self.gateway_fpr, **kwargs)

    # -- looking at the state through the administrator's verbs

    def cli_json(self, *args: str) -> Any:
        rc, out, err = self.cli(*args, "--json")
        try:
            return json.loads(out)
        except ValueError:
            raise RuntimeError(f"{' '.join(args)} --json exited {rc}: {err[-300:]}") from None

    def receipts(self) -> list[dict[str, Any]]:
        return list(self.cli_json("receipts", "list"))

    def wait_for(self, what: Any, timeout: float, step: float = 0.5) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = what()
            if value or time.monotonic() > deadline:
                return value
            time.sleep(step)

    # -- the end

    def close(self) -> None:
        try:
            self.stop_daemon()
        finally:
            if self.servers is not None:
                self.servers.stop()
            for home in [*self.homes, self.keys / "gnupg", *self.extra_homes()]:
                if home.exists():
                    stop_agent(home)
            if not self.keep:
                shutil.rmtree(self.base, ignore_errors=True)

    def extra_homes(self) -> list[Path]:
        return [p / "gnupg" for p in self.base.glob("keys-*") if (p / "gnupg").exists()]


def log_events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            value = {"event": "(not JSON)", "raw": line}
        if isinstance(value, dict):
            events.append(value)
    return events


def now_s() -> float:
    return time.monotonic()

