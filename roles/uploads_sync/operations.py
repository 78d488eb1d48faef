"""Operations the uploads_sync role needs and pyinfra lacks. Each reads facts, yields commands."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation

from .facts import GroupMembers


@operation()
def group_member(user: str, group: str):
    """
    ``user`` is a supplementary member of ``group`` (the group must exist), other memberships kept.

    + user: the account
    + group: the group it joins
    """
    members = host.get_fact(GroupMembers, group=group) or []
    if user in members:
        host.noop(f"{user} is in {group}")
        return
    yield StringCommand("usermod", "-a", "-G", QuoteString(group), QuoteString(user))
