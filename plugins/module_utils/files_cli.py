"""``cosmic-backup files ...``: file snapshots from the host CLI (timers, the lab, benchmarks).

Exit codes as the rest of the CLI: 0 ok, 1 done with warnings, 2 error.
"""

from __future__ import annotations

import json
import sys

from .settings import build_vault
from .settings_file import load_settings

EXIT_OK, EXIT_WARNING, EXIT_ERROR = 0, 1, 2


def _setup(args):
    settings = load_settings(args.config)
    state_dir = args.state_dir or settings.get("state_dir")
    return build_vault(settings), state_dir


def _print(result: dict, args, line: str) -> None:
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(line)
    for warning in result.get("warnings", []):
        print(f"cosmic-backup: warning: {warning}", file=sys.stderr)


def command_backup(args) -> int:
    from . import files

    vault, state_dir = _setup(args)
    result = files.take_snapshot(vault, args.paths, label=args.label, kind=args.kind,
                                 excludes=args.exclude, state_dir=state_dir,
                                 only_if_changed=args.only_if_changed)
    report = result.to_dict()
    line = (f"{result.backup_id}: {report['files']} files, {report['bytes']} bytes; read "
            f"{report['read_bytes']}, new {report['new_bytes']}, stored {report['stored_bytes']}"
            if result.backup_id else "; ".join(result.notes))
    _print(report, args, line)
    return EXIT_WARNING if result.warnings else EXIT_OK


def command_restore(args) -> int:
    from . import files

    vault, state_dir = _setup(args)
    result = files.restore_snapshot(
        vault, args.selector, kind=args.kind, label=args.label, paths=args.path or None,
        target=args.target, safety_backup=not args.no_safety_backup,
        keep_previous=not args.no_keep_previous,
        allow_external_symlinks=args.allow_external_symlinks, skip_damaged=args.skip_damaged,
        state_dir=state_dir)
    report = result.to_dict()
    line = (f"{result.backup_id}: {result.files} files ({result.bytes} bytes) restored to "
            + ", ".join(result.targets)
            + (f"; the replaced files are kept in {', '.join(result.previous)}"
               if result.previous else "")
            + (f"; safety backup {result.safety_backup}" if result.safety_backup else ""))
    _print(report, args, line)
    return EXIT_WARNING if result.warnings else EXIT_OK


def command_verify(args) -> int:
    """Every blob of one snapshot, or of all of them (each pack read once), in every copy."""
    from . import files

    vault, _state_dir = _setup(args)
    if args.selector == "all":
        refs = [item.ref for item in vault.list(args.kind)]
    else:
        refs = [files.select_snapshot(vault, args.selector, args.kind, args.label)]
    indexes = {ref.id: files.load_index(vault, ref) for ref in refs}
    checks = files.check_data(vault, args.kind, list(indexes.values()))
    failed = 0
    for check in checks:
        if check.ok:
            print(f"ok  {check.repository:<10} {check.blobs} blobs in {check.packs} packs")
            continue
        for backup_id, index in indexes.items():
            for path in files.affected_files(index, check.damaged_blobs):
                failed += 1
                print(f"BAD {check.repository:<10} {backup_id} {files.shown(path)}")
        for pack, error in check.damaged_packs.items():
            print(f"BAD {check.repository:<10} {pack}: {error}")
    if failed or not all(check.ok for check in checks):
        print(f"cosmic-backup: error: damaged file content in {len(refs)} snapshot(s): "
              "restore those files from another copy or snapshot", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def command_gc(args) -> int:
    from . import files

    vault, _state_dir = _setup(args)
    report = files.collect_garbage(vault, args.kind, dry_run=args.dry_run)
    _print(report, args, f"{report['unused']} unused pack copies ({report['unused_bytes']} "
                         f"bytes), {report['removed']} removed"
                         + (" (dry run)" if args.dry_run else ""))
    return EXIT_WARNING if report["refused"] else EXIT_OK


def add_commands(command) -> None:
    """Add ``files`` and its actions through the CLI's ``command(name, handler, help)``."""
    group = command("files", None, "file snapshots: backup, restore, verify, gc")
    actions = group.add_subparsers(dest="files_command", required=True, metavar="ACTION")

    def action(name, handler, help_text):
        sub = actions.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        sub.add_argument("--kind", default="files", choices=("files", "config", "code"))
        sub.add_argument("--state-dir", help="local cache of what this host stored "
                                             "(default: settings state_dir, "
                                             "/var/lib/cosmic-backup/state)")
        sub.add_argument("--json", action="store_true")
        return sub

    sub = action("backup", command_backup, "snapshot files and directories")
    sub.add_argument("paths", nargs="+", metavar="PATH")
    sub.add_argument("--label", required=True, help="what is backed up: uploads, logs, ...")
    sub.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                     help="a name pattern (*.tmp) or an absolute path pattern")
    sub.add_argument("--only-if-changed", action="store_true",
                     help="write nothing when nothing changed since the last snapshot")

    sub = action("restore", command_restore,
                 "restore a snapshot (staged next to the target, then swapped in)")
    sub.add_argument("selector", help="latest, YYYY-MM-DD or a backup id")
    sub.add_argument("--label")
    sub.add_argument("--path", action="append", metavar="PATH", help="only this path (repeat)")
    sub.add_argument("--target", help="restore under this directory instead of in place")
    sub.add_argument("--no-safety-backup", action="store_true",
                     help="do not snapshot the current files first")
    sub.add_argument("--no-keep-previous", action="store_true",
                     help="delete the replaced files instead of keeping them aside")
    sub.add_argument("--allow-external-symlinks", action="store_true")
    sub.add_argument("--skip-damaged", action="store_true",
                     help="restore the rest when some files are damaged in every copy")

    sub = action("verify", command_verify,
                 "check every blob of a snapshot (or 'all') by its checksum, in every copy")
    sub.add_argument("selector", help="latest, YYYY-MM-DD, a backup id, or all")
    sub.add_argument("--label")

    sub = action("gc", command_gc, "delete packs that no snapshot uses any more")
    sub.add_argument("--dry-run", action="store_true")
