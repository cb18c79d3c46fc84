"""alignctl.cache: every use checks the entry against its manifest; a corrupt entry is rebuilt once, with one
line; nothing is written into an entry after it is built; a read-only cache works and a needed build in one fails
with one line."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from alignctl import cache
from alignctl.data import sampled
from alignctl.data.tasks import tiny_lm


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "root"))
    return tmp_path / "root"


def corrupt_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "is corrupt" in line]


def listing(path) -> dict[str, tuple[int, int]]:
    """Every file under ``path`` with its size and mtime."""
    return {
        str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file()
    }


# --- the entries: a model-like directory and a real save_to_disk DatasetDict --------------------------------------
def build_model_dir(calls: list):
    def build(out):
        from safetensors.numpy import save_file

        calls.append(out)
        weights = {"embed.weight": np.arange(64 * 64, dtype=np.float32).reshape(64, 64)}
        save_file(weights, str(out / "model.safetensors"))
        (out / "config.json").write_text(json.dumps({"hidden_size": 64}))
        (out / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"vocab": {"a": 0, "b": 1}}}))
        cache.write_info(out, {"params": 64 * 64})

    return build


def model_dir(calls: list):
    return tiny_lm.cached_base_model("tiny_model", {"size": 64}, build_model_dir(calls), lambda info, path: "built")


ROWS = {
    "train": [{"prompt": f"p{i}", "chosen": "good " * 40, "rejected": "bad " * 40} for i in range(200)],
    "test": [{"prompt": f"q{i}", "chosen": "good", "rejected": "bad"} for i in range(20)],
}


def pairs(calls: list):
    import datasets

    text = datasets.Value("string")

    def make():
        calls.append(1)
        return ROWS, {"rows": 200}

    features = {"prompt": text, "chosen": text, "rejected": text}
    return sampled._cached_splits("tiny_pairs", {"rows": 200}, features, make, lambda info: "built pairs")


# --- the manifest ---------------------------------------------------------------------------------------------------
def test_manifest_lists_every_file_with_size_and_sha256(root):
    path = model_dir([])
    manifest = json.loads((path / cache.MANIFEST_FILE).read_text())
    files = {p.name for p in path.iterdir()} - {cache.MANIFEST_FILE}
    assert set(manifest["files"]) == files == {"model.safetensors", "config.json", "tokenizer.json",
                                               cache.INFO_FILE, cache.RECIPE_FILE}  # fmt: skip
    for name, entry in manifest["files"].items():
        data = (path / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert json.loads((path / cache.RECIPE_FILE).read_text())["cache_format"] == cache.CACHE_FORMAT
    assert cache.verify(path) is None


def test_hashes_are_memoised_per_process(root, monkeypatch):
    path = model_dir([])
    cache.verify(path)  # hashes what the build left unhashed (nothing, or all of it)
    opened = []
    real_open = open
    monkeypatch.setattr(cache, "open", lambda p, *a, **k: opened.append(p) or real_open(p, *a, **k), raising=False)
    assert cache.verify(path) is None and opened == []  # sizes only: every file's hash is memoised
    data = bytearray((path / "config.json").read_bytes())
    data[-2:-1] = b"9"  # same size, new content, new mtime
    (path / "config.json").write_bytes(bytes(data))
    assert cache.verify(path) == "config.json: sha256 differs from the manifest"
    assert [os.path.basename(p) for p in opened] == ["config.json"]


# --- corruption -> rebuilt once, one line ---------------------------------------------------------------------------
def truncate(path, keep=0.5):
    with open(path, "r+b") as f:
        f.truncate(int(os.path.getsize(path) * keep))


@pytest.mark.parametrize("name", ["model.safetensors", "tokenizer.json"])
def test_truncated_weights_or_emptied_tokenizer_rebuild_once_with_one_line(root, capsys, name):
    calls = []
    path = model_dir(calls)
    good = (path / name).read_bytes()
    truncate(path / name, keep=0.5 if name.endswith(".safetensors") else 0.0)
    size = (path / name).stat().st_size
    capsys.readouterr()
    assert model_dir(calls) == path and len(calls) == 2
    err = capsys.readouterr().err
    assert corrupt_lines(err) == [
        f"alignctl: cache entry {path} is corrupt ({name}: size {size} != {len(good)}); rebuilding it"
    ]
    assert "built" in err  # the rebuilt artifact's summary, as after any build
    assert (path / name).read_bytes() == good and cache.verify(path) is None
    assert model_dir(calls) == path and len(calls) == 2  # good again: no more rebuilds
    assert capsys.readouterr().err == ""
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # the bad entry is gone


def test_truncated_arrow_file_of_a_saved_dataset_dict_rebuilds_once(root, capsys):
    calls = []
    dd = pairs(calls)
    path = cache.cached_path("tiny_pairs", {"rows": 200})
    (arrow,) = (path / "train").glob("*.arrow")
    size = arrow.stat().st_size
    truncate(arrow)
    capsys.readouterr()
    dd2 = pairs(calls)
    assert len(calls) == 2
    assert corrupt_lines(capsys.readouterr().err) == [
        f"alignctl: cache entry {path} is corrupt (train/{arrow.name}: size {size // 2} != {size}); rebuilding it"
    ]
    assert dd2["train"].to_list() == dd["train"].to_list() == ROWS["train"]
    pairs(calls)
    assert len(calls) == 2 and capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda p: (p / "part2").write_text("dune"), "part2: sha256 differs from the manifest"),  # same size
        (lambda p: (p / "part2").unlink(), "part2: missing"),
        (lambda p: (p / "cache-123.arrow").write_text("x"), "cache-123.arrow: not in the manifest"),
        (lambda p: (p / cache.MANIFEST_FILE).unlink(), "manifest.json: missing"),  # built by this version
        (lambda p: (p / cache.MANIFEST_FILE).write_text('{"files": '), "manifest.json: unreadable"),
    ],
)
def test_any_difference_from_the_manifest_is_corruption(root, capsys, damage, problem):
    calls = []

    def build(out):
        calls.append(out)
        (out / "part1").write_text("half")
        (out / "part2").write_text("done")

    path = cache.cached("thing", {"k": 1}, build)
    damage(path)
    assert cache.cached("thing", {"k": 1}, build) == path and len(calls) == 2
    assert corrupt_lines(capsys.readouterr().err) == [
        f"alignctl: cache entry {path} is corrupt ({problem}); rebuilding it"
    ]
    assert cache.verify(path) is None and (path / "part2").read_text() == "done"


def test_concurrent_processes_rebuild_a_corrupt_entry_once(root, tmp_path):
    code = textwrap.dedent(
        """
        import sys, time
        from alignctl import cache

        def build(out):
            with open(sys.argv[1], "a") as log:
                log.write("built\\n")
            time.sleep(0.5)
            (out / "part").write_text("done")

        print(cache.cached("thing", {"k": 1}, build))
        """
    )
    log = tmp_path / "builds.log"
    path = cache.cached("thing", {"k": 1}, lambda out: (out / "part").write_text("done"))
    (path / "part").write_text("do")
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(log)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=dict(os.environ))
        for _ in range(3)
    ]  # fmt: skip
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert log.read_text() == "built\n"
    assert sum(len(corrupt_lines(err)) for _, err in outs) == 1
    assert {out.strip() for out, _ in outs} == {str(path)} and (path / "part").read_text() == "done"


def test_concurrent_threads_rebuild_a_corrupt_entry_once(root, capsys):
    calls = []

    def build(out):
        calls.append(out)
        time.sleep(0.3)
        (out / "part").write_text("done")

    path = cache.cached("thing", {"k": 1}, build)
    (path / "part").write_text("xx")
    threads = [threading.Thread(target=cache.cached, args=("thing", {"k": 1}, build)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 2 and len(corrupt_lines(capsys.readouterr().err)) == 1
    assert (path / "part").read_text() == "done"


# --- entries built before manifests ---------------------------------------------------------------------------------
def make_legacy(path) -> None:
    """What the cache wrote before manifests: no manifest.json, no cache_format in recipe.json."""
    (path / cache.MANIFEST_FILE).unlink()
    recipe = json.loads((path / cache.RECIPE_FILE).read_text())
    del recipe["cache_format"]
    (path / cache.RECIPE_FILE).write_text(json.dumps(recipe))


def test_a_whole_legacy_entry_is_adopted_and_its_stray_map_caches_removed(root, capsys):
    calls = []
    pairs(calls)
    path = cache.cached_path("tiny_pairs", {"rows": 200})
    make_legacy(path)
    stray = path / "train" / "cache-0123456789abcdef.arrow"
    stray.write_bytes(b"stale map cache")
    capsys.readouterr()
    assert pairs(calls)["train"].num_rows == 200
    assert len(calls) == 1 and capsys.readouterr().err == ""  # adopted silently, not rebuilt
    assert not stray.exists() and (path / cache.MANIFEST_FILE).is_file() and cache.verify(path) is None


def test_a_damaged_legacy_entry_is_rebuilt(root, capsys):
    calls = []
    path = model_dir(calls)
    make_legacy(path)
    truncate(path / "model.safetensors")
    size = (path / "model.safetensors").stat().st_size
    capsys.readouterr()
    model_dir(calls)
    assert len(calls) == 2
    (line,) = corrupt_lines(capsys.readouterr().err)
    assert line.startswith(f"alignctl: cache entry {path} is corrupt (model.safetensors: size {size} != ")
    assert cache.verify(path) is None


# --- nothing is written into an entry after it is built ------------------------------------------------------------
def test_loaded_dataset_dict_maps_and_filters_without_writing_into_the_entry(root):
    pairs([])
    path = cache.cached_path("tiny_pairs", {"rows": 200})
    before = listing(path)
    dd = pairs([])
    assert all(split.cache_files == [] for split in dd.values())  # in memory: no file for datasets to write beside
    mapped = dd.map(lambda row: {"n": len(row["chosen"])}).filter(lambda row: row["n"] > 10)
    dd["train"].map(lambda row: {"m": 1}, batched=False).shuffle(seed=0).select(range(10))
    assert mapped["train"].num_rows == 200
    assert listing(path) == before and cache.verify(path) is None


# --- a read-only cache ------------------------------------------------------------------------------------------------
def drop_write_override() -> None:  # pragma: no cover - runs in the child
    """Root ignores permission bits through CAP_DAC_OVERRIDE (and friends): drop them from the bounding set before
    exec, so the child is a root process that obeys them (prctl(PR_CAPBSET_DROP, cap))."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_unprivileged(code: str, cache_dir) -> subprocess.CompletedProcess:
    """``code`` in a child Python that obeys permission bits, with the cache at ``cache_dir``."""
    preexec = drop_write_override if os.geteuid() == 0 else None
    env = {**os.environ, cache.ENV_VAR: str(cache_dir)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], preexec_fn=preexec, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.fixture
def read_only(tmp_path):
    """Makes a directory tree read-only (0o555 directories, 0o444 files) for a child that obeys permission bits;
    skips when no such child can be made here. Restores the modes afterwards."""
    if sys.platform != "linux" and os.geteuid() == 0:
        pytest.skip("running as root and permission bits can only be enforced by dropping capabilities on Linux")
    probe = tmp_path / "probe"
    probe.mkdir()
    probe.chmod(0o555)
    try:
        result = run_unprivileged(f"open({str(probe / 'x')!r}, 'w')", tmp_path)
    except subprocess.SubprocessError as e:
        pytest.skip(f"cannot start a child without CAP_DAC_OVERRIDE ({e}), so permission bits are not enforced")
    if result.returncode == 0:
        pytest.skip("a child here can write into a 0o555 directory (root without a droppable CAP_DAC_OVERRIDE)")
    made = []

    def make(top, files: bool = True):
        for dirpath, dirnames, filenames in os.walk(top):
            for name in filenames if files else ():
                os.chmod(os.path.join(dirpath, name), 0o444)
            made.append(dirpath)
        for d in made:
            os.chmod(d, 0o555)

    yield make
    for d in [str(probe), *made]:
        os.chmod(d, 0o755)


LOAD = """
    import sys
    from alignctl.errors import UsageError

    sys.path.insert(0, {repo!r})
    from tests.data import test_cache_integrity as t

    try:
        {body}
    except UsageError as e:
        print(f"alignctl: error: {{e}}", file=sys.stderr)
        sys.exit(2)
"""


def child(body: str) -> str:
    return LOAD.format(repo=os.path.dirname(os.path.dirname(os.path.dirname(__file__))), body=body)


def test_a_valid_entry_is_used_from_a_read_only_cache(root, read_only):
    pairs([])
    model = model_dir([])
    for lock in root.rglob("*.lock"):  # no lock is needed to use a built entry
        lock.unlink()
    before = {"pairs": listing(cache.cached_path("tiny_pairs", {"rows": 200})), "model": listing(model)}
    read_only(root)
    body = """
        import datasets
        datasets.disable_progress_bars()
        dd = t.pairs(calls := [])
        dd = dd.map(lambda row: {"n": len(row["chosen"])}).filter(lambda row: row["n"] > 10)
        path = t.model_dir(calls)
        print(dd["train"].num_rows, len(calls), path)
    """
    result = run_unprivileged(child(body), root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["200", "0", str(model)] and result.stderr == ""
    after = {"pairs": listing(cache.cached_path("tiny_pairs", {"rows": 200})), "model": listing(model)}
    assert after == before and list(root.rglob("*.lock")) == []


def test_a_build_in_a_read_only_cache_fails_with_one_line(root, read_only):
    root.mkdir()
    read_only(root)
    result = run_unprivileged(child("t.model_dir([])"), root)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"alignctl: error: cannot build the tiny_model artifact: the cache directory {root} is not writable "
        f"(Permission denied); set ALIGNCTL_CACHE_DIR (or XDG_CACHE_HOME) to a writable directory"
    ]


@pytest.mark.parametrize("files", [True, False], ids=["all-read-only", "directories-read-only"])
def test_a_corrupt_entry_in_a_read_only_cache_fails_with_one_line(root, read_only, files):
    path = model_dir([])
    truncate(path / "model.safetensors")
    size = (path / "model.safetensors").stat().st_size
    read_only(root, files=files)  # directories only: the lock file stays writable, moving the entry aside fails
    result = run_unprivileged(child("t.model_dir([])"), root)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        f"alignctl: error: cache entry {path} is corrupt (model.safetensors: size {size} != "
    ) and line.endswith(
        "and the cache is not writable "
        f"({path.parent}: Permission denied); set ALIGNCTL_CACHE_DIR (or XDG_CACHE_HOME) to a writable directory "
        "to rebuild it there"
    )


def test_a_whole_legacy_entry_is_used_as_it_is_from_a_read_only_cache(root, read_only):
    path = model_dir([])
    make_legacy(path)
    before = listing(path)
    read_only(root)
    result = run_unprivileged(child("print(t.model_dir(calls := []), len(calls))"), root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(path), "0"] and result.stderr == ""
    assert listing(path) == before  # no manifest could be written: it is adopted once the cache is writable
