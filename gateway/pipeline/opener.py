"""The open stage: the only code that decrypts and verifies a signal.

Takes the raw message as received and the fingerprints pinned for the authenticated sender;
produces `Opened` (the exact bytes of the signed inner MIME entity and the signer's primary
fingerprint) or a `Rejection` (NOT_ENCRYPTED → 554 5.7.5, BAD_SIGNATURE → 554 5.7.7, a
plaintext past gpg's `--max-output` bound → TOO_LARGE, 552 5.3.4). A signature counts only when
its hash is SHA-256 or stronger.
It trusts gpg's status lines, not python-gnupg's summaries (docs/libraries.md §1: `fingerprint`
is set even for a bad signature and shows only the last of several), and nothing in the
message itself: a Content-Type is a claim, a user ID is a claim, only a fingerprint is a fact.

Accepted shapes (RFC 3156): a top-level `multipart/encrypted; protocol="application/pgp-encrypted"`
whose ciphertext is either signed-and-encrypted in one OpenPGP message (§6.2) or holds a
`multipart/signed` entity at its top (§6.1). Exactly one signature covers the whole payload;
a signed part wrapped in anything unsigned is refused ("Johnny, you are fired", USENIX 2019).

The MIME work on untrusted bytes (up to the plaintext bound, 4 MiB by default) runs in worker
threads: a big message never holds the event loop that answers every other SMTP session.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from email.message import Message

from gateway.core.mimelimits import parse_mime, too_complex
from gateway.core.model import RejectClass, Rejection
from gateway.crypto.gpg import Gpg, GpgError, GpgResult


@dataclass(frozen=True)
class Opened:
    entity: bytes  # the signed MIME entity, exactly as signed
    signer: str  # primary-key fingerprint of the one valid signature

    def __repr__(self) -> str:
        return f"Opened(<{len(self.entity)} bytes>, signer={self.signer})"


def _not_encrypted(detail: str) -> Rejection:
    return Rejection(RejectClass.NOT_ENCRYPTED, detail)


def _bad_signature(detail: str) -> Rejection:
    return Rejection(RejectClass.BAD_SIGNATURE, detail)


_SIGNATURE_PROBLEMS = ("BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG", "NO_PUBKEY")

# OpenPGP hash algorithm IDs (RFC 9580 §9.5) a signature may use: SHA2-256, -384, -512 and
# SHA3-256, -512. MD5 (1), SHA-1 (2) and RIPEMD-160 (3) have collision attacks (SHA-1 on
# OpenPGP itself: "SHA-1 is a Shambles", USENIX 2020); SHA-224 (11) is below 128-bit strength.
STRONG_HASHES = frozenset({"8", "9", "10", "12", "14"})
_WEAK_HASH = "signature uses a weak hash algorithm; sign with SHA-256 or stronger"


def decryption_verdict(result: GpgResult) -> Rejection | None:
    """None when gpg really decrypted with one of our keys and the integrity check passed.

    A signed-only OpenPGP message also "decrypts" (gpg just unwraps it), so the proof of
    encryption is DECRYPTION_OKAY together with END_DECRYPTION; EFAIL is met by requiring that
    no DECRYPTION_FAILED was seen and that the data was integrity-protected (MDC or AEAD).
    """
    keys = {key for key, _ in result.status}
    if "NEED_PASSPHRASE_SYM" in keys or ("SYMKEY_ENC" in keys and "ENC_TO" not in keys):
        return _not_encrypted("symmetric encryption is not accepted; encrypt to the gateway key")
    if "DECRYPTION_FAILED" in keys or "DECRYPTION_OKAY" not in keys:
        if "BEGIN_DECRYPTION" not in keys and "ENC_TO" not in keys:
            return _not_encrypted("message is not encrypted")
        return _not_encrypted("message cannot be decrypted with a gateway key")
    if "END_DECRYPTION" not in keys:
        return _not_encrypted("message cannot be decrypted with a gateway key")
    # DECRYPTION_INFO <mdc_method> <sym_algo> [<aead_algo>]: proof of integrity protection
    # must be there, not merely the absence of a complaint.
    infos = [info.split() for info in result.keywords("DECRYPTION_INFO")]
    protected = bool(infos) and all(
        (len(f) > 0 and f[0] != "0") or (len(f) > 2 and f[2] != "0") for f in infos)
    if not protected:
        return _not_encrypted("ciphertext is not integrity protected")
    return None


# gpg-error codes (low 16 bits) meaning the gateway could not use its own secret key: a bad or
# missing passphrase. That is our fault, and temporary: never a 5xx for the sender.
_OWN_KEY_FAULTS = {11: "the gateway key's passphrase was refused",
                   85: "no passphrase for the gateway key", 99: "gpg cancelled the decryption"}


def own_key_fault(result: GpgResult) -> str | None:
    """Why the gateway's own secret key could not be used, or None."""
    if result.keywords("BAD_PASSPHRASE"):
        return _OWN_KEY_FAULTS[11]
    for value in result.keywords("ERROR"):
        where, _, code = value.partition(" ")
        if where == "pkdecrypt_failed" and code.strip().isdigit():
            fault = _OWN_KEY_FAULTS.get(int(code) & 0xFFFF)
            if fault:
                return fault
    return None


def signature_verdict(result: GpgResult, pinned: frozenset[str]) -> str | Rejection:
    """The signer's primary fingerprint when there is exactly one good signature by a pinned key.

    Counted from status lines: NEWSIG starts each signature, VALIDSIG's tenth field is the
    primary-key fingerprint (a subkey may have made the signature) and its eighth the hash
    algorithm, which must be one of `STRONG_HASHES`. gpg itself is run with `--weak-digest`
    for SHA-1 and RIPEMD-160 and then reports ERRSIG, whose third field is the hash.
    """
    sigs = len(result.keywords("NEWSIG"))
    problems = [k for k, _ in result.status if k in _SIGNATURE_PROBLEMS]
    if sigs == 0 and not problems:
        return _bad_signature("message is not signed")
    if sigs > 1 or len(result.keywords("GOODSIG")) > 1:
        return _bad_signature("more than one signature")
    if "EXPKEYSIG" in problems or "REVKEYSIG" in problems or "EXPSIG" in problems:
        return _bad_signature("signing key is expired or revoked")
    for errsig in result.keywords("ERRSIG"):
        fields = errsig.split()
        if len(fields) > 2 and fields[2].isdigit() and fields[2] not in STRONG_HASHES:
            return _bad_signature(_WEAK_HASH)
    if "NO_PUBKEY" in problems or "ERRSIG" in problems:
        return _bad_signature("signature is not by a key pinned for this sender")
    if problems or len(result.keywords("GOODSIG")) != 1 or result.returncode != 0:
        return _bad_signature("signature is not valid")
    valid = result.keywords("VALIDSIG")
    if len(valid) != 1:
        return _bad_signature("signature is not valid")
    fields = valid[0].split()
    if len(fields) < 8:
        return _bad_signature("signature is not valid")
    if fields[7] not in STRONG_HASHES:
        return _bad_signature(_WEAK_HASH)
    primary = fields[9] if len(fields) >= 10 else fields[0]
    if primary not in pinned:
        return _bad_signature("signature is not by a key pinned for this sender")
    return primary


def plaintext_verdict(result: GpgResult, limit: int) -> Rejection | None:
    """None when gpg wrote the whole plaintext of a decryption.

    At its `--max-output` bound gpg stops writing, says so only in its log, and exits 2 with
    DECRYPTION_OKAY and END_DECRYPTION all the same: what it wrote before stopping may be a
    complete signal (with the rest in an epilogue) and must never be opened. Any other error
    exit is left to `signature_verdict` when a signature inside explains it, and otherwise
    refused too.
    """
    if result.cut_off:
        return Rejection(RejectClass.TOO_LARGE, f"decrypted message is larger than {limit} bytes")
    signed = result.keywords("NEWSIG") or any(k in _SIGNATURE_PROBLEMS for k, _ in result.status)
    if result.returncode != 0 and not signed:
        return _not_encrypted("gpg reported an error while decrypting the message")
    return None


def _leaf_bytes(part: object) -> bytes:
    """The decoded body of a MIME leaf, or b"" for anything that is not one."""
    if not isinstance(part, Message) or part.is_multipart():
        return b""
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


# An RFC 3156 message is three entities; the signed entity inside needs a handful more.
OUTER_MAX_PARTS = 8
INNER_MAX_PARTS = 50
MAX_HEADER_LINES = 500


def encrypted_payload(raw: bytes) -> bytes | Rejection:
    """The armored ciphertext of an RFC 3156 §4 message, or why it is not one."""
    problem = too_complex(raw, max_parts=OUTER_MAX_PARTS, max_header_lines=MAX_HEADER_LINES)
    if problem == "too many header lines":
        return Rejection(RejectClass.TOO_LARGE, problem)
    if problem is not None:
        return _not_encrypted(f"message is not PGP/MIME encrypted: {problem}")
    try:
        msg = parse_mime(raw)
        ctype = msg.get_content_type()
        protocol = str(msg.get_param("protocol", "", header="content-type")).lower()
    except Exception:
        return _not_encrypted("message is not PGP/MIME encrypted")
    if ctype != "multipart/encrypted" or protocol != "application/pgp-encrypted":
        return _not_encrypted("message is not PGP/MIME encrypted (RFC 3156)")
    parts = msg.get_payload()
    if not isinstance(parts, list) or len(parts) != 2:
        return _not_encrypted("multipart/encrypted must have exactly two parts")
    control, body = parts
    if not isinstance(control, Message) or not isinstance(body, Message):
        return _not_encrypted("multipart/encrypted must have exactly two parts")
    if control.get_content_type() != "application/pgp-encrypted":
        return _not_encrypted("first part must be application/pgp-encrypted")
    if b"version: 1" not in _leaf_bytes(control).lower():
        return _not_encrypted("application/pgp-encrypted part must say Version: 1")
    if body.get_content_type() != "application/octet-stream":
        return _not_encrypted("second part must be application/octet-stream")
    data = _leaf_bytes(body)
    if b"-----BEGIN PGP MESSAGE-----" not in data:
        return _not_encrypted("second part holds no OpenPGP message")
    return bytes(data)


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def signed_parts(entity: bytes) -> tuple[bytes, bytes] | Rejection | None:
    """For a top-level `multipart/signed` entity: (signed bytes, signature); None if not one.

    RFC 3156 §5: the signature covers the first body part *exactly*, including its MIME headers,
    with CRLF line endings; the CRLF before the next boundary belongs to the delimiter (RFC 2046
    §5.1.1). Re-serialising with `email` would change the bytes, so the split is done on bytes.
    """
    try:
        root = parse_mime(entity)
    except Exception:
        return _bad_signature("signed entity cannot be parsed")
    return _signed_parts(entity, root)


def _signed_parts(entity: bytes, root: Message) -> tuple[bytes, bytes] | Rejection | None:
    """`signed_parts` for an entity already parsed into `root`."""
    try:
        if root.get_content_type() != "multipart/signed":
            return None
        protocol = str(root.get_param("protocol", "", header="content-type")).lower()
        boundary = root.get_boundary()
    except Exception:
        return _bad_signature("signed entity cannot be parsed")
    if protocol != "application/pgp-signature" or not boundary:
        return _bad_signature("multipart/signed is not an OpenPGP signature (RFC 3156)")
    data = _crlf(entity)
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return _bad_signature("signed entity cannot be parsed")
    body = b"\r\n" + data[head_end + 4:]
    delim = re.compile(rb"\r\n--" + re.escape(boundary.encode("ascii", "replace"))
                       + rb"(--)?[ \t]*(?:\r\n|\Z)")
    marks = list(delim.finditer(body))
    # preamble | part 1 | part 2 | closing delimiter: anything else is not the shape we sign.
    if len(marks) != 3 or marks[0].group(1) or marks[1].group(1) or not marks[2].group(1):
        return _bad_signature("multipart/signed must hold exactly one part and one signature")
    signed = body[marks[0].end():marks[1].start()]
    try:
        sig_part = parse_mime(body[marks[1].end():marks[2].start()])
        sig_type = sig_part.get_content_type()
    except Exception:
        # The header parser raises on some malformed parameters (`x*`): a refusal, not a 451.
        return _bad_signature("signature part cannot be parsed")
    if sig_type != "application/pgp-signature":
        return _bad_signature("second part of multipart/signed must be application/pgp-signature")
    return signed, _leaf_bytes(sig_part)


def _contains_encrypted(entity: bytes, root: Message | None = None) -> bool:
    """Whether any part of `entity` (parsed into `root`, when given) is multipart/encrypted."""
    try:
        tree = parse_mime(entity) if root is None else root
        return any(part.get_content_type() == "multipart/encrypted" for part in tree.walk())
    except Exception:
        return False


def decryption_key_verdict(result: GpgResult, accepted: frozenset[str]) -> Rejection | None:
    """After a rotation, only the current key and those still in their overlap may open signals;
    a retired key's secret is deleted as well, this closes the gap until that happens."""
    used = [value.split() for value in result.keywords("DECRYPTION_KEY")]
    primaries = {fields[1] for fields in used if len(fields) >= 2}
    if not primaries or not primaries <= accepted:
        return _not_encrypted("message is encrypted to a gateway key that is no longer in use")
    return None


def _structure(entity: bytes) -> tuple[Message, tuple[bytes, bytes] | None] | Rejection:
    """The decrypted entity parsed, with its signed part and signature when it is a
    multipart/signed; or why it is refused. Pure, and run in a worker thread."""
    problem = too_complex(entity, max_parts=INNER_MAX_PARTS, max_header_lines=MAX_HEADER_LINES)
    if problem is not None:
        return Rejection(RejectClass.INVALID_SIGNAL, problem)
    try:
        root = parse_mime(entity)
    except Exception:
        return _bad_signature("signed entity cannot be parsed")
    inner = _signed_parts(entity, root)
    if isinstance(inner, Rejection):
        return inner
    return root, inner


async def open_message(raw: bytes, gpg: Gpg, pinned: frozenset[str],
                       decrypt_keys: frozenset[str] | None = None) -> Opened | Rejection:
    """Decrypt and verify one received message against the sender's pinned fingerprints;
    with `decrypt_keys`, only a message encrypted to one of those gateway keys is opened."""
    ciphertext = await asyncio.to_thread(encrypted_payload, raw)
    if isinstance(ciphertext, Rejection):
        return ciphertext
    result = await gpg.decrypt(ciphertext)
    fault = own_key_fault(result)
    if fault is not None:
        raise GpgError(fault)
    refusal = decryption_verdict(result)
    if refusal is None and decrypt_keys is not None:
        refusal = decryption_key_verdict(result, decrypt_keys)
    if refusal is None:
        refusal = plaintext_verdict(result, gpg.max_plaintext)
    if refusal is not None:
        return refusal
    entity = result.data
    structure = await asyncio.to_thread(_structure, entity)
    if isinstance(structure, Rejection):
        return structure
    root, inner = structure
    if result.keywords("NEWSIG") or any(k in _SIGNATURE_PROBLEMS for k, _ in result.status):
        if inner is not None:
            # A combined signature *and* a signed entity inside: two signatures.
            return _bad_signature("more than one signature")
        signer = signature_verdict(result, pinned)
    elif inner is None:
        return _bad_signature("message is not signed")
    else:
        entity, signature = inner
        signer = signature_verdict(await gpg.verify_detached(signature, entity), pinned)
    if isinstance(signer, Rejection):
        return signer
    # A combined signature covers `entity` itself, already parsed into `root`; a signed part is
    # parsed on its own.
    if await asyncio.to_thread(_contains_encrypted, entity, root if inner is None else None):
        return _not_encrypted("nested encryption is not accepted")
    return Opened(entity=entity, signer=signer)
