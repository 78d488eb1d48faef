# siaga — `make demo` raises the lab and deploys it; `make test` runs every test. Both as root.
VENV   := .venv
BIN    := $(VENV)/bin
# Debian packages the admin workstation (and the lab) needs. postgresql: the unit tests of
# restore-test's checks run on a throwaway cluster (tests/test_restore_profile_pg.py). gnupg: the
# encrypted escrow (siaga secrets escrow).
APT_PACKAGES := debootstrap systemd-container nftables iproute2 openssh-client python3-venv lua5.3 postgresql gnupg
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup apt lab lab-down deploy demo test unit bench clean

setup: apt $(VENV)/.installed

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

lab: setup
	$(BIN)/siaga lab up

lab-down: setup
	$(BIN)/siaga lab down

deploy: setup
	$(BIN)/pyinfra -y inventory/lab.py deploys/site.py

demo: setup
	$(BIN)/python -m drc.lab.demo

unit: setup
	$(BIN)/pytest -m "not lab" -q

# Three pytest runs side by side, so the suite takes the time of its longest part: on a lab of their
# own (testown), the switch-over's module then the failover's (it kills and partitions hosts, and
# ends with the service home); Debian 12's module on its lab test12 (a short one: it is over early);
# and the rest (unit tests and lab `test`, shared by every other lab module). The outputs of the
# runs beside the rest are printed after its output; the target fails when any of them fails.
OWN_LAB_TESTS := tests/lab/test_switchover.py tests/lab/test_failover.py
DEBIAN12_TESTS := tests/lab/test_platform_debian12.py

test: setup
	@out=$$(mktemp -d /tmp/siaga-test.XXXXXX); \
	SIAGA_TEST_LAB=testown $(BIN)/pytest -p no:cacheprovider --basetemp=$$out/own $(OWN_LAB_TESTS) >$$out/own.log 2>&1 & own=$$!; \
	$(BIN)/pytest -p no:cacheprovider --basetemp=$$out/deb12 $(DEBIAN12_TESTS) >$$out/deb12.log 2>&1 & deb12=$$!; \
	$(BIN)/pytest --basetemp=$$out/shared $(addprefix --ignore=,$(OWN_LAB_TESTS) $(DEBIAN12_TESTS)); shared=$$?; \
	wait $$own; own_rc=$$?; wait $$deb12; deb12_rc=$$?; \
	echo "=== beside the rest: $(DEBIAN12_TESTS) (exit $$deb12_rc) ==="; cat $$out/deb12.log; \
	echo "=== beside the rest: $(OWN_LAB_TESTS) (exit $$own_rc) ==="; cat $$out/own.log; \
	rm -rf $$out; \
	[ $$shared -eq 0 ] && [ $$own_rc -eq 0 ] && [ $$deb12_rc -eq 0 ]

# Each figure is printed whether or not its goal is met ('-': go on to the next one).
bench: setup
	-$(BIN)/python bench/site_check.py
	-$(BIN)/python bench/lab_up.py
	-$(BIN)/python bench/deploy_rerun.py
	-$(BIN)/python bench/deploy_rerun.py --deploy deploys/site.py
	-$(BIN)/python bench/ansible_ratio.py
	-$(BIN)/python bench/deploy_scale.py
	-$(BIN)/python bench/replication_lag.py
	-$(BIN)/python bench/initial_drc_build.py
	-$(BIN)/python bench/backup.py
	-$(BIN)/python bench/switchover.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
