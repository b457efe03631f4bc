"""What `check-config` and `serve` say about the pickup page's settings before the daemon
starts (issue 15): `[web] listen` held by another program, and `[web] tls_cert`/`tls_key` that
cannot be read, each one line naming the key; `[smtp]`'s TLS pair in the same words. Loading an
unreadable pair used to be reported as the listen address ("cannot listen on ...: No such file
or directory")."""

from __future__ import annotations

import socket
from pathlib import Path

from conftest import Template, copy_gateway_state, free_port
from daemon_cli import one_line_refusal, run_serve, run_verb

from gateway.core.config import Config
from gateway.crypto.keyadmin import stop_agent


def web_state(template: Template, base: Path, tls: bool) -> Config:
    """A gateway home with `[web]` on a free loopback port, serving HTTPS itself when `tls`
    (certificate and key under base/web/, not made here)."""
    port = free_port()
    extra = f'[web]\nlisten = "127.0.0.1:{port}"\npublic_url = "http://localhost:{port}"\n'
    if tls:
        extra += f'tls_cert = "{base}/web/cert.pem"\ntls_key = "{base}/web/key.pem"\n'
    config = copy_gateway_state(template, base, extra, listen=free_port())
    (base / "tmp").mkdir()
    return config


def test_check_config_names_the_web_port_in_use(template: Template, tmp_path: Path) -> None:
    """A `[web] listen` port another program holds is a problem of check-config naming the
    address and the key, exit 1; free again, the configuration is valid."""
    config = web_state(template, tmp_path, tls=False)
    assert config.web.listen is not None
    with socket.create_server(("127.0.0.1", config.web.listen.port)):
        result = run_verb(config.path, "check-config")
    assert result.returncode == 1, result.stdout
    assert f"cannot listen on {config.web.listen}: the port is in use" in result.stderr
    assert "[web] listen" in result.stderr and "Traceback" not in result.stderr
    result = run_verb(config.path, "check-config")
    assert result.returncode == 0 and "valid" in result.stdout, result.stderr
    stop_agent(config.gnupg_home)


def test_check_config_and_serve_name_an_unreadable_web_certificate(template: Template,
                                                                   tmp_path: Path) -> None:
    """`[web] tls_cert` missing and `[web] tls_key` a directory (unreadable, as root too):
    check-config names both with their keys, exit 1; serve refuses in one line naming the
    file and its key, never "cannot listen"."""
    config = web_state(template, tmp_path, tls=True)
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "key.pem").mkdir()
    result = run_verb(config.path, "check-config")
    assert result.returncode == 1, result.stdout
    assert f"{tmp_path / 'web' / 'cert.pem'}: no such file ([web] tls_cert)" in result.stderr
    assert f"cannot read {tmp_path / 'web' / 'key.pem'}" in result.stderr
    line = one_line_refusal(run_serve(config.path, tmp_path / "tmp"),
                            str(tmp_path / "web" / "cert.pem"), "[web] tls_cert")
    assert "cannot listen" not in line
    stop_agent(config.gnupg_home)


def test_serve_names_an_unreadable_smtp_certificate(template: Template, tmp_path: Path) -> None:
    """`[smtp] tls_cert` gone: serve refuses in one line naming the file, its key and `keys
    init`, not the listen address."""
    config = web_state(template, tmp_path, tls=False)
    config.smtp.tls_cert.unlink()
    line = one_line_refusal(run_serve(config.path, tmp_path / "tmp"),
                            str(config.smtp.tls_cert), "[smtp] tls_cert", "keys init")
    assert "cannot listen" not in line
    stop_agent(config.gnupg_home)
