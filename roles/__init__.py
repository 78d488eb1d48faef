"""Reusable pyinfra @deploy roles. One folder per role: deploy code, typed defaults, templates, README."""
