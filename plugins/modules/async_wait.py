#!/usr/bin/python
# Copyright: cosmic.backup engineers
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: async_wait
short_description: Wait for a job started with async and poll 0, and return its result
version_added: 0.1.0
description:
  - Waits on the host for an Ansible job started with C(async) and C(poll=0), and returns
    the job's own result, as M(ansible.builtin.async_status) does once the job has ended.
    A job that failed makes this task fail with the job's message.
  - One module run that watches the job file, instead of an C(until) loop of
    M(ansible.builtin.async_status). The result arrives within O(poll_interval) of the
    job's end, not up to a loop's C(delay) later, and the output has no
    C(FAILED - RETRYING) line for every poll of an hour-long restore.
  - The job's file under the async directory is removed once its result has been read,
    unless O(keep_job_file=true).
options:
  jid:
    description: The job id, C(ansible_job_id) of the task that started the job.
    type: str
    required: true
  timeout:
    description:
      - Seconds to wait for the job to end. The task fails after that; the job goes on.
    type: int
    default: 86400
  poll_interval:
    description: Seconds between two looks at the job file.
    type: float
    default: 0.2
  keep_job_file:
    description: Leave the job's result file in the async directory.
    type: bool
    default: false
  async_dir:
    description:
      - The host's directory of async jobs. The action plugin sets it from the connection's
        shell option C(async_dir) (C(ANSIBLE_ASYNC_DIR), default C(~/.ansible_async)), as
        M(ansible.builtin.async_status) does; set it only to look elsewhere.
    type: path
    default: ~/.ansible_async
attributes:
  check_mode:
    support: full
    description: Waits and returns the result as in a normal run (a job started in check
      mode has changed nothing).
  diff_mode:
    support: none
    description: Shows no diff.
  platform:
    support: full
    platforms: posix
    description: Runs on the host where the job runs.
author: cosmic.backup engineers (@cosmic-backup)
"""

EXAMPLES = r"""
- name: Restore the uploads in the background
  cosmic.backup.files_restore:
    selector: latest
    label: uploads
  async: 14400
  poll: 0
  register: uploads_job

- name: Wait for the uploads restore
  cosmic.backup.async_wait:
    jid: "{{ uploads_job.ansible_job_id }}"
    timeout: 14400
  register: uploads_restore
"""

RETURN = r"""
ansible_job_id:
  description: The job id waited for.
  returned: always
  type: str
finished:
  description: Always true when the task succeeds.
  returned: always
  type: bool
waited:
  description: Seconds this task waited for the job.
  returned: success
  type: float
"""

import json
import os
import sys
import time

from ansible.module_utils.basic import AnsibleModule


def read_job(path: str) -> dict | None:
    """The job's result, or None while it runs. async_wrapper writes the final
    result to a temporary file and renames it over the "started" record."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except ValueError:
        return None  # the wrapper has not written its first record yet
    return None if "started" in data and not data.get("finished") else data


def wait_for_job(path: str, timeout: float, poll_interval: float) -> tuple[dict | None, float]:
    """The job's result (None on timeout) and the seconds waited."""
    started = time.monotonic()
    while True:
        result = read_job(path)
        waited = time.monotonic() - started
        if result is not None or waited >= timeout:
            return result, waited
        time.sleep(min(poll_interval, max(timeout - waited, 0)))


def report_job_result(result: dict) -> None:
    """Hand the job's result to the controller as this task's own, as async_status
    does: the job's module has already serialized its warnings and deprecations,
    and exit_json would take them for new ones."""
    print(f"\n{json.dumps(result)}")  # pylint: disable=ansible-bad-function
    sys.exit(0)  # pylint: disable=ansible-bad-function


def main():
    module = AnsibleModule(
        argument_spec={
            "jid": {"type": "str", "required": True},
            "timeout": {"type": "int", "default": 86400},
            "poll_interval": {"type": "float", "default": 0.2},
            "keep_job_file": {"type": "bool", "default": False},
            "async_dir": {"type": "path", "default": "~/.ansible_async"},
        },
        supports_check_mode=True,
    )
    jid = module.params["jid"]
    path = os.path.join(module.params["async_dir"], jid)
    if not os.path.exists(path):
        module.fail_json(msg=f"no async job {jid} on this host ({path} does not exist): was it "
                             "started here, and has nothing read and removed it yet?",
                         ansible_job_id=jid, finished=True)
    try:
        result, waited = wait_for_job(path, module.params["timeout"],
                                      module.params["poll_interval"])
    except OSError as error:
        module.fail_json(msg=f"cannot read the result of job {jid} in {path}: {error}",
                         ansible_job_id=jid, finished=False)
    if result is None:
        module.fail_json(msg=f"job {jid} is still running after {module.params['timeout']} s; "
                             f"it goes on: wait again, or see its result in {path}",
                         ansible_job_id=jid, finished=False)
    if not module.params["keep_job_file"]:
        os.unlink(path)
    result.update(ansible_job_id=jid, finished=True, waited=round(waited, 2))
    if result.get("failed"):
        result.setdefault("msg", f"job {jid} failed")
    report_job_result(result)


if __name__ == "__main__":
    main()
