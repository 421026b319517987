"""The benchmark script: its arithmetic, and a quick run end to end (every bench reports)."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

from benchmarks.run import Report, Row, p99, verdict
from tests.helpers import REPO_ROOT, PostgresServer, clean_env, run, skip_or_fail


def test_p99_is_the_value_below_which_99_percent_fall() -> None:
    assert p99([float(n) for n in range(1, 101)]) == 100.0
    assert p99([float(n) for n in range(1, 1001)]) == 991.0
    assert p99([5.0]) == 5.0


def test_the_report_is_one_markdown_table_with_a_verdict_per_target() -> None:
    report = Report()
    report.add(Row("B4", "bake", "0.20 s", "", "", "<= 0.5 s", verdict(True)))
    report.add(Row("B2", "read", "900 req/s", "2,000 req/s", "0.45x", ">= 0.55x", verdict(False)))
    lines = report.markdown().splitlines()
    assert lines[0].startswith("| bench | case | measured |")
    assert lines[2] == "| B4 | bake | 0.20 s |  |  | <= 0.5 s | yes |"
    assert lines[3].endswith("| >= 0.55x | **no** |")


def run_benchmarks(postgres: PostgresServer, work: Path, *args: str, timeout: float) -> str:
    """Run benchmarks/run.py with ``args`` against the test server, its scratch space in
    ``work``; return its output.

    wrk missing is a skip, or a failure where REQUIRE_POSTGRES says the servers must be here.
    """
    if shutil.which("wrk") is None:
        skip_or_fail("wrk is not installed (apt-get install wrk)")
    result = run(
        [sys.executable, "benchmarks/run.py", *args],
        cwd=REPO_ROOT,
        env=clean_env(
            TEMPLATE_POSTGRES_URL=postgres.url.render_as_string(hide_password=False),
            BENCH_WORK=str(work),
        ),
        timeout=timeout,
    )
    return result.stdout


@pytest.mark.slow
def test_a_quick_benchmark_run_reports_every_bench(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    output = tmp_path / "results.md"
    run_benchmarks(postgres, tmp_path / "work", "--quick", "--output", str(output), timeout=900)
    text = output.read_text()
    for bench in ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9"):
        assert f"| {bench} |" in text
    assert "raw asyncpg pool" in text
    assert "contrast: blocking driver call" in text
    assert "10 writers + 0 readers" in text  # B5: SQLite's writers alone in a worker
    assert "floor: SQLite's write lock held per append" in text  # B5 (append_floor.py)
    # B5's two workers say where wrk's connections landed (ss); two processes share the load.
    assert re.search(r"landed \(writers\+readers per worker\): \d+\+\d+ / \d+\+\d+", text)
    assert "SQLite file, 2 processes of 1 worker, the load spread evenly" in text
    assert "(primary only)" in text  # B6's baseline
    assert "us CPU (off)" in text  # B9's baseline
    assert "- machine:" in text


@pytest.mark.slow
def test_only_runs_the_named_benchmarks_and_writes_nothing(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    output = tmp_path / "results.md"
    stdout = run_benchmarks(
        postgres, tmp_path / "work", "--quick", "--only", "B4", "--output", str(output), timeout=300
    )
    assert "| B4 | spawn uvicorn to first 200 from /readyz |" in stdout
    for bench in ("B1", "B2", "B3", "B5", "B6"):
        assert f"| {bench} |" not in stdout
    assert not output.exists()
