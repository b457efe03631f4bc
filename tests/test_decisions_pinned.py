"""Decisions pinned where a mutation run (`make mutate`, mutate/run.py) found that the tests would
not notice a wrong answer: each test here fails on at least one mutant that survived before it.
Pure and fast: no gpg, no daemon, no SMTP."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import time
import zoneinfo
from collections.abc import Iterator
from email import policy
from email.parser import BytesParser
from typing import Literal

import aiosmtplib
import pytest

from gateway.core import resolve
from gateway.core.config import ScheduleSection
from gateway.core.fields import clean_name, passes_eleven_test, vestigingscode
from gateway.core.inert import inert_json
from gateway.core.keyinfo import KeyInfo, SelfSignature, key_info, self_signatures_in_use
from gateway.core.mimelimits import delimiter_lines, header_lines, parse_mime
from gateway.core.model import Child, Held, Pupil, RejectClass, Rejection, Routed, School, Signal
from gateway.core.names import NameKey, name_key, names_match, pseudonym_text
from gateway.core.resolve import resolve_child
from gateway.core.schedule import deadline, is_school_day, time_left
from gateway.crypto.gpg import GpgResult
from gateway.delivery.deliver import (
    Result,
    _command_of,
    classify_reply,
    failure_reason,
    next_attempt_at,
    our_problem,
)
from gateway.ingress.throttle import (
    AuthThrottle,
    ClientRefusals,
    SessionLimits,
    StallCounter,
    progressed,
)
from gateway.pipeline.extract import _unflow, parse_signal
from gateway.pipeline.opener import (
    _contains_encrypted,
    _structure,
    decryption_key_verdict,
    decryption_verdict,
    encrypted_payload,
    own_key_fault,
    plaintext_verdict,
    signature_verdict,
    signed_parts,
)
from gateway.service.escalate import Escalation, due_escalations


def gpg_result(*lines: str, returncode: int = 0) -> GpgResult:
    """A GpgResult as the adapter builds it from `[GNUPG:]` lines."""
    status = []
    for line in lines:
        key, _, value = line.partition(" ")
        status.append((key, value))
    return GpgResult(returncode, b"", tuple(status))


# -- opener: the gateway's own key ---------------------------------------------------------------

# gpg-error codes as gpg prints them: the error source in the high bits (GPG_ERR_SOURCE_GPGAGENT
# is 4, so 4 << 24), the code in the low 16.
AGENT = 4 << 24


def test_bad_passphrase_is_the_gateways_own_fault() -> None:
    """BAD_PASSPHRASE means our own key's passphrase was refused: a temporary fault, named."""
    result = gpg_result("ENC_TO 1122334455667788 18 0", "BAD_PASSPHRASE 1122334455667788")
    fault = own_key_fault(result)
    assert fault == "the gateway key's passphrase was refused"


@pytest.mark.parametrize(("code", "fault"), [
    (AGENT | 11, "the gateway key's passphrase was refused"),
    (AGENT | 85, "no passphrase for the gateway key"),
    (AGENT | 99, "gpg cancelled the decryption"),
    (11, "the gateway key's passphrase was refused"),
], ids=["bad-passphrase", "no-passphrase", "cancelled", "without-source"])
def test_pkdecrypt_failed_with_a_passphrase_code_is_our_fault(code: int, fault: str) -> None:
    """`ERROR pkdecrypt_failed <code>` with a passphrase code (low 16 bits) is our key's fault."""
    result = gpg_result("ENC_TO 1122334455667788 18 0", f"ERROR pkdecrypt_failed {code}",
                        "BEGIN_DECRYPTION", "DECRYPTION_FAILED", "END_DECRYPTION", returncode=2)
    assert own_key_fault(result) == fault


@pytest.mark.parametrize("line", [
    f"ERROR pkdecrypt_failed {AGENT | 17}",  # no secret key: the sender's fault, not ours
    f"ERROR keyedit.passwd {AGENT | 11}",  # a passphrase code from another place
    "ERROR pkdecrypt_failed",
    "ERROR pkdecrypt_failed eleven",
    "DECRYPTION_FAILED",
], ids=["no-seckey", "elsewhere", "no-code", "not-a-number", "no-error"])
def test_other_decryption_failures_are_not_our_key(line: str) -> None:
    """Other gpg errors are not blamed on the gateway's key: they get the sender's refusal."""
    assert own_key_fault(gpg_result("ENC_TO 1122334455667788 18 0", line, returncode=2)) is None


def test_a_later_passphrase_code_is_found_after_another_error() -> None:
    """Every ERROR line is read, not only the first."""
    result = gpg_result(f"ERROR pkdecrypt_failed {AGENT | 17}",
                        f"ERROR pkdecrypt_failed {AGENT | 85}", returncode=2)
    assert own_key_fault(result) == "no passphrase for the gateway key"


# -- opener: which gateway key decrypted ---------------------------------------------------------

CURRENT = "A1" * 20
RETIRED = "B2" * 20
SUB = "C3" * 20
RETIRED_DETAIL = "message is encrypted to a gateway key that is no longer in use"


@pytest.mark.parametrize(("lines", "accepted"), [
    ([f"DECRYPTION_KEY {SUB} {CURRENT} u"], {CURRENT}),
    ([f"DECRYPTION_KEY {SUB} {CURRENT}"], {CURRENT}),
    ([f"DECRYPTION_KEY {SUB} {CURRENT} u"], {CURRENT, RETIRED}),
    ([f"DECRYPTION_KEY {SUB} {CURRENT} u", f"DECRYPTION_KEY {SUB} {RETIRED} u"],
     {CURRENT, RETIRED}),
], ids=["current", "two-fields", "overlap", "both-accepted"])
def test_decryption_by_an_accepted_key_passes(lines: list[str], accepted: set[str]) -> None:
    """A message decrypted by the current key, or one still in its overlap, may be opened."""
    assert decryption_key_verdict(gpg_result(*lines), frozenset(accepted)) is None


@pytest.mark.parametrize("lines", [
    [f"DECRYPTION_KEY {SUB} {RETIRED} u"],
    [f"DECRYPTION_KEY {SUB} {CURRENT} u", f"DECRYPTION_KEY {SUB} {RETIRED} u"],
    [f"DECRYPTION_KEY {CURRENT}"],
    [],
], ids=["retired", "one-retired", "one-field", "none"])
def test_decryption_by_a_retired_or_unknown_key_is_refused(lines: list[str]) -> None:
    """A retired key (or no key gpg names) is refused as no longer in use."""
    verdict = decryption_key_verdict(gpg_result(*lines), frozenset({CURRENT}))
    assert verdict == Rejection(RejectClass.NOT_ENCRYPTED, RETIRED_DETAIL)


# -- opener: integrity protection and symmetric keys ---------------------------------------------

DECRYPTED = ["ENC_TO 1122334455667788 18 0", "BEGIN_DECRYPTION", "DECRYPTION_KEY X Y u",
             "PLAINTEXT 62 0", "DECRYPTION_OKAY", "GOODMDC", "END_DECRYPTION"]


@pytest.mark.parametrize("infos", [
    ["DECRYPTION_INFO 2 9", "DECRYPTION_INFO 0 9"],
    ["DECRYPTION_INFO 0 9", "DECRYPTION_INFO 0 9 2"],
    ["DECRYPTION_INFO 0 9 2", "DECRYPTION_INFO 0 9 0"],
], ids=["mdc-then-none", "none-then-aead", "aead-then-none"])
def test_every_decryption_info_must_show_protection(infos: list[str]) -> None:
    """One unprotected packet among several DECRYPTION_INFO lines refuses the message."""
    verdict = decryption_verdict(gpg_result(*DECRYPTED, *infos))
    assert verdict == Rejection(RejectClass.NOT_ENCRYPTED, "ciphertext is not integrity protected")


def test_several_protected_decryption_infos_pass() -> None:
    """Several DECRYPTION_INFO lines that all show MDC or AEAD protection are accepted."""
    infos = ["DECRYPTION_INFO 2 9", "DECRYPTION_INFO 0 9 2"]
    assert decryption_verdict(gpg_result(*DECRYPTED, *infos)) is None


def test_a_symmetric_key_beside_a_public_key_one_is_accepted() -> None:
    """SYMKEY_ENC with ENC_TO: the message was also encrypted to us, and we decrypted it."""
    lines = ["SYMKEY_ENC 9 3 2", *DECRYPTED, "DECRYPTION_INFO 2 9"]
    assert decryption_verdict(gpg_result(*lines)) is None


def test_a_symmetric_key_alone_is_refused() -> None:
    """SYMKEY_ENC without ENC_TO is symmetric encryption only: refused, however it decrypted."""
    lines = ["SYMKEY_ENC 9 3 2", *DECRYPTED[1:], "DECRYPTION_INFO 2 9"]
    assert decryption_verdict(gpg_result(*lines)) == Rejection(
        RejectClass.NOT_ENCRYPTED,
        "symmetric encryption is not accepted; encrypt to the gateway key")


# -- opener: the structural limits at their edges ------------------------------------------------

# The limits themselves, as numbers: a test written with the constants would move with them.
OUTER_MAX_PARTS = 8  # the outer multipart/encrypted: 2 * 8 delimiter lines
INNER_MAX_PARTS = 50  # the decrypted entity: 2 * 50 delimiter lines
MAX_HEADER_LINES = 500  # top-level header lines, outside and inside

ARMOR = b"-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA0\r\n=abcd\r\n-----END PGP MESSAGE-----\r\n"


def _encrypted(extra_headers: int = 0, extra_parts: int = 0) -> bytes:
    """An RFC 3156 §4 message with filler header lines, or with parts beyond its two."""
    head = b"".join(b"X-Filler: %d\r\n" % i for i in range(extra_headers))
    parts = [b"--b1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n",
             b"--b1\r\nContent-Type: application/octet-stream\r\n\r\n" + ARMOR]
    parts += [b"--b1\r\nContent-Type: text/plain\r\n\r\nx\r\n"] * extra_parts
    return (head + b'MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; '
            b'protocol="application/pgp-encrypted"; boundary="b1"\r\n\r\n'
            + b"".join(parts) + b"--b1--\r\n")


def test_outer_header_lines_up_to_the_limit_pass() -> None:
    """A message with exactly MAX_HEADER_LINES header lines is read; one more is too large."""
    at_limit = _encrypted(extra_headers=MAX_HEADER_LINES - 2)
    assert encrypted_payload(at_limit) == ARMOR.removesuffix(b"\r\n")
    over = _encrypted(extra_headers=MAX_HEADER_LINES - 1)
    assert encrypted_payload(over) == Rejection(RejectClass.TOO_LARGE, "too many header lines")


def test_outer_parts_up_to_the_limit_are_parsed() -> None:
    """2 * OUTER_MAX_PARTS delimiter lines are parsed (and then refused for their shape); one
    more is refused before parsing."""
    # n parts have n + 1 delimiter lines (the closing one included).
    at_limit = _encrypted(extra_parts=2 * OUTER_MAX_PARTS - 3)
    assert encrypted_payload(at_limit) == Rejection(
        RejectClass.NOT_ENCRYPTED, "multipart/encrypted must have exactly two parts")
    over = _encrypted(extra_parts=2 * OUTER_MAX_PARTS - 2)
    assert encrypted_payload(over) == Rejection(
        RejectClass.NOT_ENCRYPTED, "message is not PGP/MIME encrypted: too many MIME parts")


def _mixed(parts: int) -> bytes:
    body = b"".join(b"--in\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(parts))
    return b'Content-Type: multipart/mixed; boundary="in"\r\n\r\n' + body + b"--in--\r\n"


def test_inner_parts_up_to_the_limit_are_parsed() -> None:
    """A decrypted entity with 2 * INNER_MAX_PARTS delimiter lines is parsed; one more is an
    invalid signal."""
    parsed = _structure(_mixed(2 * INNER_MAX_PARTS - 1))
    assert not isinstance(parsed, Rejection)
    assert parsed[1] is None  # not a multipart/signed
    assert _structure(_mixed(2 * INNER_MAX_PARTS)) == Rejection(
        RejectClass.INVALID_SIGNAL, "too many MIME parts")


def test_inner_header_lines_up_to_the_limit_are_parsed() -> None:
    """A decrypted entity with MAX_HEADER_LINES header lines is parsed; one more is invalid."""
    head = b"".join(b"X-Filler: %d\r\n" % i for i in range(MAX_HEADER_LINES - 1))
    assert not isinstance(_structure(head + _mixed(1)), Rejection)
    assert _structure(b"X-Filler: x\r\n" + head + _mixed(1)) == Rejection(
        RejectClass.INVALID_SIGNAL, "too many header lines")


# -- names with elided articles ------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), [
    ("Anna d'Ancona", "Anna d'Abreu"),
    ("Pierre l'Ecluse", "Pierre l'Abbé"),
    ("Anna d'Ancona", "Anna Ancona d'"),
], ids=["d-article", "l-article", "article-moved"])
def test_names_differing_only_after_an_elided_article_do_not_match(a: str, b: str) -> None:
    """"Anna d'Ancona" is not "Anna d'Abreu": the surname after the article is compared."""
    assert not names_match(a, b)
    assert not names_match(b, a)


@pytest.mark.parametrize(("a", "b"), [
    ("Anna d'Ancona", "Anna D'Ancona"),
    ("Anna d'Ancona", "Anna d’Ancona"),
    ("Pierre l'Ecluse", "Pierre l’Écluse"),
], ids=["case", "apostrophe", "accent"])
def test_names_with_the_same_elided_article_match(a: str, b: str) -> None:
    """The same surname after the same elided article matches across spellings."""
    assert names_match(a, b)


# -- resolve: a BSN the register does not know ---------------------------------------------------

BIRTH = dt.date(2016, 4, 12)
DIRECTORY = {"12AB00": School("12AB00", "De Regenboog", usable_contacts=1),
             "34CD00": School("34CD00", "Sint-Jozefschool", usable_contacts=1)}


def test_unknown_bsn_without_a_namesake_is_routed_by_the_senders_school() -> None:
    """A BSN not in the register, no pupil of that name and birth date: rule 3, the hint."""
    child = Child("Sanne de Vries", BIRTH, bsn="123456782", school_hint="12AB00")
    other = Pupil("Daan Jansen", BIRTH, "34CD00", "111222333")
    decision = resolve_child(child, by_bsn=None, same_birthdate=[other], directory=DIRECTORY)
    assert decision == Routed("12AB00", resolve.RULE_HINT)


def test_unknown_bsn_with_a_namesake_without_bsn_is_routed_by_name() -> None:
    """A BSN not in the register and one namesake registered without a BSN: rule 2, the name."""
    child = Child("Sanne de Vries", BIRTH, bsn="123456782")
    namesake = Pupil("Sanne de Vries", BIRTH, "34CD00", None)
    decision = resolve_child(child, by_bsn=None, same_birthdate=[namesake], directory=DIRECTORY)
    assert decision == Routed("34CD00", resolve.RULE_NAME)


def test_unknown_bsn_with_a_namesake_under_another_bsn_is_held() -> None:
    """A namesake registered under another BSN among others without one: held, not guessed."""
    child = Child("Sanne de Vries", BIRTH, bsn="123456782", school_hint="12AB00")
    pupils = [Pupil("Sanne de Vries", BIRTH, "34CD00", None),
              Pupil("Sanne de Vries", BIRTH, "12AB00", "111222333")]
    decision = resolve_child(child, by_bsn=None, same_birthdate=pupils, directory=DIRECTORY)
    assert decision == Held(resolve.HELD_BSN_NAME_DISAGREE)


# -- schedule: the edges of a holiday --------------------------------------------------------------

AMS = zoneinfo.ZoneInfo("Europe/Amsterdam")
# The autumn holiday of 2026 runs Monday 19 to Friday 23 October: both edges are weekdays.
AUTUMN = ScheduleSection(holidays=((dt.date(2026, 10, 19), dt.date(2026, 10, 23)),))


def test_first_and_last_day_of_a_holiday_are_not_school_days() -> None:
    """A holiday range includes its first and its last day; the days around it are school days."""
    assert is_school_day(dt.date(2026, 10, 16), AUTUMN)
    assert not is_school_day(dt.date(2026, 10, 19), AUTUMN)
    assert not is_school_day(dt.date(2026, 10, 23), AUTUMN)
    assert is_school_day(dt.date(2026, 10, 26), AUTUMN)


def test_a_signal_before_a_holiday_is_due_after_it() -> None:
    """A signal on the Friday before the holiday is due on the Monday after it."""
    accepted = dt.datetime(2026, 10, 16, 10, 0, tzinfo=AMS).astimezone(dt.UTC)
    due = dt.datetime(2026, 10, 26, 8, 30, tzinfo=AMS).astimezone(dt.UTC)
    assert deadline(accepted, AUTUMN) == due
    one_day = ScheduleSection(holidays=((dt.date(2026, 10, 19), dt.date(2026, 10, 19)),))
    due_tuesday = dt.datetime(2026, 10, 20, 8, 30, tzinfo=AMS).astimezone(dt.UTC)
    assert deadline(accepted, one_day) == due_tuesday


@pytest.fixture
def far_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone set to UTC+14, far from UTC and the schools, for the test."""
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("far_local_time")
def test_deadline_is_in_utc_whatever_the_local_time_zone() -> None:
    """The deadline is returned in UTC (it is stored and compared as such), not in local time."""
    accepted = dt.datetime(2026, 11, 24, 2, 0, tzinfo=dt.UTC)
    due = deadline(accepted, ScheduleSection())
    assert due.utcoffset() == dt.timedelta(0)
    assert due == dt.datetime(2026, 11, 24, 7, 30, tzinfo=dt.UTC)


@pytest.mark.usefixtures("far_local_time")
def test_deadline_counts_days_in_the_schools_zone_not_the_machines() -> None:
    """The school day is that of the schools' zone: 03:00 on a Tuesday in Pago Pago (UTC-11) is
    due at 08:30 that Tuesday, though the machine's own clock (UTC+14) already says Wednesday."""
    schedule = ScheduleSection(timezone="Pacific/Pago_Pago")
    pago = zoneinfo.ZoneInfo("Pacific/Pago_Pago")
    accepted = dt.datetime(2026, 11, 24, 3, 0, tzinfo=pago).astimezone(dt.UTC)
    assert deadline(accepted, schedule) == dt.datetime(2026, 11, 24, 8, 30, tzinfo=pago)


def test_no_school_day_in_a_year_says_so() -> None:
    """The error for a schedule without school days tells the administrator what to check."""
    always = ScheduleSection(holidays=((dt.date(2026, 1, 1), dt.date(2030, 1, 1)),))
    exact = r"^no school day within a year: check \[schedule\] holidays$"
    with pytest.raises(ValueError, match=exact):
        deadline(dt.datetime(2026, 6, 1, tzinfo=dt.UTC), always)


def test_time_left_at_the_deadline_is_not_negative() -> None:
    """At the deadline itself no time is left and none is overdue: `0h00m`, no minus sign."""
    now = dt.datetime(2026, 11, 24, 7, 30, tzinfo=dt.UTC)
    assert time_left(now, now) == "0h00m"
    assert time_left(now + dt.timedelta(seconds=59), now) == "0h00m"
    assert time_left(now - dt.timedelta(seconds=1), now) == "-0h00m"


# -- resolve: the internal contract --------------------------------------------------------------


def test_a_wrong_by_bsn_is_a_programming_error_with_its_message() -> None:
    """Passing a register pupil whose BSN is not the child's is refused with a plain message."""
    pupil = Pupil("Sanne de Vries", BIRTH, "34CD00", "111222333")
    child = Child("Sanne de Vries", BIRTH, bsn="123456782")
    exact = r"^by_bsn is not the register pupil with the child's BSN$"
    with pytest.raises(ValueError, match=exact):
        resolve_child(child, by_bsn=pupil, same_birthdate=[pupil], directory=DIRECTORY)


# -- names: how a name is taken apart ------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), [
    ("Anna d'Ancona", "Anna d' Ancona"),
    ("Pierre l'Ecluse", "Pierre l' Ecluse"),
], ids=["d-article", "l-article"])
def test_an_elided_article_is_a_token_of_its_own(a: str, b: str) -> None:
    """"d'Ancona" is read as the article and the name, as "d' Ancona" is."""
    assert names_match(a, b)


def test_a_given_name_that_is_also_a_particle_is_kept() -> None:
    """The first word is always a given name, even "Les" (short for Leslie, also a particle)."""
    assert name_key("Les van Dijk") == NameKey(("les",), ("van", "dijk"))
    assert names_match("Les van Dijk", "Les van Dijk")


def test_a_hyphen_never_joins_the_first_word_to_the_surname() -> None:
    """In "Anna-de Vries" the hyphen cannot pull the given name into the surname."""
    assert name_key("Anna-de Vries") == NameKey(("anna",), ("de", "vries"))


def test_register_order_with_an_empty_side_is_unreadable() -> None:
    """"Berg," and ", Jan" have no name on one side of the comma: nothing is read from them."""
    assert name_key("Berg,") == NameKey((), ())
    assert name_key(", Jan") == NameKey((), ())


def test_register_order_keeps_one_given_name_before_its_particles() -> None:
    """"Berg, van" keeps "van" as the given part: particles move back only from behind a name."""
    assert name_key("Berg, van") == NameKey(("van",), ("berg",))
    assert name_key("Berg, Jan van der") == NameKey(("jan",), ("van", "der", "berg"))


def test_an_unreadable_side_never_matches_even_with_the_same_words() -> None:
    """"J. Anna-de Vries" reads as an initial and a surname: it matches nobody, not even the
    same words written "J. Anna de Vries"."""
    assert not names_match("J. Anna de Vries", "J. Anna-de Vries")
    assert not names_match("J. Anna-de Vries", "J. Anna de Vries")


def test_pseudonym_text_of_an_unreadable_name_keeps_its_commas_apart() -> None:
    """A name with two commas still has one canonical text: the commas as words of their own."""
    assert pseudonym_text("Berg, Jan, Piet") == "berg , jan , piet"
    assert pseudonym_text("Berg,Jan,Piet") == "berg , jan , piet"


# -- fields: names, BSNs and school codes --------------------------------------------------------


def test_clean_name_keeps_letters_at_its_ends() -> None:
    """Only spaces are trimmed from a name, never a letter ("Xander", "DAX, XAVIER")."""
    assert clean_name("  Xander de Vries  ") == "Xander de Vries"
    assert clean_name("DAX ,  XAVIER") == "DAX, XAVIER"


@pytest.mark.parametrize("text", ["Berg\n, Jan", "Berg, \u2028Jan", "Berg\u2029, Jan",
                                  "Berg, \x0bJan"],
                         ids=["newline", "line-separator", "paragraph-separator", "vertical-tab"])
def test_clean_name_refuses_a_line_break_beside_the_comma(text: str) -> None:
    """A line break next to the comma makes the name invalid; it is not trimmed away."""
    assert clean_name(text) is None


def test_clean_name_keeps_combining_marks() -> None:
    """Combining marks that NFC leaves separate (Mn, Mc: Devanagari, Guarani g̃) are letters'
    parts, not punctuation."""
    assert clean_name("राम शर्मा") == "राम शर्मा"
    assert clean_name("Ana Ag\u0303ua") == "Ana Ag\u0303ua"


@pytest.mark.parametrize("digits", ["12345678a", "1234567.2", "١٢٣٤٥٦٧٨٢", "１２３４５６７８２"],
                         ids=["letter", "dot", "arabic-indic", "fullwidth"])
def test_eleven_test_refuses_anything_but_nine_ascii_digits(digits: str) -> None:
    """Nine characters that are not all ASCII digits fail the eleven-test, without an error."""
    assert not passes_eleven_test(digits)


@pytest.mark.parametrize(("brin", "number"), [("12ß", ""), ("12ﬀ", "1"), ("12AB", "０1")],
                         ids=["sharp-s", "ligature", "fullwidth-number"])
def test_vestigingscode_refuses_non_ascii_that_uppercases_to_ascii(brin: str, number: str) -> None:
    """"12ß" uppercases to "12SS", a BRIN shape: non-ASCII input is refused before that."""
    assert vestigingscode(brin, number) is None


# -- escalate: which escalations are due ---------------------------------------------------------

# A signal accepted on Tuesday 24 November 2026 at 10:00 in Amsterdam is due on Wednesday 25 at
# 08:30 local time, 07:30 UTC.
ACCEPTED = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)
DUE = dt.datetime(2026, 11, 25, 7, 30, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
SECOND = dt.timedelta(seconds=1)


OpenSignal = tuple[str, dt.datetime, tuple[str, ...], tuple[str, ...]]


def _due(now: dt.datetime, *, open_signals: list[OpenSignal] | None = None,
         unacknowledged: list[tuple[str, str, dt.datetime]] | None = None,
         done: dict[str, set[str]] | None = None) -> list[Escalation]:
    return due_escalations(open_signals or [], unacknowledged or [], now=now,
                           schedule=ScheduleSection(), before=HOUR, done=done or {})


def test_an_undelivered_signal_escalates_the_set_time_before_the_deadline() -> None:
    """An undelivered signal escalates from `before` ahead of its deadline, not a second
    earlier, with its reference, states, schools and deadline."""
    signal: list[OpenSignal] = [("R1", ACCEPTED, ("held",), ("12AB00",))]
    assert _due(DUE - HOUR - SECOND, open_signals=signal) == []
    expected = [Escalation("R1", "undelivered", ("12AB00",), DUE, ("held",))]
    assert _due(DUE - HOUR, open_signals=signal) == expected
    assert _due(DUE + HOUR, open_signals=signal) == expected


def test_an_escalation_already_raised_is_not_raised_again() -> None:
    """Once raised (by kind, per reference), an escalation is not due again; another signal's
    or another kind's record does not count."""
    signal: list[OpenSignal] = [("R1", ACCEPTED, ("held",), ("12AB00",))]
    assert _due(DUE, open_signals=signal, done={"R1": {"undelivered"}}) == []
    assert len(_due(DUE, open_signals=signal, done={"R1": {"unacknowledged"}})) == 1
    assert len(_due(DUE, open_signals=signal, done={"R2": {"undelivered"}})) == 1
    waiting = [("R1", "12AB00", ACCEPTED)]
    assert _due(DUE, unacknowledged=waiting, done={"R1": {"unacknowledged"}}) == []
    assert len(_due(DUE, unacknowledged=waiting, done={"R1": {"undelivered"}})) == 1


def test_an_unacknowledged_notice_escalates_at_the_deadline_itself() -> None:
    """An unacknowledged notice escalates at its deadline (not `before` it), once per signal,
    naming every school still to acknowledge, sorted."""
    waiting = [("R1", "56EF00", ACCEPTED), ("R1", "12AB00", ACCEPTED),
               ("R2", "34CD00", ACCEPTED + dt.timedelta(days=1))]
    assert _due(DUE - SECOND, unacknowledged=waiting) == []
    assert _due(DUE, unacknowledged=waiting) == [
        Escalation("R1", "unacknowledged", ("12AB00", "56EF00"), DUE)]


def test_both_kinds_escalate_in_one_pass() -> None:
    """One pass returns the undelivered and the unacknowledged escalations that are due."""
    due = _due(DUE, open_signals=[("R1", ACCEPTED, ("sent", "held"), ("12AB00", "34CD00"))],
               unacknowledged=[("R1", "12AB00", ACCEPTED)])
    assert [(e.ref, e.what, e.schools) for e in due] == [
        ("R1", "undelivered", ("12AB00", "34CD00")), ("R1", "unacknowledged", ("12AB00",))]


# -- opener: the verdicts line by line -----------------------------------------------------------

NOT_DECRYPTABLE = Rejection(RejectClass.NOT_ENCRYPTED,
                            "message cannot be decrypted with a gateway key")


@pytest.mark.parametrize(("lines", "verdict"), [
    (["ENC_TO 1122334455667788 18 0", "DECRYPTION_FAILED"], NOT_DECRYPTABLE),
    (["BEGIN_DECRYPTION", "DECRYPTION_FAILED", "END_DECRYPTION"], NOT_DECRYPTABLE),
    (["PLAINTEXT 62 0"], Rejection(RejectClass.NOT_ENCRYPTED, "message is not encrypted")),
], ids=["enc-to-only", "begin-only", "neither"])
def test_undecryptable_and_unencrypted_are_told_apart(lines: list[str], verdict: Rejection) -> None:
    """Either ENC_TO or BEGIN_DECRYPTION shows an encrypted message we could not open; with
    neither, the message was not encrypted at all."""
    assert decryption_verdict(gpg_result(*lines)) == verdict


def test_decryption_info_fields_are_read_safely() -> None:
    """A DECRYPTION_INFO with only its MDC field is read; an empty one is no proof of integrity
    (and no error)."""
    assert decryption_verdict(gpg_result(*DECRYPTED, "DECRYPTION_INFO 2")) is None
    assert decryption_verdict(gpg_result(*DECRYPTED, "DECRYPTION_INFO ")) == Rejection(
        RejectClass.NOT_ENCRYPTED, "ciphertext is not integrity protected")


PINNED = frozenset({CURRENT})


def _validsig(fields: int) -> str:
    """A VALIDSIG with its first `fields` fields (gpg gives 10; the tenth is the primary)."""
    values = [CURRENT, "2026-03-02", "1772434800", "0", "4", "0", "22", "10", "00", CURRENT]
    return "VALIDSIG " + " ".join(values[:fields])


def _signed(*lines: str, returncode: int = 0) -> GpgResult:
    return gpg_result("NEWSIG", "GOODSIG 8899AABBCCDDEEFF Veilig Thuis", *lines,
                      returncode=returncode)


def _bad(detail: str) -> Rejection:
    return Rejection(RejectClass.BAD_SIGNATURE, detail)


def test_a_validsig_without_the_primary_field_names_its_first_field() -> None:
    """A VALIDSIG of 8 or 9 fields (hash included, no primary) is read: the signer is its first
    field; fewer than 8 is not valid."""
    assert signature_verdict(_signed(_validsig(8)), PINNED) == CURRENT
    assert signature_verdict(_signed(_validsig(9)), PINNED) == CURRENT
    assert signature_verdict(_signed(_validsig(7)), PINNED) == _bad("signature is not valid")


def test_two_goodsigs_under_one_newsig_are_two_signatures() -> None:
    """Two GOODSIG lines are two signatures even when gpg announced one."""
    result = _signed("GOODSIG 1122334455667788 Other", _validsig(10))
    assert signature_verdict(result, PINNED) == _bad("more than one signature")


@pytest.mark.parametrize(("errsig", "detail"), [
    ("ERRSIG 8899AABBCCDDEEFF 22", "signature is not by a key pinned for this sender"),
    ("ERRSIG 8899AABBCCDDEEFF 22 2", "signature uses a weak hash algorithm; sign with SHA-256 or "
                                     "stronger"),
    ("ERRSIG 8899AABBCCDDEEFF 22 2 1f 1772434800 9 -", "signature uses a weak hash algorithm; "
                                                       "sign with SHA-256 or stronger"),
    ("ERRSIG 8899AABBCCDDEEFF 22 10 00 1772434800 9 -", "signature is not by a key pinned for "
                                                        "this sender"),
], ids=["no-hash-field", "hash-last", "hex-class", "strong-hash"])
def test_errsig_is_read_by_its_hash_field(errsig: str, detail: str) -> None:
    """ERRSIG's third field is the hash: a weak one is named, a missing one is no error, and
    anything else is a key not pinned."""
    result = gpg_result("NEWSIG", errsig, returncode=2)
    assert signature_verdict(result, PINNED) == _bad(detail)


def test_no_pubkey_alone_is_a_key_not_pinned() -> None:
    """NO_PUBKEY without ERRSIG still means the signer's key is not pinned for this sender."""
    result = gpg_result("NEWSIG", "NO_PUBKEY 8899AABBCCDDEEFF", returncode=2)
    assert signature_verdict(result, PINNED) == _bad(
        "signature is not by a key pinned for this sender")


def test_a_problem_beside_one_good_signature_is_not_valid() -> None:
    """A BADSIG next to a GOODSIG and a pinned VALIDSIG, exit 0: still not a valid signature."""
    result = _signed("BADSIG 8899AABBCCDDEEFF Veilig Thuis", _validsig(10))
    assert signature_verdict(result, PINNED) == _bad("signature is not valid")


def test_an_error_exit_with_a_signature_is_left_to_the_signature_verdict() -> None:
    """gpg's error exit with a NEWSIG alone (no problem keyword) is not a decryption error."""
    lines = [*DECRYPTED, "DECRYPTION_INFO 2 9", "NEWSIG"]
    assert plaintext_verdict(gpg_result(*lines, returncode=2), 4096) is None
    unsigned = gpg_result(*DECRYPTED, "DECRYPTION_INFO 2 9", returncode=2)
    assert plaintext_verdict(unsigned, 4096) == Rejection(
        RejectClass.NOT_ENCRYPTED, "gpg reported an error while decrypting the message")


# -- opener: the RFC 3156 shapes, exactly --------------------------------------------------------

SIGNED_TYPE = b'multipart/signed; protocol="application/pgp-signature"; boundary="b1"'
PART = b"--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
SIGNATURE = (b"--b1\r\nContent-Type: application/pgp-signature\r\n\r\n"
             b"-----BEGIN PGP SIGNATURE-----\r\n")
CLOSE = b"--b1--\r\n"
ONE_PART = "multipart/signed must hold exactly one part and one signature"


def _entity(body: bytes, content_type: bytes = SIGNED_TYPE) -> bytes:
    return b"Content-Type: " + content_type + b"\r\n\r\n" + body


def test_a_well_formed_multipart_signed_splits() -> None:
    """The shape the rules below break: one part, one signature, the close delimiter."""
    assert signed_parts(_entity(PART + SIGNATURE + CLOSE)) == (
        b"Content-Type: text/plain\r\n\r\nhello", b"-----BEGIN PGP SIGNATURE-----")


@pytest.mark.parametrize("body", [
    PART + CLOSE + SIGNATURE[6:] + CLOSE,
    CLOSE + PART[6:] + SIGNATURE + CLOSE,
    PART + SIGNATURE + CLOSE + b"epilogue\r\n" + CLOSE,
    PART + SIGNATURE + SIGNATURE + CLOSE,
], ids=["close-after-part", "close-first", "second-close-in-epilogue", "second-signature"])
def test_multipart_signed_delimiters_must_be_open_open_close(body: bytes) -> None:
    """Exactly three delimiters: two that open a part, then the close; a close delimiter in any
    other place, or a fourth delimiter, refuses the entity."""
    assert signed_parts(_entity(body)) == _bad(ONE_PART)


def test_a_multipart_signed_without_a_body_cannot_be_parsed() -> None:
    """A multipart/signed header with no blank line and no body: refused as unparsable."""
    assert signed_parts(SIGNED_TYPE.join([b"Content-Type: ", b""])) == _bad(
        "signed entity cannot be parsed")


def test_a_non_ascii_boundary_is_refused_not_raised() -> None:
    """A boundary with a non-ASCII byte never raises: the delimiters cannot be found, refused."""
    content_type = b'multipart/signed; protocol="application/pgp-signature"; boundary="b\xc3\xa9"'
    assert signed_parts(_entity(PART + SIGNATURE + CLOSE, content_type)) == _bad(ONE_PART)


def test_an_unparsable_outer_content_type_is_not_pgp_mime() -> None:
    """A Content-Type the header parser raises on (`x*`) is refused as not PGP/MIME, exactly."""
    raw = b"Content-Type: multipart/encrypted; x*\r\n\r\nx\r\n"
    assert encrypted_payload(raw) == Rejection(RejectClass.NOT_ENCRYPTED,
                                               "message is not PGP/MIME encrypted")


# -- throttle: the AUTH throttle's policy, session slots and refusals ----------------------------


def test_auth_failures_are_answered_slower_and_slower_up_to_the_cap() -> None:
    """The first three failures are answered at once; from the fourth each waits 0.5 s, doubled
    per failure, at most 8 s."""
    throttle = AuthThrottle()
    delays = [throttle.record_failure("192.0.2.1", "vt", 1000.0 + i) for i in range(9)]
    assert delays == [0.0, 0.0, 0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_the_delay_follows_the_worse_of_address_and_login() -> None:
    """A login tried from many addresses is slowed by its own count, not the address's."""
    throttle = AuthThrottle()
    delays = [throttle.record_failure(f"192.0.2.{i}", "vt", 1000.0) for i in range(5)]
    assert delays == [0.0, 0.0, 0.0, 0.5, 1.0]


def test_an_address_is_refused_from_its_tenth_failure_in_the_window() -> None:
    """Nine failures from one address are let through; the tenth refuses it, for any login."""
    throttle = AuthThrottle()
    for i in range(9):
        throttle.record_failure("192.0.2.1", f"login{i}", 1000.0)
    assert not throttle.refused("192.0.2.1", "other", 1000.0)
    throttle.record_failure("192.0.2.1", "login9", 1000.0)
    assert throttle.refused("192.0.2.1", "other", 1000.0)
    assert not throttle.refused("192.0.2.2", "other", 1000.0)


def test_a_login_is_refused_from_its_twentieth_failure_from_any_addresses() -> None:
    """Nineteen failures of one login from many addresses are let through; the twentieth
    refuses that login everywhere."""
    throttle = AuthThrottle()
    for i in range(19):
        throttle.record_failure(f"192.0.2.{i}", "vt", 1000.0)
    assert not throttle.refused("198.51.100.1", "vt", 1000.0)
    throttle.record_failure("192.0.2.99", "vt", 1000.0)
    assert throttle.refused("198.51.100.1", "vt", 1000.0)
    assert not throttle.refused("198.51.100.1", "other", 1000.0)


def test_failures_are_forgotten_after_exactly_fifteen_minutes() -> None:
    """A failure counts for 15 minutes: a second before, the address is refused; at 15:00 it is
    forgotten, and the key is dropped."""
    throttle = AuthThrottle()
    for _ in range(10):
        throttle.record_failure("192.0.2.1", "vt", 1000.0)
    assert throttle.refused("192.0.2.1", "x", 1000.0 + 15 * 60 - 1)
    assert not throttle.refused("192.0.2.1", "vt", 1000.0 + 15 * 60)
    assert len(throttle) == 0


def test_a_good_login_forgets_only_that_logins_failures() -> None:
    """A success clears its login's failures; the address and other logins keep theirs."""
    throttle = AuthThrottle()
    throttle.record_failure("192.0.2.1", "vt", 1000.0)
    throttle.record_failure("192.0.2.2", "other", 1000.0)
    throttle.record_success("192.0.2.1", "vt")
    assert set(throttle.failures) == {"addr:192.0.2.1", "addr:192.0.2.2", "login:other"}


def test_past_ten_thousand_keys_the_expired_ones_are_dropped() -> None:
    """Beyond 10,000 keys a failure first drops every key whose failures have expired; up to
    it, nothing is swept."""
    throttle = AuthThrottle()
    for i in range(5000):
        throttle.record_failure(f"10.0.{i // 256}.{i % 256}", f"l{i}", 0.0)
    assert len(throttle) == 10_000
    throttle.record_failure("192.0.2.1", "vt", 2000.0)
    assert len(throttle) == 10_002  # not more than MAX_KEYS before: no sweep
    throttle.record_failure("192.0.2.2", "vt2", 2000.0)
    assert set(throttle.failures) == {"addr:192.0.2.1", "login:vt", "addr:192.0.2.2",
                                      "login:vt2"}


def test_session_slots_per_address_and_in_total() -> None:
    """Sessions are let in up to the per-address and the total cap; closing frees a slot, and
    `idle` is set exactly while none is open."""
    limits = SessionLimits(max_total=3, max_per_address=2)
    assert limits.idle.is_set()
    assert limits.try_open("a") and limits.try_open("a")
    assert not limits.idle.is_set()
    assert not limits.try_open("a")
    assert limits.try_open("b")
    assert not limits.try_open("c")
    assert limits.total == 3
    limits.close("a")
    assert limits.open == {"a": 1, "b": 1}
    assert not limits.idle.is_set()
    assert limits.try_open("c")
    for address in ("a", "b", "c"):
        limits.close(address)
    assert limits.open == {}
    assert limits.idle.is_set()
    limits.close("a")  # closing what is not open changes nothing
    assert limits.open == {}
    assert limits.total == 0
    one_each = SessionLimits(max_total=5, max_per_address=1)
    assert one_each.try_open("a") and not one_each.try_open("a")


@pytest.mark.parametrize(("command", "reply", "forward"), [
    ("starttls", "220 2.0.0 Ready", True), ("AUTH", "235 2.7.0 OK", True),
    ("RCPT", "250 OK", True), ("DATA", "250 2.0.0 queued", True),
    ("AUTH", "535 5.7.8 no", False), ("MAIL", "250 OK", False), ("NOOP", "250 OK", False),
    ("RCPT", "550 5.1.1 unknown", False), ("DATA", "354 go ahead", False),
])
def test_progress_is_a_command_with_its_success_reply(command: str, reply: str,
                                                      forward: bool) -> None:
    """Only STARTTLS 220, AUTH 235, RCPT 250 and DATA 250 (any case) move a session forward."""
    assert progressed(command, reply) is forward


def test_the_stall_counter_is_exhausted_at_its_limit() -> None:
    """`limit` commands that go nowhere exhaust it; one that progresses starts it again."""
    counter = StallCounter(limit=2)
    counter.record("NOOP", "250 OK")
    assert not counter.exhausted()
    counter.record("NOOP", "250 OK")
    assert counter.exhausted()
    counter.record("STARTTLS", "220 Ready")
    assert counter.count == 0


def test_refusals_block_at_the_limit_until_exactly_the_block_ends() -> None:
    """The `limit`-th refusal within `block_seconds` blocks; the block ends at exactly
    `block_seconds` later, and refusals while blocked do not count."""
    refusals = ClientRefusals(limit=3, block_seconds=60.0)
    assert not refusals.record("a", 0.0)
    assert not refusals.record("a", 1.0)
    assert refusals.record("a", 2.0)
    assert refusals.recent == {}
    assert refusals.blocked("a", 61.0)
    assert not refusals.record("a", 61.0)
    assert refusals.recent == {}  # not counted while blocked
    assert not refusals.blocked("a", 62.0)
    assert refusals.blocked_until == {}


def test_refusals_older_than_the_block_time_are_forgotten() -> None:
    """A refusal counts for `block_seconds`: at exactly that age it is forgotten."""
    refusals = ClientRefusals(limit=2, block_seconds=60.0)
    refusals.record("a", 0.0)
    assert not refusals.record("a", 60.0)
    assert refusals.recent == {"a": [60.0]}
    assert refusals.record("a", 119.0)


def test_past_ten_thousand_refused_addresses_the_stale_ones_are_dropped() -> None:
    """Beyond 10,000 addresses (not at 10,000) a refusal first drops the expired counts and the
    ended blocks, a block ending that very second included; recent counts stay."""
    refusals = ClientRefusals(limit=2, block_seconds=60.0)
    for i in range(9_999):
        refusals.record(f"10.0.{i // 256}.{i % 256}", 0.0)
    refusals.record("192.0.2.5", 90.0)
    refusals.blocked_until.update({"192.0.2.9": 30.0, "192.0.2.7": 100.0, "192.0.2.8": 500.0})
    assert len(refusals.recent) == 10_000
    assert not refusals.record("192.0.2.1", 100.0)
    assert len(refusals.recent) == 10_001  # at 10,000 nothing is swept
    assert not refusals.record("192.0.2.2", 100.0)
    assert refusals.recent == {"192.0.2.5": [90.0], "192.0.2.1": [100.0], "192.0.2.2": [100.0]}
    assert refusals.blocked_until == {"192.0.2.8": 500.0}


def test_a_limit_of_one_blocks_at_the_first_refusal() -> None:
    """With a limit of one, the first refusal blocks at once."""
    refusals = ClientRefusals(limit=1, block_seconds=60.0)
    assert refusals.record("a", 0.0)
    assert refusals.blocked("a", 59.0)


# -- extract: the payload part and the labelled form ---------------------------------------------

TODAY = dt.date(2026, 3, 2)
LABELLED = ("Codewoord: Handle with Care\r\nReferentie: VT-1\r\n"
            "Naam: Sanne de Vries\r\nGeboortedatum: 12-04-2016\r\n")
SANNE = Signal(children=(Child("Sanne de Vries", dt.date(2016, 4, 12)),), reference="VT-1")


def _text(body: str, headers: str = "Content-Type: text/plain; charset=utf-8\r\n") -> bytes:
    return (headers + "\r\n" + body).encode()


def _mixed_with(extra_part: str) -> bytes:
    return ("Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n"
            "Content-Type: text/plain\r\n\r\n" + LABELLED + "\r\n--b1\r\n" + extra_part
            + "\r\n--b1--\r\n").encode()


def test_an_entity_the_email_package_raises_on_is_an_unreadable_signal() -> None:
    """A part header the email parser raises on (`x*`) is refused as unreadable, never a crash."""
    assert parse_signal(_text(LABELLED, "Content-Type: text/plain; x*\r\n"), today=TODAY) == \
        Rejection(RejectClass.INVALID_SIGNAL, "signal could not be read")


def test_delimiter_lines_up_to_twice_the_part_limit_are_read() -> None:
    """Lines that look like delimiters of a boundary named anywhere are counted before parsing:
    100 are read (here as free text), 101 are refused."""
    mention = 'Toelichting: the old mail said boundary="zz"\r\n'
    assert parse_signal(_text(LABELLED + mention + "--zz\r\n" * 100), today=TODAY) == SANNE
    assert parse_signal(_text(LABELLED + mention + "--zz\r\n" * 101), today=TODAY) == Rejection(
        RejectClass.INVALID_SIGNAL, "too many MIME parts")


def test_format_flowed_with_delsp_joins_without_the_space() -> None:
    """format=flowed; delsp=yes (RFC 3676 §4.2): the trailing space of a wrapped line goes."""
    body = LABELLED.replace("Naam: Sanne de Vries", "Naam: Sanne de Vr \r\nies")
    for delsp in ("yes", "Yes"):
        headers = f"Content-Type: text/plain; format=flowed; delsp={delsp}\r\n"
        assert parse_signal(_text(body, headers), today=TODAY) == SANNE
    flowed = "Content-Type: text/plain; format=flowed\r\n"
    assert parse_signal(_text(body, flowed), today=TODAY) == Signal(
        children=(Child("Sanne de Vr ies", dt.date(2016, 4, 12)),), reference="VT-1")


@pytest.mark.parametrize("extra", [
    'Content-Type: text/rfc822-headers; name="headers.json"\r\n\r\nSubject: x',
    'Content-Type: application/json; protected-headers="v1"\r\n\r\n{}',
], ids=["rfc822-headers-named-json", "protected-headers-json"])
def test_protected_header_parts_are_never_the_payload(extra: str) -> None:
    """Thunderbird's protected-headers parts are skipped even when they look like JSON."""
    assert parse_signal(_mixed_with(extra), today=TODAY) == SANNE


@pytest.mark.parametrize("cte", ["binary", "", "8bit", "7bit"])
def test_identity_transfer_encodings_are_read(cte: str) -> None:
    """binary, 7bit, 8bit and an empty Content-Transfer-Encoding carry the text as it is."""
    headers = f"Content-Type: text/plain\r\nContent-Transfer-Encoding: {cte}\r\n"
    assert parse_signal(_text(LABELLED, headers), today=TODAY) == SANNE


def test_a_non_string_reference_in_json_is_named() -> None:
    """JSON whose reference is not a string is refused naming the reference."""
    document = {"codeword": "Handle with Care", "reference": 5,
                "children": [{"name": "Sanne de Vries", "birthdate": "2016-04-12"}]}
    raw = ("Content-Type: application/json\r\n\r\n" + json.dumps(document)).encode()
    assert parse_signal(raw, today=TODAY) == Rejection(RejectClass.INVALID_SIGNAL,
                                                       "reference is not a string")


def test_a_labelled_value_is_read_from_the_first_colon() -> None:
    """The label ends at the first colon: "Referentie: VT:1" is the reference "VT:1" (refused
    as malformed), not free text."""
    body = LABELLED.replace("Referentie: VT-1", "Referentie: VT:1")
    assert parse_signal(_text(body), today=TODAY) == Rejection(RejectClass.INVALID_SIGNAL,
                                                               "reference is malformed")


def test_a_label_without_a_colon_is_free_text() -> None:
    """A line that is only a label word ("Naam") is free text, not an empty field."""
    assert parse_signal(_text("Naam\r\n" + LABELLED + "BSN\r\n"), today=TODAY) == SANNE


@pytest.mark.parametrize("end", ["\x0c", "\x0b", "\u2028", "\x1c"])
def test_a_labelled_value_is_trimmed_of_spaces_and_tabs_only(end: str) -> None:
    """Only spaces and tabs are trimmed from a value: a form feed or line separator at its end
    makes the name invalid instead of vanishing."""
    body = LABELLED.replace("Sanne de Vries", "Sanne de Vries" + end)
    assert parse_signal(_text(body), today=TODAY) == Rejection(
        RejectClass.INVALID_SIGNAL, "child 1: name is not a valid name")


@pytest.mark.parametrize(("text", "delsp", "unflowed"), [
    ("> a \n> b\nc", False, ">a b\nc"),
    ("> a \nb", False, ">a \nb"),
    ("a \nb ", False, "a b "),
    ("a \r\nb\r\n", False, "a b\n"),
    ("a \nb", True, "ab"),
    ("ab  \nc", True, "ab c"),
    ("-- \nx", False, "-- \nx"),
    ("  From here\n>> quoted", False, " From here\n>>quoted"),
    ("> first", False, ">first"),
    ("x\n> a ", False, "x\n>a "),
], ids=["quoted-paragraph", "depth-change", "flowed-at-end", "crlf", "delsp", "delsp-one",
        "signature-separator", "space-stuffing", "quoted-first-line", "quoted-flowed-at-end"])
def test_unflow_follows_rfc_3676(text: str, delsp: bool, unflowed: str) -> None:
    """Flowed lines join within one quote depth; a depth change, the signature separator and
    the end close a paragraph; one stuffed space and, with delsp, one trailing space go."""
    assert _unflow(text, delsp=delsp) == unflowed


# -- deliver: the reply classes at their edges ---------------------------------------------------


@pytest.mark.parametrize(("code", "result"), [
    (199, Result.TEMPORARY), (200, Result.DELIVERED), (299, Result.DELIVERED),
    (300, Result.TEMPORARY), (399, Result.TEMPORARY), (400, Result.TEMPORARY),
    (499, Result.TEMPORARY), (500, Result.PERMANENT), (501, Result.PERMANENT),
    (599, Result.PERMANENT), (600, Result.TEMPORARY),
])
def test_reply_classes_at_their_first_and_last_code(code: int, result: Result) -> None:
    """x00 and x99 belong to their class: 200-299 delivered, 400-499 temporary, 500-599
    permanent, everything else (not SMTP) temporary."""
    assert classify_reply(code, "text").result is result


def test_backoff_doubles_up_to_thirty_times_at_most() -> None:
    """The doubling stops at 2**30 (the cap on the exponent keeps the number small)."""
    now = dt.datetime(2026, 3, 2, 7, 0, tzinfo=dt.UTC)
    huge = 2**40
    assert next_attempt_at(31, now, 1, huge) == now + dt.timedelta(seconds=2**30)
    assert next_attempt_at(32, now, 1, huge) == now + dt.timedelta(seconds=2**30)


# -- mimelimits: a folded plain value reads as policy.default reads it ---------------------------


def test_a_folded_quoted_parameter_is_unfolded_like_policy_default() -> None:
    """A quoted parameter folded over two lines reads as policy.default reads it: unfolded."""
    data = b'Content-Type: text/plain; name="a\r\n b.txt"\r\n\r\nx'
    expected = BytesParser(policy=policy.default).parsebytes(data)
    assert parse_mime(data).get_param("name") == expected.get_param("name") == "a b.txt"


# -- keyinfo: gpg's colon listing, short and odd records included ---------------------------------

WANT = "77C9EFD9CFA9264952F62530A50125A46251CFE7"
WANT_ID = WANT[-16:]
OTHER_KEY = "A" * 40


def _ksig(created: int, sig_class: str, hash_algo: str, keyid: str = WANT_ID,
          fields: int = 17) -> str:
    """A `sig` record (doc/DETAILS): issuer in field 5, creation in 6, class in 11, hash in 16."""
    values = ["sig", "!", "", "22", keyid, str(created), "", "", "", "Someone", sig_class, "",
              WANT, "", "", hash_algo, ""]
    return ":".join(values[:fields])


def test_self_signatures_are_read_from_short_and_odd_records() -> None:
    """Records cut short, revoked photo IDs and secret subkeys, and other keys around the wanted
    one are read as gpg means them, without an error: only the wanted key's own self-signatures
    on parts in use count."""
    listing = "\n".join([
        "uid:u::::::EEEE", _ksig(5, "13x", "1", keyid=""),  # before any key: nobody's
        "pub:u:255:22", "uid:u::::::FFFF", _ksig(6, "13x", "1", keyid=""),  # no fpr yet
        "fpr::::::::",  # 9 fields: no fingerprint, not the wanted key
        "pub:u:255:22:" + WANT_ID,  # 5 fields: just the key ID
        "fpr:::::::::" + WANT,  # 10 fields: just the fingerprint
        _ksig(100, "1fx", "8"),
        "rev",
        "uid:u::::::AAAA", _ksig(110, "13x", "8", fields=16), _ksig(120, "13x", "2", fields=15),
        _ksig(105, "13x", "2"),  # older than the one before: not in use
        "uid:u::::::G10", _ksig(210, "10x", "8"), _ksig(210, "10x", "9"),  # a tie: both
        "uid:u::::::G11", _ksig(211, "11x", "8"), "uid:u::::::G12", _ksig(212, "12x", "8"),
        "uat:r:::::::CCCC", _ksig(400, "13x", "2"),  # a revoked photo ID's
        "uid:r", _ksig(300, "13x", "2"),  # a revoked user ID's, the record cut short
        "uid:u:::::", _ksig(150, "13x", "10"),  # a user ID record without its hash
        "sub:u:255:18:SUBKEY0000000001", _ksig(160, "18x", "8"),
        "ssb:r", _ksig(170, "18x", "2"),  # a revoked secret subkey's
        "sub:u:255:18", _ksig(180, "18x", "9"),  # a subkey record without its key ID
        "pub", "fpr:::::::::" + "B" * 40,  # a key record cut down to its kind
        "pub:u:255:22:" + OTHER_KEY[-16:], "fpr:::::::::" + OTHER_KEY,
        "uid:u::::::DDDD", _ksig(190, "13x", "1", keyid=OTHER_KEY[-16:]),
    ])
    assert self_signatures_in_use(listing, WANT) == frozenset({
        SelfSignature("key", 100, "1f", "8"), SelfSignature("uid AAAA", 110, "13", "8"),
        SelfSignature("uid ", 150, "13", "10"), SelfSignature("uid G10", 210, "10", "8"),
        SelfSignature("uid G10", 210, "10", "9"), SelfSignature("uid G11", 211, "11", "8"),
        SelfSignature("uid G12", 212, "12", "8"),
        SelfSignature("subkey SUBKEY0000000001", 160, "18", "8"),
        SelfSignature("subkey ", 180, "18", "9")})


def test_a_revoked_key_in_a_short_record_has_nothing_in_use() -> None:
    """`pub:r` cut short after its validity still marks the key revoked: nothing in use."""
    listing = "\n".join(["pub:r", "fpr:::::::::" + WANT, "uid:u::::::AAAA",
                         _ksig(1, "13x", "8", keyid="")])
    assert self_signatures_in_use(listing, WANT) == frozenset()


def test_a_fingerprint_without_its_key_record_is_not_the_key() -> None:
    """An `fpr` record that follows no `pub` record names no key of the listing."""
    assert self_signatures_in_use("fpr:::::::::" + WANT, WANT) is None


# -- inert: JSON keeps its own newlines ---------------------------------------------------------


def test_inert_json_keeps_the_newlines_of_the_indentation() -> None:
    """The line breaks json.dumps(indent=...) writes stay; other controls become \\uXXXX."""
    text = json.dumps({"a": "x\x85y"}, indent=1, ensure_ascii=False)
    assert inert_json(text) == '{\n "a": "x\\u0085y"\n}'


# -- opener: what only the byte split sees -------------------------------------------------------


def test_a_signature_part_the_header_parser_raises_on_is_refused() -> None:
    """A signature part whose header the parser raises on is refused as unparsable. (Reached
    when the parser did not split the entity, here because its boundary is not ASCII, and the
    split on bytes did: `bé` is looked for as `b?`.)"""
    entity = (b'Content-Type: multipart/signed; protocol="application/pgp-signature"; '
              b'boundary="b\xc3\xa9"\r\n\r\n--b?\r\nContent-Type: text/plain\r\n\r\nhello\r\n'
              b"--b?\r\nContent-Type: application/pgp-signature; x*\r\n\r\nSIG\r\n--b?--\r\n")
    assert signed_parts(entity) == _bad("signature part cannot be parsed")


def test_a_delimiter_in_place_of_the_blank_line_is_not_the_first_delimiter() -> None:
    """The signed part starts after the header's blank line: a delimiter line right under the
    header (no blank line) is header, not the first delimiter, and the shape is refused."""
    entity = (b'Content-Type: multipart/signed; protocol="application/pgp-signature"; '
              b'boundary="b1"\r\n--b1\r\n\r\nhello\r\n--b1\r\n'
              b"Content-Type: application/pgp-signature\r\n\r\nSIG\r\n--b1--\r\n")
    assert signed_parts(entity) == _bad(ONE_PART)


def test_structure_gives_the_signed_part_of_a_multipart_signed() -> None:
    """The decrypted entity's structure carries its signed part and signature, and an entity
    the parser raises on is refused as unparsable."""
    parsed = _structure(_entity(PART + SIGNATURE + CLOSE))
    assert not isinstance(parsed, Rejection)
    assert parsed[1] == (b"Content-Type: text/plain\r\n\r\nhello", b"-----BEGIN PGP SIGNATURE-----")
    assert _structure(b"Content-Type: multipart/signed; x*\r\n\r\nhello") == _bad(
        "signed entity cannot be parsed")


# -- mimelimits: counting before parsing ---------------------------------------------------------


@pytest.mark.parametrize(("data", "count"), [
    (b"Content-Type: text/plain\r\n\r\n--b1\r\n--b1\r\n", 0),
    (b'boundary="b1 "\r\n--b1\r\n--b1--\r\n', 2),
    (b'boundary="b1X"\r\n--b1X\r\n', 1),
    (b'boundary="b1\x0c"\r\n--b1\x0c\r\n', 1),
    (b'boundary="b1"\r\n--b1 x\r\n--b1\x0c\r\n--b1X\r\n--b1 \t\r\n', 1),
], ids=["no-boundary", "quoted-trailing-space", "x-at-end", "form-feed", "look-alikes"])
def test_delimiter_lines_count_only_lines_of_a_declared_boundary(data: bytes,
                                                                 count: int) -> None:
    """A line counts when it is `--` and a declared boundary (spaces and tabs after either
    ignored), with or without the closing `--`; other look-alike lines do not."""
    assert delimiter_lines(data) == count


@pytest.mark.parametrize(("data", "count"), [
    (b"", 0), (b"\r\n\r\nbody", 0), (b"A: 1\r\nB: 2", 2), (b"A: 1\r\n folded\r\n\r\nbody", 2),
], ids=["empty", "no-header", "no-blank-line", "folded"])
def test_header_lines_are_the_lines_before_the_first_blank_line(data: bytes,
                                                                 count: int) -> None:
    """Header lines are counted up to the first blank line, or to the end when there is none."""
    assert header_lines(data) == count


# -- keyinfo: whether a listed key may be used -----------------------------------------------------

NOW_UTC = dt.datetime(2026, 3, 2, 7, 0, tzinfo=dt.UTC)


def test_key_info_reads_gpgs_listing_entry() -> None:
    """Fingerprint, user IDs, the whole key's capitals only, the expiry, gpg's validity."""
    info = key_info({"fingerprint": WANT, "uids": ["A <a@example.nl>"], "cap": "scESC",
                     "expires": "1800000000", "trust": "u"})
    assert info == KeyInfo(WANT, ("A <a@example.nl>",), "ESC",
                           dt.datetime.fromtimestamp(1800000000, dt.UTC), None)
    bare = key_info({"expires": "", "trust": None})
    assert bare == KeyInfo("", (), "", None, None)


@pytest.mark.parametrize(("trust", "problem"), [
    ("e", "expired"), ("r", "revoked"), ("i", "invalid"), ("d", "disabled"), ("u", None),
    ("f", None), ("-", None)])
def test_key_info_names_gpgs_unusable_validities(trust: str, problem: str | None) -> None:
    """gpg's validity letters e, r, i and d make a key unusable, named; others do not."""
    assert key_info({"trust": trust}).problem == problem


@pytest.mark.parametrize(("fields", "purpose", "reason"), [
    ({"cap": "SCE"}, "encrypt", None), ({"cap": "SC"}, "encrypt", "cannot encrypt"),
    ({"cap": "E"}, "sign", "cannot sign"), ({"cap": "S"}, "sign", None),
    ({"cap": "E", "trust": "r"}, "encrypt", "revoked"),
    ({"cap": "E", "expires": str(int(NOW_UTC.timestamp()))}, "encrypt", "expired"),
    ({"cap": "E", "expires": str(int(NOW_UTC.timestamp()) + 1)}, "encrypt", None),
    ({"cap": "e"}, "encrypt", "cannot encrypt"),
], ids=["encrypt", "no-encrypt", "no-sign", "sign", "revoked", "expiring-now", "a-second-left",
        "subkey-only"])
def test_a_key_is_unusable_when_revoked_expired_or_without_the_capability(
        fields: dict[str, str], purpose: Literal["encrypt", "sign"], reason: str | None) -> None:
    """A key is refused when gpg says it is unusable, when it expires now or has expired, and
    when the whole key lacks the capability (a lower-case letter is one subkey's only)."""
    assert key_info(fields).unusable_reason(purpose, NOW_UTC) == reason


# -- opener: nested encryption -------------------------------------------------------------------


def test_an_encrypted_part_anywhere_is_found() -> None:
    """multipart/encrypted at the top or deep inside is found; other entities, and ones the
    parser raises on, are not."""
    nested = _mixed_with('Content-Type: multipart/encrypted; boundary="c2"\r\n\r\n--c2--')
    assert _contains_encrypted(nested)
    assert _contains_encrypted(nested, parse_mime(nested))
    assert _contains_encrypted(_encrypted())
    assert not _contains_encrypted(_mixed(2))
    assert not _contains_encrypted(b"Content-Type: multipart/encrypted; x*\r\n\r\nx")


# --- deliver: the gateway's own set-up faults (issue 12) at their edges ---


@pytest.mark.parametrize(("code", "expected"), [(499, None), (500, "relay_denied"),
                                                (599, "relay_denied"), (600, None)])
def test_classify_reply_our_problem_is_5xx_only(code: int, expected: str | None) -> None:
    """Only a 5xx can be the gateway's set-up: 500 and 599 are, 499 and 600 are not."""
    assert our_problem(code, "5.7.1 Relay access denied", "RCPT") == expected


def test_classify_reply_helo_refusal_by_command_alone() -> None:
    """A 5xx to HELO (however the command is spelt) is the EHLO name, whatever its text."""
    assert our_problem(550, "5.7.1 go away", "helo") == "ehlo_rejected"
    assert our_problem(550, "5.7.1 go away", "HELO") == "ehlo_rejected"
    assert our_problem(550, "5.7.1 go away", "RCPT") is None


def test_classify_reply_authentication_wanted_at_mail() -> None:
    """530 at MAIL is authentication wanted whatever it says; other codes need 5.7.0, 5.7.1
    or Exchange's 5.7.57 and the word; at RCPT it is the school's refusal."""
    assert our_problem(530, "Must issue a STARTTLS command first", "MAIL") == "auth_required"
    assert our_problem(550, "5.7.57 Client was not authenticated to send anonymous mail",
                       "MAIL") == "auth_required"
    assert our_problem(550, "5.7.1 Client was not authenticated", "MAIL") == "auth_required"
    assert our_problem(550, "5.7.2 Client was not authenticated", "MAIL") is None
    assert our_problem(550, "5.7.57 Client was not authenticated", "RCPT") is None


@pytest.mark.parametrize("code", [400, 499])
def test_classify_reply_4xx_edges_are_temporary_not_unknown(code: int) -> None:
    """400 and 499 are plain temporary replies, not replies outside SMTP ("not_smtp")."""
    assert classify_reply(code, "4.0.0 later").reason == "temporary"


def test_classify_reply_keeps_the_reply_with_the_fix_reason() -> None:
    """A set-up fault is TEMPORARY with the whole reply and the reason key of its fix."""
    outcome = classify_reply(504, "5.5.2 <localhost>: Helo command rejected", "RCPT")
    assert outcome.result is Result.TEMPORARY
    assert outcome.reply == "504 5.5.2 <localhost>: Helo command rejected"
    assert outcome.reason == "ehlo_rejected"


@pytest.mark.parametrize(("exc", "reason"), [
    (TimeoutError(), "timeout"),
    (ssl.SSLError("certificate verify failed"), "tls"),
    (aiosmtplib.SMTPException("server does not support STARTTLS"), "no_starttls"),
    (aiosmtplib.SMTPException("something else"), "smtp_error"),
    (ConnectionRefusedError(), "connection"),
    (ValueError("odd"), "smtp_error"),
])
def test_failure_reason_names_each_kind(exc: BaseException, reason: str) -> None:
    """An attempt that ended without an SMTP reply gets the reason key of its kind."""
    assert failure_reason(exc) == reason


@pytest.mark.parametrize(("exc", "command"), [
    (aiosmtplib.SMTPHeloError(504, "x"), "EHLO"),
    (aiosmtplib.SMTPSenderRefused(550, "x", "a@example.org"), "MAIL"),
    (aiosmtplib.SMTPDataError(554, "x"), "DATA"),
    (aiosmtplib.SMTPConnectResponseError(554, "x"), "CONNECT"),
    (aiosmtplib.SMTPRecipientRefused(550, "x", "a@example.org"), ""),
])
def test_command_of_each_refusal(exc: aiosmtplib.SMTPResponseException, command: str) -> None:
    """Which command a refusal answered, from aiosmtplib's exception class."""
    assert _command_of(exc) == command


def test_lift_forgets_one_subject_and_is_quiet_about_none() -> None:
    """`lift` ends the failures of one login or address (by scope, or by its raw prefix) and
    says nothing when there were none."""
    throttle = AuthThrottle(max_delay=0)
    for i in range(3):
        throttle.record_failure("192.0.2.1", "vt", float(i))
    throttle.lift("addr", "192.0.2.1")
    throttle.lift("login", "nobody")
    assert "addr:192.0.2.1" not in throttle.failures and "login:vt" in throttle.failures
