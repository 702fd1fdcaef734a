"""The configuration: defaults, the documented default file, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from leireye.config import Config, load_config, parse_config, with_overrides
from leireye.errors import ConfigError

DEFAULT = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"


def test_the_documented_default_file_equals_the_built_in_defaults() -> None:
    assert load_config(DEFAULT) == Config()


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"capture": {"snaplen": "lots"}}, "$.capture.snaplen"),
        ({"capture": {"snaplen": 10}}, "$.capture.snaplen"),
        ({"capture": {"replay": {"speed": "fast"}}}, "$.capture.replay.speed"),
        ({"web": {"port": 70000}}, "$.web.port"),
        ({"limits": {"connections_per_user": 0}}, "$.limits.connections_per_user"),
        ({"flows": {"max_active": 10}}, "$.flows.max_active"),
        ({"flows": {"idle_timeout_s": {"udp": 0}}}, "$.flows.idle_timeout_s.udp"),
        ({"flows": {"update_ms": "often"}}, "$.flows.update_ms"),
    ],
)
def test_bad_values_name_the_key(data: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError, match=path.replace("$", r"\$").replace(".", r"\.")):
        parse_config(data)


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="captur"):
        parse_config({"captur": {}})
    with pytest.raises(ConfigError, match="snapln"):
        parse_config({"capture": {"snapln": 100}})


def test_bad_yaml_and_a_missing_file_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("capture: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listing)


def test_overrides_are_validated_and_none_means_keep() -> None:
    config = with_overrides(Config(), capture={"bpf": "udp", "pcap": None}, web={"port": 0})
    assert config.capture.bpf == "udp" and config.capture.pcap is None and config.web.port == 0
    with pytest.raises(ConfigError, match=r"\$\.web\.port"):
        with_overrides(Config(), web={"port": -1})


def test_stats_interval_range_must_be_ordered() -> None:
    with pytest.raises(ConfigError, match="stats_interval_min_ms"):
        parse_config({"limits": {"stats_interval_min_ms": 5000, "stats_interval_max_ms": 1000}})


def test_own_traffic_is_left_out_unless_asked_and_a_filter_has_a_size_limit() -> None:
    assert Config().capture.include_own_traffic is False
    config = parse_config({"capture": {"include_own_traffic": True}})
    assert config.capture.include_own_traffic is True
    with pytest.raises(ConfigError, match=r"longer than 4096 bytes - at `\$\.capture`"):
        parse_config({"capture": {"bpf": "udp or " * 600}})


@pytest.mark.parametrize(
    ("origins", "index"),
    [
        (["https://dash.example", "https://dash.example/"], 1),
        (["dash.example"], 0),
        (["*", "https://a.example", "ftp://a.example"], 2),
        (["https://a.example?x"], 0),
    ],
)
def test_a_misspelled_allowed_origin_is_refused_with_its_path(
    tmp_path: Path, origins: list[str], index: int
) -> None:
    """An entry that is not an origin would never match any browser's `Origin`: refused when
    the file is loaded, not silently ignored at the handshake."""
    path = tmp_path / "origins.yaml"
    path.write_text(yaml.safe_dump({"web": {"allowed_origins": origins}}))
    with pytest.raises(ConfigError, match=rf"at `?\$\.web\.allowed_origins\[{index}\]"):
        load_config(path)


def test_valid_allowed_origins_load() -> None:
    origins = ("*", "https://dash.example", "http://[::1]:3000", "HTTP://Sensor:8000")
    assert parse_config({"web": {"allowed_origins": list(origins)}}).web.allowed_origins == origins


def test_check_config_refuses_a_misspelled_origin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from leireye.cli import main

    path = tmp_path / "origins.yaml"
    path.write_text("web:\n  allowed_origins: ['https://ok.example', 'https://dash.example/']\n")
    assert main(["check-config", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "'https://dash.example/'" in err and "$.web.allowed_origins[1]" in err


def test_every_error_of_a_file_is_reported_at_once_each_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    path.write_text(
        "captur: {}\n"
        "capture: {snaplen: lots, replay: {speed: fast}, bpf: 'udp'}\n"
        "web: {port: 70000, allowed_origins: ['https://dash.example/']}\n"
        "limits: {stats_interval_min_ms: 5000, stats_interval_max_ms: 1000}\n"
        "auth: {token_ttl_s: 60}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{path}: invalid configuration (6 errors):"
    assert [line.rsplit(" - at ", 1)[1] for line in lines[1:]] == [
        "`$`",  # captur
        "`$.capture.snaplen`",
        "`$.capture.replay.speed`",
        "`$.web.port`",
        "`$.web.allowed_origins[0]`",
        "`$.limits`",
    ]
    assert "unknown field `captur`" in lines[1]


def test_a_check_inside_a_section_is_reported_with_the_others() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"capture": {"bpf": "x" * 5000}, "web": {"trusted_proxies": ["nope"]},
                      "stats": {"top_n": 0}})  # fmt: skip
    lines = str(caught.value).splitlines()[1:]
    assert len(lines) == 3, lines
    assert "bpf is longer than 4096 bytes - at `$.capture`" in lines[0]
    assert "web.trusted_proxies[0]" in lines[1] and lines[1].endswith("at `$.web`")
    assert lines[2].endswith("at `$.stats.top_n`")


def test_one_error_stays_one_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"web": {"port": "eighty"}})
    assert str(caught.value) == "invalid configuration: Expected `int`, got `str` - at `$.web.port`"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"store": {"max_gb": 0}}, r"\$\.store\.max_gb"),
        ({"store": {"max_age_h": -1}}, r"\$\.store\.max_age_h"),
        ({"store": {"buffer_mb": 0}}, r"\$\.store\.buffer_mb"),
        ({"store": {"enabled": "yes"}}, r"\$\.store\.enabled"),
        ({"store": {"max_gb": 0.1}}, r"file_mb \(256\) is larger than store\.max_gb.*most 102"),
        ({"store": {"size": 1}}, r"unknown field `size` - at `\$\.store`"),
    ],
)
def test_store_errors_name_the_key(data: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_config(data)


def test_the_store_is_on_by_default_under_the_state_dir() -> None:
    config = parse_config({"state_dir": "/srv/le", "store": {"max_gb": 0.5, "file_mb": 64}})
    assert config.store.enabled and str(config.store_dir) == "/srv/le/store"
    assert str(parse_config({"store": {"dir": "/data/pk"}}).store_dir) == "/data/pk"
