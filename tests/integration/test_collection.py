"""The checkout is an installable Ansible collection, and its engine works from
an installed copy."""

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_version_matches_galaxy():
    from tests.engine import cli

    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert galaxy["version"] == cli.VERSION
    assert (galaxy["namespace"], galaxy["name"]) == ("cosmic", "backup")


def test_build_install_and_use_the_installed_engine(tmp_path):
    galaxy = str(Path(sys.executable).with_name("ansible-galaxy"))
    subprocess.run([galaxy, "collection", "build", str(REPO), "--output-path", str(tmp_path)],
                   check=True, capture_output=True)
    [tarball] = tmp_path.glob("cosmic-backup-*.tar.gz")
    listing = subprocess.run(["tar", "-tzf", str(tarball)], capture_output=True, text=True,
                             check=True).stdout.split()
    assert "plugins/module_utils/repository.py" in listing
    assert "galaxy.yml" not in listing and "MANIFEST.json" in listing
    assert not [name for name in listing if name.startswith((".venv", "var/", ".git/"))]

    installed = tmp_path / "collections"
    subprocess.run([galaxy, "collection", "install", "--force", str(tarball), "-p",
                    str(installed)],
                   check=True, capture_output=True)
    script = (
        f"import sys; sys.path.insert(0, {str(installed)!r})\n"
        "from ansible_collections.cosmic.backup.plugins.module_utils import keys, settings\n"
        f"keys.LocalKey.generate().save({str(tmp_path / 'k')!r})\n"
        f"vault = settings.build_vault({{'repositories': [{{'url': {str(tmp_path / 'r')!r}}}],"
        f" 'keys': {{'local_key_file': {str(tmp_path / 'k')!r}}}}})\n"
        "with vault.new_backup('config') as w:\n"
        "    w.add_bytes('x', b'hello')\n"
        "print(vault.open_object(vault.select('latest'), 'x').read().decode())\n"
        "import ansible_collections.cosmic.backup.plugins.module_utils as m\n"
        "print(m.__path__[0])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    said, location = result.stdout.split()
    assert said == "hello"
    assert location.startswith(str(installed))
