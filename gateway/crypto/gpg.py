"""The gpg adapter: the only code that runs gpg.

Takes bytes and full fingerprints; produces raw results (output bytes plus every `[GNUPG:]` status
line) for the pure acceptance rules in `opener` and `keyinfo`. It trusts nothing it is given and
decides nothing about acceptance. Every call runs in a worker thread behind a semaphore, with a
time limit: a gpg that hangs is killed and the call raises `GpgTimeout`, so one stuck message
never stops the daemon. A decryption writes at most `max_plaintext` bytes of plaintext (gpg
stops there, `--max-output`), so a decompression bomb costs neither memory nor time.

gpg is run so that it never reaches the network (no keyserver, no WKD, no dirmngr) and never
picks a key by user ID: callers pass full fingerprints only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import gnupg

from gateway.core.validate import is_fingerprint
from gateway.observe.metrics import GPG_SECONDS

# gpg must never look a key up anywhere (docs/libraries.md §2: an unknown recipient triggers WKD).
# `--trust-model always` because trust comes from our own pinning by full fingerprint, not from
# the web of trust; gpg still refuses expired and revoked keys under it.
SAFE_OPTIONS = [
    "--auto-key-locate", "clear,local",
    "--no-auto-key-retrieve",
    "--disable-dirmngr",
    "--trust-model", "always",
    "--no-emit-version",
    "--no-comments",
    "--no-include-key-block",
]
# Never ask for a passphrase interactively (a symmetric message would start pinentry). Where the
# gateway key has a passphrase, python-gnupg passes it with `--pinentry-mode loopback` instead.
NO_PROMPT = ["--pinentry-mode", "error"]
# For every signature the gateway verifies: gpg itself refuses these hashes (ERRSIG), and
# `opener.signature_verdict` checks VALIDSIG's hash field as well. Only for verification: on
# import the same option would throw away old keys whose self-signatures use SHA-1.
WEAK_DIGESTS = ["--weak-digest", "SHA1", "--weak-digest", "RIPEMD160"]

# A 533-byte message can decompress to 256 MiB, and python-gnupg keeps all of gpg's output in
# memory: the bound must apply inside gpg (`--max-output`). How many times `[smtp]
# max_message_bytes` a decrypted signal may be.
MAX_PLAINTEXT_FACTOR = 4
DEFAULT_MAX_PLAINTEXT = MAX_PLAINTEXT_FACTOR * 1048576
# What gpg writes to its log when it stops at `--max-output` (g10/plaintext.c; not translated,
# and not a status line: its only other trace is exit code 2, which many things cause).
_MAX_OUTPUT_REACHED = "exceeded --max-output limit"

T = TypeVar("T")


class GpgError(Exception):
    """gpg could not do what was asked (a temporary or operator problem, never the sender's)."""


class GpgTimeout(GpgError):
    """A gpg call ran past its time limit and was killed."""


@dataclass(frozen=True)
class GpgResult:
    """What gpg said: output bytes, exit code and every status line as (keyword, value);
    `cut_off` when gpg stopped writing plaintext at its `--max-output` bound (the data is then
    only the start of the plaintext)."""

    returncode: int | None
    data: bytes
    status: tuple[tuple[str, str], ...]
    cut_off: bool = False

    def keywords(self, keyword: str) -> list[str]:
        return [value for key, value in self.status if key == keyword]


def _cut_off(stderr: str) -> bool:
    """Whether gpg's log says it stopped at `--max-output`. A user ID or file name in the log
    could hold the same words: that only ever refuses a message, never accepts one."""
    return any(_MAX_OUTPUT_REACHED in line for line in stderr.splitlines()
               if not line.startswith("[GNUPG:] "))


def _status_lines(stderr: str) -> tuple[tuple[str, str], ...]:
    lines = []
    for line in stderr.splitlines():
        if line.startswith("[GNUPG:] "):
            key, _, value = line[9:].partition(" ")
            lines.append((key, value.strip()))
    return tuple(lines)


class _KillableGPG(gnupg.GPG):  # type: ignore[misc]
    """python-gnupg has no time limit; remember each process so a watchdog can kill it."""

    _local = threading.local()

    def _open_subprocess(self, args: Any, passphrase: bool = False) -> subprocess.Popen[bytes]:
        proc: subprocess.Popen[bytes] = super()._open_subprocess(args, passphrase)
        holder = getattr(self._local, "holder", None)
        if holder is not None:
            holder.append(proc)
        return proc


class Gpg:
    """One GnuPG home, used from asyncio. Build once and reuse (each call spawns gpg)."""

    def __init__(self, home: Path, *, binary: str = "gpg", timeout: float = 30.0,
                 concurrency: int | None = None, passphrase: str | None = None,
                 max_plaintext: int = DEFAULT_MAX_PLAINTEXT) -> None:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        if passphrase == "":
            # python-gnupg would make gpg read the first line of the data as the passphrase.
            raise GpgError("an empty passphrase is not a passphrase")
        self.home = home
        self.timeout = timeout
        self.max_plaintext = max_plaintext  # bytes gpg may write when it decrypts
        self._passphrase = passphrase
        options = SAFE_OPTIONS + (NO_PROMPT if passphrase is None else [])
        self._gpg = _KillableGPG(gpgbinary=binary, gnupghome=str(home), options=options)
        self._gpg.encoding = "utf-8"
        self._semaphore = asyncio.Semaphore(concurrency or max(2, (os.cpu_count() or 2)))

    # -- running one call with a time limit -------------------------------------------------

    def _run_killable(self, fn: Callable[[], T], holder: list[subprocess.Popen[bytes]]) -> T:
        _KillableGPG._local.holder = holder
        try:
            return fn()
        finally:
            _KillableGPG._local.holder = None

    async def _call(self, fn: Callable[[], T], operation: str = "other") -> T:
        holder: list[subprocess.Popen[bytes]] = []
        async with self._semaphore:
            started = time.monotonic()
            try:
                return await self._call_timed(fn, holder)
            finally:
                GPG_SECONDS.labels(operation).observe(time.monotonic() - started)

    async def _call_timed(self, fn: Callable[[], T],
                          holder: list[subprocess.Popen[bytes]]) -> T:
        task = asyncio.ensure_future(asyncio.to_thread(self._run_killable, fn, holder))
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.timeout)
        except TimeoutError:
            for proc in holder:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            # The reader threads end once the process is gone; wait so no thread outlives us.
            with contextlib.suppress(Exception):
                await task
            raise GpgTimeout(f"gpg did not finish within {self.timeout:g} s") from None

    def call_sync(self, fn: Callable[[gnupg.GPG], T]) -> T:
        """For the command line: the same gpg, without the event loop."""
        return fn(self._gpg)

    @staticmethod
    def _result(res: Any) -> GpgResult:
        stderr = res.stderr or ""
        return GpgResult(res.returncode, res.data or b"", _status_lines(stderr), _cut_off(stderr))

    # -- the operations the pipeline needs -----------------------------------------------------

    async def decrypt(self, ciphertext: bytes) -> GpgResult:
        """Decrypt (and verify any signature inside) with the gateway's secret key; gpg stops
        after `max_plaintext` bytes of plaintext (the result is then `cut_off`)."""
        extra = ["--max-output", str(self.max_plaintext), *WEAK_DIGESTS]
        return await self._call(lambda: self._result(
            self._gpg.decrypt(ciphertext, passphrase=self._passphrase, extra_args=extra)),
            "decrypt")

    async def verify_detached(self, signature: bytes, signed: bytes) -> GpgResult:
        """Verify a detached signature over the exact bytes given."""
        def run() -> GpgResult:
            with _tempfile(signature, self.home) as sig_path:
                return self._result(self._gpg.verify_data(sig_path, signed,
                                                          extra_args=WEAK_DIGESTS))
        return await self._call(run, "verify")

    async def sign_encrypt(self, plaintext: bytes, recipients: Sequence[str],
                           signer: str) -> bytes:
        """Sign with `signer` and encrypt to every fingerprint in `recipients`, ASCII-armored."""
        _check_fingerprints([signer, *recipients])

        def run() -> GpgResult:
            res = self._gpg.encrypt(plaintext, list(recipients), sign=signer, armor=True,
                                    passphrase=self._passphrase,
                                    extra_args=["--local-user", signer])
            return self._result(res)

        result = await self._call(run, "sign_encrypt")
        if result.returncode != 0 or not result.data.startswith(b"-----BEGIN PGP MESSAGE-----"):
            problems = [f"{k} {v}" for k, v in result.status
                        if k in ("INV_RECP", "INV_SGNR", "FAILURE", "ERROR", "KEYEXPIRED")]
            raise GpgError("gpg could not sign and encrypt: " + ("; ".join(problems) or
                                                                 f"exit {result.returncode}"))
        return result.data

    def list_keys(self, secret: bool = False,
                  fingerprints: Sequence[str] = ()) -> list[dict[str, Any]]:
        """gpg's own key listing (colon format, parsed by python-gnupg)."""
        keys: list[dict[str, Any]] = self._gpg.list_keys(secret=secret,
                                                        keys=list(fingerprints) or None)
        return keys


def _check_fingerprints(fprs: Sequence[str]) -> None:
    """Keys are always chosen by full fingerprint (`gateway.core.validate.is_fingerprint`)."""
    for fpr in fprs:
        if not is_fingerprint(fpr):
            raise GpgError("not a full fingerprint")


@contextlib.contextmanager
def _tempfile(data: bytes, home: Path) -> Iterator[str]:
    """A detached signature must be a file for gpg; it is not secret, but keep it in our home."""
    fd, path = tempfile.mkstemp(prefix="sig-", dir=home)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        yield path
    finally:
        os.unlink(path)
