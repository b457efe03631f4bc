"""Watching the gateway run: structured logs, metrics, liveness, systemd's notify protocol."""
