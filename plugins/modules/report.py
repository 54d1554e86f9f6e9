#!/usr/bin/python
# Copyright: cosmic.backup engineers
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: report
short_description: Write a report file (summary, DR plan, drill report) on the controller
version_added: 0.1.0
description:
  - Writes O(content) to O(dest) on the controller, the machine that runs the playbook,
    whatever host the task targets. The directory is created; the file appears whole or
    not at all (written beside it, fsynced, renamed).
  - Implemented as an action plugin, so no module runs on a host. M(ansible.builtin.copy)
    or M(ansible.builtin.template) would run two modules per file.
  - Unchanged content leaves the file alone and reports no change.
options:
  dest:
    description: The report's path on the controller.
    type: path
    required: true
  content:
    description: The whole report, e.g. from the C(ansible.builtin.template) lookup.
    type: str
    required: true
  mode:
    description: Permissions of the written file, in octal.
    type: raw
    default: "0644"
attributes:
  check_mode:
    support: full
    description: Reports whether the file would change, and writes nothing.
  diff_mode:
    support: none
    description: Shows no diff.
  platform:
    support: full
    platforms: all
    description: Always writes on the controller.
author: cosmic.backup engineers (@cosmic-backup)
"""

EXAMPLES = r"""
- name: Render the DR plan into the reports directory
  cosmic.backup.report:
    dest: "{{ cosmic_reports_dir }}/dr-plan.md"
    content: "{{ lookup('ansible.builtin.template', 'templates/dr-plan.md.j2') }}"
"""

RETURN = r"""
dest:
  description: The path written.
  returned: always
  type: str
size:
  description: Bytes of the report.
  returned: always
  type: int
"""
