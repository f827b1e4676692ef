# Shopfloor: two commands on a fresh Debian machine (as root).
#   make demo   install what is missing, start the Slurm cluster and the hub, print the logins
#   make test   install test needs, start the cluster, run every test tier
VENV ?= /opt/shopfloor/venv

.PHONY: demo demo-detach demo-down test unit bench

demo:
	bash scripts/bootstrap.sh
	$(VENV)/bin/shopfloor demo

demo-detach:
	bash scripts/bootstrap.sh
	$(VENV)/bin/shopfloor demo --detach

demo-down:
	$(VENV)/bin/shopfloor demo --down

test:
	bash scripts/test.sh

unit:
	$(VENV)/bin/pytest -p no:cacheprovider tests/unit

bench:
	cd $(CURDIR) && $(VENV)/bin/python -m benchmarks.spawn
