"""Facts the ssh_hardening role needs and pyinfra lacks."""

from __future__ import annotations

from pyinfra.api import FactBase, QuoteString, StringCommand


class WeakDhModuli(FactBase[int]):
    """Number of Diffie-Hellman group-exchange primes in the moduli file smaller than `minimum_bits`
    (0 when the file does not exist). The file's 5th column is the prime size minus one."""

    default = int

    def command(self, minimum_bits: int, path: str = "/etc/ssh/moduli") -> StringCommand:
        return StringCommand(
            "test ! -e", QuoteString(path), "&& echo 0 ||",
            "awk", QuoteString(f"$1 !~ /^#/ && NF >= 7 && $5 < {int(minimum_bits) - 1} {{ n++ }} END {{ print n + 0 }}"),
            QuoteString(path),
        )

    def process(self, output: list[str]) -> int:
        return int(output[0])
