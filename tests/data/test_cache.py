"""alignctl.cache: content-addressed, atomic, built once."""

import json
import os
import sys
import threading
import time

import pytest

from alignctl import cache
from alignctl.errors import UsageError


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "root"))
    return tmp_path / "root"


class Builder:
    """Counts calls; writes one file; optionally sleeps or fails."""

    def __init__(self, sleep: float = 0.0, fail: bool = False):
        self.calls, self.sleep, self.fail = 0, sleep, fail
        self.lock = threading.Lock()

    def __call__(self, out):
        with self.lock:
            self.calls += 1
        assert out.is_dir() and not any(out.iterdir())  # an empty temp dir
        (out / "part1").write_text("half")
        time.sleep(self.sleep)
        if self.fail:
            raise RuntimeError("boom")
        (out / "part2").write_text("done")


def test_builds_once_per_recipe_and_rebuilds_on_change(root):
    build = Builder()
    a = cache.cached("thing", {"x": 1, "y": [1, 2]}, build)
    b = cache.cached("thing", {"y": [1, 2], "x": 1}, build)  # same recipe, other key order
    assert a == b and build.calls == 1
    assert a.parent == root / "thing" and len(a.name) == 16
    assert (a / "part2").read_text() == "done"
    assert json.loads((a / cache.RECIPE_FILE).read_text())["recipe"] == {"x": 1, "y": [1, 2]}
    c = cache.cached("thing", {"x": 2, "y": [1, 2]}, build)
    assert c != a and build.calls == 2
    d = cache.cached("other", {"x": 1, "y": [1, 2]}, build)  # the kind is part of the path
    assert d.parent.name == "other" and build.calls == 3


def test_a_rank_of_a_multi_process_run_reads_entries_but_builds_only_what_it_may(root, monkeypatch):
    build = Builder()
    built = cache.cached("thing", {"x": 1}, build)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cache.cached("thing", {"x": 1}, build) == built and build.calls == 1  # a built entry: read
    with pytest.raises(UsageError, match="the cache has no thing entry for this run yet .* start the run with"):
        cache.cached("thing", {"x": 2}, build)  # a base model's build would deadlock the ranks' process group
    assert build.calls == 1 and not cache.cached_path("thing", {"x": 2}).exists()
    assert cache.cached("thing", {"x": 2}, build, ranks_may_build=True).is_dir() and build.calls == 2


def test_code_version_is_part_of_the_key(root, monkeypatch):
    before = cache.recipe_hash({"x": 1})
    monkeypatch.setattr(cache, "CODE_VERSION", cache.CODE_VERSION + "-next")
    assert cache.recipe_hash({"x": 1}) != before


def test_half_built_dir_is_never_visible(root):
    seen = {}

    def build(out):
        seen["final_exists_during_build"] = cache.cached_path("thing", {"k": 1}).exists()
        (out / "f").write_text("x")

    path = cache.cached("thing", {"k": 1}, build)
    assert seen == {"final_exists_during_build": False}
    assert sorted(p.name for p in path.iterdir()) == ["f", cache.MANIFEST_FILE, cache.RECIPE_FILE]
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_failed_build_leaves_nothing_and_can_be_retried(root):
    with pytest.raises(RuntimeError, match="boom"):
        cache.cached("thing", {"k": 1}, Builder(fail=True))
    kind_dir = root / "thing"
    assert [p for p in kind_dir.iterdir() if not p.name.endswith(".lock")] == []
    build = Builder()
    path = cache.cached("thing", {"k": 1}, build)
    assert build.calls == 1 and (path / "part2").exists()


def test_stale_temp_dir_from_a_killed_build_is_removed(root):
    final = cache.cached_path("thing", {"k": 1})
    stale = final.parent / f".{final.name}.tmp-dead"
    stale.mkdir(parents=True)
    (stale / "junk").write_text("x")
    cache.cached("thing", {"k": 1}, Builder())
    assert not stale.exists()


def test_concurrent_builders_build_once(root):
    build = Builder(sleep=0.3)
    results, errors = [], []

    def worker():
        try:
            results.append(cache.cached("thing", {"k": "concurrent"}, build))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert build.calls == 1
    assert len(set(results)) == 1 and (results[0] / "part2").read_text() == "done"


def test_env_var_overrides_root_else_user_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "custom"))
    assert cache.cache_root() == tmp_path / "custom"
    monkeypatch.delenv(cache.ENV_VAR)
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert cache.cache_root() == tmp_path / "xdg" / "alignctl"
    else:
        assert cache.cache_root().name == "alignctl"


def test_bad_kind_and_non_json_recipe_are_rejected(root):
    with pytest.raises(ValueError):
        cache.cached("../escape", {}, Builder())
    with pytest.raises(TypeError):
        cache.cached("thing", {"x": object()}, Builder())
    assert not (root / "thing").exists() or os.listdir(root / "thing") == []
