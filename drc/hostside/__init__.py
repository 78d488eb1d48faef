"""Programs that run ON the hosts with Debian's python3 (standard library only). Each is a real file,
shipped by a role to /usr/local/lib/siaga and linted and unit-tested here like any module."""
