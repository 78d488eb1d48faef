"""Moving users' traffic to the active site (issue 10 point 4): an RFC 2136 update signed with TSIG,
or a configured command; verified by asking each authoritative server (or the check)."""

from drc.traffic.dns import Answer, TrafficError
from drc.traffic.switch import SwitchResult, current, switch

__all__ = ["Answer", "SwitchResult", "TrafficError", "current", "switch"]
