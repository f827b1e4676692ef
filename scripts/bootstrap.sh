#!/usr/bin/env bash
# Prepare a fresh Debian machine for Shopfloor: system packages, the proxy, and a Python
# environment under /opt that every job user can read and execute. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${SHOPFLOOR_VENV:-/opt/shopfloor/venv}"
PYTHON="${SHOPFLOOR_PYTHON:-/usr/bin/python3}"
PACKAGES=(slurm-wlm slurmdbd mariadb-server munge sudo python3-venv procps psmisc)
if [ "${1:-}" = "--test" ]; then
  PACKAGES+=(chromium chromium-driver fonts-dejavu-core)
  # The hub on PostgreSQL is tested against a private cluster the test starts itself
  # (tests/integration/test_ops_postgresql.py); Debian's package brings initdb/pg_ctl.
  PACKAGES+=(postgresql)
fi
# Node.js may come from elsewhere (e.g. NodeSource, whose nodejs ships npm and conflicts with
# Debian's npm): only install Debian's when the commands are missing.
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  PACKAGES+=(nodejs npm)
fi

say() { echo "bootstrap: $*"; }

if [ "$(id -u)" != 0 ]; then
  echo "bootstrap: run as root (it installs Debian packages and creates users)" >&2
  exit 2
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v configurable-http-proxy >/dev/null; then
  say "installing configurable-http-proxy (npm)"
  npm install -g --no-fund --no-audit --loglevel=error configurable-http-proxy >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV from $PYTHON"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
fi
# torch first, pinned: the CPU build (a local wheel on these machines). Unpinned, pip would
# resolve a multi-GB CUDA build for the fine-tuning extra.
if ! "$VENV/bin/pip" install -q --disable-pip-version-check "torch==2.13.0" >/tmp/shopfloor-pip.log 2>&1; then
  tail -n 30 /tmp/shopfloor-pip.log >&2
  echo "bootstrap: installing torch==2.13.0 failed; full log in /tmp/shopfloor-pip.log" >&2
  exit 1
fi
# The JupyterLab extension (TypeScript) is built from source here and shipped prebuilt inside
# the package (share/jupyter/labextensions/@shopfloor/jupyterlab): sessions need no Node.js.
# JupyterLab's builder (jupyter-builder) comes with jupyterlab, so that goes in first; the
# package's data-files name the build output, so the build runs before Shopfloor's install.
# Rebuilt only when its sources are newer than the last build.
LAB_EXT=extensions/jupyterlab
LAB_OUT=src/shopfloor/lab/labextension
if [ ! -f "$LAB_OUT/package.json" ] || \
   [ -n "$(find "$LAB_EXT/src" "$LAB_EXT/style" "$LAB_EXT/package.json" "$LAB_EXT/package-lock.json" \
             "$LAB_EXT/tsconfig.json" -newer "$LAB_OUT/package.json" 2>/dev/null | head -1)" ]; then
  if ! "$VENV/bin/pip" install -q --disable-pip-version-check "jupyterlab>=4.6,<5" >/tmp/shopfloor-pip.log 2>&1; then
    tail -n 30 /tmp/shopfloor-pip.log >&2
    echo "bootstrap: installing jupyterlab failed; full log in /tmp/shopfloor-pip.log" >&2
    exit 1
  fi
  say "building the Shopfloor JupyterLab extension"
  if ! (cd "$LAB_EXT" && npm ci --no-audit --no-fund --loglevel=error && \
        PATH="$VENV/bin:$PATH" npm run build) >/tmp/shopfloor-labext.log 2>&1; then
    tail -n 30 /tmp/shopfloor-labext.log >&2
    echo "bootstrap: building $LAB_EXT failed; full log in /tmp/shopfloor-labext.log" >&2
    exit 1
  fi
fi
say "installing Shopfloor into $VENV"
if ! "$VENV/bin/pip" install -q --disable-pip-version-check ".[hub,session,ray,finetune,test,postgresql]" >/tmp/shopfloor-pip.log 2>&1; then
  tail -n 30 /tmp/shopfloor-pip.log >&2
  echo "bootstrap: pip install failed; full log in /tmp/shopfloor-pip.log" >&2
  exit 1
fi
# (from / so that the checkout's own shopfloor/ folder cannot shadow the installed package)
(cd / && "$VENV/bin/python" -c "import shopfloor.extensions.spawner") >/dev/null
# JupyterLab must not try to fetch news or updates: compute nodes usually have no internet.
mkdir -p "$VENV/share/jupyter/lab/settings"
cp hub_config/jupyterlab_overrides.json "$VENV/share/jupyter/lab/settings/overrides.json"
# Jobs run as the users: they must read and execute the environment, parents included.
chmod -R a+rX "$VENV"
d="$VENV"; while [ "$d" != / ]; do d=$(dirname "$d"); chmod a+x "$d"; done
# The site model catalog for fine-tuning: the demo models, built offline (no downloads).
(cd / && "$VENV/bin/shopfloor" models build-demo) >/dev/null
# The tests' OpenID provider (panva's oidc-provider, pinned in tests/oidc/package-lock.json),
# into the git-ignored tests/oidc/node_modules; the tests run it offline.
if [ "${1:-}" = "--test" ] && [ ! -d tests/oidc/node_modules/oidc-provider ]; then
  say "installing the tests' OpenID provider (npm ci in tests/oidc)"
  if ! (cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error) >/tmp/shopfloor-oidc.log 2>&1; then
    tail -n 30 /tmp/shopfloor-oidc.log >&2
    echo "bootstrap: npm ci in tests/oidc failed; full log in /tmp/shopfloor-oidc.log" >&2
    exit 1
  fi
fi
say "ready: $VENV/bin/shopfloor"
