"""Hypothesis strategies for the opener's input: RFC 3156 envelopes and signed entities with the
flaws that must be refused, and gpg status lines with the verdict they should get."""

from __future__ import annotations

import base64
import quopri

from hypothesis import strategies as st
from signal_strategies import _NOTE_PART

from gateway.crypto.gpg import GpgResult

# --- strategies: RFC 3156 envelopes -----------------------------------------------------------

ARMOR = (
    b"-----BEGIN PGP MESSAGE-----\n\nhF4DAAAAAAAAAAASAQdAbm90IHJlYWxseSBjaXBoZXJ0ZXh0\n"
    b"=Zm9v\n-----END PGP MESSAGE-----\n"
)
SIGNATURE = (
    b"-----BEGIN PGP SIGNATURE-----\n\niHUEARYKAB0WIQRub3QgcmVhbGx5IGEgc2lnbmF0dXJl\n"
    b"=YmFy\n-----END PGP SIGNATURE-----\n"
)


class Flaws:
    """At most one deliberate flaw per generated message, so most are right and each wrong one
    is wrong in a single known way; `right` says whether the flaw was drawn at all."""

    def __init__(self, draw: st.DrawFn, names: tuple[str, ...]) -> None:
        self.draw = draw
        self.flaw = draw(st.sampled_from(("", "", "", "", *names)))
        self.right = self.flaw == ""

    def pick(self, name: str, good: tuple[str, ...], bad: tuple[str, ...]) -> str:
        return self.draw(st.sampled_from(bad if self.flaw == name else good))


_ENCRYPTED_FLAWS = ("protocol", "control type", "version", "body type", "armor", "parts")


@st.composite
def encrypted_messages(draw: st.DrawFn) -> tuple[bytes, bool]:
    """(a message shaped like RFC 3156 §4, whether every piece of it is right)."""
    flaws = Flaws(draw, _ENCRYPTED_FLAWS)
    protocol = flaws.pick("protocol", (
        '; protocol="application/pgp-encrypted"', '; protocol="Application/PGP-Encrypted"',
    ), (
        "; protocol=application/pgp-encrypted", '; protocol="application/pgp-signature"', "",
        '; protocol=""',
    ))
    control_type = flaws.pick("control type", ("application/pgp-encrypted",
                                               "Application/PGP-Encrypted"),
                              ("text/plain", "application/octet-stream"))
    control_body = flaws.pick("version", ("Version: 1\n", "version: 1", "Version: 1"),
                              ("", "Version: 2\n", "Version:1\n"))
    body_type = flaws.pick("body type", ("application/octet-stream",),
                           ("text/plain", "application/pgp-encrypted"))
    armor = ARMOR if flaws.flaw != "armor" else draw(st.sampled_from(
        (b"", b"not armor\n", ARMOR.replace(b"BEGIN", b""))))
    cte = draw(st.sampled_from((None, "7bit", "base64", "quoted-printable")))
    body = {"base64": base64.encodebytes(armor), "quoted-printable": quopri.encodestring(armor)}\
        .get(cte or "", armor)
    parts = [
        f"Content-Type: {control_type}\nContent-Description: PGP/MIME version identification\n"
        f"\n{control_body}".encode(),
        f"Content-Type: {body_type}; name=\"encrypted.asc\"\n".encode()
        + (f"Content-Transfer-Encoding: {cte}\n".encode() if cte else b"") + b"\n" + body,
    ]
    count = 2 if flaws.flaw != "parts" else draw(st.sampled_from((0, 1, 3)))
    parts = [*parts, _NOTE_PART][:count]
    boundary = f"=_hwc_enc_{draw(st.integers(0, 10**6))}"
    head = (
        "From: signalen@veiligthuis.example.nl\nTo: leerplicht@hwc.example.nl\n"
        "Subject: ...\nMIME-Version: 1.0\n"
        f'Content-Type: multipart/encrypted{protocol}; boundary="{boundary}"\n\n'
    ).encode()
    message = head + b"".join(f"--{boundary}\n".encode() + p + b"\n" for p in parts) \
        + f"--{boundary}--\n".encode()
    if draw(st.booleans()):
        message = message.replace(b"\n", b"\r\n")
    return message, flaws.right


_BODY_LINES = st.lists(st.text(st.characters(exclude_characters="\r\n-"), max_size=30),
                      max_size=5)


_SIGNED_FLAWS = ("protocol", "signature type", "parts", "closing")


@st.composite
def signed_entities(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    """(a multipart/signed entity, the exact signed bytes when every piece of it is right)."""
    flaws = Flaws(draw, _SIGNED_FLAWS)
    protocol = flaws.pick("protocol", ('; protocol="application/pgp-signature"',
                                       '; protocol="Application/PGP-Signature"'),
                          ("; protocol=application/pgp-signature",
                           '; protocol="application/pkcs7-signature"', ""))
    sig_type = flaws.pick("signature type", ("application/pgp-signature",), ("text/plain",))
    lines = draw(_BODY_LINES)
    first = (
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
        + "".join(f"{line}\n" for line in lines)
    ).encode("utf-8", "surrogatepass")
    boundary = f"=_hwc_sig_{draw(st.integers(0, 10**6))}"
    padding = draw(st.sampled_from(("", "", " ", " \t")))  # transport padding, RFC 2046
    delimiter = f"--{boundary}{padding}\n".encode()
    parts = [first, f"Content-Type: {sig_type}; name=\"signature.asc\"\n\n".encode() + SIGNATURE]
    count = 2 if flaws.flaw != "parts" else draw(st.sampled_from((1, 3)))
    parts = [*parts, _NOTE_PART][:count]
    closing = flaws.pick("closing", (f"--{boundary}--\n", f"--{boundary}-- \n"),
                         ("", f"--{boundary}\n"))
    entity = (
        f"Content-Type: multipart/signed; micalg=pgp-sha256{protocol};\n"
        f' boundary="{boundary}"\n\n'
        + draw(st.sampled_from(("", "This is an OpenPGP/MIME signed message.\n")))
    ).encode() + b"".join(delimiter + part + b"\n" for part in parts) + closing.encode()
    entity += draw(st.sampled_from((b"", b"epilogue\n")))
    crlf = draw(st.booleans())
    if crlf:
        entity = entity.replace(b"\n", b"\r\n")
    signed = first.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return entity, signed if flaws.right else None


# --- strategies: gpg status lines -------------------------------------------------------------

PINNED = ("A" * 40, "B" * 40)
STRANGER = "C" * 40
SUBKEY = "D" * 40
_SIGNATURE_PROBLEMS = ("BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG", "NO_PUBKEY")
KEYWORDS = (
    "NEWSIG", "GOODSIG", "VALIDSIG", *_SIGNATURE_PROBLEMS, "SIG_ID", "KEY_CONSIDERED",
    "TRUST_UNDEFINED", "TRUST_ULTIMATE", "TRUST_FULLY", "ENC_TO", "BEGIN_DECRYPTION",
    "END_DECRYPTION", "DECRYPTION_OKAY", "DECRYPTION_FAILED", "DECRYPTION_INFO",
    "DECRYPTION_KEY", "DECRYPTION_COMPLIANCE_MODE", "GOODMDC", "BADMDC", "PLAINTEXT",
    "PLAINTEXT_LENGTH", "NEED_PASSPHRASE", "NEED_PASSPHRASE_SYM", "SYMKEY_ENC", "NO_SECKEY",
    "KEYEXPIRED", "KEYREVOKED", "FAILURE", "ERROR", "NODATA", "UNEXPECTED", "NOTATION_NAME",
    "NOTATION_DATA", "VERIFICATION_COMPLIANCE_MODE",
)
_FINGERPRINTS = st.sampled_from(
    (*PINNED, STRANGER, SUBKEY, PINNED[0].lower(), "", "0x" + PINNED[0]))
_WORD = st.text(st.characters(exclude_characters="\r\n"), max_size=12)
# OpenPGP hash algorithm IDs (RFC 9580 §9.5): SHA2-256/384/512 and SHA3-256/512 are strong;
# MD5, SHA-1, RIPEMD-160, SHA-224 and anything else are not.
STRONG_HASHES = ("8", "9", "10", "12", "14")
_HASH_ALGORITHMS = (*STRONG_HASHES, "10", "10", "1", "2", "3", "11", "0", "13", "x")


@st.composite
def validsig_values(draw: st.DrawFn) -> str:
    """A VALIDSIG value: gpg's ten fields (primary fingerprint last, hash algorithm eighth),
    fewer, none, or junk."""
    signer, primary = draw(_FINGERPRINTS), draw(_FINGERPRINTS)
    hash_algo = draw(st.sampled_from(_HASH_ALGORITHMS))
    fields = [signer or "X", "2026-03-02", "1772409600", "0", "4", "0", "22", hash_algo, "00",
              primary]
    fields = fields[: draw(st.sampled_from((10, 10, 10, 11, 9, 1, 0)))]
    if len(fields) == 11:
        fields.append("extra")
    value = " ".join(f for f in fields if f)
    junk = draw(_WORD.filter(lambda w: bool(w.split())))
    return draw(st.sampled_from((value, value, value, junk)))


_VALIDSIG_VALUE = validsig_values()


def _status_value(draw: st.DrawFn, keyword: str) -> str:
    if keyword == "VALIDSIG":
        return draw(_VALIDSIG_VALUE)
    if keyword == "DECRYPTION_INFO":
        return " ".join(draw(st.lists(st.sampled_from(("0", "2", "7", "9", "x", "")), max_size=4)))
    if keyword in ("GOODSIG", "BADSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG"):
        return f"{draw(_FINGERPRINTS)[-16:]} Sender <signalen@veiligthuis.example.nl>"
    return draw(st.one_of(st.just(""), _WORD, _FINGERPRINTS))


@st.composite
def status_lines(draw: st.DrawFn) -> tuple[str, str]:
    keyword = draw(st.one_of(
        st.sampled_from(KEYWORDS), st.sampled_from(KEYWORDS).map(str.lower),
        _WORD.filter(lambda w: w not in KEYWORDS),
    ))
    return keyword, _status_value(draw, keyword)


_STATUS_LINE = status_lines()

GOOD_SIGNATURE = (
    ("NEWSIG", ""),
    ("KEY_CONSIDERED", PINNED[0] + " 0"),
    ("SIG_ID", "abc 2026-03-02 1772409600"),
    ("GOODSIG", PINNED[0][-16:] + " Sender <signalen@veiligthuis.example.nl>"),
    ("VALIDSIG", f"{SUBKEY} 2026-03-02 1772409600 0 4 0 22 10 00 {PINNED[0]}"),
    ("TRUST_UNDEFINED", "0 pgp"),
)
GOOD_DECRYPTION = (
    ("ENC_TO", "0123456789ABCDEF 18 0"),
    ("KEY_CONSIDERED", PINNED[1] + " 0"),
    ("DECRYPTION_KEY", f"{PINNED[1]} {PINNED[1]} u"),
    ("BEGIN_DECRYPTION", ""),
    ("DECRYPTION_INFO", "2 9 0"),
    ("PLAINTEXT", "62 1772409600"),
    ("DECRYPTION_OKAY", ""),
    ("GOODMDC", ""),
    ("END_DECRYPTION", ""),
)


def _with_hash(validsig: str, hash_algo: str) -> str:
    fields = validsig.split(" ")
    return " ".join([*fields[:7], hash_algo, *fields[8:]])


@st.composite
def gpg_results(draw: st.DrawFn) -> tuple[GpgResult, bool]:
    """(a gpg result: a good decryption and signature, mangled or not; whether it is pristine)."""
    lines = list(GOOD_DECRYPTION[:5] + GOOD_SIGNATURE + GOOD_DECRYPTION[5:])
    pristine = draw(st.integers(0, 3)) == 0
    if not pristine and draw(st.integers(0, 3)) == 0:
        # Only the signature's hash algorithm changes: then it alone decides.
        hash_algo = draw(st.sampled_from(_HASH_ALGORITHMS))
        lines = [(key, _with_hash(value, hash_algo) if key == "VALIDSIG" else value)
                 for key, value in lines]
    elif not pristine:
        for _ in range(draw(st.integers(1, 6))):
            op = draw(st.sampled_from(("drop", "duplicate", "insert", "replace")))
            at = draw(st.integers(0, max(len(lines) - 1, 0)))
            if op == "insert" or not lines:
                lines.insert(at, draw(_STATUS_LINE))
            elif op == "drop":
                del lines[at]
            elif op == "duplicate":
                lines.insert(at, lines[at])
            else:
                lines[at] = (lines[at][0], _status_value(draw, lines[at][0]))
        if draw(st.integers(0, 9)) == 0:
            lines = draw(st.lists(_STATUS_LINE, max_size=12))
    returncode = 0 if pristine else draw(st.sampled_from((0, 0, 0, 1, 2, None, -9)))
    return GpgResult(returncode, b"", tuple(lines)), pristine


_PINNED_SETS = st.sampled_from([frozenset(PINNED), frozenset(PINNED[:1]), frozenset()])
