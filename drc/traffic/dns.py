"""RFC 2136 dynamic updates signed with TSIG, and asking each authoritative server (dnspython).

Pure parts (the key file, the update message with its prerequisite) are unit-tested; sending and
asking are tested against the lab's Knot DNS (tests/lab/test_traffic.py).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update

from drc.site.traffic import DnsUpdateSettings

QUERY_TIMEOUT_S = 2.0


class TrafficError(RuntimeError):
    """The traffic could not be moved or read; the message says why and what to do."""


def read_key(settings: DnsUpdateSettings) -> dns.tsig.Key:
    """The TSIG key from its file (0600, owned by this user): BIND/Knot key clause, Knot's YAML
    `secret:` line, or the base64 secret alone."""
    path = settings.key_file
    where = f"key file {path} (traffic.dns_update.key_file)"
    try:
        st = path.stat()
        text = path.read_text()
    except OSError as exc:
        raise TrafficError(f"{where}: cannot read it ({exc.strerror}). Fix: put the TSIG key the DNS admins gave you there (0600).") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise TrafficError(f"{where} is readable by others (mode {stat.S_IMODE(st.st_mode):o}). Fix: chmod 600 {path}.")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise TrafficError(f"{where} belongs to another user. Fix: chown it to the account that runs siaga.")
    secret = parse_key_text(text)
    if secret is None:
        raise TrafficError(f"{where}: no secret found. Fix: the file holds `key \"{settings.key_name}\" {{ algorithm "
                           f"{settings.key_algorithm}; secret \"...\"; }};` or the base64 secret alone.")
    algorithm = re.search(r"algorithm\s*:?\s*\"?([A-Za-z0-9-]+)", text)
    if algorithm and algorithm.group(1).lower() != settings.key_algorithm:
        raise TrafficError(f"{where} is an {algorithm.group(1)} key, the site file says {settings.key_algorithm}. "
                           f"Fix: set traffic.dns_update.key_algorithm: {algorithm.group(1).lower()}.")
    return dns.tsig.Key(settings.key_name, secret, settings.key_algorithm)


def parse_key_text(text: str) -> bytes | None:
    found = re.search(r"secret\s*:?\s*\"?([A-Za-z0-9+/=]{16,})\"?", text)
    word = found.group(1) if found else text.strip()
    if not re.fullmatch(r"[A-Za-z0-9+/=]{16,}", word):
        return None
    try:
        return base64.b64decode(word, validate=True)
    except binascii.Error:
        return None


def build_update(zone: str, name: str, ttl: int, new: str, old: str | None, key: dns.tsig.Key | None) -> dns.update.UpdateMessage:
    """The update that points `name` at `new` only if it still points at `old` (RFC 2136 3.2.5:
    the RRset exists with exactly this value); two runbooks can then never flip it back and forth."""
    upd = dns.update.UpdateMessage(zone, keyring=None if key is None else {key.name: key},
                                   keyname=None if key is None else key.name, keyalgorithm=key.algorithm if key else None)
    rel = dns.name.from_text(name).relativize(dns.name.from_text(zone))
    if old is not None:
        upd.present(rel, dns.rdatatype.A, old)
    upd.replace(rel, ttl, dns.rdatatype.A, new)
    return upd


def send_update(server: str, port: int, upd: dns.update.UpdateMessage, timeout: float = 5.0) -> int:
    """Send over TCP (updates must not be lost); the answer's rcode (a bad signature raises)."""
    try:
        return dns.query.tcp(upd, server, port=port, timeout=timeout).rcode()
    except dns.tsig.PeerError as exc:  # the server refused the signature: BADKEY, BADSIG, BADTIME
        raise TrafficError(f"DNS server {server} refused the update's TSIG signature ({type(exc).__name__}). Fix: check "
                           "traffic.dns_update.key_name/key_file against the key the DNS admins configured.") from None
    except (OSError, dns.exception.DNSException) as exc:
        raise TrafficError(f"DNS server {server}:{port} did not take the update: {exc or type(exc).__name__}") from None


@dataclass(frozen=True)
class Answer:
    """What one authoritative server answers for the name (addresses sorted; error when none)."""

    server: str
    addresses: tuple[str, ...] = ()
    ttl: int | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return {"server": self.server, "addresses": list(self.addresses), "ttl": self.ttl, "error": self.error}


def ask(server: str, port: int, name: str, timeout: float = QUERY_TIMEOUT_S) -> Answer:
    """Ask one server directly (no recursion) for the name's A records; it must answer with
    authority, since a cache or forwarder could hide what the zone holds."""
    q = dns.message.make_query(name, dns.rdatatype.A)
    q.flags &= ~dns.flags.RD
    try:
        r = dns.query.udp(q, server, port=port, timeout=timeout)
        if r.flags & dns.flags.TC:
            r = dns.query.tcp(q, server, port=port, timeout=timeout)
    except (OSError, dns.exception.DNSException) as exc:
        return Answer(server, error=f"no answer: {exc or type(exc).__name__}")
    if r.rcode() != dns.rcode.NOERROR:
        return Answer(server, error=dns.rcode.to_text(r.rcode()))
    if not r.flags & dns.flags.AA:
        return Answer(server, error="answer without authority (not an authoritative server for the name)")
    for rrset in r.answer:
        if rrset.rdtype == dns.rdatatype.A:
            return Answer(server, tuple(sorted(rd.address for rd in rrset)), rrset.ttl)
    return Answer(server, error="no A record")

