"""Typed settings of the firewall role (nftables, default deny inbound)."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork


Port = Annotated[int, Field(ge=1, le=65535)]


class AllowRule(BaseModel):
    """One extra inbound allowance, e.g. a monitoring agent for LKPP (SOP IN-3)."""

    model_config = ConfigDict(extra="forbid")

    port: Port
    proto: Literal["tcp", "udp"] = "tcp"
    sources: list[IPvAnyNetwork]
    comment: str = ""


class FirewallSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # If a new ruleset (or a new sshd_config, roles/ssh_hardening) stops the admin from opening a new
    # SSH session, the old one is restored by a timer on the host after this many seconds (never
    # lock the operator out; roles/admin_confirm.py).
    rollback_seconds: int = Field(60, ge=10, le=900)
    # Web ports served publicly on the hosts of the active site.
    web_ports: list[Port] = Field(default_factory=lambda: [80, 443])
    # PostgreSQL (and streaming replication) only between primary and DRC hosts.
    postgresql_port: int = Field(5432, ge=1, le=65535)
    # Dropped packets are logged (rate-limited) so intrusion attempts are visible (SOP IN-4).
    log_drops: bool = True
    log_rate_per_minute: int = Field(10, ge=1)
    extra_allow: list[AllowRule] = Field(default_factory=list)
