"""The local lab of real Debian hosts (nspawn machines, one netns each): used by `siaga lab`, `make
demo`, the tests and bench/ only."""
