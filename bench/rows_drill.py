"""Issue 5's row: the drill's recovery against the same engine restores run alone.

Ours is what ``make drill`` runs after its disaster, ``ansible-playbook
disaster_recovery.yml -e provision=true``: a new database server, the code, the
configuration, the database to the end of the archived WAL, the uploads, the
integrity checks, the recovered application started and tested, traffic
switched, the DR plan and the summary. The anchor is the same restores without
Ansible, into the same places from the same backups: the lab's own commands to
provision the new server and to stop and start it (the playbook runs the same
ones), the engine called directly for the code, the configuration and the
point-in-time recovery (``bench/drill_restores.py``: the host CLI has no
command for them) and ``cosmic-backup files restore`` for the uploads. Starting
and testing the application, switching traffic, the checks and the reports are
not in the anchor: with Ansible's own cost, they are the overhead the issue's
1.2 bounds.

Both sides start from the same state. Set up once, untimed: a lab of its own at
the bench's scale, WAL archiving, every backup, the disaster, and a copy of
what the disaster left. Before every timed side, ``reset`` checks that the last
recovery brought everything back (``lab.py measure``), stops what it started
and puts the copy back: the same repositories (hard links: their objects are
written once, by rename, and never changed), nothing where the restores write,
the same ``lab.json``, the balancer pointing at the broken instance.

The lab lives in a temporary directory, linked as ``{work}/lab``, and is
stopped and removed when the run exits: the runner removes ``{work}`` after the
rows, and a running PostgreSQL must not lose its directory under it.
"""

from __future__ import annotations

import atexit
import json
import os
import shlex
import shutil
import subprocess
import tempfile

from bench import data
from bench.harness import BenchError, Context, Row, Target, run_shell

ROOT = data.ROOT
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
LAB_PY = os.path.join(ROOT, "tools", "lab", "lab.py")
LAB = f"{shlex.quote(PYTHON)} {shlex.quote(LAB_PY)} --root {{work}}/lab"
SETTINGS = "{work}/cosmic-lab.yml"  # what the playbooks give the modules, for the anchor
ENVIRONMENT = ("env COSMIC_LAB_ROOT={work}/lab COSMIC_REPORTS_DIR={work}/reports "
               "ANSIBLE_HOME={work}/ansible-home "
               "COSMIC_BACKUP_PLAYBOOK_AUDIT_LOG={work}/playbook-audit.jsonl")
PLAYBOOK = shlex.quote(os.path.join(ROOT, ".venv", "bin", "ansible-playbook"))
IN_ANSIBLE = f"cd {shlex.quote(os.path.join(ROOT, 'ansible'))} && "
# The snapshot keeps everything of the lab but run/ (live pid files and logs of
# the first application and the balancer, which keep running); only the
# balancer's upstream file is put back.
NOT_COPIED = ("run",)
LINKED = ("repositories",)

RECOVERY = (IN_ANSIBLE + "{measure} " + ENVIRONMENT + f" {PLAYBOOK} disaster_recovery.yml "
            "-e provision=true")
RESTORES = " && ".join([
    f"{LAB} provision-db --name db2",
    f"{LAB} db stop",
    f"{shlex.quote(PYTHON)} {shlex.quote(os.path.join(ROOT, 'bench', 'drill_restores.py'))} "
    f"--config {SETTINGS} --lab {{work}}/lab",
    f"{LAB} db start",
    f"{shlex.quote(os.path.join(ROOT, 'bin', 'cosmic-backup'))} --config {SETTINGS} "
    "files restore latest --label uploads --state-dir {work}/lab/state",
])


def _paths(context: Context) -> tuple[str, str, str]:
    """The lab (through its link), the copy of what the disaster left, and the
    balancer's upstream file as it was then."""
    lab = os.path.join(context.work, "lab")
    home = os.path.dirname(os.path.realpath(lab))
    return lab, os.path.join(home, "after-disaster"), os.path.join(home, "upstream")


def _run(context: Context, template: str) -> None:
    """An untimed command of a reset (not in the report: it is the same every time)."""
    command = context.format(template)
    result = run_shell(command, context)
    if result.returncode != 0:
        raise BenchError(f"{context.row}: reset command failed ({result.returncode}): "
                         f"{command}\n{result.output_tail}")


def _copy_entries(source: str, target: str) -> None:
    """Every entry of ``source`` but ``NOT_COPIED`` into ``target``: ``LINKED`` ones
    hard-linked, the others copied with their owners and modes."""
    for name in sorted(os.listdir(source)):
        if name in NOT_COPIED:
            continue
        flags = "-al" if name in LINKED else "-a"
        subprocess.run(["cp", flags, os.path.join(source, name), target], check=True)


def _tear_down(home: str, work: str) -> None:
    """Stop the lab; remove it too unless the run keeps its work directory (--keep)."""
    kept = os.path.isdir(work)
    subprocess.run([PYTHON, LAB_PY, "--root", os.path.join(home, "lab"), "down"]
                   + ([] if kept else ["--purge"]), capture_output=True, check=False)
    if not kept:
        shutil.rmtree(home, ignore_errors=True)


def build_lab(context: Context) -> None:
    """The drill up to its disaster, once: lab, archiving, every backup, the disaster;
    then the copy of what the disaster left that every reset puts back."""
    home = tempfile.mkdtemp(prefix="cosmic-bench-drill-")
    os.chmod(home, 0o711)  # PostgreSQL runs as postgres: let it reach the lab
    atexit.register(_tear_down, home, context.work)
    os.symlink(os.path.join(home, "lab"), os.path.join(context.work, "lab"))
    context.shell(f"{LAB} up --scale {context.scale:g}")
    context.shell(IN_ANSIBLE + ENVIRONMENT + f" {PLAYBOOK} archiving.yml")
    context.shell(IN_ANSIBLE + ENVIRONMENT + f" {PLAYBOOK} backup.yml -e kind=all -e force=true")
    context.shell(f"{LAB} disaster")
    lab, after, upstream = _paths(context)
    os.makedirs(after)
    _copy_entries(lab, after)
    shutil.copy2(os.path.join(lab, "run", "upstream"), upstream)
    context.setup_commands.append(
        f"(a copy of {lab} as the disaster left it, but run/: the repositories hard-linked, "
        "the rest cp -a; put back before every timed command)")
    with open(os.path.join(lab, "lab.json"), encoding="utf-8") as handle:
        vault = json.load(handle)["vault"]
    with open(context.format(SETTINGS), "w", encoding="utf-8") as handle:
        # the vault the lab inventory gives the modules (group_vars/all/vault.yml)
        json.dump({"repositories": vault["repositories"], "keys": vault["keys"],
                   "audit_log": os.path.join(lab, "audit.jsonl")}, handle, indent=2)


def _check_recovered(context: Context) -> None:
    """What the last timed command recovered equals what the disaster destroyed."""
    lab = os.path.join(context.work, "lab")
    measured = subprocess.run([PYTHON, LAB_PY, "--root", lab, "measure"], env=context.env,
                              capture_output=True, text=True, check=False)
    if measured.returncode != 0:
        raise BenchError(f"{context.row}: lab.py measure failed after a recovery: "
                         f"{measured.stderr.strip()[-2000:]}")
    different = [item["what"] for item in json.loads(measured.stdout)["comparisons"]
                 if not item["equal"]]
    if different:
        raise BenchError(f"{context.row}: the last recovery did not bring back "
                         f"{', '.join(different)} (see lab.py measure in {lab})")


def back_to_the_disaster(context: Context, side: str) -> None:
    """The state the disaster left, exactly: stop and remove what a recovery made."""
    lab, after, upstream = _paths(context)
    if os.path.exists(os.path.join(lab, "db2", "data", "postmaster.pid")):
        _check_recovered(context)
        _run(context, f"{LAB} db stop")
    _run(context, f"{LAB} app stop --name app2")
    for name in os.listdir(lab):
        if name in NOT_COPIED:
            continue
        path = os.path.join(lab, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    _copy_entries(after, lab)
    shutil.copy2(upstream, os.path.join(lab, "run", "upstream.partial"))
    os.replace(os.path.join(lab, "run", "upstream.partial"), os.path.join(lab, "run", "upstream"))
    os.sync()  # the copies' and the last recovery's writeback is not billed to the next side


ROWS = [
    Row(
        name="drill-recovery",
        summary="the drill's recovery (disaster_recovery.yml -e provision=true) against "
                "the same engine restores run alone",
        ours=RECOVERY,
        anchor=RESTORES,
        target=Target(ratio=1.2),
        needs=(),
        inputs=("{work}/lab/repositories",),
        setup=build_lab,
        reset=back_to_the_disaster,
    ),
]
