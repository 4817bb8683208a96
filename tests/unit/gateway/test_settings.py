"""Settings read from YAML: the shipped configs load, and mistakes name what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.settings import DEFAULT_CONFIG, ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = [
    DEFAULT_CONFIG,
    *sorted((ROOT / "config").rglob("*.yaml")),
    ROOT / "bench" / "chaos.yaml",
]


def write(tmp_path: Path, **changes: Any) -> Path:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.update(changes)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_what_its_file_says(path: Path) -> None:
    """Each config the project ships validates, and nothing in it is dropped on the way."""
    raw = yaml.safe_load(path.read_text())
    settings = load_settings(path)
    assert [m.name for m in settings.members] == [m["name"] for m in raw["members"]]
    assert [(n.name, n.member, n.url) for n in settings.nodes] == [
        (n["name"], n["member"], n["url"]) for n in raw["nodes"]
    ]
    assert settings.server.virtual_model == raw.get("server", {}).get(
        "virtual_model", "booagent-cluster"
    )


def test_the_default_cluster_shares_one_machine() -> None:
    settings = load_settings()
    assert [(h.name, h.max_active) for h in settings.hosts] == [("127.0.0.1", 1)]
    assert {n.host_name for n in settings.nodes} == {"127.0.0.1"}


def test_a_host_limit_for_a_machine_without_nodes_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, hosts=[{"name": "laptop.local", "max_active": 1}])
    with pytest.raises(ConfigError, match=r"no node runs on 'laptop\.local'"):
        load_settings(path)


def test_a_host_limit_below_one_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, hosts=[{"name": "127.0.0.1", "max_active": 0}])
    with pytest.raises(ConfigError, match=r"hosts\[0\].max_active"):
        load_settings(path)


@pytest.mark.parametrize(
    ("strategies", "message"),
    [
        ({"auto": {"poetry": "route"}}, "strategies.auto: unknown kind 'poetry'"),
        ({"cascade": {"ladders": {"cod": ["smollm2-135m"]}}}, "ladders: unknown kind 'cod'"),
        (
            {"ensemble": {"members_by_kind": {"structured": ["gpt-9"]}}},
            "members_by_kind.structured names unknown member 'gpt-9'",
        ),
        ({"program": {"members": ["gpt-9"]}}, "program.members names unknown member 'gpt-9'"),
        ({"program": {"cpu_seconds": 0}}, "cpu_seconds"),
        ({"auto": {"math": "auto"}}, "route, cascade, ensemble, program or tested, not auto"),
    ],
)
def test_strategy_mistakes_are_named(
    tmp_path: Path, strategies: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, strategies=strategies))
