"""Host CLI commands over the catalog: ``verify`` (one backup or a random sample,
recorded), ``info`` (freshness, verification, capacity) and ``prune``.

Exit codes as in cli.py: 0 ok, 1 warning (capacity low, a deletion refused),
2 error (a verification failed, a kind is stale).
"""

from __future__ import annotations

import json
import sys

from .errors import ConfigError
from .settings import build_vault
from .settings_file import load_settings

EXIT_OK, EXIT_WARNING, EXIT_ERROR = 0, 1, 2


def _load(args):
    from .monitoring import Monitor, MonitoringSettings

    settings = load_settings(args.config)
    return settings, build_vault(settings), Monitor(
        MonitoringSettings.from_dict(settings.get("monitoring")))


def command_verify(args) -> int:
    from . import verification

    _settings, vault, monitor = _load(args)
    if args.sample is not None:
        pool = verification.sample_pool(vault.list(args.kind), [args.kind] if args.kind else None)
        refs = verification.choose_sample(pool, args.sample)
        if not refs:
            print("no backups to sample yet")
            return EXIT_OK
    elif args.selector:
        refs = [vault.select(args.selector, args.kind)]
    else:
        raise ConfigError("verify needs a selector (latest, YYYY-MM-DD or a backup id) "
                          "or --sample N")
    outcomes = []
    for ref in refs:
        with monitor.run("verify", ref.kind) as run:
            outcome = verification.verify_backup(vault, ref, deep=not args.shallow,
                                                 record=not args.no_record)
            if not outcome.ok:
                run.fail(outcome.summary())
        outcomes.append(outcome)
        for warning in outcome.warnings + run.warnings:
            print(f"cosmic-backup: warning: {warning}", file=sys.stderr)
        if not args.json:
            for check in outcome.objects:
                state = "ok " if check.ok else "BAD"
                print(f"{state} {check.repository:<10} {check.name}"
                      + (f"  {check.error}" if check.error else ""))
            for check in outcome.checks[len(vault.repositories):]:
                print(f"{'ok ' if check.ok else 'BAD'} {ref.kind:<10} {check.name}"
                      + (f"  {check.detail}" if check.detail else ""))
            for note in outcome.notes:
                print(f"    {note}")
    if args.json:
        print(json.dumps([outcome.to_dict() for outcome in outcomes], indent=2))
    failed = [outcome for outcome in outcomes if not outcome.ok]
    for outcome in failed:
        bad = next((c for c in outcome.objects if not c.ok), None)
        if bad is not None:
            print(f"cosmic-backup: error: {outcome.backup_id}: {bad.name} in {bad.repository} "
                  f"is damaged: {bad.error}", file=sys.stderr)
        else:
            print(f"cosmic-backup: error: {outcome.summary()}", file=sys.stderr)
    return EXIT_ERROR if failed else EXIT_OK


def _max_age(items: list[str], settings: dict) -> dict:
    from .monitoring import parse_max_age

    if not items:
        return parse_max_age((settings.get("monitoring") or {}).get("max_age"))
    if items == ["guide"]:
        return parse_max_age("guide")
    limits = {}
    for item in items:
        kind, sep, limit = item.partition("=")
        if not sep:
            raise ConfigError(f"--max-age {item!r}: use KIND=DURATION, e.g. database=26h")
        limits[kind] = limit
    return parse_max_age(limits)


def command_info(args) -> int:
    from . import info

    settings, vault, monitor = _load(args)
    config = monitor.settings
    result = info.report(vault, kinds=args.kind or None, max_age=_max_age(args.max_age, settings),
                         spool_paths=config.paths, min_free_percent=config.min_free_percent,
                         min_free_bytes=config.min_free_bytes)
    if args.audit_for:
        ref = vault.select(args.audit_for)
        result["audit_trail"] = info.audit_trail(vault, ref.id)
    if config.textfile_dir:
        info.write_metrics(config.textfile_dir, result)
    for alert in info.stale_alerts(result):
        for delivery in monitor.alert(alert):
            if not delivery.ok:
                print(f"cosmic-backup: warning: alert not delivered by {delivery.channel}: "
                      f"{delivery.detail}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print("\n".join(result["summary"]))
        for event in result.get("audit_trail", []):
            print(f"{event.get('time', '')}  {event.get('actor', '-'):<10} "
                  f"{event.get('action', ''):<20} {event.get('repository') or '':<10} "
                  f"{event.get('result', '')}")
    if result["stale"]:
        print(f"cosmic-backup: error: stale backups: {', '.join(result['stale'])}; run "
              f"./scripts/backup.sh {result['stale'][0]} and check the backup timers",
              file=sys.stderr)
        return EXIT_ERROR
    return EXIT_WARNING if result["warnings"] else EXIT_OK


def command_prune(args) -> int:
    from . import pruning, retention

    settings, vault, monitor = _load(args)
    policies = retention.policies_from_settings(settings.get("retention"))
    plan = pruning.collect(vault, policies, kinds=args.kind or None)
    if not args.dry_run:
        for kind in sorted({item.ref.kind for item in plan.items}):
            part = pruning.Plan(plan.now, [i for i in plan.items if i.ref.kind == kind],
                                plan.policies)
            with monitor.run("prune", kind) as run:
                pruning.apply(vault, part, purge_versions=args.purge_versions)
                run.bytes = sum(sum(item.copies.values()) for item in part.doomed)
                if part.refused():
                    run.fail(f"{len(part.refused())} {kind} backups could not be deleted")
            plan.warnings += part.warnings + run.warnings
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        verb = "would delete" if args.dry_run else "deleted"
        for item in plan.doomed:
            refusals = [f"{name}: {outcome}" for name, outcome in item.results.items()
                        if outcome.startswith("refused")]
            print(f"{'REFUSED' if refusals else verb} {item.ref.id}"
                  + (f"  ({'; '.join(refusals)})" if refusals else ""))
        if args.verbose:
            for item in plan.kept:
                print(f"keep {item.ref.id}  {', '.join(item.reasons)}")
        print(f"{len(plan.doomed)} backup(s) {verb}, {len(plan.kept)} kept")
    for warning in plan.warnings:
        print(f"cosmic-backup: warning: {warning}", file=sys.stderr)
    return EXIT_WARNING if plan.refused() or plan.warnings else EXIT_OK


def add_commands(command) -> None:
    """Register verify, info and prune with cli.py's ``command(name, handler, help)``."""
    sub = command("verify", command_verify,
                  "decrypt every object of every copy, run the kind's check, record the result")
    sub.add_argument("selector", nargs="?", help="latest, YYYY-MM-DD or a backup id")
    sub.add_argument("--kind")
    sub.add_argument("--sample", type=int, metavar="N",
                     help="verify N backups drawn at random instead (the weekly check)")
    sub.add_argument("--shallow", action="store_true",
                     help="stored-object authentication only, not the kind's own check")
    sub.add_argument("--no-record", action="store_true",
                     help="do not write the verification record into the repositories")
    sub.add_argument("--json", action="store_true")

    sub = command("info", command_info,
                  "backups per kind: ages, sizes, copies, verification, freshness, capacity")
    sub.add_argument("--kind", action="append", default=[])
    sub.add_argument("--max-age", action="append", default=[], metavar="KIND=DURATION",
                     help="fail (exit 2) when the newest KIND backup is older, e.g. "
                          "database=26h; 'guide' for the guide's limits")
    sub.add_argument("--audit-for", metavar="SELECTOR",
                     help="show who created, verified, restored or pruned this backup")
    sub.add_argument("--json", action="store_true")

    sub = command("prune", command_prune,
                  "delete the backups that the retention policy no longer keeps")
    sub.add_argument("--kind", action="append", default=[])
    sub.add_argument("--dry-run", action="store_true", help="say what would go; delete nothing")
    sub.add_argument("--purge-versions", action="store_true",
                     help="also remove stored versions in versioned S3 buckets")
    sub.add_argument("--verbose", action="store_true", help="also list what stays and why")
    sub.add_argument("--json", action="store_true")
