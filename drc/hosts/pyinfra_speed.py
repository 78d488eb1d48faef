"""Same answers, less workstation CPU per operation and host: three pyinfra helpers that redo
constant work at every operation of every host (issue 8 point 7, the 16-host goal).

Installed by `drc.hosts.run_deploy` (the child process that drives pyinfra's API) before any deploy
file loads. Each replacement returns what pyinfra's own function returns (tests/test_pyinfra_speed.py
compares them); where pyinfra lacks the function (another 3.x), nothing is replaced.

Measured on a no-change re-run of remote access on 16 lab hosts (352 operations, 784 global
argument sets, 768 formatted fact commands): the child's CPU went from 1.33-1.49 s to 0.92-0.99 s
(user, 4 runs each, alternated). That CPU is single-threaded and on the critical path of a
many-host run.

- `arguments.all_global_arguments()` runs `typing.get_type_hints(AllArguments)` (evaluating ~30
  string annotations) at every operation and every uncached fact read: the answer is a constant.
- `util.get_operation_order_from_stack()` calls `inspect.stack()`, which reads the source line of
  every frame (file stat, module lookup, linecache) only to use each frame's file name and line
  number: walking the frames gives the same two values.
- `command.make_formatted_string_command()` splits the same few fact command templates (`stat`,
  `sha1sum`, ...) with `shlex` for every file fact of every host: the split is memoised.
"""

from __future__ import annotations

import functools
import importlib
import shlex
import sys
from types import SimpleNamespace

_installed = False


def _frames_outermost_first(frame) -> list:
    frames = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    return frames


def install() -> None:
    """Replace the three helpers (idempotent)."""
    global _installed
    if _installed:
        return
    # by module path: `pyinfra.api` itself exports the decorator `operation` under the module's name
    arguments, command, facts, operation, util = (importlib.import_module(f"pyinfra.api.{m}")
                                                   for m in ("arguments", "command", "facts", "operation", "util"))

    if callable(getattr(arguments, "all_global_arguments", None)) and hasattr(arguments, "AllArguments"):
        hints = tuple(arguments.all_global_arguments())

        def all_global_arguments() -> list:
            return list(hints)

        for module in (arguments, facts):
            if hasattr(module, "all_global_arguments"):
                module.all_global_arguments = all_global_arguments

    original_order = getattr(util, "get_operation_order_from_stack", None)
    install_dir = getattr(util, "PYINFRA_INSTALL_DIR", None)
    if original_order is not None and install_dir is not None and hasattr(operation, "get_operation_order_from_stack"):
        import pyinfra

        def get_operation_order_from_stack(state) -> list:
            # pyinfra's: the stack outermost first; from the first frame of the current deploy
            # file on (none if it is not on the stack), the line numbers of the frames outside
            # pyinfra, after the deploy file's number in CLI mode.
            frames = _frames_outermost_first(sys._getframe(1))
            i = 0
            if state.current_deploy_filename:  # not found: pyinfra's loop ends on its own frame
                i = next((n for n, f in enumerate(frames) if f.f_code.co_filename == state.current_deploy_filename),
                         len(frames))
            line_numbers = [state.current_op_file_number] if pyinfra.is_cli else []
            line_numbers += [f.f_lineno for f in frames[i:] if not f.f_code.co_filename.startswith(install_dir)]
            return line_numbers

        get_operation_order_from_stack.original = original_order
        operation.get_operation_order_from_stack = get_operation_order_from_stack
        util.get_operation_order_from_stack = get_operation_order_from_stack

    prefer_aead_ciphers()

    if getattr(command, "shlex", None) is shlex:
        split = functools.lru_cache(maxsize=1024)(lambda s: tuple(shlex.split(s)))
        command.shlex = SimpleNamespace(split=lambda s, *a, **kw: list(split(s)) if not a and not kw else shlex.split(s, *a, **kw),
                                        quote=shlex.quote, join=shlex.join)
    _installed = True


def prefer_aead_ciphers() -> None:
    """paramiko offers aes*-ctr first, with a MAC whose check it does in Python byte by byte
    (`constant_time_bytes_eq` over each packet); AES-GCM (authenticated encryption, done by
    `cryptography`) has no separate MAC. Offered first, it is what sshd picks when it allows it
    (Debian's default and roles/ssh_hardening do); every other cipher stays offered."""
    import paramiko

    preferred = paramiko.Transport._preferred_ciphers
    aead = tuple(c for c in ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com") if c in preferred)
    paramiko.Transport._preferred_ciphers = aead + tuple(c for c in preferred if c not in aead)
