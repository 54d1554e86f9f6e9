"""The host CLI's entry point: ``python -m ...module_utils.cli_launch ARGS``.

archive_command runs ``cosmic-backup wal-push %p`` once per segment; a segment
that an earlier batched push already stored is acknowledged here, before the
engine and the AWS Encryption SDK are loaded (most of a push's time). Every
other call goes to the CLI (``cli.py``).
"""

from __future__ import annotations

import sys

from .wal_segments import claim_batched_push


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if claim_batched_push(argv):
        return 0
    from .cli import main as cli_main
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
