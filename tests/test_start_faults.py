"""The real daemon as an operator starts it: what keeps `hwc-gateway serve` from starting (its port
in use, state it cannot use), what the other verbs say on state they cannot use, and what
`status` and `check-config` tell; each refusal one line and exit 1, never a traceback (issue 12)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Template, copy_gateway_state, free_port
from daemon_cli import one_line_refusal, run_serve, run_verb

from gateway.core.config import Config, load_config
from gateway.crypto.keyadmin import stop_agent

# -- faults an operator meets at start: one line each, exit 1, never a traceback (issue 12) -----


def gateway_state(template: Template, base: Path, storage: Path | None = None) -> Config:
    """A gateway home whose `[storage] path` is `storage` (default: its own var/)."""
    config = copy_gateway_state(template, base, listen=free_port())
    if storage is not None:
        text = config.path.read_text().replace(str(config.storage.path), str(storage))
        config.path.write_text(text)
    (base / "tmp").mkdir()
    return load_config(config.path)


def test_serve_with_its_port_in_use_says_so_in_one_line(template: Template,
                                                         tmp_path: Path) -> None:
    """A port another program holds: one line naming the address, exit 1."""
    config = gateway_state(template, tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", config.smtp.listen.port))
        holder.listen()
        result = run_serve(config.path, tmp_path / "tmp")
    line = one_line_refusal(result, str(config.smtp.listen))
    assert "in use" in line
    stop_agent(config.gnupg_home)


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """`directory` where nothing can be created, for root too: immutable (chattr +i) as root,
    mode 0500 for anyone else. Skips where neither holds (a file system without chattr)."""
    if os.geteuid() == 0:
        made = subprocess.run(["chattr", "+i", str(directory)], capture_output=True,
                              check=False) if shutil.which("chattr") else None
        if made is None or made.returncode != 0:
            pytest.skip("root, and chattr +i does not work here")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
    else:
        directory.chmod(0o500)
        try:
            yield
        finally:
            directory.chmod(0o700)


@pytest.mark.parametrize("fault", ["parent_is_a_file", "path_is_a_directory", "not_a_database",
                                   "read_only_directory"])
def test_serve_on_state_it_cannot_use_says_so_in_one_line(template: Template, tmp_path: Path,
                                                          fault: str) -> None:
    """A state directory that cannot be made (its parent is a file), a storage path that is a
    directory or a file that is not a database, a state directory nothing can be created in
    (immutable, as root): each is one line naming the path, exit 1. Every case fails for root
    as well: none relies on file modes alone."""
    database = {"parent_is_a_file": tmp_path / "state" / "var" / "hwc.sqlite3",
                "path_is_a_directory": tmp_path / "state",
                "not_a_database": tmp_path / "state",
                "read_only_directory": tmp_path / "state" / "hwc.sqlite3"}[fault]
    config = gateway_state(template, tmp_path / "gw", database)
    if fault == "parent_is_a_file":
        (tmp_path / "state").write_text("a file where the state directory should be\n")
    elif fault == "path_is_a_directory":
        (tmp_path / "state").mkdir()
    elif fault == "not_a_database":
        (tmp_path / "state").write_text("not a database\n" * 100)
    else:
        (tmp_path / "state").mkdir()
    guard = read_only(tmp_path / "state") if fault == "read_only_directory" \
        else contextlib.nullcontext()
    with guard:
        result = run_serve(config.path, tmp_path / "gw" / "tmp")
    line = one_line_refusal(result, str(tmp_path / "state"))
    assert {"parent_is_a_file": "is a file, not a directory",
            "path_is_a_directory": "is a directory, not a database file",
            "not_a_database": "is not a SQLite database",
            "read_only_directory": "is not writable"}[fault] in line
    stop_agent(config.gnupg_home)


@pytest.mark.parametrize("fault", ["path_is_a_directory", "not_a_database"])
@pytest.mark.parametrize("verb", [["status"], ["held", "list"], ["receipts", "verify"]])
def test_other_verbs_on_state_they_cannot_use_say_so_in_one_line(
        template: Template, tmp_path: Path, fault: str, verb: list[str]) -> None:
    """The verbs beside `serve` answer a storage path that is a directory or not a database
    in one line too, exit 1, never a traceback."""
    config = gateway_state(template, tmp_path / "gw", tmp_path / "state")
    if fault == "path_is_a_directory":
        (tmp_path / "state").mkdir()
    else:
        (tmp_path / "state").write_text("not a database\n" * 100)
    line = one_line_refusal(run_verb(config.path, *verb), str(tmp_path / "state"))
    assert ("is a directory" if fault == "path_is_a_directory" else "not a SQLite") in line


class ForeignSmtp:
    """Another program on the gateway's port: a plain socket that greets and hangs up."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"220 other ESMTP\r\n")

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.sock.close()


def test_status_tells_another_program_on_the_port_from_this_gateway(template: Template,
                                                                      tmp_path: Path) -> None:
    """Another SMTP server on the configured port is not this gateway: `status` says the
    listener is not up, and that another program answers there (it used to count any
    program on the port as the gateway)."""
    config = gateway_state(template, tmp_path)
    foreign = ForeignSmtp(config.smtp.listen.port)
    try:
        result = run_verb(config.path, "status", "--json")
        text = run_verb(config.path, "status")
    finally:
        foreign.stop()
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert data["listener"]["up"] is False
    assert "another program, not this gateway" in data["listener"]["problem"]
    assert any("220 other ESMTP" in a and "not this gateway" in a for a in data["attention"])
    assert "not answering" not in " ".join(data["attention"])
    assert "DOWN" in text.stdout and "not this gateway" in text.stdout
    stop_agent(config.gnupg_home)


def test_check_config_names_what_would_keep_serve_from_starting(template: Template,
                                                               tmp_path: Path) -> None:
    """check-config reports, before any start, a state directory that cannot be made and a
    listen port another program holds, each naming its path or address; exit 1."""
    config = gateway_state(template, tmp_path / "gw", tmp_path / "state" / "var" / "hwc.sqlite3")
    (tmp_path / "state").write_text("a file\n")
    with socket.create_server(("127.0.0.1", config.smtp.listen.port)):
        result = run_verb(config.path, "check-config")
    assert result.returncode == 1 and result.stdout == "", result.stdout
    assert f"{tmp_path / 'state'} is a file, not a directory" in result.stderr
    assert f"cannot listen on {config.smtp.listen}: the port is in use" in result.stderr
    assert "Traceback" not in result.stderr
    (tmp_path / "state").unlink()
    result = run_verb(config.path, "check-config")
    assert result.returncode == 0 and "valid" in result.stdout, result.stderr
