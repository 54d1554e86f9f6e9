#!/usr/bin/python
# Copyright: cosmic.backup engineers
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: traffic_switch_route53
short_description: Switch traffic to a recovered system by changing one Route 53 record
version_added: 0.1.0
description:
  - The Route 53 traffic switch of C(ansible/disaster_recovery.yml) (step 8,
    C(cosmic_traffic_switch=route53)). Points one record (A, AAAA or CNAME, with
    values and a TTL or with an alias target) at the recovered system with a single
    C(UPSERT).
  - Idempotent. The record is read first and nothing is sent when it already says
    what is asked (order of values and case of names do not matter).
  - Returns the record as it was in RV(previous), in the shape of this module's options,
    so an operator can switch back with the same module.
  - Waits until Route 53 reports the change C(INSYNC) (every Route 53 name server
    answers with the new value). Resolvers that cached the old answer keep it for up to
    the old TTL, so keep the TTL of a record you may switch low.
  - Records with a routing policy (weighted, failover, latency; they have a set
    identifier) are refused; Route 53 failover routing switches those by itself.
author: cosmic.backup engineers (@cosmic-backup)
attributes:
  check_mode:
    description: Can run in check_mode and predict changed status without modifying target.
    support: full
    details: Reads the zone and the record and reports what would change; sends no change.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode).
    support: full
options:
  zone_id:
    description: The hosted zone's id (C(Z0123456789ABC) or C(/hostedzone/Z0123456789ABC)).
    type: str
  zone_name:
    description:
      - The hosted zone's name (C(example.com)), looked up with C(ListHostedZonesByName).
      - When a public and a private zone have that name, O(private_zone) chooses.
    type: str
  private_zone:
    description: With O(zone_name), only a private (V(true)) or only a public (V(false)) zone.
    type: bool
  record:
    description: The record's full name, such as C(app.example.com).
    type: str
    required: true
  type:
    description: The record's type.
    type: str
    choices: [A, AAAA, CNAME]
    default: A
  value:
    description:
      - The record's values (addresses for A and AAAA; one name for CNAME).
      - Mutually exclusive with O(alias).
    type: list
    elements: str
  ttl:
    description: Seconds resolvers may cache the answer (not used with O(alias)).
    type: int
    default: 60
  alias:
    description:
      - An alias target instead of values (a load balancer, a CloudFront distribution,
        another record of the zone). Mutually exclusive with O(value).
    type: dict
    suboptions:
      dns_name:
        description: The target's DNS name, such as C(dualstack.lb-1.eu-west-1.elb.amazonaws.com).
        type: str
        required: true
      hosted_zone_id:
        description:
          - The target's hosted zone id (the load balancer's canonical zone, or this zone's id).
        type: str
        required: true
      evaluate_target_health:
        description: Whether Route 53 checks the target's health before answering with it.
        type: bool
        default: false
  wait:
    description: Wait until the change is C(INSYNC).
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for C(INSYNC). On timeout the module fails, but the change was
        accepted and Route 53 still applies it; the error names the change and the previous value.
    type: int
    default: 300
  comment:
    description: The change batch's comment, seen in CloudTrail.
    type: str
    default: cosmic.backup traffic switch
  endpoint_url:
    description: Route 53 endpoint, for a private (VPC) endpoint or a local test server.
    type: str
  profile:
    description:
      - AWS profile whose credentials change the zone (such as the restore role's).
      - Without it the usual chain applies (environment, C(AWS_PROFILE), instance role).
    type: str
requirements:
  - boto3
notes:
  - "The credentials need C(route53:ChangeResourceRecordSets), C(route53:ListResourceRecordSets) and
    C(route53:GetHostedZone) on the zone, C(route53:GetChange), and C(route53:ListHostedZonesByName)
    with O(zone_name)."
seealso:
  - name: Route 53 ChangeResourceRecordSets
    description: The API call this module makes.
    link: https://docs.aws.amazon.com/Route53/latest/APIReference/API_ChangeResourceRecordSets.html
"""

EXAMPLES = r"""
- name: Point app.example.com at the recovered application server
  cosmic.backup.traffic_switch_route53:
    zone_name: example.com
    record: app.example.com
    value: [198.51.100.20]
    ttl: 60
  register: switched

- name: Remember how to switch back
  ansible.builtin.debug:
    msg: "was {{ switched.previous }}"

- name: Point www.example.com at the standby load balancer (an alias)
  cosmic.backup.traffic_switch_route53:
    zone_id: Z0123456789ABCDEFGHIJ
    record: www.example.com
    alias:
      dns_name: dualstack.cosmic-dr-123456.eu-west-1.elb.amazonaws.com
      hosted_zone_id: Z32O12XQLNTSW2
      evaluate_target_health: true

- name: Switch back to what the record said before
  cosmic.backup.traffic_switch_route53:
    zone_id: "{{ switched.zone_id }}"
    record: "{{ switched.previous.name }}"
    type: "{{ switched.previous.type }}"
    value: "{{ switched.previous.value or omit }}"
    ttl: "{{ switched.previous.ttl or omit }}"
    alias: "{{ switched.previous.alias or omit }}"
  when: switched.previous
"""

RETURN = r"""
zone_id:
  description: The hosted zone's id.
  returned: always
  type: str
  sample: Z0123456789ABCDEFGHIJ
zone_name:
  description: The hosted zone's name, without the final dot.
  returned: always
  type: str
  sample: example.com
record:
  description: The record as it is now (or would be in check mode), in the shape of the options.
  returned: always
  type: dict
  contains:
    name:
      description: Full name, lower case, without the final dot.
      type: str
      sample: app.example.com
    type:
      description: Record type.
      type: str
      sample: A
    value:
      description: Values; empty for an alias.
      type: list
      elements: str
      sample: [198.51.100.20]
    ttl:
      description: TTL in seconds; null for an alias.
      type: int
      sample: 60
    alias:
      description: Alias target (dns_name, hosted_zone_id, evaluate_target_health), or null.
      type: dict
previous:
  description:
    - The record before the switch, in the same shape as RV(record); null when there was none.
  returned: always
  type: dict
  sample: {name: app.example.com, type: A, value: [198.51.100.10], ttl: 60, alias: null}
change_id:
  description: The Route 53 change id; null when nothing was sent (unchanged, or check mode).
  returned: always
  type: str
  sample: C2682N5HXP0BZ4
status:
  description:
    - The change's status (C(INSYNC), or C(PENDING) with O(wait=false)); null when nothing was sent.
  returned: always
  type: str
  sample: INSYNC
waited_seconds:
  description: Seconds spent waiting for C(INSYNC).
  returned: always
  type: float
  sample: 31.2
summary:
  description: One line for people and the DR summary, with the previous value.
  returned: always
  type: str
  sample: "app.example.com A -> 198.51.100.20 (was 198.51.100.10; INSYNC, change C2682N5HXP0BZ4)"
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.cosmic.backup.plugins.module_utils import dns_switch
from ansible_collections.cosmic.backup.plugins.module_utils.errors import BackupError


def argument_spec():
    return {
        "zone_id": {"type": "str"},
        "zone_name": {"type": "str"},
        "private_zone": {"type": "bool"},
        "record": {"type": "str", "required": True},
        "type": {"type": "str", "choices": list(dns_switch.RECORD_TYPES), "default": "A"},
        "value": {"type": "list", "elements": "str"},
        "ttl": {"type": "int", "default": 60},
        "alias": {
            "type": "dict",
            "options": {
                "dns_name": {"type": "str", "required": True},
                "hosted_zone_id": {"type": "str", "required": True},
                "evaluate_target_health": {"type": "bool", "default": False},
            },
        },
        "wait": {"type": "bool", "default": True},
        "wait_timeout": {"type": "int", "default": 300},
        "comment": {"type": "str", "default": "cosmic.backup traffic switch"},
        "endpoint_url": {"type": "str"},
        "profile": {"type": "str"},
    }


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_one_of=[["zone_id", "zone_name"], ["value", "alias"]],
        mutually_exclusive=[["zone_id", "zone_name"], ["value", "alias"]],
        supports_check_mode=True,
    )
    params = module.params
    alias = params["alias"]
    record = dns_switch.Record(
        name=params["record"], type=params["type"], value=tuple(params["value"] or ()),
        ttl=params["ttl"],
        alias=dns_switch.Alias(**alias) if alias else None,
    )
    try:
        client = dns_switch.route53_client(endpoint_url=params["endpoint_url"],
                                           profile=params["profile"])
        result = dns_switch.switch_record(
            client, record, zone_id=params["zone_id"], zone_name=params["zone_name"],
            private_zone=params["private_zone"], check=module.check_mode, wait=params["wait"],
            timeout=params["wait_timeout"], comment=params["comment"])
    except dns_switch.SwitchTimeout as error:
        # The change was accepted: say so, with the record to switch back to.
        module.fail_json(msg=str(error), summary=error.result.summary(),
                         **error.result.as_dict())
    except BackupError as error:
        module.fail_json(msg=str(error))
    output = result.as_dict()
    output["summary"] = result.summary()
    if module._diff:
        previous = output["previous"]
        output["diff"] = {"before": previous or {}, "after": output["record"],
                          "before_header": f"{record.name} {record.type}",
                          "after_header": f"{record.name} {record.type}"}
    module.exit_json(**output)


if __name__ == "__main__":
    main()
