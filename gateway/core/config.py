"""Configuration: `config.toml` parsed once into frozen dataclasses.

Takes a TOML path; produces a `Config`. Validation is strict (docs/protocol.md §16): an unknown key,
a missing required key or a value of the wrong type or shape is a `ConfigError` listing every
problem with its key path, so `check-config` can report them all at once. Relative paths are
resolved against the directory of the config file, never the working directory.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gateway.core.configread import Table, date_ranges, is_loopback, positive, timezone_problem
from gateway.core.validate import HostPort, is_address
from gateway.core.webconfig import WebSection, web_section

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


# The defaults of the dataclasses here are the only ones: a key absent from the file takes its
# field's default (`gateway.core.configread.Table`); a relative path among them is resolved
# against the config file's directory, as one written in the file is.
_LISTEN = HostPort("127.0.0.1", 2525)


@dataclass(frozen=True)
class SmtpSection:
    listen: HostPort = _LISTEN
    tls_cert: Path = Path("keys/tls/server.pem")
    tls_key: Path = Path("keys/tls/server.key")
    # The SMTP greeting and EHLO reply of the listener, and the EHLO name given to every
    # school server and relay. Default: this host's fully qualified name (issue 12).
    hostname: str = field(default_factory=lambda: socket.getfqdn())  # looked up when read
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
    path: Path = Path("var/hwc-gateway.sqlite3")


@dataclass(frozen=True)
class KeysSection:
    dir: Path = Path("keys")
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
    web: WebSection = field(default_factory=WebSection)

    @property
    def gnupg_home(self) -> Path:
        return self.keys.dir / "gnupg"

    @property
    def secrets_dir(self) -> Path:
        return self.keys.dir / "secrets"


def _address(value: str) -> str | None:
    return None if is_address(value) else "must be an e-mail address like name@example.nl"


def _gateway(t: Table) -> GatewaySection:
    return GatewaySection(address=t.value("address", str, _address),
                          teacher_text=t.value("teacher_text", str))


def _smtp(t: Table) -> SmtpSection:
    smtp = SmtpSection(
        listen=t.hostport("listen"),
        tls_cert=t.path("tls_cert"),
        tls_key=t.path("tls_key"),
        hostname=t.value("hostname", str) or t.default("hostname"),
        require_tls=t.value("require_tls", bool),
        max_message_bytes=t.value("max_message_bytes", int, positive),
        timeout_seconds=t.value("timeout_seconds", int, positive),
        max_sessions=t.value("max_sessions", int, positive),
        max_sessions_per_client=t.value("max_sessions_per_client", int, positive),
        shutdown_grace_seconds=t.value("shutdown_grace_seconds", int, positive),
        max_session_seconds=t.value("max_session_seconds", int, positive),
        max_stalling_commands=t.value("max_stalling_commands", int, positive),
        max_refusals_per_client=t.value("max_refusals_per_client", int, positive),
        refusal_block_seconds=t.value("refusal_block_seconds", int, positive),
        client_ca_file=t.path("client_ca_file"),
    )
    if smtp.max_session_seconds < smtp.timeout_seconds:
        # One DATA may take timeout_seconds: a shorter lifetime would cut every slow one.
        t.problem("max_session_seconds", "must not be below timeout_seconds")
    return smtp


def _delivery(t: Table) -> DeliverySection:
    delivery = DeliverySection(
        relay=t.hostport("relay"),
        ca_file=t.path("ca_file"),
        require_tls=t.value("require_tls", bool),
        retry_min_seconds=t.value("retry_min_seconds", int, positive),
        retry_max_seconds=t.value("retry_max_seconds", int, positive),
        give_up_after_hours=t.value("give_up_after_hours", int, positive),
        timeout_seconds=t.value("timeout_seconds", int, positive),
    )
    if delivery.retry_max_seconds < delivery.retry_min_seconds:
        t.problem("retry_max_seconds", "must not be below retry_min_seconds")
    if not delivery.require_tls:
        # Notices never travel in plaintext (README.md, SECURITY.md); the key exists so that
        # the file says so explicitly.
        t.problem("require_tls", "must be true (notices never travel without TLS)")
    return delivery


def _keys(t: Table) -> KeysSection:
    return KeysSection(dir=t.path("dir"), gpg_binary=t.value("gpg_binary", str),
                       gpg_timeout_seconds=t.value("gpg_timeout_seconds", int, positive),
                       passphrase_file=t.path("passphrase_file"),
                       allow_no_passphrase=t.value("allow_no_passphrase", bool))


def _schedule(t: Table) -> ScheduleSection:
    start = t.parsed("school_day_start", dt.time.fromisoformat, 'must be "HH:MM"')
    holidays = date_ranges(t.value("holidays", list), "schedule.holidays", t.problems)
    holidays_file = t.path("holidays_file")
    region = t.value("region", str)
    if holidays_file is not None:
        holidays += _regional_holidays(holidays_file, region, t.problems)
    elif region:
        t.problem("region", "only meaningful with schedule.holidays_file")
    return ScheduleSection(timezone=t.value("timezone", str, timezone_problem),
                           school_day_start=start,
                           escalate_before_minutes=t.value("escalate_before_minutes", int),
                           holidays=tuple(holidays), holidays_file=holidays_file, region=region)


def _alerts(t: Table) -> AlertsSection:
    alerts = AlertsSection(address=t.value("address", str), key=t.value("key", str))
    if alerts.address and not is_address(alerts.address):
        t.problem("address", 'must be an e-mail address or ""')
    return alerts


def _metrics(t: Table) -> MetricsSection:
    metrics = MetricsSection(listen=t.hostport("listen"))
    if metrics.listen is not None and not is_loopback(metrics.listen.host):
        # The endpoint has no authentication: it must not be reachable from the network.
        t.problem("listen", "must be a loopback address (127.0.0.1 or [::1])")
    return metrics


REGIONS = ("noord", "midden", "zuid")


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
        ranges += date_ranges(section.get("holidays", []),
                              f"schedule.holidays_file {table}.holidays", problems)
    return ranges


def parse_config(doc: dict[str, Any], path: Path) -> Config:
    """Validate a parsed TOML document; raise ConfigError listing every problem (in the order of
    the sections and keys below, each section's unknown keys first)."""
    problems: list[str] = []
    for key in doc:
        if key not in {f.name for f in fields(Config)} - {"path"}:
            problems.append(f"{key}: unknown section")

    def table(name: str, cls: type[Any]) -> Table:
        return Table(doc, name, cls, path.parent, problems)

    gateway = _gateway(table("gateway", GatewaySection))
    smtp = _smtp(table("smtp", SmtpSection))
    delivery = _delivery(table("delivery", DeliverySection))
    storage = StorageSection(path=table("storage", StorageSection).path("path"))
    keys = _keys(table("keys", KeysSection))
    schedule = _schedule(table("schedule", ScheduleSection))
    alerts = _alerts(table("alerts", AlertsSection))
    rt = table("retention", RetentionSection)
    retention = RetentionSection(receipts_days=rt.value("receipts_days", int, positive),
                                 held_days=rt.value("held_days", int, positive))
    metrics = _metrics(table("metrics", MetricsSection))
    web = web_section(table("web", WebSection))
    if problems:
        raise ConfigError(problems)
    return Config(path, gateway, smtp, delivery, storage, keys, schedule, alerts, retention,
                  metrics, web)


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
