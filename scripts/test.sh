#!/usr/bin/env bash
# The README's test command: prepare the machine, bring up the real local cluster, run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SHOPFLOOR_VENV:-/opt/shopfloor/venv}"

bash scripts/bootstrap.sh --test
"$VENV/bin/ruff" check .
# Layering (.importlinter): kernel-side code never imports JupyterHub; the core never imports
# the hub side or the views. It reads the installed package, as users get it.
"$VENV/bin/lint-imports" --no-cache
"$VENV/bin/shopfloor" cluster up
# Tests import the installed package (the client's folders map into the shopfloor namespace).
if [ "$#" -eq 0 ]; then set -- tests/unit tests/integration tests/browser; fi
exec "$VENV/bin/pytest" -p no:cacheprovider "$@"
