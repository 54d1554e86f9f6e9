# Shared options of every cosmic.backup module that reads or writes backups.

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  repositories:
    description:
      - Where backups live, primary first. Every backup is written to each
        repository; reads use the primary and fall back to the next one when an
        object is missing, unreadable or fails authentication.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: A short name for messages and the audit log (C(primary), C(secondary)).
        type: str
      url:
        description: A local path, C(file:///path) or C(s3://bucket/prefix).
        type: str
        required: true
      endpoint_url:
        description: S3 endpoint, for S3-compatible storage or a local test server.
        type: str
      region:
        description: AWS region of the bucket.
        type: str
      profile:
        description: AWS credentials profile to use.
        type: str
      replicated:
        description:
          - The repository is filled by the storage's own replication from the
            primary (S3 cross-region replication, as the Pulumi stack sets up).
            Backups are read and verified there but never written by this tool.
        type: bool
        default: false
  keys:
    description:
      - What wraps each object's data key. Give O(keys.local_key_file) (lab and
        development) or O(keys.kms_key_arns) (production, one KMS key per region).
    type: dict
    required: true
    suboptions:
      local_key_file:
        description: Path of the local master key file (mode 0600).
        type: path
      kms_key_arns:
        description: KMS key ARNs, the primary region's first; each wraps every data key.
        type: list
        elements: str
      kms_endpoint_url:
        description: KMS endpoint, for a local test server.
        type: str
  audit_log:
    description: Path of the JSON-lines audit log on the managed host.
    type: path
  compression:
    description: zstd settings.
    type: dict
    suboptions:
      level:
        description: zstd level.
        type: int
        default: 3
      threads:
        description: zstd worker threads.
        type: int
        default: 2
requirements:
  - python >= 3.9
  - aws-encryption-sdk < 4
  - zstandard
  - boto3 (for S3 repositories and KMS keys)
  - PyYAML
"""
