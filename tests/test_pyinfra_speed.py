"""drc/hosts/pyinfra_speed.py: each replacement answers as pyinfra's own function does."""

from __future__ import annotations

import importlib
import shlex
from types import SimpleNamespace

import pytest

pytest.importorskip("pyinfra")

import pyinfra

from drc.hosts import pyinfra_speed

arguments = importlib.import_module("pyinfra.api.arguments")
command = importlib.import_module("pyinfra.api.command")
operation = importlib.import_module("pyinfra.api.operation")
util = importlib.import_module("pyinfra.api.util")

# pyinfra's own functions, taken before any replacement
ORIGINAL_ORDER = getattr(util.get_operation_order_from_stack, "original", util.get_operation_order_from_stack)
ORIGINAL_HINTS = arguments.get_type_hints


@pytest.fixture(scope="module")
def installed():
    pyinfra_speed.install()
    return SimpleNamespace(order=operation.get_operation_order_from_stack)


def _both(order, state):
    # both called from this same frame, as pyinfra's operation decorator calls its helper
    return ORIGINAL_ORDER(state), order(state)


def _nested(depth, order, state):
    if depth:
        return _nested(depth - 1, order,
                       state)  # a call spread over two lines: the line pyinfra reports is the call's first
    return _both(order, state)


@pytest.mark.parametrize("cli", [True, False])
@pytest.mark.parametrize("deploy_file", [__file__, "/nowhere/deploy.py", None])
def test_operation_order_is_pyinfras(installed, monkeypatch, cli, deploy_file):
    monkeypatch.setattr(pyinfra, "is_cli", cli)
    state = SimpleNamespace(current_deploy_filename=deploy_file, current_op_file_number=3)
    for depth in (0, 1, 4):
        original, ours = _nested(depth, installed.order, state)
        assert ours == original
        if deploy_file != "/nowhere/deploy.py":  # else pyinfra gives only the deploy file's number
            assert len(ours) > (1 if cli else 0)


def test_global_arguments_are_pyinfras(installed):
    expected = list(ORIGINAL_HINTS(arguments.AllArguments).items())
    assert arguments.all_global_arguments() == expected
    first = arguments.all_global_arguments()
    first.clear()  # a caller changing its list changes nobody else's
    assert arguments.all_global_arguments() == expected


def test_formatted_commands_are_pyinfras(installed):
    template = "stat -c 'user=%U group=%G mode=%A' {0} 2> /dev/null || ls -ld {0}"
    for path in ("/etc/issue.net", "/home/budi/.ssh", "/tmp/a b"):
        cmd = command.make_formatted_string_command(template, command.QuoteString(path))
        assert str(cmd) == str(command.StringCommand(*[
            b.replace("{0}", shlex.quote(path)) if "{0}" in b else b for b in shlex.split(template)]))
    assert command.shlex.split("a 'b c'") == ["a", "b c"]
    assert command.shlex.split("a # b", comments=True) == ["a"]


def test_aes_gcm_offered_first_and_nothing_dropped(installed):
    import paramiko

    ciphers = paramiko.Transport._preferred_ciphers
    assert ciphers[0] == "aes128-gcm@openssh.com"
    assert {"aes256-ctr", "aes128-ctr", "aes256-gcm@openssh.com"} <= set(ciphers)
