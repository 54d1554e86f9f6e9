"""cosmic.backup.async_wait, run for real by ansible-playbook: real async jobs
(ansible.builtin.command with async and poll 0), a job directory of the test's own."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.integration.ansible_modules import BIN, environment

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Start the job
      ansible.builtin.shell: {command}
      async: 60
      poll: 0
      register: job
    - name: Wait for it
      cosmic.backup.async_wait:
        jid: "{{{{ job.ansible_job_id }}}}"
        timeout: {timeout}
      register: waited
      ignore_errors: true
    - name: Show the result
      ansible.builtin.debug:
        msg: "RESULT {{{{ waited | to_json }}}}"
"""


def play(tmp_path, text: str, callback: str = "oneline") -> subprocess.CompletedProcess:
    """Run a playbook on localhost, async jobs in tmp_path/async."""
    (tmp_path / "async").mkdir(exist_ok=True)
    (tmp_path / "play.yml").write_text(text)
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}", str(tmp_path / "play.yml")],
        env={**environment(tmp_path), "ANSIBLE_ASYNC_DIR": str(tmp_path / "async"),
             "ANSIBLE_STDOUT_CALLBACK": callback},
        capture_output=True, text=True, timeout=120, check=False)


def run_job(tmp_path, command: str, timeout: int = 60) -> tuple[dict, list[str]]:
    """The wait task's registered result, and the job files left behind."""
    result = play(tmp_path, PLAYBOOK.format(command=json.dumps(command), timeout=timeout))
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if "RESULT " in line)
    message = json.loads(line.split("=>", 1)[1])["msg"]  # the oneline callback's JSON
    registered = json.loads(message.removeprefix("RESULT "))
    return registered, sorted(path.name for path in (tmp_path / "async").iterdir()
                              if path.is_file())


def test_returns_the_jobs_result_as_soon_as_it_ends_and_removes_its_file(tmp_path):
    waited, left = run_job(tmp_path, "sleep 2; echo restored")
    assert waited["finished"] is True and not waited.get("failed")
    assert waited["stdout"] == "restored" and waited["rc"] == 0
    assert 1.5 <= waited["waited"] < 4  # watched, not polled every few seconds
    assert left == []


def test_a_failed_job_fails_the_task_with_its_message(tmp_path):
    waited, left = run_job(tmp_path, "echo 'disk full' >&2; exit 3")
    assert waited["failed"] is True and waited["finished"] is True
    assert waited["rc"] == 3 and "disk full" in waited["stderr"]
    assert left == []


def test_a_job_still_running_at_the_timeout_fails_and_keeps_its_file(tmp_path):
    waited, left = run_job(tmp_path, "sleep 20", timeout=1)
    assert waited["failed"] is True and waited["finished"] is False
    assert "still running after 1 s" in waited["msg"]
    assert left == [waited["ansible_job_id"]]


WARNING_MODULE = """#!/usr/bin/python
from ansible.module_utils.basic import AnsibleModule
module = AnsibleModule(argument_spec={})
module.warn("the safety backup is larger than expected")
module.exit_json(changed=True, backup_id="b1")
"""


def test_the_jobs_warnings_reach_the_operator(tmp_path, monkeypatch):
    """A job module's warnings come back already serialized: they must pass as they are."""
    (tmp_path / "library").mkdir()
    (tmp_path / "library" / "warner.py").write_text(WARNING_MODULE)
    monkeypatch.setenv("ANSIBLE_LIBRARY", str(tmp_path / "library"))
    result = play(tmp_path, """
- hosts: localhost
  gather_facts: false
  tasks:
    - warner:
      async: 60
      poll: 0
      register: job
    - cosmic.backup.async_wait:
        jid: "{{ job.ansible_job_id }}"
      register: waited
    - ansible.builtin.assert:
        that: waited.backup_id == "b1" and waited.finished
""", callback="default")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]: the safety backup is larger than expected" in result.stdout + result.stderr


def test_an_unknown_job_is_a_clear_error(tmp_path):
    result = play(tmp_path, """
- hosts: localhost
  gather_facts: false
  tasks:
    - cosmic.backup.async_wait:
        jid: j123.456
""")
    assert result.returncode == 2
    assert "no async job j123.456 on this host" in result.stdout
