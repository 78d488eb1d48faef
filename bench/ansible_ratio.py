"""siaga vs Ansible: one no-change re-run of each on the 2 lab hosts, and the ratio (goal: siaga >= 4x faster, issue 8).

Usage: .venv/bin/python bench/ansible_ratio.py [--lab NAME] [--keep]
Raises its own lab ("bench-ansible"; --lab bench-deploy reuses the one `bench/deploy_rerun.py --keep`
left up), converges it with siaga, then with the same controls written as an
Ansible playbook (bench/peers/ansible/site.yml, inventory generated from the lab's site file), then
times one no-change re-run of each: deploys/remote_access.py through pyinfra's API (drc.hosts.deploy.run_deploy)
(the site deploy's base, ssh_hardening and firewall roles: the controls the playbook has; the site
deploy's data tier has no Ansible peer) and `ansible-playbook site.yml`. Both must report no changes (pyinfra: no operation changed; Ansible:
changed=0 for every host in the PLAY RECAP), otherwise the exit status is 2. The goal itself only
changes the message: exit 0 whether it is met or not. The lab is removed at the end unless --keep.

ansible-core comes from PyPI into bench/.venv-ansible (created here if missing). Ansible gets its
best settings (bench/peers/ansible/ansible.cfg): pipelining, ControlPersist, no fact gathering, no
interpreter discovery. Each ansible-playbook run starts with no SSH master connection, as each
pyinfra run does.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from drc.hosts.deploy import REPO, idempotence_check, machine_load, run_deploy
from drc.lab.lab import Lab

sys.path.insert(0, str(REPO / "bench" / "peers" / "ansible"))
from make_inventory import write_inventory  # noqa: E402

GOAL_RATIO = 4.0
# The site deploy's remote-access roles (base, ssh_hardening, firewall): the controls the peer has.
# deploys/site.py also runs the data tier, which the Ansible peer does not implement.
SIAGA_DEPLOY = "deploys/remote_access.py"
PEER = REPO / "bench" / "peers" / "ansible"
VENV = REPO / "bench" / ".venv-ansible"
PLAYBOOK = VENV / "bin" / "ansible-playbook"
RECAP_RE = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@dataclass
class PlaybookResult:
    returncode: int
    output: str
    seconds: float

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP per host: {"primary": {"ok": 22, "changed": 0, "unreachable": 0, "failed": 0}}."""
        tail = self.output.rsplit("PLAY RECAP", 1)[-1] if "PLAY RECAP" in self.output else ""
        return {m[1]: {"ok": int(m[2]), "changed": int(m[3]), "unreachable": int(m[4]), "failed": int(m[5])}
                for m in RECAP_RE.finditer(tail)}

    @property
    def changed_tasks(self) -> list[str]:
        """Names of the tasks that reported `changed` on some host."""
        out, task = [], None
        for line in self.output.splitlines():
            if m := re.match(r"^(?:TASK|RUNNING HANDLER) \[(.*)\]", line):
                task = m.group(1)
            elif line.startswith("changed:") and task and task not in out:
                out.append(task)
        return out

    @property
    def retries(self) -> int:
        """Task attempts Ansible retried (`until:`), e.g. the lab's flaky hostnamed start."""
        return self.output.count("FAILED - RETRYING")

    def ok(self, hosts: list[str]) -> bool:
        recap = self.recap
        return self.returncode == 0 and sorted(recap) == sorted(hosts) and \
            all(r["failed"] == 0 and r["unreachable"] == 0 for r in recap.values())

    def unchanged(self, hosts: list[str]) -> bool:
        return self.ok(hosts) and all(r["changed"] == 0 for r in self.recap.values())


def ensure_ansible() -> None:
    """bench/.venv-ansible with ansible-core from PyPI (bench/peers/ansible/requirements.txt)."""
    if PLAYBOOK.exists():
        return
    print(f"creating {VENV.relative_to(REPO)} with ansible-core from PyPI (once)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "-r", str(PEER / "requirements.txt")], check=True)


def run_playbook(inventory: Path) -> PlaybookResult:
    """ansible-playbook with the peer's ansible.cfg, starting without SSH master connections; the
    masters it opened are closed afterwards (they would otherwise linger for ControlPersist)."""
    with tempfile.TemporaryDirectory(prefix="siaga-cp-") as control_dir:
        env = {**os.environ, "ANSIBLE_CONFIG": str(PEER / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_SSH_CONTROL_PATH_DIR": control_dir}
        start = time.monotonic()
        proc = subprocess.run([str(PLAYBOOK), "-i", str(inventory), str(PEER / "site.yml")],
                              cwd=PEER, capture_output=True, text=True, env=env, timeout=1800)
        seconds = time.monotonic() - start
        for socket in Path(control_dir).iterdir():
            subprocess.run(["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "lab-host"],
                           capture_output=True, timeout=10)
    return PlaybookResult(proc.returncode, proc.stdout + proc.stderr, seconds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lab", default="bench-ansible", help="lab to use (raised if it is not up; default bench-ansible)")
    ap.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    args = ap.parse_args()
    print("load average before: " + machine_load().removeprefix("load average "))
    ensure_ansible()
    lab = Lab(args.lab)
    hosts = ["primary", "drc"]

    def fail(what: str, output: str) -> int:
        print(output[-6000:], file=sys.stderr)
        print(what, file=sys.stderr)
        return 2

    try:
        lab.up(log=lambda _m: None)
        inventory = write_inventory(lab.site_file, lab.dir / "ansible" / "inventory.yml")

        converge = run_deploy(lab.site_file, SIAGA_DEPLOY)
        if not converge.ok:
            return fail(f"siaga converge failed (exit {converge.returncode})", converge.output)
        print(f"siaga converge: {len(converge.changed)} operations changed something ({converge.seconds:.1f} s)")
        a_converge = run_playbook(inventory)
        if not a_converge.ok(hosts):
            return fail(f"Ansible converge failed (exit {a_converge.returncode})", a_converge.output)
        changed = {h: r["changed"] for h, r in a_converge.recap.items()}
        print(f"Ansible converge after siaga: changed {changed} ({a_converge.seconds:.1f} s)")
        if a_converge.changed_tasks:
            # On hosts siaga just converged, a change means the peer differs from the roles.
            print(f"  the playbook changed what siaga had set: {a_converge.changed_tasks}; "
                  f"bench/peers/ansible no longer matches the roles")

        siaga, problem = idempotence_check(lab.site_file, SIAGA_DEPLOY)
        if problem:
            return fail(f"siaga re-run after Ansible was not a no-change run: {problem}", siaga.output)
        ansible = run_playbook(inventory)
        if not ansible.unchanged(hosts):
            return fail(f"Ansible re-run was not a no-change run (exit {ansible.returncode}, recap {ansible.recap})",
                        ansible.output)
    finally:
        if not args.keep:
            lab.down(log=lambda _m: None)

    tasks = {h: r["ok"] for h, r in ansible.recap.items()}
    ratio = ansible.seconds / siaga.seconds
    print(f"siaga no-change re-run ({SIAGA_DEPLOY}, 2 hosts, 0 changes): {siaga.seconds:.1f} s")
    retried = f", {ansible.retries} task attempts retried" if ansible.retries else ""
    print(f"Ansible no-change re-run (ansible-playbook, 2 hosts, changed=0, tasks ok {tasks}{retried}): "
          f"{ansible.seconds:.1f} s")
    print(f"ratio Ansible / siaga: {ratio:.2f}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"(goal siaga >= {GOAL_RATIO:.0f}x faster: {'met' if ratio >= GOAL_RATIO else 'NOT met'})")
    if args.keep:
        print(f"lab '{args.lab}' left up: .venv/bin/siaga --lab {args.lab} lab down")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
