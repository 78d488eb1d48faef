"""Independent scanners against a converged lab: the security figures of issue 12 (SOP IN-2, IN-4).

Usage: .venv/bin/python bench/security_scores.py [--lab NAME] [--keep] [--skip-lynis]

Raises its lab (default "bench-security"; `siaga lab up` is idempotent, so an existing lab of that
name is reused), converges it with the site deploy, then measures, each figure beside its goal and
the machine's load:
1. ssh-audit (PyPI `ssh-audit`, beside this Python or on PATH) against each server from the admin
   workstation, the only place the firewall lets reach sshd: failures (algorithms, CVEs) and
   warnings, the post-quantum key-exchange warnings counted apart (goal: 0 failures, 0 other
   warnings); its additional notes (Terrapin, the DHEat rate test) are printed as notes;
2. Lynis (Debian's `lynis`, installed on each server by this script if missing: lab only) hardening
   index per server (goal >= 80);
3. a TLS scan of the active site's 443 with sslscan (Debian) from the outsider's network namespace
   (the public): protocols below TLS 1.2, and CBC, RC4, 3DES, NULL, EXPORT or anonymous suites
   accepted (goal: none);
4. a TCP port scan of every server with nmap (Debian) from the outsider's network namespace, all
   65535 ports (goal: only 80 and 443 on the active site's servers, nothing on the standby's).
Exit 0 when every goal is met, 1 when one is not, 2 when a scanner could not run. The lab is
removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from drc.hosts.deploy import converged_lab, machine_load, release_lab
from drc.lab.lab import Lab
from drc.site import load_site

LAB = "bench-security"
LYNIS_GOAL = 80
PQ_WARNING = "does not provide protection against post-quantum attacks"
WEAK_SUITE = re.compile(r"CBC|-SHA$|RC4|DES|NULL|EXP|ADH|AECDH|anon|MD5", re.I)


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def ssh_audit(lab: Lab, host: str) -> dict:
    exe = tool("ssh-audit")
    if not exe:
        return {"error": "ssh-audit not installed (pip install ssh-audit)"}
    proc = subprocess.run([exe, "-j", lab.address(host)], capture_output=True, text=True, timeout=180)
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"error": f"ssh-audit gave no JSON (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"}
    fails, warns, pq = [], [], []
    for section in ("kex", "key", "enc", "mac"):
        for alg in data.get(section, []):
            notes = alg.get("notes", {})
            fails += [f"{section} {alg['algorithm']}: {n}" for n in notes.get("fail", [])]
            for n in notes.get("warn", []):
                (pq if n == PQ_WARNING else warns).append(f"{section} {alg['algorithm']}: {n}")
    fails += [f"CVE {c.get('name')}" for c in data.get("cves", [])]
    return {"fails": fails, "warns": warns, "pq": pq, "notes": data.get("additional_notes", []),
            "software": data.get("banner", {}).get("software")}


def on_host(lab: Lab, host: str, command: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*lab.ssh_cmd(host), command], capture_output=True, text=True, timeout=timeout)


def lynis(lab: Lab, host: str) -> dict:
    setup = on_host(lab, host, "command -v lynis >/dev/null || sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q lynis >/dev/null")
    if setup.returncode != 0:
        return {"error": f"lynis could not be installed: {setup.stderr.strip()[-300:]}"}
    # A full audit takes over 10 minutes on a loaded 2-core machine (load 30+).
    proc = on_host(lab, host, "sudo lynis audit system --quick --no-colors 2>/dev/null; "
                              "sudo sed -n 's/^suggestion\\[\\]=//p' /var/log/lynis-report.dat", timeout=1800)
    match = re.search(r"Hardening index\s*:\s*(\d+)", proc.stdout)
    if not match:
        return {"error": f"no hardening index in Lynis' output (exit {proc.returncode})"}
    suggestions = [ln.split("|")[0] + " " + ln.split("|")[1] for ln in proc.stdout.splitlines() if ln.count("|") >= 2]
    return {"index": int(match.group(1)), "suggestions": suggestions}


def tls_scan(lab: Lab, address: str) -> dict:
    if not shutil.which("sslscan"):
        return {"error": "sslscan not installed (apt-get install sslscan)"}
    proc = lab.netns_exec("outsider", ["sslscan", "--no-colour", "--no-heartbleed", f"{address}:443"], check=False, timeout=300)
    enabled = re.findall(r"^(SSLv\d|TLSv1\.\d)\s+enabled", proc.stdout, re.M)
    accepted = re.findall(r"^(?:Preferred|Accepted)\s+(\S+)\s+\d+ bits\s+(\S+)", proc.stdout, re.M)
    if not accepted:
        return {"error": f"sslscan found no accepted suite (exit {proc.returncode}): {proc.stdout[-300:]}"}
    weak_protocols = [p for p in enabled if p not in ("TLSv1.2", "TLSv1.3")]
    weak_suites = [f"{p} {c}" for p, c in accepted if p not in ("TLSv1.3",) and WEAK_SUITE.search(c)]
    return {"protocols": enabled, "suites": [f"{p} {c}" for p, c in accepted], "weak": weak_protocols + weak_suites}


def port_scan(lab: Lab, address: str) -> dict:
    if not shutil.which("nmap"):
        return {"error": "nmap not installed (apt-get install nmap)"}
    proc = lab.netns_exec("outsider", ["nmap", "-Pn", "-sT", "-p-", "-T4", "--max-retries", "1", "--min-rate", "3000",
                                       "-oG", "-", address], check=False, timeout=900)
    ports = re.findall(r"(\d+)/open/tcp", proc.stdout)
    if "Ports:" not in proc.stdout and "Status: Up" not in proc.stdout and proc.returncode != 0:
        return {"error": f"nmap failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"}
    return {"open": sorted(int(p) for p in ports)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lab", default=LAB)
    ap.add_argument("--keep", action="store_true", help="leave the lab up")
    ap.add_argument("--skip-lynis", action="store_true", help="no Lynis (it installs a package on the servers)")
    args = ap.parse_args()
    lab = Lab(args.lab)
    ok, broken = True, False
    try:
        if not converged_lab(lab, args.lab).ok:
            return 2
        site = load_site(lab.site_file)
        servers = list(site.hosts)
        active = set(site.hosts_in(site.active_site))
        with ThreadPoolExecutor(max_workers=4) as pool:
            audits = dict(zip(servers, pool.map(lambda h: ssh_audit(lab, h), servers)))
            lyn = {} if args.skip_lynis else dict(zip(servers, pool.map(lambda h: lynis(lab, h), servers)))
        for host, r in audits.items():
            if "error" in r:
                print(f"ssh-audit {host}: {r['error']}")
                broken = True
                continue
            good = not r["fails"] and not r["warns"]
            ok &= good
            print(f"ssh-audit {host} ({r['software']}): {len(r['fails'])} failures, {len(r['warns'])} warnings besides "
                  f"{len(r['pq'])} post-quantum key-exchange warnings (goal 0 and 0: {met(good)}) [{machine_load()}]")
            for line in r["fails"] + r["warns"]:
                print(f"    {line}")
            for note in r["notes"]:
                print(f"    note: {note[:300]}")
        for host, r in lyn.items():
            if "error" in r:
                print(f"Lynis {host}: {r['error']}")
                broken = True
                continue
            ok &= r["index"] >= LYNIS_GOAL
            print(f"Lynis {host}: hardening index {r['index']} (goal >= {LYNIS_GOAL}: {met(r['index'] >= LYNIS_GOAL)}), "
                  f"{len(r['suggestions'])} suggestions [{machine_load()}]")
            for s in r["suggestions"]:
                print(f"    {s}")
        for host in sorted(active):
            r = tls_scan(lab, lab.address(host))
            if "error" in r:
                print(f"TLS scan {host}:443: {r['error']}")
                broken = True
                continue
            ok &= not r["weak"]
            print(f"TLS scan {host}:443 from the outsider (sslscan): protocols {', '.join(r['protocols'])}; "
                  f"{len(r['suites'])} suites accepted, weak {len(r['weak'])} (goal 0: {met(not r['weak'])}) [{machine_load()}]")
            for w in r["weak"]:
                print(f"    weak: {w}")
        for host in servers:
            r = port_scan(lab, lab.address(host))
            if "error" in r:
                print(f"port scan {host}: {r['error']}")
                broken = True
                continue
            want = sorted(site.firewall.web_ports) if host in active else []
            good = r["open"] == want
            ok &= good
            where = "active site" if host in active else "standby site"
            print(f"port scan {host} ({where}) from the outsider (nmap, all TCP ports): open {r['open'] or 'none'} "
                  f"(goal {want or 'none'}: {met(good)}) [{machine_load()}]")
        print("load average after: " + machine_load().removeprefix("load average "))
        return 2 if broken else 0 if ok else 1
    finally:
        release_lab(lab, args.keep)


if __name__ == "__main__":
    raise SystemExit(main())
