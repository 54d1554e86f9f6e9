"""TEMPORARY bridge from the playbooks to engine functions that have no module yet.

TODO(issue 3): replace ``database-backup`` and ``database-restore`` with the
``cosmic.backup.database_backup`` / ``database_restore`` modules when they
land (the ansible/steps/*database*.yml files are the only callers).

Nothing here is logic of its own: it parses arguments, calls the engine
(``database.backup_database``, ``database.restore_database``) and prints
the result as one JSON document. Errors go to stderr as one line that names
what failed, and the exit code is 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ansible_collections.cosmic.backup.plugins.module_utils import database
from ansible_collections.cosmic.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cosmic.backup.plugins.module_utils.pg_tools import Connection
from ansible_collections.cosmic.backup.plugins.module_utils.settings import build_vault


def _connection(args) -> Connection:
    return Connection(host=args.host, port=args.port, user=args.user, database=args.database)


def command_database_backup(vault, args) -> dict:
    result = database.backup_database(vault, _connection(args), type=args.type)
    return {"backup_id": result.backup_id, "database": result.database,
            "size": result.size, "stored_size": result.stored_size, "tables": result.tables,
            "rows": result.rows, "duration": round(result.duration, 3),
            "warnings": result.warnings, "snapshot_time": result.meta.get("snapshot_time")}


def command_database_restore(vault, args) -> dict:
    result = database.restore_database(vault, _connection(args), selector=args.selector,
                                       terminate_connections=True)
    failed = [check for check in result.checks if not check.ok]
    return {"backup_id": result.backup_id, "database": result.database,
            "previous": result.previous, "duration": round(result.duration, 3),
            "checks": len(result.checks), "failed_checks": [dataclasses.asdict(check)
                                                            for check in failed],
            "warnings": result.warnings}


def command_database_select(vault, args) -> dict:
    """The exact backup a selector names now (a restore's safety backup must not win)."""
    ref, manifest = database.select_backup(vault, args.selector, database.LOGICAL_TYPES)
    return {"backup_id": ref.id, "created": ref.created.isoformat(),
            "database": manifest["meta"].get("database")}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root.add_argument("--settings", required=True,
                      help="the vault settings as JSON (repositories, keys, audit_log)")
    commands = root.add_subparsers(dest="command", required=True)
    for name, func in (("database-backup", command_database_backup),
                       ("database-restore", command_database_restore)):
        sub = commands.add_parser(name)
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, default=5432)
        sub.add_argument("--user", default="postgres")
        sub.add_argument("--database", required=True)
        sub.add_argument("--type", default="full", choices=("full", "schema"))
        sub.add_argument("--selector", default="latest")
        sub.set_defaults(func=func)
    sub = commands.add_parser("database-select")
    sub.add_argument("--selector", default="latest")
    sub.set_defaults(func=command_database_select)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        vault = build_vault(json.loads(args.settings))
        result = args.func(vault, args)
    except BackupError as error:
        print(f"{args.command} failed: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
