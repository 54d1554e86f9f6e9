"""``cosmic-backup``: the engine on a host without Ansible (archive_command, timers).

Exit codes: 0 ok, 1 done with warnings (e.g. the secondary copy failed),
2 error (nothing was changed that a restore could pick).

Command handlers here and in the ``*_cli`` modules import the engine modules
they use inside the handler: a start loads only its own command's engine
(archive_command and timers start the CLI often; tests/integration/test_cli.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone

from . import cli_catalog, database_cli, files_cli, wal_cli
from .atomic_file import atomic_file
from .compression import Compression
from .errors import BackupError, ConfigError
from .settings import build_vault
from .settings_file import load_settings
from .version import VERSION

EXIT_OK, EXIT_WARNING, EXIT_ERROR = 0, 1, 2


def _vault(args):
    return build_vault(load_settings(args.config))


def command_list(args) -> int:
    listings = _vault(args).list(args.kind)
    rows = [{"id": item.id, "kind": item.ref.kind, "created": item.ref.created.isoformat(),
             "copies": item.copies} for item in listings]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no backups yet")
    else:
        for row in rows:
            copies = ", ".join(f"{name} {_size(size)}" for name, size in row["copies"].items())
            print(f"{row['id']}  {copies}")
    return EXIT_OK


def command_backup_stream(args) -> int:
    """Seal standard input (or a file) as one object of a new backup.

    zstd starts first, so that loading the engine, the key and the repository
    overlaps the compression, the long pole.
    """
    settings = load_settings(args.config)
    meta = dict(item.split("=", 1) for item in args.meta)
    # Unbuffered, so that zstd's input is spliced straight from it.
    source = (open(args.file, "rb", buffering=0) if args.file  # noqa: SIM115
              else open(sys.stdin.fileno(), "rb", buffering=0, closefd=False))  # noqa: SIM115
    with source, Compression.from_settings(settings).start(source) as compressed:
        from .verification import RAW_STREAM_LAYOUT

        meta["layout"] = RAW_STREAM_LAYOUT  # no kind-specific structure to check later
        vault = build_vault(settings)
        with vault.new_backup(args.kind, meta) as backup:
            entry = backup.add_stream(args.name, compressed)
    _report({"backup_id": backup.id, "object": entry, "warnings": backup.warnings}, args)
    return _warned(backup.warnings)


def command_restore_stream(args) -> int:
    """Write one object's verified plaintext to standard output or a file."""
    vault = _vault(args)
    ref = vault.select(args.selector, args.kind)
    with vault.monitor.run("restore", ref.kind) as run, \
            vault.open_object(ref, args.name, checksum=args.checksum) as plain:
        if args.output in (None, "-"):
            sys.stdout.flush()
            plain.copy_to(sys.stdout.fileno())
        else:
            _write_atomically(args.output, plain)
        warnings = plain.warnings
        run.warnings += warnings
    for warning in warnings:
        print(f"cosmic-backup: warning: fell back from {warning}", file=sys.stderr)
    vault.audit.record("read", backup_id=ref.id, repository=plain.used, object=args.name,
                       result="ok", fallbacks=len(warnings) or None)
    return _warned(warnings)


def _write_atomically(path: str, plain) -> None:
    """The file appears only once every byte was read and verified."""
    with atomic_file(path, "wb", permissions=0o640) as out:
        plain.copy_to(out.fileno())


def command_show(args) -> int:
    vault = _vault(args)
    print(json.dumps(vault.manifest(vault.select(args.selector, args.kind)), indent=2))
    return EXIT_OK


def command_cleanup(args) -> int:
    removed = _vault(args).remove_incomplete(args.older_than)
    for key in removed:
        print(f"removed {key}")
    print(f"{len(removed)} leftover object(s) of interrupted runs removed")
    return EXIT_OK


def _key_path(args) -> str:
    settings = load_settings(args.config)
    path = (settings.get("keys") or {}).get("local_key_file")
    if not path:
        raise ConfigError("the settings name no keys.local_key_file: KMS keys live in KMS")
    return path


def command_key_init(args) -> int:
    from .keys import LocalKey

    path = _key_path(args)
    if os.path.exists(path):
        print(f"{path} already holds key {LocalKey.load(path).key_id}; nothing changed")
        return EXIT_OK
    key = LocalKey.generate()
    key.save(path)
    print(f"created key {key.key_id} in {path}")
    print("store its recovery code away from the backups: cosmic-backup key export")
    return EXIT_OK


def command_key_export(args) -> int:
    from .keys import LocalKey

    key = LocalKey.load(_key_path(args))
    print(f"# cosmic-backup recovery code for key {key.key_id}")
    print(f"# created {datetime.now(timezone.utc):%Y-%m-%d}; keep it apart from the backups")
    print(key.recovery_code())
    return EXIT_OK


def command_key_import(args) -> int:
    from .keys import LocalKey

    path = _key_path(args)
    lines = [line for line in sys.stdin.read().splitlines() if not line.startswith("#")]
    key = LocalKey.from_recovery_code(" ".join(lines))
    key.save(path, overwrite=args.force)
    print(f"imported key {key.key_id} into {path}")
    return EXIT_OK


def _report(result: dict, args) -> None:
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['backup_id']}: {_size(result['object']['size'])} sealed into "
              f"{_size(result['object']['stored_size'])}")
    for warning in result["warnings"]:
        print(f"cosmic-backup: warning: {warning}", file=sys.stderr)


def _warned(warnings) -> int:
    return EXIT_WARNING if warnings else EXIT_OK


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="cosmic-backup",
        description="Encrypted backups in primary and secondary repositories.",
        epilog="Exit codes: 0 ok, 1 warning, 2 error.",
    )
    root.add_argument("--config", help="settings file (default $COSMIC_BACKUP_CONFIG or "
                                       "/etc/cosmic-backup/config.yml)")
    root.add_argument("--version", action="version", version=f"cosmic-backup {VERSION}")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, handler, help_text):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    sub = command("list", command_list, "list complete backups in every repository")
    sub.add_argument("--kind")
    sub.add_argument("--json", action="store_true")

    sub = command("backup-stream", command_backup_stream,
                  "seal standard input (or --file) as one object of a new backup")
    sub.add_argument("kind")
    sub.add_argument("--name", required=True, help="object name inside the backup")
    sub.add_argument("--file", help="read this file instead of standard input")
    sub.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE")
    sub.add_argument("--json", action="store_true")

    sub = command("restore-stream", command_restore_stream,
                  "write one object of a backup, verified, to standard output or --output")
    sub.add_argument("selector", help="latest, YYYY-MM-DD or a backup id")
    sub.add_argument("--kind")
    sub.add_argument("--name", required=True)
    sub.add_argument("--output", help="file to write (appears only when complete)")
    sub.add_argument("--checksum", action="store_true",
                     help="also compare the SHA-256 that backups made before manifest "
                          "version 2 record (as verify does; about 1 s of CPU per GiB)")

    cli_catalog.add_commands(command)  # verify, info, prune

    sub = command("show", command_show, "print a backup's manifest")
    sub.add_argument("selector")
    sub.add_argument("--kind")

    sub = command("cleanup", command_cleanup, "remove what interrupted backups left behind")
    sub.add_argument("--older-than", type=float, default=24 * 3600, metavar="SECONDS",
                     help="only leftovers at least this old (default one day)")

    wal_cli.add_commands(command)
    database_cli.add_commands(command)
    files_cli.add_commands(command)  # files backup, restore, verify, gc

    key = commands.add_parser("key", help="the local master key: init, export, import")
    key_commands = key.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    for name, handler, help_text in (
        ("init", command_key_init, "create the local master key if there is none"),
        ("export", command_key_export, "print the key as a recovery code for safekeeping"),
        ("import", command_key_import, "recreate the key file from a recovery code on stdin"),
    ):
        sub = key_commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        if name == "import":
            sub.add_argument("--force", action="store_true",
                             help="replace a different key that is already there")
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except BackupError as error:
        print(f"cosmic-backup: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("cosmic-backup: error: interrupted; nothing partial is selectable", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
