"""engine.secrets as pure logic: the declared marker, sealing against what is stored, the key
from the environment; `vigil secrets keygen` and vigil up's key file."""

from __future__ import annotations

import stat
import subprocess
import sys
from typing import Annotated

import pytest
from cryptography.fernet import Fernet
from pydantic import BaseModel, ValidationError

from engine.secrets import (
    PREFIX,
    REDACTED,
    Keyring,
    Secret,
    SecretError,
    generate_key,
    opened,
    redacted,
    seal_spec,
)
from engine.settings import SettingsError
from executors.kinds.postgres_probe import PostgresSpec
from executors.kinds.redis_probe import RedisSpec
from vigil.embedded import Embedded

KEYRING = Keyring([generate_key()])


class Declared(BaseModel):
    """A spec with each way of declaring a secret."""

    token: Annotated[str | None, Secret()] = None
    headers: Annotated[dict[str, str], Secret(keys=frozenset({"x-api-key"}))] = {}


def test_the_marker_stands_for_the_stored_value_and_anything_else_is_checked():
    assert PostgresSpec(dsn=REDACTED).dsn == REDACTED
    assert RedisSpec(url=REDACTED).url == REDACTED
    with pytest.raises(ValidationError, match="postgresql://"):
        PostgresSpec(dsn="mysql://x")
    with pytest.raises(ValidationError, match="redis://"):
        RedisSpec(url="http://x")


def test_a_mapping_secret_is_kept_whatever_the_case_of_its_name():
    first = seal_spec(KEYRING, Declared, {"headers": {"X-Api-Key": "k", "Accept": "a"}}, None)
    assert first["headers"]["X-Api-Key"].startswith(PREFIX)
    assert first["headers"]["Accept"] == "a"
    again = seal_spec(KEYRING, Declared, {"headers": {"x-api-key": REDACTED}}, first)
    assert again["headers"]["x-api-key"] == first["headers"]["X-Api-Key"]
    assert redacted(first) == {"headers": {"X-Api-Key": REDACTED, "Accept": "a"}}


def test_the_executor_opens_the_declared_fields_only():
    spec = {"token": KEYRING.seal("token", "t"), "other": KEYRING.seal("other", "o")}
    plain = opened(KEYRING, Declared, spec)
    assert (plain["token"], plain["other"]) == ("t", spec["other"])
    assert spec["token"].startswith(PREFIX)  # the event's own copy stays sealed


def test_the_marker_without_a_stored_secret_names_the_field():
    with pytest.raises(SecretError) as caught:
        seal_spec(KEYRING, Declared, {"token": REDACTED}, {"token": None})
    assert caught.value.field == "token"


def test_the_key_comes_from_the_variable_or_its_file(tmp_path):
    old, new = generate_key(), generate_key()
    sealed = Keyring([old]).seal("password", "pw")
    path = tmp_path / "key"
    path.write_text(f"{new}, {old}\n")
    both = Keyring.from_env({"VIGIL_SECRET_KEY_FILE": str(path)})
    assert both.open("password", sealed) == "pw"
    assert Keyring([new]).open("password", both.reseal("password", sealed)) == "pw"
    with pytest.raises(SettingsError, match="VIGIL_SECRET_KEY"):
        Keyring.from_env({"VIGIL_SECRET_KEY": "not-a-key"})


def test_keygen_prints_a_fernet_key():
    # Its own process: main() configures the logging of the process it runs in.
    done = subprocess.run([sys.executable, "-m", "vigil.cli", "secrets", "keygen"],
                          capture_output=True, text=True, check=True, timeout=60)
    Fernet(done.stdout.strip())


def test_vigil_up_makes_its_key_once_readable_by_its_user_alone(tmp_path):
    embedded = Embedded(tmp_path)
    path = embedded.secret_key()
    key = path.read_text()
    Fernet(key.strip())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert embedded.secret_key().read_text() == key
