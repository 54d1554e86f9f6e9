#!/usr/bin/env bash
# Ansible's own sanity tests on a copy of the collection at the path
# ansible-test insists on (ansible_collections/cosmic/backup), offline.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Exactly what ships: build the collection and test the unpacked tarball.
dest=$work/ansible_collections/cosmic/backup
mkdir -p "$dest"
"$root/.venv/bin/ansible-galaxy" collection build "$root" --output-path "$work" >/dev/null
tar -xzf "$work"/cosmic-backup-*.tar.gz -C "$dest"
git -C "$root" ls-files --cached --others --exclude-standard tests/sanity | \
  (cd "$root" && xargs -r cp --parents -t "$dest")

# ansible-test fetches get-pip.py for its virtual environments; with no
# network but the package index, a stand-in that bootstraps pip with
# ensurepip and then installs what it was asked for does the same job.
cache=~/.ansible/test/cache
mkdir -p "$cache"
pip_version=$("$root/.venv/bin/python" - <<'PY'
import re, ansible_test._internal.python_requirements as requirements, inspect
print(re.search(r"pip='([0-9.]+)'", inspect.getsource(requirements.get_venv_packages))[1])
PY
)
cat > "$cache/get_pip_${pip_version//./_}.py" <<'PY'
import ensurepip, subprocess, sys
ensurepip.bootstrap(upgrade=True)
# get-pip.py options that pip itself does not know
args = [a for a in sys.argv[1:] if a not in ("--disable-pip-version-check", "--no-setuptools", "--no-wheel")]
# ansible-test gives pip a bare environment: name the system's CA bundle,
# which the machine's package-index proxy is signed by.
cert = ["--cert", "/etc/ssl/certs/ca-certificates.crt"]
if args:
    subprocess.check_call([sys.executable, "-m", "pip", "install", *cert, *args])
PY

cd "$dest"
export PATH="$root/.venv/bin:$PATH"
ansible-test sanity --python 3.11 --requirements --color no "$@"
