"""The host CLI's WAL commands: what PostgreSQL's archive_command and
restore_command run, and the continuity check an operator or a timer runs.

    archive_command = 'cosmic-backup wal-push %p'
    restore_command = 'cosmic-backup wal-fetch %f %p'
    cosmic-backup wal-check            # gaps since the oldest base backup
    cosmic-backup wal-drain            # upload what the spool holds
"""

from __future__ import annotations

import json
import sys

from .settings import build_vault
from .settings_file import load_settings

EXIT_OK, EXIT_WARNING, EXIT_ERROR = 0, 1, 2
DEFAULT_BATCH = 32  # 512 MiB of 16 MiB segments per process when the archiver lags


def _archive(args, settings=None):
    from .wal import WalArchive

    settings = settings or load_settings(args.config)
    return WalArchive.from_settings(build_vault(settings), settings,
                                    getattr(args, "spool_dir", None))


def command_wal_push(args) -> int:
    """Exit 0 only when the WAL file is durable (in the primary or in the spool)."""
    settings = load_settings(args.config)
    archive = _archive(args, settings)
    batch = args.batch or int((settings.get("wal") or {}).get("push_batch") or DEFAULT_BATCH)
    result = archive.push(args.path, batch=batch)
    for warning in result.warnings:
        print(f"cosmic-backup: warning: {warning}", file=sys.stderr)
    # A spooled segment is durable: PostgreSQL may recycle it, so report success.
    return EXIT_OK


def command_wal_fetch(args) -> int:
    source = _archive(args).fetch(args.name, args.destination, cache=args.cache)
    if source is None:
        # Normal at the end of recovery; PostgreSQL treats any exit below 126 as "not there".
        print(f"cosmic-backup: {args.name} is not in the WAL archive", file=sys.stderr)
        return EXIT_WARNING
    return EXIT_OK


def command_wal_drain(args) -> int:
    uploaded, warnings = _archive(args).drain()
    print(f"{len(uploaded)} spooled WAL file(s) uploaded")
    for warning in warnings:
        print(f"cosmic-backup: warning: {warning}", file=sys.stderr)
    return EXIT_WARNING if warnings else EXIT_OK


def command_wal_check(args) -> int:
    from .pitr import oldest_base_start

    archive = _archive(args)
    start = args.start or oldest_base_start(archive.vault)
    report = archive.check_continuity(start)
    waiting = archive.spooled()
    if args.json:
        print(json.dumps({"ok": report.ok, "start": report.start, "end": report.end,
                          "segments": report.segments, "gaps": report.gaps,
                          "timelines": report.timelines, "spooled": waiting}, indent=2))
    else:
        print(report.describe())
        for repository, names in waiting.items():
            print(f"{len(names)} WAL file(s) wait in the spool for {repository}")
    if not report.ok:
        print(f"cosmic-backup: error: WAL continuity: {report.describe()}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_WARNING if waiting else EXIT_OK


def add_commands(command) -> None:
    """Register the WAL commands with the CLI's ``command(name, handler, help)``."""
    sub = command("wal-push", command_wal_push,
                  "archive one WAL file (archive_command = 'cosmic-backup wal-push %%p')")
    sub.add_argument("path", help="%%p: the WAL file, relative to the data directory")
    sub.add_argument("--spool-dir", help="where segments wait when the repository fails "
                                         "(default: settings wal.spool_dir)")
    sub.add_argument("--batch", type=int,
                     help="store up to this many segments the archiver has ready in one go "
                          f"(default: settings wal.push_batch, or {DEFAULT_BATCH}; 1: one)")

    sub = command("wal-fetch", command_wal_fetch,
                  "restore one archived WAL file (restore_command = "
                  "'cosmic-backup wal-fetch %%f %%p')")
    sub.add_argument("name", help="%%f: the WAL file name")
    sub.add_argument("destination", help="%%p: where to write it")
    sub.add_argument("--cache", help="keep the archive's listing in this file between calls")
    sub.add_argument("--spool-dir")

    sub = command("wal-drain", command_wal_drain, "upload the WAL files the spool holds")
    sub.add_argument("--spool-dir")

    sub = command("wal-check", command_wal_check,
                  "find gaps in the WAL archive from the oldest base backup to now")
    sub.add_argument("--start", help="first segment to require (default: the oldest base "
                                     "backup's first segment)")
    sub.add_argument("--spool-dir")
    sub.add_argument("--json", action="store_true")
