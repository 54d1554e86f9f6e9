"""The drill's code, configuration and database restores without Ansible (the
anchor of bench row ``drill-recovery``, see ``bench/rows_drill.py``).

    .venv/bin/python bench/drill_restores.py --config SETTINGS --lab LAB_ROOT

Direct engine calls in one process, with the arguments the playbook's modules
pass (``ansible/steps/restore_code.yml``, ``restore_config.yml``,
``restore_database.yml``): the host CLI has no command for a code restore or a
point-in-time recovery, and its ``files restore --kind config`` skips the
syntax check that ``config_restore`` runs. The database server must be stopped
(``lab.py db stop``) and is started afterwards by ``lab.py db start``, as the
playbook does. Exit codes as the CLI's: 0 ok, 2 error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone

from ansible_collections.cosmic.backup.plugins.module_utils import code, config_files, pitr
from ansible_collections.cosmic.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cosmic.backup.plugins.module_utils.settings import build_vault


def restore(settings_file: str, lab: str) -> dict[str, str]:
    """Code into a new release directory, the configuration in place (safety backup,
    syntax check), and the database to the end of the archived WAL; the backup ids."""
    with open(settings_file, encoding="utf-8") as handle:
        vault = build_vault(json.load(handle))  # written by rows_drill, as JSON
    with open(os.path.join(lab, "lab.json"), encoding="utf-8") as handle:
        database = json.load(handle)["database"]
    release = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    restored_code = code.restore_code(vault, "latest",
                                      target=os.path.join(lab, "releases", release))
    restored_config = config_files.restore_config(
        vault, "latest", label="config", safety_backup=True,
        state_dir=os.path.join(lab, "state"))
    data_directory = os.path.join(database["base_dir"], "data")
    recovered = pitr.restore_point_in_time(vault, data_directory, owner="postgres")
    if recovered.data_directory != os.path.abspath(data_directory):
        # the module would only warn; here the run must not time an unfinished restore
        raise BackupError("; ".join(recovered.warnings)
                          or f"the recovered data directory is {recovered.data_directory}")
    return {"code": restored_code["backup_id"], "config": restored_config["backup_id"],
            "database": recovered.backup_id}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="drill_restores.py", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True,
                        help="cosmic-backup settings file, in JSON (a YAML subset)")
    parser.add_argument("--lab", required=True, help="the lab's directory (lab.json)")
    args = parser.parse_args(argv)
    try:
        print(json.dumps(restore(args.config, args.lab)))
    except BackupError as error:
        print(f"drill_restores: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
