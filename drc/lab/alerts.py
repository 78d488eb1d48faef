"""Where the lab's alerts go (roles/monitoring): a real SMTP server and a webhook receiver on the
lab's outsider host, outside both sites, as the LPSE's mail relay and chat bridge would be.

- Mail: aiosmtpd from Debian (python3-aiosmtpd), its Mailbox handler delivering every message
  into a Maildir (MAILDIR on the outsider); tests read the delivered mail from there.
- Webhook: drc/lab/webhook_sink.py (one file per POST in WEBHOOK_DIR).

Both are systemd units on the outsider, written into its files from the workstation; idempotent.
"""

from __future__ import annotations

import json
import mailbox
import time
from email.message import Message
from pathlib import Path
from typing import Callable

from drc.lab.shell import LabHosts, run, wait_for, write_into_root

HOST = "outsider"
SMTP_PORT = 25
WEBHOOK_PORT = 8080
MAILDIR = "/var/lib/siaga-lab/mail"
WEBHOOK_DIR = "/var/lib/siaga-lab/webhook"
SINK = "/usr/local/lib/siaga-lab/webhook-sink"
MAIL_TO = "admin@lab.example"
UNITS = {
    "siaga-lab-smtp.service": """[Unit]
Description=siaga lab: SMTP server delivering alerts into {maildir} (aiosmtpd)
After=network-online.target

[Service]
ExecStart=/usr/bin/python3 -m aiosmtpd -n -l {address}:{smtp} -c aiosmtpd.handlers.Mailbox {maildir}
Restart=always

[Install]
WantedBy=multi-user.target
""",
    "siaga-lab-webhook.service": """[Unit]
Description=siaga lab: webhook receiver keeping every POST in {webhook_dir}
After=network-online.target

[Service]
ExecStart=/usr/bin/python3 {sink} {address} {webhook} {webhook_dir}
Restart=always

[Install]
WantedBy=multi-user.target
""",
}


def site_settings(st: dict) -> dict:
    """The lab site file's `monitoring:`: alerts to the outsider's servers, short intervals so a
    lab test sees an alert within seconds (production keeps the role's defaults). 3 s scrapes give a
    slow scrape on a loaded machine its 3 s; 8 s down means a few failed scrapes in a row."""
    address = st["hosts"][HOST]["address"]
    return {"monitoring": {
        "scrape_interval_s": 3, "evaluation_interval_s": 2, "down_for_s": 8, "for_s": 10, "group_wait_s": 2,
        "figures_interval_s": 5, "uploads_every_s": 30,
        "mail": {"to": [MAIL_TO], "sender": "siaga@lab.example", "smarthost": f"{address}:{SMTP_PORT}", "require_tls": False},
        "webhooks": [f"http://{address}:{WEBHOOK_PORT}/alerts"],
    }}


def ensure(lab: LabHosts, st: dict, log: Callable[[str], None] = print) -> None:
    root = lab.rootfs(HOST) / "root"
    ssh = lab.ssh_cmd(HOST)
    if not (root / "usr/lib/python3/dist-packages/aiosmtpd").exists():
        start = time.monotonic()
        run(ssh + ["sudo", "apt-get", "update", "-qq"], timeout=300)
        run(ssh + ["sudo", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq", "--no-install-recommends",
                   "python3-aiosmtpd"], timeout=300)
        log(f"lab {lab.name}: aiosmtpd installed on {HOST} in {time.monotonic() - start:.1f}s")
    address = st["hosts"][HOST]["address"]
    changed = write_into_root(root / SINK.lstrip("/"), (Path(__file__).parent / "webhook_sink.py").read_text(), 0o755)
    for unit, text in UNITS.items():
        changed |= write_into_root(root / "etc/systemd/system" / unit, text.format(address=address, smtp=SMTP_PORT, maildir=MAILDIR,
                                                                          webhook=WEBHOOK_PORT, webhook_dir=WEBHOOK_DIR, sink=SINK), 0o644)
    for d in (f"{MAILDIR}/new", f"{MAILDIR}/cur", f"{MAILDIR}/tmp", WEBHOOK_DIR):  # a Maildir's three
        (root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
    if changed:
        run(ssh + ["sudo", "systemctl", "daemon-reload"], timeout=60)
    run(ssh + ["sudo", "systemctl", "enable", "-q", *UNITS], timeout=60)
    run(ssh + ["sudo", "systemctl", "restart" if changed else "start", *UNITS], timeout=60)

    def listening() -> bool:
        out = run(ssh + ["ss", "-Htln"], check=False, timeout=15).stdout
        return f"{address}:{SMTP_PORT}" in out and f"{address}:{WEBHOOK_PORT}" in out

    wait_for(f"the lab's SMTP server and webhook receiver on {HOST}", listening, 30, 0.2)


def mails(lab: LabHosts) -> list[Message]:
    """Every message the lab's SMTP server delivered (read from the outsider's Maildir), in the order
    of delivery (a Maildir key starts with the second and microsecond it was written)."""
    box = mailbox.Maildir(lab.rootfs(HOST) / "root" / MAILDIR.lstrip("/"), create=False)

    def delivered(key: str) -> tuple[int, int, str]:
        secs, _, rest = key.partition(".M")
        return int(secs), int(rest.partition("P")[0] or 0), key

    return [box[k] for k in sorted(box.keys(), key=delivered)]


def webhook_posts(lab: LabHosts) -> list[dict]:
    """Every JSON body POSTed to the lab's webhook receiver, oldest first."""
    d = lab.rootfs(HOST) / "root" / WEBHOOK_DIR.lstrip("/")
    return [json.loads(f.read_text()) for f in sorted(d.glob("*.json"))]
