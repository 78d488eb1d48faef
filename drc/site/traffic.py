"""The site file's `traffic:` settings: how users' traffic is moved to the active site (issue 10
point 4; SOP EM-2 step 6). Read by drc.traffic (the switch) and drc.probe (what it resolves).

    traffic:
      public_name: lpse.example.go.id      # the name users type; the TLS certificate is for it
      ttl: 60                              # the record's TTL (s): how long resolvers keep the old address
      addresses: {primary: 203.0.113.10, drc: 198.51.100.10}   # each site's public address
      method: dns-update                   # or: command
      dns_update:                          # RFC 2136 update signed with TSIG, to the DNS that serves the name
        servers: [192.0.2.53, 192.0.2.54]  # every authoritative server: each is asked after the update
        zone: example.go.id
        key_name: lpse-update
        key_file: ~/.local/state/siaga/lpse/dns-update.key   # 0600, never in the repository
      command:                             # method: command (an edge NAT/proxy, a ticket to the DNS admins)
        run: [/usr/local/bin/move-lpse, "{address}"]   # unset: siaga waits for someone to do it
        check: [dig, +short, "@192.0.2.53", lpse.example.go.id]   # prints where traffic goes now

No file is read here (drc.site touches no host and no secret): the key file is read by drc.traffic.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    field_validator,
    model_validator,
)

# A DNS name in presentation form, without the trailing dot (RFC 1035 labels, LDH).
DNS_NAME_RE = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")
PLACEHOLDERS = ("name", "address", "old_address", "site", "old_site")


class TrafficError(ValueError):
    """A wrong traffic setting: the key (below `traffic`), the problem and the fix (parse_site shows them)."""

    def __init__(self, key: str, problem: str, fix: str):
        super().__init__(problem)
        self.key, self.problem, self.fix = f"traffic.{key}" if key else "traffic", problem, fix


def _dns_name(value: str, key: str) -> str:
    value = value.rstrip(".").lower()
    if not DNS_NAME_RE.match(value):
        raise TrafficError(key, f"{value!r} is not a DNS name", "write a fully qualified name without a scheme or port, e.g. lpse.example.go.id")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DnsUpdateSettings(Strict):
    """RFC 2136 dynamic update, signed with a TSIG key the DNS server's admins gave the LPSE."""

    # Every authoritative server of the zone: after the update each is asked directly until all
    # answer the new address. The first one gets the update unless update_server is set.
    servers: list[IPvAnyAddress] = Field(min_length=1)
    update_server: IPvAnyAddress | None = None
    port: int = Field(53, ge=1, le=65535)
    zone: str
    key_name: str
    # On the admin workstation, 0600: the BIND/Knot key clause (`key "name" { algorithm ...; secret "..."; };`,
    # Knot's `secret: ...`) or the base64 secret alone.
    key_file: Path
    key_algorithm: Literal["hmac-sha256", "hmac-sha512"] = "hmac-sha256"

    @field_validator("zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _dns_name(value, "dns_update.zone")

    @field_validator("key_name")
    @classmethod
    def _key_name(cls, value: str) -> str:
        if not DNS_NAME_RE.match(value.rstrip(".") + ".x") and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", value):
            raise TrafficError("dns_update.key_name", f"{value!r} is not a TSIG key name", "use the key's name as the DNS admins gave it, e.g. lpse-update")
        return value

    @field_validator("key_file")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def primary(self) -> str:
        return str(self.update_server or self.servers[0])


class CommandSettings(Strict):
    """Another way to move traffic: a command siaga runs (argv, no shell; placeholders {name},
    {address}, {old_address}, {site}, {old_site}), or nothing to run and siaga waits for someone
    (the instructions say whom) until `check` prints the new address."""

    run: list[str] | None = Field(None, min_length=1)
    instructions: str = ""
    # Prints the address traffic for the public name goes to now (one per line, e.g. dig +short).
    check: list[str] = Field(min_length=1)
    timeout_seconds: float = Field(60, gt=0, le=3600)

    @model_validator(mode="after")
    def _placeholders(self) -> CommandSettings:
        for key, argv in (("run", self.run or []), ("check", self.check)):
            for word in argv:
                for ph in re.findall(r"\{([^{}]*)\}", word):
                    if ph not in PLACEHOLDERS:
                        raise TrafficError(f"command.{key}", f"unknown placeholder {{{ph}}} in {word!r}",
                                           f"use one of {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
        if self.run is None and not self.instructions:
            raise TrafficError("command.instructions", "no command to run and no instructions for whoever moves the traffic",
                               "set command.run, or command.instructions saying whom to ask (e.g. the city's DNS ticket desk)")
        return self


class TrafficSettings(Strict):
    public_name: str
    ttl: int = Field(60, ge=1, le=86400)
    # The public address users reach at each site (what the name points to when that site serves).
    addresses: dict[str, IPvAnyAddress]
    method: Literal["dns-update", "command"]
    dns_update: DnsUpdateSettings | None = None
    command: CommandSettings | None = None
    # How long a switch waits for every server (or the check) to show the new address.
    verify_deadline_seconds: float = Field(30, gt=0, le=3600)
    # CA file the probe verifies the public certificate with (unset: the system's trust store).
    ca_file: Path | None = None

    @field_validator("public_name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _dns_name(value, "public_name")

    @field_validator("ca_file")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value else value

    @model_validator(mode="after")
    def _method(self) -> TrafficSettings:
        chosen = {"dns-update": "dns_update", "command": "command"}[self.method]
        other = "command" if chosen == "dns_update" else "dns_update"
        if getattr(self, chosen) is None:
            raise TrafficError(chosen, f"method {self.method} without its settings", f"add traffic.{chosen} (see README: traffic switch)")
        if getattr(self, other) is not None:
            raise TrafficError(other, f"traffic.{other} given but method is {self.method}",
                               f"remove traffic.{other}, or set method: {'command' if other == 'command' else 'dns-update'}")
        if self.dns_update:
            zone = self.dns_update.zone
            if self.public_name != zone and not self.public_name.endswith("." + zone):
                raise TrafficError("public_name", f"{self.public_name} is not inside zone {zone}",
                                   "give the zone that holds the public name (traffic.dns_update.zone)")
        return self


def check_against_sites(t: TrafficSettings, site_roles: list[str]) -> None:
    """Each site has its own public address (called by the Site model)."""
    for role in t.addresses:
        if role not in site_roles:
            raise TrafficError(f"addresses.{role}", f"'{role}' is not a site", f"use the sites' names: {', '.join(site_roles)}")
    for role in site_roles:
        if role not in t.addresses:
            raise TrafficError("addresses", f"no public address for site '{role}'", f"add traffic.addresses.{role}: the address users reach there")
    if len({str(a) for a in t.addresses.values()}) != len(t.addresses):
        raise TrafficError("addresses", "two sites have the same public address",
                           "give each site the address its own link answers on (a switch could not tell them apart)")
