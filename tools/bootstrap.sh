#!/usr/bin/env bash
# Idempotent set-up shared by `make test`, `make drill` and `make bench`:
# Debian packages, the .venv from requirements.txt, and the collection link
# that lets ansible-playbook and Python find `cosmic.backup` in this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3 python3-venv git make tar zstd age restic pgbackrest
  postgresql-15 postgresql-client-15 openssh-server openssh-client
  iproute2 procps psmisc sudo curl
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a default cluster on 5432; the project runs its own clusters.
  $SUDO systemctl disable --now postgresql >/dev/null 2>&1 || true
fi

want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat .venv/.requirements.sha256 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: building .venv from requirements.txt"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  echo "$want" > .venv/.requirements.sha256
fi

# ansible_collections/cosmic/backup -> this checkout, for Ansible and for Python.
mkdir -p var/collections/ansible_collections/cosmic
ln -sfn ../../../.. var/collections/ansible_collections/cosmic/backup
# Bytecode for the engine, ahead of time: the host CLI starts once per WAL
# segment, and a caller with PYTHONDONTWRITEBYTECODE (or without write access)
# would otherwise compile every module on every start.
.venv/bin/python -m compileall -q plugins/module_utils
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$PWD/var/collections" > "$site/cosmic_backup_collection.pth"
