"""`siaga secrets escrow`: what it takes to read the backups with no server and no workstation
(SOP BK-8: passwords are secret data; BK-9, EM-3.7: the offline copy must be readable on its own).

Two outputs from one document (`escrow_document`):

- an encrypted file for the offline media, `siaga-escrow-<site>.txt.gpg`: GnuPG symmetric AES256,
  readable with a standard `gpg --decrypt` alone. Inside: the restore steps as text, then the same
  facts as JSON between two marker lines (what `siaga secrets restore-offline` reads).
- a printable recovery sheet (HTML, Indonesian, English commands) for the safe: 0600, marked secret.

The passphrase the head of the LPSE keeps: asked twice on the terminal (never echoed), or read
from a file named by `--passphrase-file` or `$SIAGA_ESCROW_PASSPHRASE_FILE` (tests, scripted
runs). It reaches gpg through a pipe (`--passphrase-fd`), never a command line or a log.
Secrets come from the workstation's secrets directory (the deploy's custody step fetched them from
the hosts) and, for copies made before a rotation, the retired ones kept there (`retired.json`).
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from drc.records.render import render_report
from drc.site import Site
from drc.site.data_tier import data_tier_of
from roles.backup.repo1 import repo1_path
from roles.secret_custody import fingerprint, secret_specs, workstation_value
from roles.workstation_secrets import SecretError, check_private, write_private

FORMAT = "siaga-escrow/1"
BEGIN, END = "-----BEGIN SIAGA ESCROW JSON-----", "-----END SIAGA ESCROW JSON-----"
PASSPHRASE_ENV = "SIAGA_ESCROW_PASSPHRASE_FILE"
MIN_PASSPHRASE = 12
RETIRED = "retired.json"
OFFLINE_SUBDIR = "siaga-offline"
# What reading a copy on the medium needs of pgBackRest's options (the rest are backup-time options).
CIPHER_TYPE = "aes-256-cbc"


class EscrowError(RuntimeError):
    pass


# --- the passphrase -----------------------------------------------------------------------------

def read_passphrase(option: str | None, confirm: bool, env: dict | None = None) -> str:
    """The escrow passphrase: from the file named by the option or $SIAGA_ESCROW_PASSPHRASE_FILE
    (its first line; the file must be 0600), else typed twice on the terminal. Never echoed."""
    env = os.environ if env is None else env
    name = option or env.get(PASSPHRASE_ENV)
    if name:
        path = Path(name).expanduser()
        if not path.is_file():
            raise EscrowError(f"passphrase file {path} not found (from {'--passphrase-file' if option else '$' + PASSPHRASE_ENV})")
        try:
            check_private(path)
        except SecretError as exc:
            raise EscrowError(str(exc)) from None
        value = path.read_text().splitlines()[0] if path.read_text() else ""
    else:
        if not sys.stdin.isatty():
            raise EscrowError(f"no terminal to ask the escrow passphrase on. Fix: run it in a terminal, or name a 0600 file "
                              f"holding it with --passphrase-file or ${PASSPHRASE_ENV}")
        value = getpass.getpass("Escrow passphrase (the head of the LPSE keeps it): ")
        if confirm and getpass.getpass("Again: ") != value:
            raise EscrowError("the two passphrases differ: nothing written")
    if len(value) < MIN_PASSPHRASE:
        raise EscrowError(f"the escrow passphrase must be at least {MIN_PASSPHRASE} characters")
    return value


# --- the document -------------------------------------------------------------------------------

def retired_path(site: Site) -> Path:
    from roles.secret_custody import spec_for

    return spec_for(data_tier_of(site), "restic").directory / RETIRED


def read_retired(site: Site) -> list[dict]:
    """Secrets replaced by a rotation that older copies still need (0600 JSON list in the secrets dir)."""
    path = retired_path(site)
    if not path.exists():
        return []
    check_private(path)
    return json.loads(path.read_text())


def add_retired(site: Site, entry: dict) -> None:
    """Append one retired secret on the workstation (see sync_retired for the hosts' copies)."""
    write_retired(site, merge_retired(read_retired(site), [entry]))


def write_retired(site: Site, entries: list[dict]) -> None:
    """The workstation's retired.json rewritten through a new 0600 file, renamed over the old."""
    path = retired_path(site)
    tmp = path.with_name(RETIRED + ".new")
    tmp.unlink(missing_ok=True)
    write_private(tmp, json.dumps(entries, indent=2) + "\n")
    os.replace(tmp, path)


def merge_retired(*lists: list[dict]) -> list[dict]:
    """One list of retired secrets from several copies (the workstation's, each host's): each
    value once, oldest retirement first."""
    seen: dict[tuple, dict] = {}
    for entries in lists:
        for e in entries:
            seen.setdefault((e.get("key"), e.get("value")), e)
    return sorted(seen.values(), key=lambda e: (e.get("retired_at") or "", e.get("key") or ""))


def sync_retired(site: Site) -> list[str]:
    """The retired secrets kept on the workstation AND on every host (root, 0600,
    /etc/siaga/backup/retired-secrets.json), so a lost workstation loses none: the union is written
    back where something is missing. Returns warnings (hosts not reached)."""
    from drc.secrets.host import call

    warnings, lists, reached = [], [read_retired(site)], []
    for h in site.hosts:
        r = call(site, h, {"mode": "retired-get"}, None, 60)
        if r.get("ok"):
            lists.append(r["entries"])
            reached.append(h)
        else:
            warnings.append(f"retired secrets not read from {h}: {r.get('error')}")
    union = merge_retired(*lists)
    if union != merge_retired(lists[0]):
        write_retired(site, union)
    for h, entries in zip(reached, lists[1:]):
        if merge_retired(entries) != union:
            r = call(site, h, {"mode": "retired-put"}, {"entries": union}, 60)
            if not r.get("ok"):
                warnings.append(f"retired secrets not written to {h}: {r.get('error')}")
    return warnings


def escrow_document(site: Site, now: dt.datetime | None = None, generation: int = 1) -> dict:
    """Everything needed to read the offline copies without a server or a workstation.
    `generation`: the pgBackRest repository's in use (after `siaga secrets rotate repo1`)."""
    tier = data_tier_of(site)
    b, pg = site.backup, site.postgresql
    if not b.enabled:
        raise EscrowError("backup is not enabled in this site file: there is nothing to escrow")
    specs = {s.key: s for s in secret_specs(tier)}
    values = {}
    for key in ("repo1", "restic"):
        value = workstation_value(specs[key])
        if value is None:
            raise EscrowError(f"{specs[key].path}: missing on this workstation. Fix: run the site deploy first (its "
                              "custody step fetches the hosts' copy), then write the escrow")
        values[key] = value
    retired = read_retired(site)
    repo_host = site.hosts_in(b.repository_site)[0]
    now = now or dt.datetime.now().astimezone()
    return {
        "format": FORMAT,
        "site": site.site,
        "made_at": now.isoformat(timespec="seconds"),
        "made_by": f"{getpass.getuser()}@{socket.gethostname()}",
        "pgbackrest": {
            "stanza": b.stanza,
            "repository_host": repo_host,
            "repository_path": repo1_path(b.repository_path, generation),
            "cipher_type": CIPHER_TYPE,
            "cipher_pass": values["repo1"],
            "fingerprint": fingerprint(values["repo1"]),
            "postgresql_version": pg.version,
            "retired": [r for r in retired if r.get("key") == "repo1"],
        },
        "restic": {
            "repository_path": f"{b.repository_path}/restic",
            "password": values["restic"],
            "fingerprint": fingerprint(values["restic"]),
            "sets": [{"name": s.name, "tag": s.name, "paths": list(s.paths)} for s in b.sets],
            "retired": [r for r in retired if r.get("key") == "restic"],
        },
        "offline": {
            "mount_point": b.offline.mount_point,
            "layout": f"{b.offline.mount_point}/{OFFLINE_SUBDIR}/<YYYYmmddTHHMMSS>/{{pgbackrest,restic,manifest.json}}",
            "label_file": f"{b.offline.mount_point}/{OFFLINE_SUBDIR}/medium.json",
        },
        # Reading a copy on the medium needs no SSH key: the keys only reach hosts that may be gone.
        "ssh_keys": "not needed: the copies on the medium are read locally with the passphrase and password above",
        # The TSIG key that moves users' traffic: only on the workstation, which the main site may take
        # with it; a new workstation (siaga workstation restore) needs it for the failover's traffic step.
        "dns_update_key": dns_update_key(site),
    }


def dns_update_key(site: Site) -> dict | None:
    """The DNS update key as this workstation holds it (None: the site moves traffic otherwise)."""
    t = site.traffic
    if not t or t.method != "dns-update" or not t.dns_update:
        return None
    d = t.dns_update
    k = {"key_name": d.key_name, "algorithm": d.key_algorithm, "zone": d.zone, "file_name": d.key_file.name}
    try:
        check_private(d.key_file)
        return {**k, "text": d.key_file.read_text()}
    except OSError as exc:  # the backups' escrow is still written: it is what reads them
        return {**k, "missing": f"traffic.dns_update.key_file {d.key_file}: {exc.strerror} on the workstation that wrote "
                                "this escrow: get the key from the DNS server's admins"}


def check_hosts(site: Site) -> list[str]:
    """The workstation's copies of the escrowed secrets compared with the hosts' (by sha256 prefix):
    an escrow of a stale copy would open nothing. A host holding another value raises EscrowError;
    an unreachable host is returned as a warning (the escrow is still written)."""
    from drc.hosts import remote
    from drc.secrets.host import call

    tier = data_tier_of(site)
    specs = [s for s in secret_specs(tier) if s.key in ("repo1", "restic")]
    items = [{"path": loc.path, "form": loc.form} for s in specs for loc in s.locations]
    answers = remote.parallel(list(site.hosts), lambda h: call(site, h, {"mode": "fingerprints", "items": items}, None, 60),
                              90, lambda h: {"ok": False, "error": f"{h}: no answer within 90 s"})
    warnings = []
    for host, res in answers.items():
        if not res.get("ok"):
            warnings.append(f"not compared with {host}: {res.get('error')}")
            continue
        for s in specs:
            want = fingerprint(workstation_value(s) or "")
            for loc in s.locations:
                got = res["fingerprints"].get(loc.path)
                if got and got.startswith("sha256:") and got != want:
                    raise EscrowError(f"{host}:{loc.path} holds another {s.what} ({got}) than this workstation's {s.path} "
                                      f"({want}): an escrow of it would open nothing. Nothing written. Fix: run the site "
                                      "deploy (custody stops and names the copy in use), then write the escrow")
    return warnings


def restore_steps(doc: dict) -> list[dict]:
    """The manual restore, step by step: what to do (Indonesian) and the command (English)."""
    p, r, o = doc["pgbackrest"], doc["restic"], doc["offline"]
    root = f"{o['mount_point']}/{OFFLINE_SUBDIR}"
    pgv = p["postgresql_version"]
    conf = "/run/siaga-escrow/pgbackrest.conf"
    return [
        {"say": "Pasang media offline (read-only cukup) di server Debian dengan paket pgbackrest, restic dan "
                f"postgresql-{pgv}. Buat direktori rahasia di RAM.",
         "cmd": f"mount -o ro /dev/<media> {o['mount_point']}\ninstall -d -m 700 -o postgres /run/siaga-escrow"},
        {"say": "Pilih salinan terbaru yang terverifikasi (manifest.json berisi \"verified\": true).",
         "cmd": f"grep -l '\"verified\": true' {root}/*/manifest.json | sort | tail -n 1\n"
                f"COPY={root}/<YYYYmmddTHHMMSS>   # the directory of that manifest"},
        {"say": "Tulis konfigurasi pgBackRest (berisi passphrase repositori: rahasia, mode 0600).",
         "cmd": f"umask 077; cat > {conf} <<EOF\n[global]\nrepo1-path=$COPY/pgbackrest\nrepo1-cipher-type={p['cipher_type']}\n"
                f"repo1-cipher-pass=<pgBackRest passphrase from this sheet>\nlock-path=/run/siaga-escrow\nlog-level-file=off\n\n"
                f"[{p['stanza']}]\npg1-path=/var/tmp/pemulihan/pg\nEOF\nchown postgres {conf}"},
        {"say": "Lihat daftar backup database di salinan itu.",
         "cmd": f"sudo -u postgres pgbackrest --config={conf} --stanza={p['stanza']} info"},
        {"say": "Pulihkan database ke direktori baru (bukan cluster produksi), lalu jalankan di port lain.",
         "cmd": f"install -d -m 700 -o postgres /var/tmp/pemulihan/pg\n"
                f"sudo -u postgres pgbackrest --config={conf} --stanza={p['stanza']} --type=immediate --target-action=promote "
                f"--recovery-option=restore_command='pgbackrest --config={conf} --stanza={p['stanza']} archive-get %f \"%p\"' restore\n"
                "echo 'local all all trust' > /var/tmp/pemulihan/pg/pg_hba.conf; touch /var/tmp/pemulihan/pg/postgresql.conf "
                "/var/tmp/pemulihan/pg/pg_ident.conf; chown postgres /var/tmp/pemulihan/pg/*.conf\n"
                f"sudo -u postgres /usr/lib/postgresql/{pgv}/bin/pg_ctl -D /var/tmp/pemulihan/pg -o '-c port=5499 "
                "-c listen_addresses= -c unix_socket_directories=/run/siaga-escrow' -w start\n"
                "sudo -u postgres psql -h /run/siaga-escrow -p 5499 -l"},
        {"say": "Pulihkan file unggahan (restic) dari salinan yang sama; password restic dari lembar ini.",
         "cmd": "umask 077; printf '%s\\n' '<restic password from this sheet>' > /run/siaga-escrow/restic.password\n"
                "export RESTIC_PASSWORD_FILE=/run/siaga-escrow/restic.password RESTIC_REPOSITORY=$COPY/restic\n"
                + "\n".join(f"restic snapshots --tag {s['tag']}\nrestic restore latest --tag {s['tag']} --target /var/tmp/pemulihan/files/{s['name']} --verify"
                            for s in r["sets"])},
        {"say": "Salinan yang dibuat sebelum rotasi sandi memakai sandi lama (bagian 'Sandi lama' di bawah): coba itu bila "
                "sandi sekarang ditolak.",
         "cmd": "restic cat config   # 'wrong password or no key found': use a retired password"},
        {"say": "Setelah selesai: hapus file rahasia dan lepas media.",
         "cmd": f"rm -rf /run/siaga-escrow; umount {o['mount_point']}"},
    ]


def escrow_text(doc: dict) -> str:
    """The plaintext inside the encrypted file: instructions, then the JSON between markers."""
    lines = [f"SIAGA ESCROW — site {doc['site']} — made {doc['made_at']} by {doc['made_by']}",
             "SECRET (SOP BK-8). Everything needed to read the offline backup copies without the servers.",
             "", f"pgBackRest stanza: {doc['pgbackrest']['stanza']}",
             f"pgBackRest repository cipher ({doc['pgbackrest']['cipher_type']}) passphrase: {doc['pgbackrest']['cipher_pass']}",
             f"restic password: {doc['restic']['password']}",
             f"offline copies: {doc['offline']['layout']}", ""]
    if doc.get("dns_update_key"):
        k = doc["dns_update_key"]
        lines += [f"DNS update key (TSIG {k['algorithm']}, name {k['key_name']}, zone {k['zone']}):",
                  (k.get("text") or k.get("missing", "")).rstrip(), ""]
    for r in doc["pgbackrest"]["retired"] + doc["restic"]["retired"]:
        lines.append(f"retired {r['key']} ({r.get('retired_at')}, still needed by {r.get('needed_by')}): {r['value']}")
    lines.append("")
    for i, s in enumerate(restore_steps(doc), 1):
        lines += [f"{i}. {s['say']}", *("   " + c for c in s["cmd"].splitlines()), ""]
    lines += ["Machine-readable (siaga secrets restore-offline --escrow FILE):", BEGIN, json.dumps(doc, indent=2), END, ""]
    return "\n".join(lines)


def parse_escrow_text(text: str) -> dict:
    try:
        body = text.split(BEGIN, 1)[1].split(END, 1)[0]
        doc = json.loads(body)
    except (IndexError, ValueError):
        raise EscrowError("not a siaga escrow (no JSON block between its markers)") from None
    if doc.get("format") != FORMAT:
        raise EscrowError(f"escrow format {doc.get('format')!r} is not {FORMAT!r}")
    return doc


# --- GnuPG ----------------------------------------------------------------------------------------

def _gpg(args: list[str], passphrase: str, data: bytes, timeout: float = 120) -> subprocess.CompletedProcess:
    """gpg with the passphrase on a pipe (--passphrase-fd), an empty throw-away home (no agent,
    no keyring of the admin's touched), the data on stdin."""
    r, w = os.pipe()
    try:
        os.write(w, passphrase.encode() + b"\n")
    finally:
        os.close(w)
    with tempfile.TemporaryDirectory(prefix="siaga-gpg-") as home:
        try:
            return subprocess.run(["gpg", "--homedir", home, "--batch", "--no-tty", "--quiet", "--pinentry-mode", "loopback",
                                   "--passphrase-fd", str(r), *args], input=data, capture_output=True, pass_fds=(r,), timeout=timeout)
        except FileNotFoundError:
            raise EscrowError("gpg is not installed on this workstation. Fix: apt-get install gnupg") from None
        finally:
            os.close(r)


def encrypt(text: str, passphrase: str) -> bytes:
    """ASCII-armoured GnuPG symmetric encryption (AES256, SHA512 S2K with many rounds)."""
    p = _gpg(["--symmetric", "--armor", "--cipher-algo", "AES256", "--s2k-mode", "3", "--s2k-digest-algo", "SHA512",
              "--s2k-count", "65011712", "--output", "-"], passphrase, text.encode())
    if p.returncode != 0:
        raise EscrowError(f"gpg --symmetric failed: {p.stderr.decode(errors='replace').strip()[-500:]}")
    return p.stdout


def decrypt(data: bytes, passphrase: str) -> str:
    p = _gpg(["--decrypt", "--output", "-"], passphrase, data)
    if p.returncode != 0:
        raise EscrowError(f"gpg --decrypt failed (wrong passphrase, or not an escrow file): "
                          f"{p.stderr.decode(errors='replace').strip()[-300:]}")
    return p.stdout.decode()


def read_escrow(path: Path, passphrase: str) -> dict:
    if not path.is_file():
        raise EscrowError(f"escrow file {path} not found")
    return parse_escrow_text(decrypt(path.read_bytes(), passphrase))


# --- the recovery sheet ---------------------------------------------------------------------------

def render_sheet(doc: dict) -> str:
    return render_report("lembar_pemulihan.html.j2", doc=doc, steps=restore_steps(doc))


def write_outputs(doc: dict, passphrase: str, out: Path) -> dict[str, Path]:
    """The encrypted file and the sheet in `out` (created 0700), each 0600, never over an existing file."""
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = doc["made_at"][:19].replace(":", "").replace("-", "")
    paths = {"encrypted": out / f"siaga-escrow-{doc['site']}-{stamp}.txt.gpg",
             "sheet": out / f"lembar-pemulihan-{doc['site']}-{stamp}.html"}
    for p in paths.values():
        if p.exists():
            raise EscrowError(f"{p} exists: not replaced (write the escrow into another directory, or move it away)")
    data = encrypt(escrow_text(doc), passphrase)
    if parse_escrow_text(decrypt(data, passphrase)) != doc:  # the file must open before it is trusted
        raise EscrowError("the encrypted escrow did not decrypt back to the same content: nothing written")
    for key, content in (("encrypted", data.decode()), ("sheet", render_sheet(doc))):
        write_private(paths[key], content)
    return paths
