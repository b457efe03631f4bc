"""What the tests/test_opener_*.py files share: the signal they sign and encrypt, and the refusal
of a weak hash."""

from __future__ import annotations

from gateway.core.model import RejectClass, Rejection
from gateway.devkit.demokit import json_payload

PAYLOAD = json_payload([{"name": "Sanne de Vries", "birthdate": "2016-04-12"}],
                       reference="VT-HVB-2026-000123")


WEAK_HASH = Rejection(RejectClass.BAD_SIGNATURE,
                      "signature uses a weak hash algorithm; sign with SHA-256 or stronger")
