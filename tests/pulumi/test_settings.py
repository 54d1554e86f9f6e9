"""Stack settings: the stack files parse, defaults are the guide's, bad values fail early."""

from __future__ import annotations

import pulumi
import pytest

from tests.pulumi.harness import as_engine_config, run_stack, stack_config


def load(program, values: dict, stack: str = "test"):
    pulumi.runtime.set_all_config(as_engine_config(values))
    settings = program["stack_settings"]
    return settings.load_settings(pulumi.Config("cosmic-backup"), stack=stack)


MINIMAL = {
    "cosmic-backup:primaryRegion": "eu-central-1",
    "cosmic-backup:secondaryRegion": "eu-west-1",
    "cosmic-backup:objectLockMode": "COMPLIANCE",
    "cosmic-backup:objectLockDays": 30,
    "cosmic-backup:alertEmails": ["sre@example.org"],
}


def test_prod_stack_file_settings(program):
    settings = load(program, stack_config("prod"), stack="prod")
    assert (settings.primary_region, settings.secondary_region) == ("eu-central-1", "eu-west-1")
    assert (settings.object_lock.mode, settings.object_lock.days) == ("COMPLIANCE", 30)
    assert (settings.audit_lock.mode, settings.audit_lock.days) == ("COMPLIANCE", 365)
    assert settings.replication_time_control is True
    assert settings.mfa_max_age_seconds == 3600
    assert settings.backup_host_principals == ("cosmic-backup-host",)
    assert settings.protect is True


def test_dev_stack_file_settings(program):
    settings = load(program, stack_config("dev"), stack="dev")
    assert (settings.object_lock.mode, settings.object_lock.days) == ("GOVERNANCE", 1)
    assert settings.primary_region != settings.secondary_region
    assert settings.protect is False


def test_unset_settings_take_the_guides_values(program):
    settings = load(program, MINIMAL)
    retention = settings.retention
    assert (
        retention.database.daily,
        retention.database.weekly,
        retention.database.monthly,
        retention.database.annual,
    ) == (30, 90, 365, 7 * 365)
    assert (retention.wal, retention.files, retention.config, retention.code) == (7, 90, 90, None)
    assert dict(settings.freshness_hours) == {"wal": 1, "database": 26, "files": 26, "config": 26}
    assert settings.mfa_max_age_seconds == 3600
    assert settings.repository_prefix == "cosmic"


def test_prod_spells_out_the_guides_retention(program):
    """Prod repeats the guide's table explicitly; it must not drift from it."""
    settings = load(program, stack_config("prod"), stack="prod")
    assert settings.retention == program["retention_lifecycle"].GUIDE_RETENTION


@pytest.mark.parametrize(
    ("override", "key", "hint"),
    [
        ({"cosmic-backup:secondaryRegion": "eu-central-1"}, "secondaryRegion", "another region"),
        ({"cosmic-backup:primaryRegion": "Frankfurt"}, "primaryRegion", "eu-central-1"),
        ({"cosmic-backup:objectLockMode": "STRICT"}, "objectLockMode", "COMPLIANCE"),
        ({"cosmic-backup:objectLockDays": 0}, "objectLockDays", "1..36500"),
        ({"cosmic-backup:objectLockDays": "thirty"}, "objectLockDays", "whole number"),
        ({"cosmic-backup:mfaMaxAgeSeconds": 7200}, "mfaMaxAgeSeconds", "60..3600"),
        ({"cosmic-backup:alertEmails": []}, "alertEmails", "at least one"),
        ({"cosmic-backup:alertEmails": ["not-an-address"]}, "alertEmails", "e-mail"),
        ({"cosmic-backup:coldStorageClass": "DEEP_ARCHIVE"}, "coldStorageClass", "instant"),
        ({"cosmic-backup:repositoryPrefix": "a/b"}, "repositoryPrefix", "no slash"),
        ({"cosmic-backup:freshnessHours": {"wal": 500}}, "freshnessHours", "1..168"),
        ({"cosmic-backup:freshnessHours": {"logs": 2}}, "freshnessHours", "unknown kind"),
        ({"cosmic-backup:backupHostPrincipals": ["arn:aws:s3:::x"]}, "backupHostPrincipals", "IAM"),
        ({"cosmic-backup:accountId": "12345"}, "accountId", "12-digit"),
        ({"cosmic-backup:retention": {"wal": 0}}, "retention.wal", ">= 1"),
        ({"cosmic-backup:retention": {"logs": 3}}, "retention", "unknown kinds"),
        (
            {"cosmic-backup:retention": {"database": {"daily": 100, "weekly": 90}}},
            "retention.database",
            "must not shrink",
        ),
    ],
)
def test_bad_settings_name_the_key_and_the_fix(program, override, key, hint):
    with pytest.raises(ValueError) as raised:
        load(program, {**MINIMAL, **override})
    message = str(raised.value)
    assert f"cosmic-backup:{key}" in message
    assert hint in message


@pytest.mark.parametrize("missing", ["primaryRegion", "objectLockMode", "alertEmails"])
def test_required_settings(program, missing):
    values = {k: v for k, v in MINIMAL.items() if k != f"cosmic-backup:{missing}"}
    with pytest.raises(ValueError, match=f"cosmic-backup:{missing}"):
        load(program, values)


def test_a_bad_setting_stops_the_program_before_any_resource():
    config = {**stack_config("prod"), "cosmic-backup:objectLockMode": "NONE"}
    with pytest.raises(ValueError, match="cosmic-backup:objectLockMode"):
        run_stack("prod", config)


def test_principals_resolve_role_names_in_this_account(program):
    resolve = program["stack_settings"].principal_arns
    assert resolve((), "111122223333") == ["arn:aws:iam::111122223333:root"]
    assert resolve(("host", "arn:aws:iam::444455556666:user/x"), "111122223333") == [
        "arn:aws:iam::111122223333:role/host",
        "arn:aws:iam::444455556666:user/x",
    ]
