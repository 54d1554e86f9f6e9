import json
import os
import stat

import pytest

from tests.engine import errors, keys


def test_recovery_code_round_trip():
    key = keys.LocalKey.generate()
    code = key.recovery_code()
    assert all(len(group) <= 4 for group in code.split("-"))
    assert keys.LocalKey.from_recovery_code(code) == key
    # Read back from paper: lower case, spaces instead of dashes, line breaks.
    assert keys.LocalKey.from_recovery_code(code.lower().replace("-", " ")) == key


@pytest.mark.parametrize("damage", ["typo", "missing", "garbage"])
def test_mistyped_recovery_code_is_refused(damage):
    code = keys.LocalKey.generate().recovery_code()
    bad = {
        "typo": code[:5] + ("A" if code[5] != "A" else "B") + code[6:],
        "missing": code[:-5],
        "garbage": code[:10] + "!!" + code[12:],
    }[damage]
    with pytest.raises(errors.KeyUnavailable, match="recovery code"):
        keys.LocalKey.from_recovery_code(bad)


def test_key_file_is_private_and_checked(tmp_path):
    path = tmp_path / "keys" / "master.key"
    key = keys.LocalKey.generate()
    key.save(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert keys.LocalKey.load(str(path)) == key
    document = json.loads(path.read_text())
    document["key_id"] = "local-0000000000000000"
    path.write_text(json.dumps(document))
    with pytest.raises(errors.KeyUnavailable, match="damaged"):
        keys.LocalKey.load(str(path))


def test_missing_key_file_says_how_to_recover(tmp_path):
    with pytest.raises(errors.KeyUnavailable, match="key import"):
        keys.LocalKey.load(str(tmp_path / "absent.key"))


def test_saving_never_replaces_another_key(tmp_path):
    path = str(tmp_path / "master.key")
    first = keys.LocalKey.generate()
    first.save(path)
    first.save(path)  # the same key again is fine
    with pytest.raises(errors.KeyUnavailable, match="already holds another key"):
        keys.LocalKey.generate().save(path)
    assert keys.LocalKey.load(path) == first


def test_key_id_does_not_reveal_the_key():
    key = keys.LocalKey.generate()
    assert key.key.hex() not in key.key_id
    assert key.key_id == keys.local_key_id(key.key)
    assert keys.LocalKey.generate().key_id != key.key_id


@pytest.mark.parametrize("arn", ["", "alias/backup", "arn:aws:s3:::bucket"])
def test_kms_keys_need_key_arns(arn):
    with pytest.raises(errors.ConfigError):
        keys.KmsKeys((arn,) if arn else ())
