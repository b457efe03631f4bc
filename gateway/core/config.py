"""Configuration: `config.toml` parsed once into frozen dataclasses.

Takes the path of a TOML file; produces a `Config`. Validation is strict (SPEC §8): an unknown key,
a missing required key or a value of the wrong type or shape is a `ConfigError` listing every
problem with its key path, so `check-config` can report them all at once. Relative paths are
resolved against the directory of the config file, never the working directory.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import tomllib
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from gateway.core.validate import HostPort as HostPort
from gateway.core.validate import is_address, parse_hostport

DEFAULT_TEACHER_TEXT = (
    "Dit kind heeft een ingrijpende gebeurtenis meegemaakt. U hoeft niets te vragen of te doen;\n"
    "wees er vandaag extra voor het kind en zorg voor een veilige, voorspelbare dag.\n"
    "Dit bericht is vertrouwelijk: deel het alleen met wie het voor het kind moet weten."
)


class ConfigError(Exception):
    """Every problem found in one configuration file, each as `key.path: what is wrong`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class GatewaySection:
    address: str
    teacher_text: str = DEFAULT_TEACHER_TEXT


@dataclass(frozen=True)
class SmtpSection:
    listen: HostPort
    tls_cert: Path
    tls_key: Path
    # The SMTP greeting and EHLO reply of the listener, and the EHLO name given to every
    # school server and relay. Default: this host's fully qualified name (issue 12).
    hostname: str = field(default_factory=socket.getfqdn)
    require_tls: bool = True
    max_message_bytes: int = 1048576
    timeout_seconds: int = 60
    max_sessions: int = 100
    max_sessions_per_client: int = 10
    client_ca_file: Path | None = None
    shutdown_grace_seconds: int = 30
    max_session_seconds: int = 600
    max_stalling_commands: int = 10
    max_refusals_per_client: int = 10
    refusal_block_seconds: int = 900


@dataclass(frozen=True)
class DeliverySection:
    relay: HostPort | None = None
    ca_file: Path | None = None
    require_tls: bool = True
    retry_min_seconds: int = 60
    retry_max_seconds: int = 1800
    give_up_after_hours: int = 48
    timeout_seconds: int = 60


@dataclass(frozen=True)
class StorageSection:
    path: Path


@dataclass(frozen=True)
class KeysSection:
    dir: Path
    gpg_binary: str = "gpg"
    gpg_timeout_seconds: int = 30
    passphrase_file: Path | None = None
    allow_no_passphrase: bool = False


@dataclass(frozen=True)
class ScheduleSection:
    timezone: str = "Europe/Amsterdam"
    school_day_start: dt.time = dt.time(8, 30)
    escalate_before_minutes: int = 60
    holidays: tuple[tuple[dt.date, dt.date], ...] = ()
    holidays_file: Path | None = None
    region: str = ""


@dataclass(frozen=True)
class AlertsSection:
    address: str = ""
    key: str = ""


@dataclass(frozen=True)
class RetentionSection:
    receipts_days: int = 730
    held_days: int = 14


@dataclass(frozen=True)
class MetricsSection:
    listen: HostPort | None = None


@dataclass(frozen=True)
class Config:
    path: Path
    gateway: GatewaySection
    smtp: SmtpSection
    delivery: DeliverySection
    storage: StorageSection
    keys: KeysSection
    schedule: ScheduleSection
    alerts: AlertsSection
    retention: RetentionSection
    metrics: MetricsSection

    @property
    def gnupg_home(self) -> Path:
        return self.keys.dir / "gnupg"

    @property
    def secrets_dir(self) -> Path:
        return self.keys.dir / "secrets"


T = TypeVar("T")


class _Reader:
    """Collects problems instead of stopping at the first, so an operator fixes them in one go."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.problems: list[str] = []

    def section(self, doc: dict[str, Any], name: str, cls: type[Any]) -> dict[str, Any]:
        raw = doc.get(name, {})
        if not isinstance(raw, dict):
            self.problems.append(f"{name}: must be a table")
            return {}
        allowed = {f.name for f in fields(cls)}
        for key in raw:
            if key not in allowed:
                self.problems.append(f"{name}.{key}: unknown key")
        return raw

    def get(
        self,
        table: dict[str, Any],
        path: str,
        kind: type[T],
        default: T | None = None,
        check: Callable[[T], str | None] | None = None,
    ) -> T:
        key = path.rsplit(".", 1)[-1]
        if key not in table:
            if default is None:
                self.problems.append(f"{path}: missing")
            return default  # type: ignore[return-value]
        value = table[key]
        # bool is an int in Python; a TOML `true` where a number belongs is a mistake.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.problems.append(f"{path}: must be {kind.__name__}, got {type(value).__name__}")
            return default  # type: ignore[return-value]
        if check is not None:
            problem = check(value)
            if problem:
                self.problems.append(f"{path}: {problem}")
        return value

    def path(self, text: str) -> Path:
        p = Path(text)
        return p if p.is_absolute() else (self.base / p).resolve()

    def hostport(self, text: str, path: str) -> HostPort | None:
        parsed = parse_hostport(text)
        if parsed is None:
            self.problems.append(f"{path}: must be \"host:port\"")
        return parsed


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _positive(value: int) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _address(value: str) -> str | None:
    return None if is_address(value) else "must be an e-mail address like name@example.nl"


def _timezone(value: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return "unknown time zone"
    return None


REGIONS = ("noord", "midden", "zuid")


def _date_ranges(items: list[Any], path: str, problems: list[str]) -> list[tuple[dt.date, dt.date]]:
    ranges = []
    for i, item in enumerate(items):
        try:
            first, last = (dt.date.fromisoformat(x) for x in item)
            if last < first:
                raise ValueError
            ranges.append((first, last))
        except (TypeError, ValueError):
            problems.append(f"{path}[{i}]: must be [\"YYYY-MM-DD\", \"YYYY-MM-DD\"]")
    return ranges


def _regional_holidays(path: Path, region: str, problems: list[str]) -> list[tuple[dt.date,
                                                                                   dt.date]]:
    """The school holidays of one region (noord, midden, zuid) from a TOML file with a table per
    region and optionally `[landelijk]` for the national ones, each `holidays = [[from, to]]`."""
    if region not in REGIONS:
        problems.append(f"schedule.region: must be one of {', '.join(REGIONS)}")
        return []
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        problems.append(f"schedule.holidays_file: cannot read {path}: {exc}")
        return []
    ranges = []
    for table in ("landelijk", region):
        section = doc.get(table, {})
        if not isinstance(section, dict) or not isinstance(section.get("holidays", []), list):
            problems.append(f"schedule.holidays_file: [{table}] must hold holidays = [...]")
            continue
        ranges += _date_ranges(section.get("holidays", []),
                               f"schedule.holidays_file {table}.holidays", problems)
    return ranges


def parse_config(doc: dict[str, Any], path: Path) -> Config:
    """Validate a parsed TOML document; raise ConfigError listing every problem."""
    r = _Reader(path.parent)
    for key in doc:
        if key not in {f.name for f in fields(Config)} - {"path"}:
            r.problems.append(f"{key}: unknown section")

    g = r.section(doc, "gateway", GatewaySection)
    gateway = GatewaySection(
        address=r.get(g, "gateway.address", str, check=_address),
        teacher_text=r.get(g, "gateway.teacher_text", str, DEFAULT_TEACHER_TEXT),
    )

    s = r.section(doc, "smtp", SmtpSection)
    listen = r.hostport(r.get(s, "smtp.listen", str, "127.0.0.1:2525"), "smtp.listen")
    smtp = SmtpSection(
        listen=listen or HostPort("127.0.0.1", 2525),
        tls_cert=r.path(r.get(s, "smtp.tls_cert", str, "keys/tls/server.pem")),
        tls_key=r.path(r.get(s, "smtp.tls_key", str, "keys/tls/server.key")),
        hostname=r.get(s, "smtp.hostname", str, "") or socket.getfqdn(),
        require_tls=r.get(s, "smtp.require_tls", bool, True),
        max_message_bytes=r.get(s, "smtp.max_message_bytes", int, 1048576, _positive),
        timeout_seconds=r.get(s, "smtp.timeout_seconds", int, 60, _positive),
        max_sessions=r.get(s, "smtp.max_sessions", int, 100, _positive),
        max_sessions_per_client=r.get(s, "smtp.max_sessions_per_client", int, 10, _positive),
        shutdown_grace_seconds=r.get(s, "smtp.shutdown_grace_seconds", int, 30, _positive),
        max_session_seconds=r.get(s, "smtp.max_session_seconds", int, 600, _positive),
        max_stalling_commands=r.get(s, "smtp.max_stalling_commands", int, 10, _positive),
        max_refusals_per_client=r.get(s, "smtp.max_refusals_per_client", int, 10, _positive),
        refusal_block_seconds=r.get(s, "smtp.refusal_block_seconds", int, 900, _positive),
        client_ca_file=(r.path(client_ca) if (client_ca := r.get(s, "smtp.client_ca_file", str, ""))
                        else None),
    )

    if smtp.max_session_seconds < smtp.timeout_seconds:
        # One DATA may take timeout_seconds: a shorter lifetime would cut every slow one.
        r.problems.append("smtp.max_session_seconds: must not be below timeout_seconds")

    d = r.section(doc, "delivery", DeliverySection)
    relay_text = r.get(d, "delivery.relay", str, "")
    ca_text = r.get(d, "delivery.ca_file", str, "")
    delivery = DeliverySection(
        relay=r.hostport(relay_text, "delivery.relay") if relay_text else None,
        ca_file=r.path(ca_text) if ca_text else None,
        require_tls=r.get(d, "delivery.require_tls", bool, True),
        retry_min_seconds=r.get(d, "delivery.retry_min_seconds", int, 60, _positive),
        retry_max_seconds=r.get(d, "delivery.retry_max_seconds", int, 1800, _positive),
        give_up_after_hours=r.get(d, "delivery.give_up_after_hours", int, 48, _positive),
        timeout_seconds=r.get(d, "delivery.timeout_seconds", int, 60, _positive),
    )
    if delivery.retry_max_seconds < delivery.retry_min_seconds:
        r.problems.append("delivery.retry_max_seconds: must not be below retry_min_seconds")
    if not delivery.require_tls:
        # SPEC §4: never plaintext. The key exists so that the file says so explicitly.
        r.problems.append("delivery.require_tls: must be true (notices never travel without TLS)")

    st = r.section(doc, "storage", StorageSection)
    storage = StorageSection(path=r.path(r.get(st, "storage.path", str, "var/hwc-gateway.sqlite3")))

    k = r.section(doc, "keys", KeysSection)
    keys = KeysSection(
        dir=r.path(r.get(k, "keys.dir", str, "keys")),
        gpg_binary=r.get(k, "keys.gpg_binary", str, "gpg"),
        gpg_timeout_seconds=r.get(k, "keys.gpg_timeout_seconds", int, 30, _positive),
        passphrase_file=(r.path(pf) if (pf := r.get(k, "keys.passphrase_file", str, ""))
                         else None),
        allow_no_passphrase=r.get(k, "keys.allow_no_passphrase", bool, False),
    )

    sc = r.section(doc, "schedule", ScheduleSection)
    start_text = r.get(sc, "schedule.school_day_start", str, "08:30")
    try:
        start = dt.time.fromisoformat(start_text)
    except ValueError:
        r.problems.append('schedule.school_day_start: must be "HH:MM"')
        start = dt.time(8, 30)
    holidays = _date_ranges(r.get(sc, "schedule.holidays", list, []), "schedule.holidays",
                            r.problems)
    file_text = r.get(sc, "schedule.holidays_file", str, "")
    region = r.get(sc, "schedule.region", str, "")
    holidays_file = r.path(file_text) if file_text else None
    if holidays_file is not None:
        holidays += _regional_holidays(holidays_file, region, r.problems)
    elif region:
        r.problems.append("schedule.region: only meaningful with schedule.holidays_file")
    schedule = ScheduleSection(
        timezone=r.get(sc, "schedule.timezone", str, "Europe/Amsterdam", _timezone),
        school_day_start=start,
        escalate_before_minutes=r.get(sc, "schedule.escalate_before_minutes", int, 60),
        holidays=tuple(holidays),
        holidays_file=holidays_file,
        region=region,
    )

    a = r.section(doc, "alerts", AlertsSection)
    alerts = AlertsSection(
        address=r.get(a, "alerts.address", str, ""),
        key=r.get(a, "alerts.key", str, ""),
    )
    if alerts.address and _address(alerts.address):
        r.problems.append("alerts.address: must be an e-mail address or \"\"")

    rt = r.section(doc, "retention", RetentionSection)
    retention = RetentionSection(
        receipts_days=r.get(rt, "retention.receipts_days", int, 730, _positive),
        held_days=r.get(rt, "retention.held_days", int, 14, _positive),
    )

    m = r.section(doc, "metrics", MetricsSection)
    metrics_text = r.get(m, "metrics.listen", str, "")
    metrics = MetricsSection(
        listen=r.hostport(metrics_text, "metrics.listen") if metrics_text else None
    )
    if metrics.listen is not None and not _loopback(metrics.listen.host):
        # The endpoint has no authentication: it must not be reachable from the network.
        r.problems.append("metrics.listen: must be a loopback address (127.0.0.1 or [::1])")

    if r.problems:
        raise ConfigError(r.problems)
    return Config(path, gateway, smtp, delivery, storage, keys, schedule, alerts, retention,
                  metrics)


def not_fqdn(name: str) -> bool:
    """Whether a host name is not fully qualified: no dot, `localhost` or a `.localdomain`,
    or an address literal. School servers with Postfix's `reject_non_fqdn_helo_hostname`
    refuse such an EHLO name (`504 5.5.2 Helo command rejected`)."""
    name = name.strip().rstrip(".").lower()
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        pass
    return ("." not in name or name.startswith("localhost")
            or name.endswith((".localhost", ".localdomain", ".local")))


def config_warnings(config: Config) -> list[str]:
    """What `check-config` warns about without refusing: settings that work here and fail
    with some servers out there."""
    warnings = []
    if not_fqdn(config.smtp.hostname):
        warnings.append(
            f"smtp.hostname: {config.smtp.hostname!r} is not a fully qualified domain name; it"
            " is the EHLO name the gateway gives school servers, and those that check it refuse"
            " every notice (504 5.5.2): set it to this host's name in DNS")
    return warnings


def load_config(path: Path) -> Config:
    """Read and validate a config file; ConfigError for every kind of problem."""
    path = path.resolve()
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: not valid TOML (UTF-8): {exc}"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot be read: {exc.strerror}"]) from None
    return parse_config(doc, path)
