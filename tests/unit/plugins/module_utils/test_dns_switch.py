"""The Route 53 switch's own logic, without a server: record checks, error wording
and the INSYNC wait with a clock that does not sleep. The API itself is exercised
on moto's server in tests/integration/test_traffic_switch_route53.py."""

from __future__ import annotations

import botocore.exceptions
import pytest
from ansible_collections.cosmic.backup.plugins.module_utils import dns_switch, errors

Record = dns_switch.Record


@pytest.mark.parametrize(("record", "complaint"), [
    (Record("app.example.com", "MX", ("10 mail",), 60), "cannot be switched"),
    (Record("app.example.com", "A"), "either values or an alias"),
    (Record("app.example.com", "A", ("198.51.100.1",), 60,
            dns_switch.Alias("lb.example.net", "Z1")), "either values or an alias"),
    (Record("app.example.com", "A", ("198.51.100.1",), None), "need a TTL"),
    (Record("app.example.com", "CNAME", ("a.example.net", "b.example.net"), 60),
     "exactly one value"),
    (Record("app.example.com", "A", ("2001:db8::1",), 60), "not an IPv4 address"),
    (Record("app.example.com", "AAAA", ("198.51.100.1",), 60), "not an IPv6 address"),
    (Record("app.example.com", "A", ("app2.example.net",), 60), "not an IPv4 address"),
])
def test_records_route53_would_refuse_are_refused_before_any_call(record, complaint):
    with pytest.raises(errors.ConfigError, match=complaint):
        record.check()


@pytest.mark.parametrize(("name", "normal"), [
    ("App.Example.COM.", "app.example.com"),
    ("\\052.example.com.", "*.example.com"),
    (" app.example.com ", "app.example.com"),
])
def test_names_compare_as_route53_stores_them(name, normal):
    assert dns_switch.normalize_name(name) == normal


class PendingClient:
    """Route 53 that accepts the change but stays PENDING for `pending` polls."""

    def __init__(self, pending: int):
        self.pending = pending
        self.polls = 0
        self.changes = []

    def get_hosted_zone(self, Id):
        return {"HostedZone": {"Id": f"/hostedzone/{Id}", "Name": "example.com."}}

    def list_resource_record_sets(self, **_):
        return {"ResourceRecordSets": []}

    def change_resource_record_sets(self, **kwargs):
        self.changes.append(kwargs)
        return {"ChangeInfo": {"Id": "/change/C1", "Status": "PENDING"}}

    def get_change(self, Id):
        self.polls += 1
        return {"ChangeInfo": {"Id": Id, "Status": "PENDING" if self.polls <= self.pending
                               else "INSYNC"}}


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def switch(client, clock, timeout=60):
    return dns_switch.switch_record(
        client, Record("app.example.com", "A", ("198.51.100.2",), 60), zone_id="Z1",
        timeout=timeout, interval=5, clock=clock, sleep=clock.sleep)


def test_the_switch_waits_for_insync():
    client, clock = PendingClient(pending=3), FakeClock()
    result = switch(client, clock)
    assert (result.status, result.change_id, client.polls) == ("INSYNC", "C1", 4)
    assert result.waited_seconds == 15
    assert client.changes[0]["ChangeBatch"]["Changes"][0]["Action"] == "UPSERT"


def test_a_change_still_pending_at_the_timeout_fails_naming_the_change_and_the_old_value():
    client, clock = PendingClient(pending=1000), FakeClock()
    with pytest.raises(dns_switch.SwitchTimeout) as caught:
        switch(client, clock, timeout=30)
    message = str(caught.value)
    assert "change C1 is still PENDING after 30 s" in message
    assert "Route 53 applies it anyway" in message and "previous value was no record" in message
    assert caught.value.result.changed and clock.now == 30


def client_error(code: str, message: str, operation: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": message}},
                                           operation)


class DeniedClient(PendingClient):
    def __init__(self):
        super().__init__(pending=0)

    def change_resource_record_sets(self, **kwargs):
        raise client_error("AccessDenied", "User: arn:aws:sts::123456789012:assumed-role/"
                           "writer/x is not authorized", "ChangeResourceRecordSets")


def test_access_denied_names_the_action_the_zone_and_the_permissions_needed():
    with pytest.raises(errors.SwitchError) as caught:
        switch(DeniedClient(), FakeClock())
    message = str(caught.value)
    assert ("access denied by Route 53 (AccessDenied) for "
            "route53:ChangeResourceRecordSets") in message
    assert "app.example.com A in zone example.com (Z1)" in message
    assert "they need route53:ChangeResourceRecordSets, route53:GetChange" in message


def test_a_record_with_a_routing_policy_is_left_to_route53():
    class Weighted(PendingClient):
        def list_resource_record_sets(self, **_):
            return {"ResourceRecordSets": [{"Name": "app.example.com.", "Type": "A",
                                            "SetIdentifier": "blue", "Weight": 100, "TTL": 60,
                                            "ResourceRecords": [{"Value": "198.51.100.1"}]}]}

    with pytest.raises(errors.ConfigError, match=r"routing policy .*'blue'"):
        switch(Weighted(pending=0), FakeClock())


def test_an_unknown_profile_is_named():
    with pytest.raises(errors.SwitchError, match="AWS profile 'no-such-profile' is not configured"):
        dns_switch.route53_client(profile="no-such-profile")
