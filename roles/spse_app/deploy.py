"""spse_app role: the SPSE application (the lab's stand-in, or a real SPSE) behind Apache.

/home/<user>/<app_name>/ with the control script (start|stop|restart|status|migration) wrapped
by a systemd unit, uploads under /home/file/file_prod, Apache with mod_proxy and mod_ssl on 443
and 80 redirecting to 443. The application runs on the active site only; elsewhere it is
installed and stopped (a standby database cannot take writes). SOP IN-2, IN-4, EM-5.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from roles.postgresql.deploy import install
from roles.postgresql.defaults import PostgresqlSettings
from roles.templating import render

from . import operations as app_ops
from .defaults import FORWARD_CONF, MAINTENANCE_PAGE, SpseAppSettings
from .facts import SchemaVersion

if TYPE_CHECKING:
    from drc.site import Site

ROLE_DIR = Path(__file__).parent
HEADER = "Managed by siaga (roles/spse_app); local changes are overwritten by the next deploy."
SITE_NAME = "siaga-spse"
# Server-wide hardening (ServerTokens, ServerSignature, TraceEnable): conf-available/<name>.conf.
SECURITY_CONF = "siaga-security"
SELF_SIGNED = ("/etc/ssl/certs/siaga-spse-selfsigned.pem", "/etc/ssl/private/siaga-spse-selfsigned.key")
MIGRATIONS = sorted((ROLE_DIR / "files" / "migrations").glob("*.sql"))


def app_dir(s: SpseAppSettings) -> str:
    return f"/home/{s.user}/{s.app_name}"


def latest_migration() -> int:
    return max(int(p.name.split("_", 1)[0]) for p in MIGRATIONS)


def render_vhost(s: SpseAppSettings, server_name: str) -> str:
    cert, key = (s.tls_certificate_file, s.tls_key_file) if s.tls_certificate_file else SELF_SIGNED
    return render(ROLE_DIR, "vhost.conf.j2", header=HEADER, s=s, server_name=server_name, cert=cert, key=key,
                  chain=s.tls_chain_file, maintenance_page=MAINTENANCE_PAGE, forward_conf=FORWARD_CONF)


def render_security_conf() -> str:
    return render(ROLE_DIR, "security.conf.j2", header=HEADER)


def app_files(s: SpseAppSettings, pg: PostgresqlSettings) -> dict[str, str | bytes]:
    """The application's files as this role writes them (path on the host -> content): the deploy
    puts them, and the BK-2 pre-change check (roles/backup/prechange.py) compares them."""
    adir = app_dir(s)
    out: dict[str, str | bytes] = {}
    if s.install == "standin":
        out[f"{adir}/standin.py"] = (ROLE_DIR / "files" / "standin.py").read_bytes()
        out[f"{adir}/conf/standin.json"] = render(ROLE_DIR, "standin.json.j2", s=s, app_dir=adir, database=pg.database,
                                                  db_user=pg.owner)
        out[f"{adir}/{s.control_script}"] = render(ROLE_DIR, "control.sh.j2", header=HEADER, s=s, app_dir=adir)
    out[f"/etc/systemd/system/{s.unit}"] = render(ROLE_DIR, "unit.service.j2", header=HEADER, s=s, app_dir=adir)
    return out


@deploy("siaga spse_app")
def spse_app(site: Site, host_name: str, s: SpseAppSettings, pg: PostgresqlSettings, is_db_source: bool) -> None:
    """Install the application and Apache. It runs where the site file says users are served
    (`active_site`); the stand-in's schema is migrated on the database primary only."""
    run_here = site.site_of[host_name] == site.active_site
    adir = app_dir(s)
    install(["apache2", "python3", "python3-psycopg2", "openssl", "ssl-cert"], "spse_app")

    # The account and directories, as on SPSE servers.
    server.user(name=f"Application account {s.user}", user=s.user, home=f"/home/{s.user}", shell="/bin/bash",
                create_home=True, system=False)
    files.directory(name=f"{s.uploads_root} (uploads, owned by {s.user})", path=s.uploads_root, user=s.user,
                    group=s.user, mode="750")
    files.directory(name=f"{s.uploads_dir}", path=s.uploads_dir, user=s.user, group=s.user, mode="750")
    files.directory(name=adir, path=adir, user="root", group=s.user, mode="750")
    for sub, owner, mode in (("conf", "root", "750"), ("migrations", "root", "750"), ("run", s.user, "750"), ("logs", s.user, "750")):
        files.directory(name=f"{adir}/{sub}", path=f"{adir}/{sub}", user=owner, group=s.user, mode=mode)

    changed = []
    content = app_files(s, pg)
    if s.install == "standin":
        changed.append(files.put(name=f"{adir}/standin.py", src=str(ROLE_DIR / "files" / "standin.py"),
                                 dest=f"{adir}/standin.py", user="root", group=s.user, mode="750"))
        for m in MIGRATIONS:
            files.put(name=f"Migration {m.name}", src=str(m), dest=f"{adir}/migrations/{m.name}", user="root",
                      group=s.user, mode="640")
        conf = f"{adir}/conf/standin.json"
        changed.append(files.put(name=conf, dest=conf, user="root", group=s.user, mode="640", src=_io(content[conf])))
        control = f"{adir}/{s.control_script}"
        changed.append(files.put(name=f"Control script {control}", dest=control, user="root", group=s.user, mode="750",
                                 src=_io(content[control])))
    unit_path = f"/etc/systemd/system/{s.unit}"
    unit = files.put(name=f"Unit {s.unit}", dest=unit_path, mode="644", src=_io(content[unit_path]))

    if is_db_source and s.install == "standin" and host.get_fact(SchemaVersion, database=pg.database) != latest_migration():
        server.shell(name=f"Schema migration of {pg.database}",
                     commands=[f"runuser -u {s.user} -- {adir}/{s.control_script} migration"])

    # The application: running on the active site, installed and stopped elsewhere.
    systemd.daemon_reload(name="systemd reloaded after a unit change", _if=unit.did_change)
    systemd.service(name=f"{s.unit} running on the active site only, stopped elsewhere",
                    service=s.unit, running=run_here, enabled=run_here)
    if run_here:
        systemd.service(name=f"{s.unit} restarted after a change", service=s.unit, restarted=True,
                        _if=any_changed(unit, *changed))

    # Apache in front: 80 redirects, 443 proxies the context path (SOP IN-2).
    server_name = s.server_name or host_name
    tls_puts = [files.put(name=f"TLS {what} {dest} (from the workstation)", src=str(src), dest=dest, user="root", group="root",
                          mode="600" if what == "key" else "644")
                for what, src, dest in (("certificate", s.tls_certificate_source, s.tls_certificate_file),
                                        ("key", s.tls_key_source, s.tls_key_file),
                                        ("chain", s.tls_chain_source, s.tls_chain_file)) if src]
    if not s.tls_certificate_file:
        app_ops.self_signed_certificate(name="Self-signed certificate (lab; set spse_app.tls_certificate_file)",
                                        cert=SELF_SIGNED[0], key=SELF_SIGNED[1], common_name=server_name)
    vhost = files.put(name=f"Apache site {SITE_NAME}", dest=f"/etc/apache2/sites-available/{SITE_NAME}.conf", mode="644",
                      src=_io(render_vhost(s, server_name)))
    security = files.put(name=f"Apache server hardening {SECURITY_CONF}.conf", dest=f"/etc/apache2/conf-available/{SECURITY_CONF}.conf",
                         mode="644", src=_io(render_security_conf()))
    # A switch-over's forward ends with the deploy that closes the switch-over (SOP EM-2 step 6).
    forward = files.file(name=f"{FORWARD_CONF} absent (a switch-over's forward ends here)", path=FORWARD_CONF, present=False)
    enabled = app_ops.apache_enabled(name="Apache: mod_proxy, mod_ssl, the SPSE site",
                                     mods=["proxy", "proxy_http", "ssl", "headers", "rewrite"],
                                     sites=[SITE_NAME], disable_sites=["000-default", "default-ssl"], confs=[SECURITY_CONF])
    systemd.service(name="apache2 running", service="apache2", running=True, enabled=True)
    # A site file change alone needs a reload; when apache_enabled acted it already restarted or
    # reloaded Apache with the new site file, so a second reload would only repeat it.
    reloaded = systemd.service(name="apache2 reloaded after a site change", service="apache2", reloaded=True,
                               _if=[any_changed(vhost, security, forward, *tls_puts), lambda: not enabled.did_change()])
    # configtest passes configs that still fail when Apache loads them (a key that does not match
    # its certificate, 443 taken by another program): a deploy that touched Apache fails unless
    # Apache then serves on 443. It only checks; it never stops or starts anything.
    server.shell(name="apache2 serving on 443 after this deploy changed it", commands=[APACHE_SERVING],
                 _if=any_changed(vhost, security, forward, enabled, reloaded, *tls_puts))


APACHE_SERVING = """for _ in $(seq 30); do
    systemctl is-active -q apache2 && ss -Hltn 'sport = :443' | grep -q LISTEN && exit 0
    sleep 1
done
echo 'apache2 is not serving on 443 30 s after this deploy changed it' >&2
systemctl status apache2 --no-pager >&2; exit 1"""


def _io(text: str):
    from io import StringIO

    return StringIO(text)
