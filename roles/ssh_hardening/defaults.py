"""Typed settings of the ssh_hardening role (controls after devsec.hardening ssh_hardening)."""

from pydantic import BaseModel, ConfigDict, Field


class SshHardeningSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Port sshd listens on; the firewall opens it only to ssh_allowlist (SOP RA-2).
    port: int = Field(22, ge=1, le=65535)
    # SOP RA-3: never log in as root directly.
    permit_root_login: str = "no"
    # Key-only: passwords can be guessed or phished.
    password_authentication: bool = False
    # Few tries per connection slows down guessing (devsec default 2).
    max_auth_tries: int = Field(2, ge=1, le=10)
    # Unauthenticated connections are dropped quickly.
    login_grace_time: str = "30s"
    # Dead sessions are closed after interval x count seconds (devsec: 2).
    client_alive_interval: int = Field(300, ge=0)
    client_alive_count_max: int = Field(2, ge=0)
    # Sessions multiplexed over one connection (devsec 10, Lynis asks 2). siaga's own tools hold 2 at
    # most: pyinfra keeps its SFTP channel open beside the one command it runs, Fabric (drc/hosts/
    # remote.py) one command per connection at a time plus its cached SFTP; 4 leaves room for an
    # admin's multiplexed (ControlMaster) terminals without letting one connection carry many.
    max_sessions: int = Field(4, ge=2)
    # Unauthenticated connections: start dropping 30% at 10, refuse all at 60 (slows floods).
    max_startups: str = "10:30:60"
    # No forwarding or tunnels: remote repair is shell work, not a network path (SOP RA-4).
    allow_tcp_forwarding: bool = False
    allow_agent_forwarding: bool = False
    x11_forwarding: bool = False
    permit_tunnel: bool = False
    # pyinfra and Fabric upload files over SFTP, so it stays on (devsec turns it off by default).
    sftp_enabled: bool = True
    # VERBOSE logs the key fingerprint of each login: who did what is traceable (SOP RA-5).
    log_level: str = "VERBOSE"
    # Algorithm lists after ssh-audit/devsec: no SHA-1, no NIST curves, no CBC, encrypt-then-MAC only
    # (ssh-audit warns on encrypt-and-MAC). Each list keeps at least one entry that paramiko 4
    # (pyinfra, Fabric) supports, so siaga can still connect: its etm MACs and AES-GCM.
    kex_algorithms: list[str] = Field(default_factory=lambda: [
        "sntrup761x25519-sha512@openssh.com",
        "curve25519-sha256",
        "curve25519-sha256@libssh.org",
        "diffie-hellman-group16-sha512",
        "diffie-hellman-group18-sha512",
        "diffie-hellman-group-exchange-sha256",
    ])
    ciphers: list[str] = Field(default_factory=lambda: [
        "chacha20-poly1305@openssh.com",
        "aes256-gcm@openssh.com",
        "aes128-gcm@openssh.com",
        "aes256-ctr",
        "aes192-ctr",
        "aes128-ctr",
    ])
    macs: list[str] = Field(default_factory=lambda: [
        "hmac-sha2-512-etm@openssh.com",
        "hmac-sha2-256-etm@openssh.com",
        "umac-128-etm@openssh.com",
    ])
    # Only ed25519 and RSA host keys are offered (HostKey lines for those two files only).
    host_key_algorithms: list[str] = Field(default_factory=lambda: [
        "ssh-ed25519",
        "rsa-sha2-512",
        "rsa-sha2-256",
    ])
    # Diffie-Hellman group-exchange primes smaller than this are removed from /etc/ssh/moduli
    # (devsec sshd_moduli_minimum is 2048; ssh-audit asks for 3072).
    dh_moduli_minimum_bits: int = Field(3072, ge=2048, le=8192)
    # Groups allowed in besides the base role's admin group.
    extra_allow_groups: list[str] = Field(default_factory=list)
    # Shown before login (legal notice).
    banner: str = (
        "Sistem milik LPSE. Akses hanya untuk petugas yang berwenang; "
        "seluruh aktivitas dipantau dan dicatat. Akses tanpa hak dilarang.\n"
        "This system is the property of LPSE. Access is restricted to authorised staff; "
        "all activity is monitored and logged. Unauthorised access is prohibited.\n"
    )
    # Extra sshd_config lines (key: value) for controls not modelled above.
    extra_settings: dict[str, str] = Field(default_factory=dict)
