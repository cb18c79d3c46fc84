"""scripts/gpu_check.py --dry-run: every part of the GPU check runs on CPU at tiny sizes and the results have the
shape the GPU run will have: gpu_check.json with every part and its status (ok here, except Triton's parity where
triton is not installed), numbers where numbers belong, and gpu_check.md's tables with every cell parseable. A spent
budget skips every part and says so. No time is asserted."""

import importlib.util
import json

import pytest

from ._tiny import load_script, number

PARTS = ["triton_parity", "kernels", "model", "dpo", "grpo", "fsdp"]
STEPS = {"dpo": 2, "grpo": 1, "fsdp": 2}  # the dry run's
IMPLS = ["naive", "chunked", "triton", "trl", "gemm"]


def markdown_table(lines: list[str], header: str) -> list[list[str]]:
    """The rows (cells stripped) of the markdown table whose header line is `header`."""
    at = lines.index(header)
    assert lines[at + 1] == "|" + "---|" * header.count(" | ") + "---|"
    rows = []
    for line in lines[at + 2 :]:
        if not line.startswith("| "):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def check_shapes(out) -> tuple[dict, list[str]]:
    report = json.loads((out / "gpu_check.json").read_text())
    lines = (out / "gpu_check.md").read_text().splitlines()
    assert list(report["parts"]) == PARTS
    assert {"dry_run", "budget_s", "total_s", "device", "versions", "peak_bf16_tflops", "peak_source"} <= set(report)
    for name, part in report["parts"].items():
        assert part["status"] in ("ok", "failed", "skipped"), name
        assert isinstance(part["seconds"], float) and part["seconds"] >= 0
        assert part["status"] == "ok" or (isinstance(part["reason"], str) and part["reason"]), name
        assert "\n" not in (part.get("reason") or "") + (part.get("details") or "")  # one line each
    assert lines[0].startswith("# GPU check")
    assert any(line.startswith("peak used: ") for line in lines)
    rows = markdown_table(lines, "| part | status | seconds | details |")
    assert [r[0] for r in rows] == PARTS
    for row, (name, part) in zip(rows, report["parts"].items()):
        assert len(row) == 4 and row[1] == part["status"] and number(row[2]) >= 0 and row[3], name
    return report, lines


def test_gpu_check_spent_budget_skips_every_part(tmp_path):
    gpu_check = load_script("gpu_check")
    gpu_check.main(["--dry-run", "--budget", "0", "--out", str(tmp_path)])
    report, _ = check_shapes(tmp_path)
    assert all(p["status"] == "skipped" and p["reason"].startswith("time budget: ") for p in report["parts"].values())


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
    gpu_check = load_script("gpu_check")
    returned = gpu_check.main(["--dry-run", "--out", str(tmp_path)])
    report, lines = check_shapes(tmp_path)
    assert report == json.loads(json.dumps(returned)) and report["dry_run"] is True
    parts = report["parts"]
    if importlib.util.find_spec("triton") is None or importlib.util.find_spec("numpy") is None:
        assert parts["triton_parity"]["status"] == "skipped" and "not installed" in parts["triton_parity"]["reason"]
    else:
        assert parts["triton_parity"]["status"] == "ok", parts["triton_parity"]
        assert parts["triton_parity"]["passed"] == 2 and parts["triton_parity"]["failed"] == 0
    for name in PARTS[1:]:
        assert parts[name]["status"] == "ok", (name, parts[name])
    for name, steps in STEPS.items():
        assert parts[name]["steps"] == steps and parts[name]["run_status"] == "finished"
        assert all(isinstance(parts[name][k], float) for k in ("first_loss", "last_loss", "s_per_step", "wall_s"))
    assert parts["model"]["config"]["num_hidden_layers"] == 2 and parts["model"]["parameters"] > 0
    log = (tmp_path / "gpu_check.log").read_text()  # every subprocess's output, one file
    assert all(f"===== {name} (exit 0) =====" in log for name in ("triton_parity", "kernels", "dpo", "grpo", "fsdp"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]

    kernels = parts["kernels"]
    assert (kernels["N"], kernels["d"], kernels["V"], kernels["dtype"]) == (256, 32, 2048, "bfloat16")
    assert [r["impl"] for r in kernels["rows"]] == IMPLS
    by = {r["impl"]: r for r in kernels["rows"]}
    assert by["triton"]["status"] == "skipped" and by["triton"]["reason"]  # CUDA only
    assert report["peak_bf16_tflops"] is None  # no peak on CPU: no fraction either
    for impl in ("naive", "chunked", "trl", "gemm"):
        r = by[impl]
        assert r["status"] == "ok" and r["fraction_of_peak"] is None
        assert all(isinstance(r[k], float) and r[k] > 0 for k in ("seconds", "min_seconds", "peak_mib", "tflops"))
    table = markdown_table(lines, "| impl | status | seconds (median) | min | peak MiB | TFLOP/s | fraction of peak |")
    assert [r[0] for r in table] == IMPLS
    for row in table:
        assert len(row) == 7
        if row[1] == "ok":
            assert all(number(c) > 0 for c in row[2:6]) and row[6] == "-"
        else:
            assert row[1].startswith(("skipped: ", "failed: ")) and row[2:] == ["-"] * 5


def test_gpu_rows_peak_and_out_of_memory(tmp_path, monkeypatch):
    """What only a GPU run produces, from a stand-in for bench_kernels' output: the peak by device name, the fraction
    of it per row, naive's out-of-memory row (skipped: a finding, the part stays ok) and a crashed row (failed)."""
    import argparse
    import subprocess

    import torch

    gpu_check = load_script("gpu_check")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name, tflops in [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.0),
                         ("NVIDIA A100-SXM4-80GB", 312.0), ("Some Future GPU", None)]:  # fmt: skip
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_, n=name: n)
        peak, source = gpu_check.peak_tflops(argparse.Namespace(peak_tflops=None, dry_run=False))
        assert peak == tflops and (name in source if tflops else "--peak-tflops" in source)

    args = gpu_check.parse_args(["--out", str(tmp_path)])
    ctx = gpu_check.Context(args, gpu_check.FULL, tmp_path, tmp_path, {}, peak=(989.0, "H100 SXM"))
    n, d, v = gpu_check.FULL.kernel
    measured = [{"impl": impl, "seconds": s, "min_seconds": s, "peak_bytes": 2**30} for impl, s in
                (("chunked", 0.5), ("triton", 0.1), ("gemm", 0.08))]  # fmt: skip

    def bench(stdout: str):
        def fake(ctx, name, cmd, env=None):
            (tmp_path / "kernels.json").write_text(json.dumps(measured))
            return subprocess.CompletedProcess(cmd, 0, stdout=stdout)

        return fake

    monkeypatch.setattr(gpu_check, "run_logged", bench("[skip] naive: out of memory (CUDA out of memory. Tried ...)\n"
                                                       "[skip] trl: failed, RuntimeError (boom)\n"))  # fmt: skip
    with pytest.raises(gpu_check.PartFailed) as failed:  # trl crashed
        gpu_check.kernels(ctx)
    reason, data = failed.value.args
    assert "trl failed: failed, RuntimeError (boom)" in reason
    by = {r["impl"]: r for r in data["rows"]}
    assert by["naive"]["status"] == "skipped" and by["naive"]["reason"].startswith("out of memory")
    assert by["triton"]["fraction_of_peak"] == pytest.approx(8 * n * d * v / 0.1 / 1e12 / 989.0)

    monkeypatch.setattr(gpu_check, "run_logged", bench("[skip] naive: out of memory (CUDA out of memory.)\n"
                                                       "[skip] trl: TRL has no counterpart\n"))  # fmt: skip
    result = gpu_check.kernels(ctx)  # out of memory alone: ok
    report = {"dry_run": False, "device": "NVIDIA H100 80GB HBM3", "versions": {}, "budget_s": 480.0, "total_s": 1.0,
              "peak_source": "H100 SXM", "parts": {"kernels": {"status": "ok", "seconds": 1.0, **result}}}  # fmt: skip
    lines = gpu_check.markdown(report).splitlines()
    table = markdown_table(lines, "| impl | status | seconds (median) | min | peak MiB | TFLOP/s | fraction of peak |")
    assert [r[0] for r in table] == IMPLS
    for row in table:
        if row[1] == "ok":
            assert 0 < number(row[6]) < 1 and all(number(c) > 0 for c in row[2:6])
        else:
            assert row[1].startswith("skipped: ") and row[2:] == ["-"] * 5
