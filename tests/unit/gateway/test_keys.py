"""Tests for gateway.keys and `booagent keys`: named keys, their file, the refusal to serve
the network without keys."""

from __future__ import annotations

import stat
from pathlib import Path

import msgspec
import pytest
import yaml
from click.testing import CliRunner

from gateway.auth import identify
from gateway.cli import main
from gateway.errors import AuthenticationFailed
from gateway.keys import KeysError, KeysFile, KeyStore, add_key, digest, keyring
from gateway.limits import Limits
from gateway.settings import Server, exposure

ALICE = "sk-alice-0123456789"


def test_keys_from_the_config_are_numbered_and_the_files_named() -> None:
    ring = keyring(["k-one"], _file([{"name": "alice", "sha256": digest(ALICE)}]))
    assert ring.identify("k-one").name == "key-1"  # type: ignore[union-attr]
    assert ring.identify(ALICE).name == "alice"  # type: ignore[union-attr]
    assert ring.identify("other") is None


def test_without_keys_everyone_is_the_anonymous_client() -> None:
    ring = keyring([], None, Limits(concurrent=2))
    client = identify(ring, "Bearer ")
    assert (client.name, client.limits.concurrent) == ("anonymous", 2)


def test_an_empty_keys_file_refuses_everyone() -> None:
    """Removing every key from the file locks the gateway; it never opens it."""
    ring = keyring([], KeysFile())
    with pytest.raises(AuthenticationFailed):
        identify(ring, f"Bearer {ALICE}")


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"name": "a", "key": ALICE, "sha256": digest(ALICE)}], "exactly one of"),
        ([{"name": "a"}], "exactly one of"),
        ([{"name": "a", "key": ALICE}, {"name": "a", "key": "sk-other-key"}], "unique"),
    ],
)
def test_wrong_entries_are_named(entries: list[dict[str, str]], message: str) -> None:
    with pytest.raises(KeysError, match=message):
        keyring([], _file(entries))


def test_a_wrong_field_is_named_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("keys:\n  - name: a\n    key: k\n    limits: {rpm: 3}\n")
    with pytest.raises(KeysError, match=r"keys\.yaml.*rpm"):
        KeyStore([], path)


def test_added_keys_are_stored_as_digests_in_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "keys.yaml"
    key = add_key(path, "alice", Limits(requests_per_minute=5))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key not in path.read_text()
    store = KeyStore([], path)
    client = store.keyring.identify(key)
    assert client is not None and client.limits.requests_per_minute == 5
    with pytest.raises(KeysError, match="already has"):
        add_key(path, "alice")


def test_booagent_keys_add_prints_the_key_once_and_list_never(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    runner = CliRunner()
    added = runner.invoke(main, ["keys", "add", "webui", "--file", str(path), "--rpm", "30"])
    assert added.exit_code == 0, added.output
    key = next(w for w in added.output.split() if w.startswith("sk-booagent-"))
    listed = runner.invoke(main, ["keys", "list", "--file", str(path)])
    assert listed.output.strip() == "webui: requests_per_minute=30"
    assert key not in listed.output and key not in path.read_text()
    assert yaml.safe_load(path.read_text())["keys"][0]["sha256"] == digest(key)


class TestExposure:
    @pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
    def test_loopback_without_keys_is_fine(self, host: str) -> None:
        assert exposure(Server(host=host)) is None

    @pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "gateway.lan"])
    def test_the_network_without_keys_is_refused_with_the_way_out(self, host: str) -> None:
        refusal = exposure(Server(host=host))
        assert refusal is not None and "booagent keys add" in refusal
        assert "BOOAGENT_ALLOW_OPEN" in refusal

    def test_keys_or_an_explicit_setting_allow_the_network(self) -> None:
        assert exposure(Server(host="0.0.0.0", api_keys=("k",))) is None
        assert exposure(Server(host="0.0.0.0", keys_file="/etc/keys.yaml")) is None
        assert exposure(Server(host="0.0.0.0", allow_open=True)) is None

    def test_booagent_serve_refuses_before_binding(self) -> None:
        result = CliRunner().invoke(main, ["serve"], env={"BOOAGENT_HOST": "0.0.0.0"})
        assert result.exit_code == 1
        assert "refusing to serve on 0.0.0.0:8100 without API keys" in result.output


def _file(entries: list[dict[str, str]]) -> KeysFile:
    return msgspec.convert({"keys": entries}, KeysFile)
