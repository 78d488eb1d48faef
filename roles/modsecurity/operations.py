"""Operations the modsecurity role needs and pyinfra lacks. Each reads facts and yields commands."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation

from roles.managed_files import fix_ownership, is_current, log_diff, upload
from roles.spse_app.facts import ApacheEnabled


@operation()
def apache_module_config(module: str, enabled: bool, files: dict[str, str], mode: int = 0o644):
    """
    Config files Apache reads and a module on or off, changed together and kept only if
    ``apache2ctl configtest`` accepts the result; then Apache is reloaded (restarted when the
    module was switched). A rejected config is rolled back (each file as it was, or removed if it
    was new; the module as it was), Apache is not touched and the operation fails.

    + module: the Apache module (a2enmod name)
    + enabled: whether it must be enabled
    + files: path -> whole content, root-owned
    + mode: their permission bits
    """
    mods = (host.get_fact(ApacheEnabled) or {}).get("mods", [])
    switch = enabled != (module in mods)
    changed = [p for p, content in files.items() if not is_current(p, content)]
    fixes = [c for p in files if p not in changed for c in fix_ownership(p, mode)]
    if not changed and not switch:
        if not fixes:
            host.noop(f"Apache module {module} and its {len(files)} config files are as wanted")
        yield from fixes
        return
    yield from fixes
    for path in changed:
        log_diff(path, files[path])
        old, new = QuoteString(f"{path}.siaga-old"), QuoteString(f"{path}.siaga-new")
        # The previous version kept beside it until configtest passed (none: the file was new).
        yield StringCommand("if [ -e", QuoteString(path), "]; then cp -p", QuoteString(path), old, "; else rm -f", old, "; fi")
        yield from upload(files[path], f"{path}.siaga-new", mode)
        yield StringCommand("mv", "-f", new, QuoteString(path))
    if switch:
        yield StringCommand("a2enmod" if enabled else "a2dismod", "-q", *([] if enabled else ["-f"]), QuoteString(module))
    undo = [f"if [ -e {p}.siaga-old ]; then mv -f {p}.siaga-old {p}; else rm -f {p}; fi;" for p in changed]
    if switch:
        undo.append(f"{'a2dismod -q -f' if enabled else 'a2enmod -q'} {module};")
    yield StringCommand(
        "apache2ctl configtest ||", "{", *undo,
        "echo", QuoteString(f"siaga: apache2ctl configtest rejected the new {module} config (see above); the previous "
                            "files and module state were restored and Apache was not reloaded"), ">&2;", "exit 1;", "}",
    )
    for path in changed:
        yield StringCommand("rm", "-f", QuoteString(f"{path}.siaga-old"))
    # A module switched needs a restart; changed rules only a graceful reload.
    yield StringCommand("systemctl", "restart" if switch else "reload", "apache2")
