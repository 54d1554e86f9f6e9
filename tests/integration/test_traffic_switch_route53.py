"""The Route 53 traffic switch on moto's server over HTTP: the engine, the module run
by `ansible`, and ansible/tasks/switch_route53.yml run by ansible-playbook."""

from __future__ import annotations

import functools
import json
import subprocess
import threading
import uuid
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
import yaml
from ansible_collections.cosmic.backup.plugins.module_utils import dns_switch, errors

from tests.integration.ansible_modules import BIN, REPO, environment, run

Record = dns_switch.Record
OLD, NEW = "198.51.100.10", "198.51.100.20"


@pytest.fixture
def route53(moto_server):
    return boto3.client("route53", endpoint_url=moto_server.endpoint_url)


@pytest.fixture
def zone(route53):
    """A fresh public zone (its own name, so tests share the server) with app -> OLD."""
    name = f"cosmic-{uuid.uuid4().hex[:8]}.example.com"
    zone_id = route53.create_hosted_zone(Name=name, CallerReference=name)["HostedZone"]["Id"]
    zone_id = zone_id.rsplit("/", 1)[-1]
    route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [
        {"Action": "CREATE", "ResourceRecordSet": {
            "Name": f"app.{name}", "Type": "A", "TTL": 60,
            "ResourceRecords": [{"Value": OLD}]}}]})
    return zone_id, name


def record_sets(route53, zone_id, name, record_type="A"):
    return [item for item in route53.list_resource_record_sets(HostedZoneId=zone_id)
            ["ResourceRecordSets"] if item["Name"] == name + "." and item["Type"] == record_type]


# The engine


def test_switch_by_zone_name_returns_the_previous_value_then_is_idempotent(route53, zone):
    zone_id, name = zone
    record = Record(f"app.{name}", "A", (NEW,), 60)
    first = dns_switch.switch_record(route53, record, zone_name=name)
    assert first.changed and first.status == "INSYNC" and first.change_id
    assert (first.zone_id, first.zone_name) == (zone_id, name)
    assert first.previous == Record(f"app.{name}", "A", (OLD,), 60)
    assert record_sets(route53, zone_id, f"app.{name}")[0]["ResourceRecords"] == [{"Value": NEW}]

    second = dns_switch.switch_record(route53, record, zone_name=name + ".")
    assert not second.changed and second.change_id is None
    assert second.previous == second.record
    assert second.summary() == f"app.{name} A already {NEW}"

    back = dns_switch.switch_record(route53, first.previous, zone_id=zone_id)
    assert back.changed and back.previous.value == (NEW,)
    assert record_sets(route53, zone_id, f"app.{name}")[0]["ResourceRecords"] == [{"Value": OLD}]


def test_check_mode_reports_the_change_and_sends_none(route53, zone):
    zone_id, name = zone
    result = dns_switch.switch_record(route53, Record(f"app.{name}", "A", (NEW,), 60),
                                      zone_id=f"/hostedzone/{zone_id}", check=True)
    assert result.changed and result.change_id is None and result.status is None
    assert result.summary() == f"app.{name} A -> {NEW} (was {OLD})"
    assert record_sets(route53, zone_id, f"app.{name}")[0]["ResourceRecords"] == [{"Value": OLD}]


def test_a_new_record_has_no_previous_value(route53, zone):
    zone_id, name = zone
    result = dns_switch.switch_record(
        route53, Record(f"DR.{name.upper()}.", "AAAA", ("2001:DB8:0::1",), 30), zone_id=zone_id)
    assert result.changed and result.previous is None
    assert result.summary().startswith(f"dr.{name} AAAA -> 2001:DB8:0::1 (was no record; INSYNC")
    # the same address written another way is the same record: nothing to do
    again = dns_switch.switch_record(route53, Record(f"dr.{name}", "AAAA", ("2001:db8::1",), 30),
                                     zone_id=zone_id)
    assert not again.changed


def test_ttl_alone_is_a_change(route53, zone):
    zone_id, name = zone
    result = dns_switch.switch_record(route53, Record(f"app.{name}", "A", (OLD,), 300),
                                      zone_id=zone_id)
    assert result.changed and record_sets(route53, zone_id, f"app.{name}")[0]["TTL"] == 300


def test_alias_and_cname_targets(route53, zone):
    zone_id, name = zone
    alias = dns_switch.Alias("dualstack.cosmic-dr-1.eu-west-1.elb.amazonaws.com.",
                             "Z32O12XQLNTSW2", True)
    first = dns_switch.switch_record(route53, Record(f"www.{name}", "A", alias=alias),
                                     zone_id=zone_id)
    assert first.changed and first.record.ttl is None
    stored = record_sets(route53, zone_id, f"www.{name}")[0]
    assert stored["AliasTarget"]["HostedZoneId"] == "Z32O12XQLNTSW2" and "TTL" not in stored
    same = dns_switch.Alias("DUALSTACK.cosmic-dr-1.eu-west-1.elb.amazonaws.com",
                            "Z32O12XQLNTSW2", True)
    assert not dns_switch.switch_record(route53, Record(f"www.{name}", "A", alias=same),
                                        zone_id=zone_id).changed

    # switching the alias back to plain values returns the alias as the previous record
    plain = dns_switch.switch_record(route53, Record(f"www.{name}", "A", (NEW,), 60),
                                     zone_id=zone_id)
    assert plain.previous.alias.dns_name == "dualstack.cosmic-dr-1.eu-west-1.elb.amazonaws.com"

    cname = Record(f"status.{name}", "CNAME", ("status-dr.example.net.",), 60)
    assert dns_switch.switch_record(route53, cname, zone_name=name).changed
    assert not dns_switch.switch_record(
        route53, Record(f"status.{name}", "CNAME", ("Status-DR.example.net",), 60),
        zone_name=name).changed


def test_missing_zones_and_foreign_records_name_what_to_do(route53, zone):
    zone_id, name = zone
    with pytest.raises(errors.ConfigError) as by_name:
        dns_switch.switch_record(route53, Record("app.nowhere.example.org", "A", (NEW,), 60),
                                 zone_name="nowhere.example.org")
    assert str(by_name.value) == (
        "no hosted zone named nowhere.example.org is visible to these credentials; check the "
        "zone name and the AWS account (profile), or give the zone id")
    with pytest.raises(errors.ConfigError) as by_id:
        dns_switch.switch_record(route53, Record(f"app.{name}", "A", (NEW,), 60),
                                 zone_id="ZNOSUCHZONE0000")
    assert str(by_id.value).startswith(
        "hosted zone ZNOSUCHZONE0000 is not visible to these credentials")
    assert "aws route53 list-hosted-zones" in str(by_id.value)
    with pytest.raises(errors.ConfigError, match=f"record app.example.org is not in zone {name}"):
        dns_switch.switch_record(route53, Record("app.example.org", "A", (NEW,), 60),
                                 zone_id=zone_id)
    # a public zone is not found when a private one is asked for
    with pytest.raises(errors.ConfigError, match=f"no private hosted zone named {name}"):
        dns_switch.find_zone(route53, zone_name=name, private_zone=True)
    assert dns_switch.find_zone(route53, zone_name=name, private_zone=False) == (zone_id, name)


def test_an_unreachable_endpoint_is_named():
    client = dns_switch.route53_client(endpoint_url="http://127.0.0.1:9")
    with pytest.raises(errors.SwitchError, match="cannot reach Route 53 for hosted zone Z1"):
        dns_switch.find_zone(client, zone_id="Z1")


# The module


def test_module_check_mode_switch_and_idempotent_rerun(moto_server, route53, zone, tmp_path):
    zone_id, name = zone
    arguments = {"zone_name": name, "record": f"app.{name}", "value": [NEW], "ttl": 60,
                 "endpoint_url": moto_server.endpoint_url}
    rc, check, _ = run(tmp_path, "traffic_switch_route53", arguments, check=True)
    assert rc == 0 and check["changed"] and check["change_id"] is None
    assert check["previous"] == {"name": f"app.{name}", "type": "A", "value": [OLD], "ttl": 60,
                                 "alias": None}
    assert record_sets(route53, zone_id, f"app.{name}")[0]["ResourceRecords"] == [{"Value": OLD}]

    rc, switched, output = run(tmp_path, "traffic_switch_route53", arguments)
    assert rc == 0, output
    assert switched["changed"] and switched["status"] == "INSYNC"
    assert switched["record"]["value"] == [NEW] and switched["zone_id"] == zone_id
    assert switched["summary"].startswith(f"app.{name} A -> {NEW} (was {OLD}; INSYNC, change ")

    rc, again, _ = run(tmp_path, "traffic_switch_route53", arguments)
    assert rc == 0 and not again["changed"] and again["previous"]["value"] == [NEW]

    # the returned previous record, fed back, switches back
    previous = switched["previous"]
    rc, back, _ = run(tmp_path, "traffic_switch_route53", {
        "zone_id": switched["zone_id"], "record": previous["name"], "type": previous["type"],
        "value": previous["value"], "ttl": previous["ttl"],
        "endpoint_url": moto_server.endpoint_url})
    assert rc == 0 and back["changed"] and back["record"]["value"] == [OLD]


def test_module_fails_with_the_operator_message(moto_server, tmp_path):
    rc, result, _ = run(tmp_path, "traffic_switch_route53", {
        "zone_name": "nowhere.example.org", "record": "app.nowhere.example.org",
        "value": [NEW], "endpoint_url": moto_server.endpoint_url})
    assert rc != 0
    assert result["msg"].startswith("no hosted zone named nowhere.example.org is visible")

    rc, result, _ = run(tmp_path, "traffic_switch_route53", {
        "zone_name": "example.org", "record": "app.example.org", "value": [NEW],
        "alias": {"dns_name": "lb.example.net", "hosted_zone_id": "Z1"}})
    assert rc != 0 and "mutually exclusive: value|alias" in result["msg"]


def test_module_documentation_renders(tmp_path):
    result = subprocess.run([str(BIN / "ansible-doc"), "cosmic.backup.traffic_switch_route53"],
                            capture_output=True, text=True, env=environment(tmp_path),
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "route53:ChangeResourceRecordSets" in result.stdout


# Step 8 of disaster_recovery.yml with this switch


@pytest.fixture
def health_url(tmp_path):
    """The recovered application's public health check, on loopback."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "health").write_text("ok\n")
    handler = functools.partial(QuietHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/health"
    server.shutdown()
    server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_switch_step_runs_the_route53_task_file_through_ansible_playbook(
        moto_server, route53, zone, health_url, tmp_path):
    zone_id, name = zone
    # The step includes {{ playbook_dir }}/tasks/switch_<name>.yml, as from ansible/.
    (tmp_path / "tasks").symlink_to(REPO / "ansible" / "tasks")
    playbook = tmp_path / "switch.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Step 8 with the Route 53 switch",
        "hosts": "localhost",
        "gather_facts": False,
        "vars": {"cosmic_traffic_switch": "route53", "cosmic_app_health_url": health_url,
                 "cosmic_route53_zone": name, "cosmic_route53_record": f"app.{name}",
                 "cosmic_route53_value": NEW,
                 "cosmic_route53_endpoint_url": moto_server.endpoint_url},
        "tasks": [
            {"name": "Switch traffic", "ansible.builtin.include_tasks":
             str(REPO / "ansible" / "steps" / "switch_traffic.yml")},
            {"name": "Report", "ansible.builtin.copy": {
                "dest": str(tmp_path / "switch.json"), "mode": "0644",
                "content": "{{ {'outcome': cosmic_step_outcome, "
                           "'result': cosmic_route53_switch} | to_json }}"}},
        ],
    }], sort_keys=False))

    def playbook_run():
        result = subprocess.run(
            [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
             "-e", f"ansible_python_interpreter={BIN / 'python'}", str(playbook)],
            capture_output=True, text=True, env=environment(tmp_path), timeout=300, check=False)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        return json.loads((tmp_path / "switch.json").read_text())

    report = playbook_run()
    assert report["outcome"]["detail"].startswith(
        f"route53: app.{name} A -> {NEW} (was {OLD}; INSYNC, change ")
    assert report["outcome"]["detail"].endswith(f"; {health_url} healthy")
    assert report["result"]["previous"]["value"] == [OLD]
    assert record_sets(route53, zone_id, f"app.{name}")[0]["ResourceRecords"] == [{"Value": NEW}]

    report = playbook_run()
    assert report["outcome"]["detail"] == (
        f"route53: app.{name} A already {NEW}; {health_url} healthy")
    assert report["result"]["changed"] is False
