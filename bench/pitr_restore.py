"""Our point-in-time restore for the pitr-restore row: the host CLI has no
command for it yet, so this calls the engine function as the
``database_restore`` module does (method point_in_time), into a new data
directory.

    python bench/pitr_restore.py --config cosmic.yml --target-time ISO --data-directory DIR
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

from ansible_collections.cosmic.backup.plugins.module_utils import pitr
from ansible_collections.cosmic.backup.plugins.module_utils.settings import build_vault
from ansible_collections.cosmic.backup.plugins.module_utils.settings_file import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pitr_restore", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--target-time", required=True, type=datetime.fromisoformat)
    parser.add_argument("--data-directory", required=True)
    args = parser.parse_args(argv)
    restored = pitr.restore_point_in_time(build_vault(load_settings(args.config)),
                                          args.data_directory, target_time=args.target_time)
    print(f"backup_id={restored.backup_id} wal_files={restored.wal_files} "
          f"replay_seconds={restored.replay_seconds:.2f} restored_to={restored.restored_to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
