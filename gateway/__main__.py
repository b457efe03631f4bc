"""The `hwc-gateway` command's entry point (`python -m gateway`, and the installed script).

The one module above every layer (docs/architecture.md §1): it gives the administrator's
command line (`gateway.admin.cli`) the demo of the development kit (`gateway.devkit.demo`),
so that neither layer imports a higher one. Takes the command line; exits with what
`gateway.admin.cli.main` returns.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gateway.admin import cli


def _demo() -> int:
    # Imported when asked for only: `serve` and the other verbs never load the development kit.
    from gateway.devkit.demo import run_demo

    return run_demo()


def main(argv: Sequence[str] | None = None) -> int:
    """Every verb as `gateway.admin.cli.main` runs it, the `demo` verb by the devkit."""
    return cli.main(argv, demo=_demo)


if __name__ == "__main__":
    sys.exit(main())
