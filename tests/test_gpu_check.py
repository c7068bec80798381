"""bench/gpu_check.py --toy: the prepared GPU check runs end to end on CPU, every stage through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO

STAGES = ["throughput", "model", "sft", "rejection-sample", "ppo", "eval", "serve"]


def test_toy_check_runs_every_stage_and_records_it(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    env.pop("OUT", None)
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--toy", "--out", str(out),
                           "--work", str(work)],
                          check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    report = json.loads((out / "gpu_check.json").read_text(encoding="utf-8"))
    failed = {k: v.get("error") for k, v in report["stages"].items() if v["status"] != "ok"}
    assert proc.returncode == 0 and report["passed"], failed
    assert list(report["stages"]) == STAGES
    env_info = report["environment"]
    assert env_info["gpu"] is None and env_info["versions"]["torch"] and env_info["versions"]["trl"]
    # the throughput table: unpacked and TRL-style packed, the SDPA backend named
    table = report["stages"]["throughput"]["table"]
    rows = {(r["attention"], r["layout"]): r for r in table["results"]}
    assert set(rows) == {("eager", "none"), ("eager", "flat"), ("sdpa", "none"), ("sdpa", "flat")}
    assert all(r["tokens_per_s"] > 0 for r in rows.values()) and rows["sdpa", "flat"]["sdpa_backends"]
    # the model the commands ran on, with its tokenizer
    model = report["stages"]["model"]["model"]
    assert model["tokenizer"].startswith("builtin:") and model["vocab_size"] >= model["tokenizer_size"]
    # every command went through the CLI in its own process and wrote its run record
    for stage in ("sft", "rejection-sample", "ppo", "eval", "serve"):
        assert report["stages"][stage]["peak_rss_mib"] > 0, stage  # written by the wrapper at the process's exit
    assert report["stages"]["sft"]["metrics"]["global_step"] == 2 and report["stages"]["sft"]["model"]["lora"]
    assert (work / "sft" / "adapter_config.json").exists()
    assert (work / "eval" / "result.json").exists() and (work / "ppo" / "summary.json").exists()
    serve = report["stages"]["serve"]
    assert serve["requests"] == serve["clients"] == 4 and serve["errors"] == 0
    assert serve["tokens_per_s"] > 0 and 0 < serve["p50_s"] <= serve["p99_s"]
    log = (out / "gpu_check.log").read_text(encoding="utf-8")
    assert "environment:" in log and "gpu_check: PASSED" in log


def test_a_failing_stage_is_recorded_and_the_rest_still_run(tmp_path):
    """A stage that fails (here: eval on a model folder that was never built) does not end the check."""
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--toy", "--out", str(out),
                           "--work", str(tmp_path / "work"), "--only", "eval", "serve", "--budget-s", "120"],
                          check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    report = json.loads((out / "gpu_check.json").read_text(encoding="utf-8"))
    assert proc.returncode == 1 and not report["passed"]
    assert list(report["stages"]) == ["eval", "serve"]
    assert report["stages"]["eval"]["status"] == "failed" and "model" in report["stages"]["eval"]["error"]
    assert report["stages"]["serve"]["status"] == "failed" and report["stages"]["serve"]["error"]
