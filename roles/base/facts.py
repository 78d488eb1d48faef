"""Facts the base role needs and pyinfra lacks."""

from __future__ import annotations

from pyinfra.api import FactBase, QuoteString, StringCommand


class Account(FactBase):
    """A local account's lock state, expiry and groups, or None if there is no such user.

    .. code:: python

        {"locked": True, "expire_day": 1, "groups": ["budi", "lpse-admin"]}

    ``expire_day`` is the shadow expiry field (days since 1970-01-01) or None when unset.
    """

    def command(self, user: str) -> StringCommand:
        return StringCommand(
            "getent shadow", QuoteString(user), "&& id -nG", QuoteString(user), "|| true",
        )

    def process(self, output: list[str]):
        if len(output) < 2:
            return None
        fields = output[0].split(":")
        return {
            "locked": fields[1].startswith("!"),
            "expire_day": int(fields[7]) if len(fields) > 7 and fields[7] else None,
            "groups": output[1].split(),
        }


class ContainerType(FactBase[str]):
    """The container technology the host runs in (e.g. ``systemd-nspawn``), or ``none``."""

    def command(self) -> str:
        return "systemd-detect-virt --container || true"

    def process(self, output: list[str]) -> str:
        return output[0].strip() if output else "none"


class Passwd(FactBase):
    """A local account's passwd entry, or None if there is no such user. One ``getent`` (pyinfra's
    ``Users`` fact reads every account with lastlog and id: 0.2 s per host and run).

    .. code:: python

        {"uid": 1000, "gid": 1000, "comment": "Budi", "home": "/home/budi", "shell": "/bin/bash"}
    """

    def command(self, user: str) -> StringCommand:
        return StringCommand("getent passwd", QuoteString(user), "|| true")

    def process(self, output: list[str]):
        for line in output:
            fields = line.split(":")
            if len(fields) >= 7:
                return {"uid": int(fields[2]), "gid": int(fields[3]), "comment": fields[4], "home": fields[5],
                        "shell": fields[6]}
        return None


class OsRelease(FactBase[dict]):
    """/etc/os-release as key -> value (``ID``, ``VERSION_ID``, ``PRETTY_NAME``, ...)."""

    def command(self) -> str:
        return "cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null || true"

    def process(self, output: list[str]) -> dict:
        from drc.site.platform import parse_os_release

        return parse_os_release("\n".join(output))
