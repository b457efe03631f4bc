"""Tests for core.config: strict TOML validation with every problem named by its key path."""

from __future__ import annotations

import dataclasses
import datetime as dt
import socket
from pathlib import Path

import pytest

from gateway.admin.cli import main
from gateway.core.config import (
    DEFAULT_TEACHER_TEXT,
    Config,
    ConfigError,
    config_warnings,
    load_config,
    not_fqdn,
)
from gateway.core.validate import HostPort

REPO = Path(__file__).resolve().parent.parent

MINIMAL = '[gateway]\naddress = "leerplicht@hwc.example.nl"\n'


def write(directory: Path, text: str) -> Path:
    path = directory / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(directory: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(directory, text))
    return info.value.problems


def test_repository_config_loads_with_documented_defaults() -> None:
    """The shipped config.toml is valid and yields the documented development defaults."""
    config = load_config(REPO / "config.toml")
    assert config.gateway.address == "leerplicht@hwc.example.nl"
    assert config.gateway.teacher_text == DEFAULT_TEACHER_TEXT
    assert config.smtp.listen == HostPort("127.0.0.1", 2525)
    assert config.smtp.require_tls is True
    assert config.smtp.max_message_bytes == 1048576
    assert config.delivery.relay is None
    assert config.delivery.ca_file is None
    assert config.delivery.require_tls is True
    assert (config.delivery.retry_min_seconds, config.delivery.retry_max_seconds) == (60, 1800)
    assert config.storage.path == REPO / "var" / "hwc-gateway.sqlite3"
    assert config.keys.dir == REPO / "keys"
    assert config.gnupg_home == REPO / "keys" / "gnupg"
    assert config.secrets_dir == REPO / "keys" / "secrets"
    assert config.schedule.timezone == "Europe/Amsterdam"
    assert config.schedule.school_day_start == dt.time(8, 30)
    assert config.schedule.holidays == ()
    assert config.metrics.listen is None
    assert (config.smtp.max_session_seconds, config.smtp.max_stalling_commands) == (600, 10)
    assert (config.smtp.max_refusals_per_client, config.smtp.refusal_block_seconds) == (10, 900)


def test_session_limits_are_validated(tmp_path: Path) -> None:
    """The listener's session limits are positive integers, and a session may live at least
    as long as one command may take."""
    problems = problems_of(tmp_path, MINIMAL + "[smtp]\nmax_stalling_commands = 0\n"
                           "max_refusals_per_client = -1\nrefusal_block_seconds = 1.5\n"
                           "timeout_seconds = 120\nmax_session_seconds = 60\n")
    assert problems == ["smtp.max_stalling_commands: must be greater than 0",
                        "smtp.max_refusals_per_client: must be greater than 0",
                        "smtp.refusal_block_seconds: must be int, got float",
                        "smtp.max_session_seconds: must not be below timeout_seconds"]


def test_minimal_config_gets_every_default(tmp_path: Path) -> None:
    """Only the gateway address is required; every other key has its documented default."""
    config = load_config(write(tmp_path, MINIMAL))
    assert config.smtp.listen == HostPort("127.0.0.1", 2525)
    assert config.smtp.timeout_seconds == 60
    assert config.delivery.give_up_after_hours == 48
    assert config.retention.receipts_days == 730
    assert config.alerts.address == ""


def test_an_absent_key_takes_its_dataclass_default(tmp_path: Path) -> None:
    """The dataclasses' defaults are the only ones: each key absent from a minimal file takes
    its field's default, a relative path resolved against the config file's directory."""
    config = load_config(write(tmp_path, MINIMAL))
    for section in dataclasses.fields(Config)[1:]:
        for f in dataclasses.fields(getattr(config, section.name)):
            default = (f.default if f.default is not dataclasses.MISSING
                       else f.default_factory() if f.default_factory is not dataclasses.MISSING
                       else getattr(getattr(config, section.name), f.name))
            if isinstance(default, Path):
                default = (tmp_path / default).resolve()
            assert getattr(getattr(config, section.name), f.name) == default, f.name


def test_missing_gateway_address_is_reported(tmp_path: Path) -> None:
    """A config without the required gateway.address names that key as missing."""
    assert problems_of(tmp_path, "") == ["gateway.address: missing"]


def test_unknown_key_is_reported_with_its_path(tmp_path: Path) -> None:
    """A misspelt key inside a known section is an error naming section.key."""
    problems = problems_of(tmp_path, MINIMAL + "[smtp]\nmax_mesage_bytes = 10\n")
    assert problems == ["smtp.max_mesage_bytes: unknown key"]


def test_unknown_section_is_reported(tmp_path: Path) -> None:
    """A section the gateway does not know is an error naming the section."""
    problems = problems_of(tmp_path, MINIMAL + "[delivary]\nrelay = \"mx:25\"\n")
    assert problems == ["delivary: unknown section"]


def test_section_that_is_not_a_table_is_reported(tmp_path: Path) -> None:
    """`smtp = 5` instead of an [smtp] table is an error naming the section."""
    assert problems_of(tmp_path, "smtp = 5\n" + MINIMAL) == ["smtp: must be a table"]


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ('[smtp]\nmax_message_bytes = "big"\n', "smtp.max_message_bytes: must be int, got str"),
        ("[smtp]\nrequire_tls = 1\n", "smtp.require_tls: must be bool, got int"),
        ("[smtp]\ntimeout_seconds = true\n", "smtp.timeout_seconds: must be int, got bool"),
        ("[smtp]\ntimeout_seconds = 1.5\n", "smtp.timeout_seconds: must be int, got float"),
        ("[smtp]\nlisten = 2525\n", "smtp.listen: must be str, got int"),
        ("[keys]\ndir = [\"keys\"]\n", "keys.dir: must be str, got list"),
        ("[retention]\nheld_days = 0\n", "retention.held_days: must be greater than 0"),
        ("[delivery]\nretry_min_seconds = -1\n",
         "delivery.retry_min_seconds: must be greater than 0"),
    ],
)
def test_wrong_type_or_value_is_reported_with_its_path(tmp_path: Path, snippet: str,
                                                       expected: str) -> None:
    """A value of the wrong type (bool is not int) or out of range names its key path."""
    assert problems_of(tmp_path, MINIMAL + snippet) == [expected]


@pytest.mark.parametrize("listen", ["localhost", "127.0.0.1:", ":2525", "127.0.0.1:0",
                                    "127.0.0.1:65536", "127.0.0.1:port", "127.0.0.1:-1"])
def test_bad_listen_is_reported(tmp_path: Path, listen: str) -> None:
    """A listen address that is not host:port with a port 1-65535 is an error."""
    problems = problems_of(tmp_path, MINIMAL + f'[smtp]\nlisten = "{listen}"\n')
    assert problems == ['smtp.listen: must be "host:port"']


def test_bracketed_ipv6_listen_is_accepted(tmp_path: Path) -> None:
    """`[::1]:2525` is host ::1 on port 2525."""
    config = load_config(write(tmp_path, MINIMAL + '[smtp]\nlisten = "[::1]:2525"\n'))
    assert config.smtp.listen == HostPort("::1", 2525)


def test_bad_relay_and_metrics_listen_are_reported(tmp_path: Path) -> None:
    """delivery.relay and metrics.listen are checked as host:port too."""
    problems = problems_of(tmp_path, MINIMAL + '[delivery]\nrelay = "mx.example.nl"\n'
                           '[metrics]\nlisten = "9464"\n')
    assert problems == ['delivery.relay: must be "host:port"',
                        'metrics.listen: must be "host:port"']


@pytest.mark.parametrize("zone", ["Europe/Amsterdm", "", "/etc/localtime", "Europe",
                                  "europe/amsterdam"])
def test_bad_timezone_is_reported(tmp_path: Path, zone: str) -> None:
    """A time zone the system does not know is an error on schedule.timezone."""
    problems = problems_of(tmp_path, MINIMAL + f'[schedule]\ntimezone = "{zone}"\n')
    assert problems == ["schedule.timezone: unknown time zone"]


def test_bad_school_day_start_is_reported(tmp_path: Path) -> None:
    """A school day start that is not HH:MM is an error on its key."""
    problems = problems_of(tmp_path, MINIMAL + '[schedule]\nschool_day_start = "half nine"\n')
    assert problems == ['schedule.school_day_start: must be "HH:MM"']


def test_holidays_are_parsed_as_inclusive_date_ranges(tmp_path: Path) -> None:
    """Valid holiday ranges become (first, last) date pairs."""
    config = load_config(write(tmp_path, MINIMAL + '[schedule]\nholidays = ['
                               '["2026-12-19", "2027-01-03"], ["2027-02-27", "2027-02-27"]]\n'))
    assert config.schedule.holidays == ((dt.date(2026, 12, 19), dt.date(2027, 1, 3)),
                                        (dt.date(2027, 2, 27), dt.date(2027, 2, 27)))


def test_bad_holidays_are_reported_by_index(tmp_path: Path) -> None:
    """Each malformed holiday range (bad date, reversed, wrong shape) is named by its index."""
    problems = problems_of(tmp_path, MINIMAL + '[schedule]\nholidays = ['
                           '["2026-12-19", "2027-01-03"], ["2026-13-01", "2026-12-31"],'
                           ' ["2027-01-03", "2026-12-19"], ["2026-12-19"], "2026-12-19", 5,'
                           ' ["2026-12-19", "2027-01-03", "2027-01-04"]]\n')
    expected = '["YYYY-MM-DD", "YYYY-MM-DD"]'
    assert problems == [f"schedule.holidays[{i}]: must be {expected}" for i in range(1, 7)]


def test_holidays_not_a_list_is_reported(tmp_path: Path) -> None:
    """schedule.holidays given as a string is a type error on that key."""
    problems = problems_of(tmp_path, MINIMAL + '[schedule]\nholidays = "2026-12-19"\n')
    assert problems == ["schedule.holidays: must be list, got str"]


def test_delivery_without_tls_is_refused(tmp_path: Path) -> None:
    """delivery.require_tls = false is an error: notices never travel without TLS."""
    problems = problems_of(tmp_path, MINIMAL + "[delivery]\nrequire_tls = false\n")
    assert len(problems) == 1
    assert problems[0].startswith("delivery.require_tls: must be true")


def test_retry_max_below_min_is_reported(tmp_path: Path) -> None:
    """A retry maximum below the minimum is an error naming retry_max_seconds."""
    problems = problems_of(tmp_path, MINIMAL + "[delivery]\nretry_min_seconds = 600\n"
                           "retry_max_seconds = 60\n")
    assert problems == ["delivery.retry_max_seconds: must not be below retry_min_seconds"]


def test_bad_addresses_are_reported(tmp_path: Path) -> None:
    """gateway.address and a non-empty alerts.address must look like e-mail addresses."""
    problems = problems_of(tmp_path, '[gateway]\naddress = "leerplicht"\n'
                           '[alerts]\naddress = "Ops <ops@example.nl>"\n')
    assert problems == ["gateway.address: must be an e-mail address like name@example.nl",
                        'alerts.address: must be an e-mail address or ""']


def test_an_address_with_a_comma_is_reported(tmp_path: Path) -> None:
    """`a,b@x.nl` is refused as gateway.address and alerts.address, as `schools add --email`
    refuses it (core.validate.is_address): a comma makes two addresses in a header field."""
    problems = problems_of(tmp_path, '[gateway]\naddress = "leerplicht,x@hwc.example.nl"\n'
                           '[alerts]\naddress = "ops,x@example.nl"\n')
    assert problems == ["gateway.address: must be an e-mail address like name@example.nl",
                        'alerts.address: must be an e-mail address or ""']


def test_a_port_of_other_digits_is_reported_not_a_traceback(tmp_path: Path) -> None:
    """A port written with a superscript or Arabic-Indic digit is reported like any bad port
    (`h:²5` was a ValueError traceback, `h:٢٥` was read as port 25)."""
    for port in ("²5", "٢٥"):
        problems = problems_of(tmp_path, MINIMAL + f'[smtp]\nlisten = "h:{port}"\n')
        assert problems == ['smtp.listen: must be "host:port"']


def test_several_problems_are_reported_at_once(tmp_path: Path) -> None:
    """One ConfigError lists every problem in the file, not just the first."""
    problems = problems_of(tmp_path, """
[gateway]
adress = "x@example.nl"
[smtp]
listen = "nowhere"
max_message_bytes = "big"
require_tls = 1
[delivery]
require_tls = false
[schedule]
timezone = "Mars/Olympus_Mons"
holidays = [["2026-12-19", "later"]]
[extras]
""")
    assert set(problems) == {
        "extras: unknown section",
        "gateway.adress: unknown key",
        "gateway.address: missing",
        'smtp.listen: must be "host:port"',
        "smtp.max_message_bytes: must be int, got str",
        "smtp.require_tls: must be bool, got int",
        "delivery.require_tls: must be true (notices never travel without TLS)",
        "schedule.timezone: unknown time zone",
        'schedule.holidays[0]: must be ["YYYY-MM-DD", "YYYY-MM-DD"]',
    }
    assert len(problems) == 9


def test_relative_paths_resolve_against_the_config_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths are taken from the config file's directory, never the working directory."""
    etc = tmp_path / "etc" / "hwc"
    etc.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write(etc, MINIMAL + '[smtp]\ntls_cert = "tls/cert.pem"\ntls_key = "../tls/key.pem"\n'
          '[delivery]\nca_file = "ca/schools.pem"\n[storage]\npath = "state/db.sqlite3"\n'
          '[keys]\ndir = "/srv/hwc/keys"\n')
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("../etc/hwc/config.toml"))
    base = etc.resolve()
    assert config.path == base / "config.toml"
    assert config.smtp.tls_cert == base / "tls" / "cert.pem"
    assert config.smtp.tls_key == base.parent / "tls" / "key.pem"
    assert config.delivery.ca_file == base / "ca" / "schools.pem"
    assert config.storage.path == base / "state" / "db.sqlite3"
    assert config.keys.dir == Path("/srv/hwc/keys")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist gives ConfigError, not FileNotFoundError."""
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    """A file that is not TOML gives ConfigError saying so."""
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[gateway\naddress = \n"))


def test_latin1_file_is_a_config_error(tmp_path: Path) -> None:
    """A config saved as Latin-1 (an accented teacher text) gives ConfigError, not a traceback."""
    path = tmp_path / "config.toml"
    path.write_bytes(MINIMAL.encode() + 'teacher_text = "Wees er extra voor het kind, '
                     'ook na de vakantie: caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError):
        load_config(path)


def test_directory_instead_of_file_is_a_config_error(tmp_path: Path) -> None:
    """Pointing --config at a directory gives ConfigError, not an OSError traceback."""
    with pytest.raises(ConfigError):
        load_config(tmp_path)


def test_unbracketed_ipv6_without_port_is_reported(tmp_path: Path) -> None:
    """`listen = "::1"` has no port and is reported, not read as host ":" on port 1."""
    problems = problems_of(tmp_path, MINIMAL + '[smtp]\nlisten = "::1"\n')
    assert problems == ['smtp.listen: must be "host:port"']


@pytest.mark.parametrize("text", ["", 'hostname = ""'])
def test_hostname_defaults_to_the_fqdn(tmp_path: Path, text: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Without `[smtp] hostname` (or with ""), the EHLO name is this host's fully qualified
    name, not "localhost" (issue 12: a school MX refused "localhost" with 504 5.5.2)."""
    monkeypatch.setattr(socket, "getfqdn", lambda name="": "gw7.leerplicht.example.nl")
    config = load_config(write(tmp_path, MINIMAL + "[smtp]\n" + text + "\n"))
    assert config.smtp.hostname == "gw7.leerplicht.example.nl"


@pytest.mark.parametrize(("name", "bad"), [
    ("localhost", True), ("vm", True), ("localhost.localdomain", True), ("gw.local", True),
    ("127.0.0.1", True), ("[::1]", True), ("LOCALHOST.", True),
    ("gateway.leerplicht.example.nl", False), ("mx1.utrecht.nl.", False),
])
def test_not_fqdn(name: str, bad: bool) -> None:
    """A name without a dot, localhost, a .localdomain/.local name or an address literal is
    not a fully qualified domain name."""
    assert not_fqdn(name) is bad


def test_check_config_warns_about_a_hostname_that_is_not_fqdn(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check-config accepts a non-FQDN hostname (exit 0) and warns, naming the key; a real
    name gets no warning."""
    keys = "[keys]\nallow_no_passphrase = true\n"
    path = write(tmp_path, MINIMAL + keys + '[smtp]\nhostname = "localhost"\n')
    assert main(["--config", str(path), "check-config"]) == 0
    out = capsys.readouterr().out
    assert "configuration is valid" in out and "warning: smtp.hostname: 'localhost' is not" in out
    path = write(tmp_path, MINIMAL + keys + '[smtp]\nhostname = "gw.leerplicht.example.nl"\n')
    assert config_warnings(load_config(path)) == []
    assert main(["--config", str(path), "check-config"]) == 0
    assert "warning" not in capsys.readouterr().out
