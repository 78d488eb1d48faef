"""siaga: DRC runbooks, the lab and the `siaga` command."""
