"""Whether a data directory's postmaster.pid names a live server."""
import os
import shutil
import subprocess

from ansible_collections.cosmic.backup.plugins.module_utils.postgres_cluster import postmaster_pid


def write_pid(directory, pid):
    (directory / "postmaster.pid").write_text(f"{pid}\n{directory}\n")


def test_no_pid_file_means_no_server(tmp_path):
    assert postmaster_pid(str(tmp_path)) is None


def test_a_zombie_postmaster_is_not_a_server(tmp_path):
    # A SIGKILLed postmaster whose parent never reaps it, as under a container's init.
    child = subprocess.Popen(["true"])
    try:
        for _ in range(200):
            with open(f"/proc/{child.pid}/stat", encoding="utf-8") as handle:
                if handle.read().split(") ")[1].startswith("Z"):
                    break
            os.sched_yield()
        write_pid(tmp_path, child.pid)
        assert postmaster_pid(str(tmp_path)) is None
    finally:
        child.wait()


def test_a_reused_pid_of_another_program_is_not_a_server(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        write_pid(tmp_path, sleeper.pid)
        assert postmaster_pid(str(tmp_path)) is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_live_postgres_process_is_a_server(tmp_path):
    # The kernel names a process after its program file: PostgreSQL's is "postgres".
    program = shutil.copy("/bin/sleep", tmp_path / "postgres")
    server = subprocess.Popen([program, "30"])
    try:
        write_pid(tmp_path, server.pid)
        assert postmaster_pid(str(tmp_path)) == server.pid
    finally:
        server.kill()
        server.wait()
