"""Traffic switch by DNS: point a Route 53 record at the recovered system.

One UPSERT of one record set (A, AAAA or CNAME; plain values with a TTL, or an
alias), made only when the record does not already say so. The record as it
was is returned in the same shape as the request, so an operator can switch
back with the same call. Route 53 answers with the new value once the change
is INSYNC; resolvers that cached the old answer keep it for up to its TTL.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import BackupError, ConfigError, SwitchError

try:
    import boto3
    import botocore.config
    import botocore.exceptions
except ImportError:  # reported when the switch is used
    boto3 = None

RECORD_TYPES = ("A", "AAAA", "CNAME")
ACCESS_DENIED_CODES = {
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation",
    "InvalidClientTokenId", "UnrecognizedClientException", "ExpiredToken",
    "SignatureDoesNotMatch",
}
ZONE_MISSING_CODES = {"NoSuchHostedZone", "InvalidInput"}
# What the switch's credentials need (docs/traffic-switch.md, "Permissions").
IAM_ACTIONS = ("route53:ChangeResourceRecordSets", "route53:GetChange",
               "route53:ListResourceRecordSets", "route53:GetHostedZone",
               "route53:ListHostedZonesByName")


@dataclass(frozen=True)
class Alias:
    """An alias target: a load balancer, a CloudFront distribution, another record."""

    dns_name: str
    hosted_zone_id: str
    evaluate_target_health: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"dns_name": self.dns_name, "hosted_zone_id": self.hosted_zone_id,
                "evaluate_target_health": self.evaluate_target_health}


@dataclass(frozen=True)
class Record:
    """One record set as the operator writes it: values with a TTL, or an alias."""

    name: str
    type: str = "A"
    value: tuple[str, ...] = ()
    ttl: int | None = None
    alias: Alias | None = None

    def check(self) -> None:
        """Raise ConfigError when Route 53 would refuse this record (before any call)."""
        if self.type not in RECORD_TYPES:
            raise ConfigError(f"record type {self.type!r} cannot be switched; "
                              f"use one of {', '.join(RECORD_TYPES)}")
        if bool(self.value) == bool(self.alias):
            raise ConfigError(f"record {self.name}: give either values or an alias target")
        if self.alias is None:
            if self.ttl is None or self.ttl < 0:
                raise ConfigError(f"record {self.name}: values need a TTL in seconds (such as 60)")
            if self.type == "CNAME" and len(self.value) != 1:
                raise ConfigError(f"record {self.name}: a CNAME has exactly one value, "
                                  f"not {len(self.value)}")
            version = {"A": 4, "AAAA": 6}.get(self.type)
            for value in self.value if version else ():
                try:
                    address = ipaddress.ip_address(value.strip())
                except ValueError:
                    address = None
                if address is None or address.version != version:
                    raise ConfigError(f"record {self.name}: {value!r} is not an IPv{version} "
                                      f"address, which a {self.type} record holds")

    def as_dict(self) -> dict[str, Any]:
        """The module's shape: name, type, value, ttl, alias (fed back to switch back)."""
        return {"name": self.name, "type": self.type, "value": list(self.value),
                "ttl": self.ttl, "alias": self.alias.as_dict() if self.alias else None}

    def describe(self) -> str:
        if self.alias:
            return f"alias {self.alias.dns_name}"
        return ", ".join(self.value)

    def resource_record_set(self) -> dict[str, Any]:
        result: dict[str, Any] = {"Name": self.name, "Type": self.type}
        if self.alias:
            result["AliasTarget"] = {"HostedZoneId": self.alias.hosted_zone_id,
                                     "DNSName": self.alias.dns_name,
                                     "EvaluateTargetHealth": self.alias.evaluate_target_health}
        else:
            result["TTL"] = self.ttl
            result["ResourceRecords"] = [{"Value": value} for value in self.value]
        return result


@dataclass
class SwitchResult:
    """What was done: the zone, the record now, the record before, the change."""

    changed: bool
    zone_id: str
    zone_name: str
    record: Record
    previous: Record | None
    change_id: str | None = None
    status: str | None = None  # INSYNC, PENDING (wait=False), None when nothing was sent
    waited_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"changed": self.changed, "zone_id": self.zone_id, "zone_name": self.zone_name,
                "record": self.record.as_dict(),
                "previous": self.previous.as_dict() if self.previous else None,
                "change_id": self.change_id, "status": self.status,
                "waited_seconds": round(self.waited_seconds, 1)}

    def summary(self) -> str:
        """One line for the DR summary, with what to switch back to."""
        was = self.previous.describe() if self.previous else "no record"
        if not self.changed:
            return f"{self.record.name} {self.record.type} already {self.record.describe()}"
        state = f"; {self.status}" if self.status else ""
        change = f", change {self.change_id}" if self.change_id else ""
        return (f"{self.record.name} {self.record.type} -> {self.record.describe()} "
                f"(was {was}{state}{change})")


class SwitchTimeout(SwitchError):
    """The change was accepted but is not INSYNC yet; Route 53 still applies it."""

    def __init__(self, message: str, result: SwitchResult):
        super().__init__(message)
        self.result = result


def normalize_name(name: str) -> str:
    """Route 53's form of a DNS name: lower case, no final dot, ``*`` not ``\\052``."""
    return name.strip().rstrip(".").lower().replace("\\052", "*")


def _fqdn(name: str) -> str:
    return normalize_name(name) + "."


def _clean_zone_id(zone_id: str) -> str:
    return zone_id.strip().rsplit("/", 1)[-1]


def route53_client(*, endpoint_url: str | None = None, profile: str | None = None) -> Any:
    """A Route 53 client; endpoint_url for a private endpoint or a local test server."""
    if boto3 is None:
        raise SwitchError("the Route 53 switch needs boto3: pip install boto3")
    try:
        session = boto3.session.Session(profile_name=profile)
    except botocore.exceptions.ProfileNotFound:
        raise SwitchError(f"AWS profile {profile!r} is not configured on this host "
                          "(~/.aws/config); set up the profile or leave it out") from None
    # Route 53 throttles at five requests per second per account; standard mode
    # also retries PriorRequestNotComplete.
    config = botocore.config.Config(retries={"max_attempts": 6, "mode": "standard"},
                                    connect_timeout=5, read_timeout=30)
    return session.client("route53", endpoint_url=endpoint_url, config=config)


def _error(error: Exception, where: str) -> BackupError:
    """The provider's error as the operator's: what failed, where, what to do."""
    if boto3 is not None and isinstance(error, botocore.exceptions.ClientError):
        details = error.response.get("Error", {})
        code = details.get("Code", "error")
        message = details.get("Message", "")
        if code in ACCESS_DENIED_CODES:
            return SwitchError(
                f"access denied by Route 53 ({code}) for route53:{error.operation_name} "
                f"on {where}: {message}; use credentials that may change the zone (they "
                f"need {', '.join(IAM_ACTIONS)}; docs/traffic-switch.md) or check the "
                "profile and that the credentials have not expired")
        if code in ZONE_MISSING_CODES and "hosted zone" in message.lower():
            return ConfigError(f"{where} is not visible to these credentials ({message}); "
                               "check the zone id (aws route53 list-hosted-zones) and the AWS "
                               "account (profile), or give the zone by name")
        return SwitchError(f"Route 53 refused {error.operation_name} on {where} "
                           f"({code}): {message}")
    if boto3 is not None and isinstance(error, (botocore.exceptions.NoCredentialsError,
                                                botocore.exceptions.PartialCredentialsError)):
        return SwitchError("no AWS credentials for Route 53: set a profile (AWS_PROFILE), "
                           "environment credentials or an instance role")
    if boto3 is not None and isinstance(error, botocore.exceptions.EndpointConnectionError):
        return SwitchError(f"cannot reach Route 53 for {where}: {error}; "
                           "check the endpoint URL and the network")
    return SwitchError(f"Route 53 failed on {where}: {error}")


def find_zone(client: Any, *, zone_id: str | None = None, zone_name: str | None = None,
              private_zone: bool | None = None) -> tuple[str, str]:
    """The hosted zone's (id, name without final dot), by id or by exact name."""
    if zone_id:
        zone_id = _clean_zone_id(zone_id)
        try:
            zone = client.get_hosted_zone(Id=zone_id)["HostedZone"]
        except Exception as error:  # noqa: BLE001 - every cause becomes an operator error
            raise _error(error, f"hosted zone {zone_id}") from None
        return _clean_zone_id(zone["Id"]), normalize_name(zone["Name"])
    if not zone_name:
        raise ConfigError("name the hosted zone: a zone id or a zone name")
    wanted = normalize_name(zone_name)
    try:
        # Zones come sorted by name from DNSName on; 100 is the most per page, and
        # more than that many zones with one name (public and private) never happens.
        zones = client.list_hosted_zones_by_name(DNSName=wanted + ".",
                                                 MaxItems="100")["HostedZones"]
    except Exception as error:  # noqa: BLE001
        raise _error(error, f"hosted zone {wanted}") from None
    matches = [zone for zone in zones if normalize_name(zone["Name"]) == wanted]
    if private_zone is not None:
        matches = [zone for zone in matches
                   if zone.get("Config", {}).get("PrivateZone", False) == private_zone]
    if not matches:
        kind = {True: "private ", False: "public ", None: ""}[private_zone]
        raise ConfigError(f"no {kind}hosted zone named {wanted} is visible to these "
                          "credentials; check the zone name and the AWS account (profile), "
                          "or give the zone id")
    if len(matches) > 1:
        ids = ", ".join(_clean_zone_id(zone["Id"]) for zone in matches)
        raise ConfigError(f"several hosted zones are named {wanted} ({ids}); give the zone id, "
                          "or say whether the private or the public zone is meant")
    return _clean_zone_id(matches[0]["Id"]), wanted


def current_record(client: Any, zone_id: str, name: str, record_type: str) -> Record | None:
    """The record set as it is now, or None when the zone has none by that name and type."""
    wanted = normalize_name(name)
    try:
        page = client.list_resource_record_sets(HostedZoneId=zone_id, StartRecordName=_fqdn(name),
                                                StartRecordType=record_type, MaxItems="10")
    except Exception as error:  # noqa: BLE001
        raise _error(error, f"hosted zone {zone_id}") from None
    found = [item for item in page["ResourceRecordSets"]
             if normalize_name(item["Name"]) == wanted and item["Type"] == record_type]
    if not found:
        return None
    item = found[0]
    if "SetIdentifier" in item:
        raise ConfigError(
            f"{wanted} {record_type} in zone {zone_id} uses a routing policy (set identifier "
            f"{item['SetIdentifier']!r}); this switch changes simple records only: let Route 53 "
            "failover routing switch it, or switch it in the console")
    if "AliasTarget" in item:
        target = item["AliasTarget"]
        return Record(wanted, record_type, alias=Alias(
            normalize_name(target["DNSName"]), _clean_zone_id(target["HostedZoneId"]),
            bool(target.get("EvaluateTargetHealth", False))))
    return Record(wanted, record_type, ttl=item.get("TTL"),
                  value=tuple(value["Value"] for value in item.get("ResourceRecords", [])))


def _canonical(record: Record) -> tuple[Any, ...]:
    """What Route 53 compares: order of values and case of names do not matter."""
    if record.alias:
        return ("alias", normalize_name(record.alias.dns_name),
                _clean_zone_id(record.alias.hosted_zone_id),
                record.alias.evaluate_target_health)
    return ("values", record.ttl, tuple(sorted(_canonical_value(record.type, value)
                                               for value in record.value)))


def _canonical_value(record_type: str, value: str) -> str:
    if record_type == "CNAME":
        return normalize_name(value)
    try:  # 2001:DB8:0::1 and 2001:db8::1 are one address
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return value.strip().lower()


def wait_insync(client: Any, change_id: str, *, timeout: float, interval: float = 5.0,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> tuple[str, float]:
    """Poll the change until INSYNC or timeout; returns (last status, seconds waited)."""
    started = clock()
    while True:
        try:
            status = client.get_change(Id=change_id)["ChangeInfo"]["Status"]
        except Exception as error:  # noqa: BLE001
            raise _error(error, f"change {change_id}") from None
        waited = clock() - started
        if status == "INSYNC" or waited >= timeout:
            return status, waited
        sleep(min(interval, max(timeout - waited, 0.1)))


def switch_record(client: Any, record: Record, *, zone_id: str | None = None,
                  zone_name: str | None = None, private_zone: bool | None = None,
                  check: bool = False, wait: bool = True, timeout: float = 300,
                  interval: float = 5.0, comment: str = "cosmic.backup traffic switch",
                  clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> SwitchResult:
    """UPSERT ``record`` unless it already says so; with ``check``, only report."""
    record.check()
    zone_id, zone = find_zone(client, zone_id=zone_id, zone_name=zone_name,
                              private_zone=private_zone)
    name = normalize_name(record.name)
    if name != zone and not name.endswith("." + zone):
        raise ConfigError(f"record {name} is not in zone {zone} ({zone_id}); "
                          f"give its full name, such as app.{zone}")
    record = Record(name, record.type, tuple(record.value),
                    None if record.alias else record.ttl, record.alias)
    previous = current_record(client, zone_id, name, record.type)
    result = SwitchResult(changed=False, zone_id=zone_id, zone_name=zone, record=record,
                          previous=previous)
    if previous is not None and _canonical(previous) == _canonical(record):
        return result
    result.changed = True
    if check:
        return result
    try:
        answer = client.change_resource_record_sets(
            HostedZoneId=zone_id,
            ChangeBatch={"Comment": comment, "Changes": [
                {"Action": "UPSERT", "ResourceRecordSet": record.resource_record_set()}]},
        )
    except Exception as error:  # noqa: BLE001
        raise _error(error, f"{name} {record.type} in zone {zone} ({zone_id})") from None
    result.change_id = _clean_zone_id(answer["ChangeInfo"]["Id"])
    result.status = answer["ChangeInfo"]["Status"]
    if wait and result.status != "INSYNC":
        result.status, result.waited_seconds = wait_insync(
            client, result.change_id, timeout=timeout, interval=interval, clock=clock,
            sleep=sleep)
        if result.status != "INSYNC":
            was = previous.describe() if previous else "no record"
            raise SwitchTimeout(
                f"{name} {record.type} -> {record.describe()}: change {result.change_id} is "
                f"still {result.status} after {result.waited_seconds:.0f} s; Route 53 applies "
                f"it anyway (aws route53 get-change --id {result.change_id}); the previous "
                f"value was {was}", result)
    return result
