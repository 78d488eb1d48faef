"""Facts the uploads_sync role needs and pyinfra lacks. A fact only reads."""

from __future__ import annotations

from pyinfra.api import FactBase, QuoteString, StringCommand


class SshHostKey(FactBase):
    """The host's own SSH host public key of one type, as ``"<type> <base64>"`` (comment dropped),
    or None when the host has none. Read on the target so the source pins it (no blind TOFU)."""

    def command(self, key_type: str = "ed25519") -> StringCommand:
        return StringCommand("cat", QuoteString(f"/etc/ssh/ssh_host_{key_type}_key.pub"), "2>/dev/null", "|| true")

    def process(self, output: list[str]):
        for line in output:
            parts = line.split()
            if len(parts) >= 2 and parts[0].startswith(("ssh-", "ecdsa-")):
                return f"{parts[0]} {parts[1]}"
        return None


class GroupMembers(FactBase):
    """Names of the supplementary members of a group (``[]`` when it has none, None when it does
    not exist)."""

    def command(self, group: str) -> StringCommand:
        return StringCommand("getent", "group", QuoteString(group), "|| true")

    def process(self, output: list[str]):
        if not output or not output[0].strip():
            return None
        members = output[0].split(":")[3] if output[0].count(":") >= 3 else ""
        return [m for m in members.split(",") if m]
