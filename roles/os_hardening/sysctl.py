"""The kernel settings siaga sets (after devsec.hardening os_hardening's sysctl set, the part that
breaks neither PostgreSQL nor a two-site service). One control per line, each with its reason.
Importable without pyinfra: the role's README and the tests read it. SOP IN-2."""

from __future__ import annotations

SYSCTL: dict[str, str] = {
    # Network: the hosts are not routers (a fence or a switch-over never routes through them).
    "net.ipv4.ip_forward": "0",
    "net.ipv6.conf.all.forwarding": "0",
    # Reverse-path filter: drop packets whose source could not be answered on the interface they came in.
    "net.ipv4.conf.all.rp_filter": "1",
    "net.ipv4.conf.default.rp_filter": "1",
    # No ICMP redirects accepted (route hijack) or sent (not a router).
    "net.ipv4.conf.all.accept_redirects": "0",
    "net.ipv4.conf.default.accept_redirects": "0",
    "net.ipv4.conf.all.secure_redirects": "0",
    "net.ipv4.conf.default.secure_redirects": "0",
    "net.ipv6.conf.all.accept_redirects": "0",
    "net.ipv6.conf.default.accept_redirects": "0",
    "net.ipv4.conf.all.send_redirects": "0",
    "net.ipv4.conf.default.send_redirects": "0",
    # No source-routed packets (the sender choosing the path past a firewall).
    "net.ipv4.conf.all.accept_source_route": "0",
    "net.ipv4.conf.default.accept_source_route": "0",
    "net.ipv6.conf.all.accept_source_route": "0",
    "net.ipv6.conf.default.accept_source_route": "0",
    # Packets with impossible addresses are logged (SOP IN-4: intrusion attempts).
    "net.ipv4.conf.all.log_martians": "1",
    "net.ipv4.conf.default.log_martians": "1",
    # SYN floods: cookies instead of a full backlog; TIME-WAIT assassination refused (RFC 1337).
    "net.ipv4.tcp_syncookies": "1",
    "net.ipv4.tcp_rfc1337": "1",
    # No smurf amplification, no log noise from bogus ICMP errors.
    "net.ipv4.icmp_echo_ignore_broadcasts": "1",
    "net.ipv4.icmp_ignore_bogus_error_responses": "1",
    # Kernel: no kernel addresses to unprivileged users (exploit help), no kernel log to them.
    "kernel.kptr_restrict": "2",
    "kernel.dmesg_restrict": "1",
    # Full address-space layout randomisation.
    "kernel.randomize_va_space": "2",
    # ptrace only of one's own descendants: a compromised account cannot read the app's memory.
    "kernel.yama.ptrace_scope": "1",
    # No unprivileged eBPF (a frequent kernel exploit path; 1: not even root re-enables it before a
    # reboot, nothing on these servers needs it); the BPF JIT hardened.
    "kernel.unprivileged_bpf_disabled": "1",
    "net.core.bpf_jit_harden": "2",
    # No Magic SysRq from the keyboard or /proc (a console user rebooting the database).
    "kernel.sysrq": "0",
    # No performance counters for unprivileged users.
    "kernel.perf_event_paranoid": "3",
    # No line disciplines loaded on demand by unprivileged users; no unprivileged userfaultfd.
    "dev.tty.ldisc_autoload": "0",
    "vm.unprivileged_userfaultfd": "0",
    # NULL-pointer dereference bugs stay bugs, not exploits.
    "vm.mmap_min_addr": "65536",
    # Setuid programs leave no core dump (it could hold /etc/shadow's lines); a core names its process.
    "fs.suid_dumpable": "0",
    "kernel.core_uses_pid": "1",
    # Links and FIFOs in world-writable sticky directories (/tmp) cannot be used to trick root.
    "fs.protected_hardlinks": "1",
    "fs.protected_symlinks": "1",
    "fs.protected_fifos": "2",
    "fs.protected_regular": "2",
}

# Left out on purpose (devsec sets them): net.ipv4.tcp_timestamps=0 (PAWS protects the replication
# stream's long-lived high-rate connections), net.ipv6.conf.*.accept_ra=0 (a host addressed by
# router advertisements would lose its IPv6 address and the admin with it), kernel.kexec_load_disabled
# and kernel.modules_disabled (one-way until reboot: kdump and Debian's kernel updates need them).


# Kernel modules never loaded on demand (/etc/modprobe.d): module -> why it is not needed. Not here
# on purpose: usb-storage and udf (BK-9's offline copies go to portable media).
UNUSED_MODULES: dict[str, str] = {
    "dccp": "network protocol nothing on an SPSE server speaks",
    "sctp": "network protocol nothing on an SPSE server speaks",
    "rds": "network protocol nothing on an SPSE server speaks",
    "tipc": "network protocol nothing on an SPSE server speaks",
    "cramfs": "filesystem of embedded images",
    "freevxfs": "filesystem of old HP-UX disks",
    "jffs2": "filesystem of flash chips",
    "hfs": "filesystem of old Macs",
    "hfsplus": "filesystem of Macs",
    "firewire-core": "FireWire: direct memory access from a plugged device",
}
