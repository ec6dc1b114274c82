#!/usr/bin/env bash
# Installs the Debian packages the terminal, its simulators and its tests need, if missing.
# As root: installs them with apt-get. Otherwise: prints the exact command and fails.
set -euo pipefail

PYTHON=${PYTHON:-python3}
# pcscd + vsmartcard-vpcd serve the simulated card to PC/SC programs;
# swig + libpcsclite-dev build pyscard (PyPI ships it as source only);
# mosquitto is the fleet's MQTT broker in the tests and the demo (started by them, never as a service).
wanted=(pcscd vsmartcard-vpcd swig libpcsclite-dev mosquitto)

command -v cc >/dev/null 2>&1 || wanted+=(gcc)
if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  wanted+=(python3-venv)
fi
if ! "$PYTHON" - <<'PY' >/dev/null 2>&1
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
PY
then
  wanted+=(python3-dev)
fi

missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "Missing Debian packages: ${missing[*]}" >&2
  echo "Install them with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "Installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
