"""The host CLI's database commands, for systemd timers and operators without Ansible.

    cosmic-backup database-backup --database cosmic [--type full|schema|base]
    cosmic-backup database-restore --database cosmic [--selector latest]

Connection options follow libpq: --host/--port/--user/--database, or --dsn; the
password comes from PGPASSWORD or ~/.pgpass, never from the command line.
"""

from __future__ import annotations

import json
import sys

from .settings import build_vault
from .settings_file import load_settings

EXIT_OK, EXIT_WARNING = 0, 1


def _connection(args):
    from .pg_tools import Connection

    return Connection(host=args.host, port=args.port, user=args.user, database=args.database,
                      dsn=args.dsn)


def _finish(result: dict, warnings: list[str], args) -> int:
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(" ".join(f"{key}={value}" for key, value in result.items()
                       if not isinstance(value, (list, dict))))
    for warning in warnings:
        print(f"cosmic-backup: warning: {warning}", file=sys.stderr)
    return EXIT_WARNING if warnings else EXIT_OK


def command_database_backup(args) -> int:
    if args.type == "base":
        from . import pitr

        base = pitr.base_backup(build_vault(load_settings(args.config)), _connection(args),
                                label=args.label)
        return _finish({"backup_id": base.backup_id, "type": "base", "size": base.size,
                        "stored_size": base.stored_size, "duration": round(base.duration, 3),
                        "start_wal_segment": base.meta["start_wal_segment"]},
                       base.warnings, args)
    from . import database

    # The vault is made once pg_dump has started: its libraries load meanwhile.
    dump = database.backup_database(lambda: build_vault(load_settings(args.config)),
                                    _connection(args), type=args.type, format=args.format,
                                    jobs=args.jobs, label=args.label)
    return _finish({"backup_id": dump.backup_id, "type": dump.type, "database": dump.database,
                    "size": dump.size, "stored_size": dump.stored_size, "tables": dump.tables,
                    "rows": dump.rows, "duration": round(dump.duration, 3)},
                   dump.warnings, args)


def command_database_restore(args) -> int:
    from . import database

    vault = build_vault(load_settings(args.config))
    restored = database.restore_database(
        vault, _connection(args), selector=args.selector, database=args.target, jobs=args.jobs,
        terminate_connections=args.terminate_connections)
    return _finish({"backup_id": restored.backup_id, "database": restored.database,
                    "previous": restored.previous, "tables": len(restored.checks),
                    "duration": round(restored.duration, 3)}, restored.warnings, args)


def _connection_options(sub) -> None:
    sub.add_argument("--host")
    sub.add_argument("--port", type=int)
    sub.add_argument("--user")
    sub.add_argument("--database")
    sub.add_argument("--dsn", help="a libpq connection string or postgresql:// URI")
    sub.add_argument("--json", action="store_true")


def add_commands(command) -> None:
    """Register the database commands with the CLI's ``command(name, handler, help)``."""
    sub = command("database-backup", command_database_backup,
                  "back up a database (full or schema dump) or the cluster (base backup)")
    _connection_options(sub)
    sub.add_argument("--type", choices=["full", "schema", "base"], default="full")
    sub.add_argument("--format", choices=["custom", "directory"], default="custom")
    sub.add_argument("--jobs", type=int, default=1)
    sub.add_argument("--label")

    sub = command("database-restore", command_database_restore,
                  "restore a dump into a new database, verify it, and swap it in by rename")
    _connection_options(sub)
    sub.add_argument("--selector", default="latest")
    sub.add_argument("--target", help="database name to restore into (default --database)")
    sub.add_argument("--jobs", type=int, default=1)
    sub.add_argument("--terminate-connections", action="store_true")
