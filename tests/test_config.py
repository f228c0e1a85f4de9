"""Configuration is typed and validated when loaded."""

import pytest

from rtdecoder.config import WINDOW_ALL, ConfigError, ServerConfig, StreamConfig
from rtdecoder.configfile import load_config


def test_defaults_follow_distance():
    s = StreamConfig(distance=7, rounds=35)
    assert (s.window, s.commit) == (14, 7)


def test_window_all_has_no_commit_region():
    s = StreamConfig(window=WINDOW_ALL)
    assert (s.window, s.commit) == (0, 0)


@pytest.mark.parametrize("kwargs, words", [
    ({"decoder": "magic"}, "unknown decoder"),
    ({"commit": 11, "window": 10}, "commit 11"),
    ({"p": 0.7}, "p 0.7"),
    ({"distance": 1}, "distance 1"),
    ({"circuit": "/nonexistent.stim"}, "neither a generated circuit"),
    ({"id": 70000}, "out of range"),
])
def test_stream_rejects_bad_values_with_the_fix(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        StreamConfig(**kwargs)


def test_config_file_loads_and_rejects_unknown_keys(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[server]\nport = 7801\n[[streams]]\nid = 3\ndistance = 3\nrounds = 9\nwindow = "all"\n')
    cfg = load_config(f)
    assert cfg.port == 7801 and cfg.streams[0].id == 3 and cfg.streams[0].window == WINDOW_ALL
    f.write_text('[[streams]]\nid = 3\ndistanse = 3\n')
    with pytest.raises(ConfigError, match="unknown key 'distanse'"):
        load_config(f)
    f.write_text('[[streams]]\nid = 3\ndistance = "five"\n')
    with pytest.raises(ConfigError, match="distance"):
        load_config(f)
    f.write_text('[serve]\nport = 1\n')
    with pytest.raises(ConfigError, match="unknown top-level key 'serve'"):
        load_config(f)


def test_server_needs_streams_with_distinct_ids():
    with pytest.raises(ConfigError, match="no streams"):
        ServerConfig()
    with pytest.raises(ConfigError, match="distinct"):
        ServerConfig(streams=(StreamConfig(id=1), StreamConfig(id=1)))
    with pytest.raises(ConfigError, match="power of two"):
        ServerConfig(streams=(StreamConfig(),), ring_slots=1000)
