"""The main job end to end: its command line, its outputs and MLflow runs, and `ray job submit`."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from support.scripts import load_script

REPO_ROOT = Path(__file__).resolve().parents[2]
# A short grid: two methods (IG brings the direction-log figure), two seeds, one alpha/gamma ratio.
SHORT_GRID = ["--smoke-test", "--methods", "none,ig", "--ratios", "10"]


pytestmark = pytest.mark.usefixtures("no_tracking_env")


@pytest.fixture(scope="module")
def benchmark_cli():
    return load_script("pipelines/full_benchmark.py", "full_benchmark_cli")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--methods", "magic"], "unknown method(s) ['magic']"),
        (["--backbones", "resnet"], "unknown backbone(s) ['resnet']"),
        (["--seeds", "0"], "expected a positive integer, got 0"),
        (["--label-fractions", "1,x"], "expected comma-separated numbers"),
        (["--set", "lr=fast"], "TrainConfig.lr expects a float"),
        (["--set", "method=magic"], "method is set by the benchmark grid; use --methods"),
        (["--set", "backbone=mf"], "backbone is set by the benchmark grid; use --backbones"),
        (["--trials", "4"], "--trials, --concurrency and --search apply to tuned runs"),
        (["--quick", "--profile", "standard"], "not allowed with argument"),
        (["--datasets", "nowhere/at/all"], "nowhere/at/all"),
    ],
)
def test_malformed_options_are_errors(benchmark_cli, capsys, argv, message):
    with pytest.raises(SystemExit) as stopped:
        benchmark_cli.resolve(argv)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_options_narrow_the_profile(benchmark_cli, tmp_path):
    profile, given, overrides, args = benchmark_cli.resolve(
        [*SHORT_GRID, "--seeds", "1", "--set", "lr=0.01", "--out", str(tmp_path)]
    )
    assert profile.name == "tiny" and profile.entries == ("none", "ig") and profile.seeds == 1
    assert profile.ratio_study == (10.0,) and profile.tune is None
    assert overrides == {"lr": 0.01} and given is None and args.out == tmp_path


def test_search_reaches_every_study_of_a_tuned_benchmark(benchmark_cli, tmp_path):
    argv = [*SHORT_GRID, "--tune", "--trials", "32", "--out", str(tmp_path)]
    profile, _, _, _ = benchmark_cli.resolve(argv)
    assert profile.tune.trials == 32 and profile.tune.search_algorithm == "tpe"
    profile, _, _, _ = benchmark_cli.resolve([*argv, "--search", "random"])
    assert profile.tune.search_algorithm == "random"


def test_the_paper_scale_profile_is_the_four_methods_on_full_size_micro_video(benchmark_cli):
    profile, _, overrides, _ = benchmark_cli.resolve(["--profile", "paper-scale"])
    (dataset,) = profile.datasets
    synthetic = dataset.build_config().source.synthetic
    assert synthetic.n_users == 37_692 and synthetic.n_items == 131_690
    assert synthetic.expected_clear_rows == pytest.approx(9_462_492, rel=1e-3)
    assert synthetic.feedback == "micro_video" and dataset.label_fraction == 1
    assert profile.entries == ("none", "ns", "idl", "ig") and profile.backbones == ("gmf",)
    assert profile.seeds == 3 and profile.tune is None and overrides == {}
    assert profile.train["epochs"] == 5 and profile.train["batch_size"] == 4096


@pytest.mark.ray
def test_the_main_job_writes_the_table_figures_and_mlflow_runs(
    benchmark_cli, ray_session, tmp_path, capsys
):
    out = tmp_path / "bench"
    assert benchmark_cli.main([*SHORT_GRID, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| GMF | IG |" in printed and "wall time:" in printed

    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["method"] for row in rows} >= {"None", "IG"}
    assert all(0.0 <= float(row["auc_mean"]) <= 1.0 for row in rows if row["auc_mean"])
    figures = {path.name for path in (out / "figures").glob("*.png")}
    assert any("direction" in name for name in figures), figures
    assert any("weight" in name for name in figures), figures

    # 2 methods x 2 seeds + 2 seeds of the ratio study, each an MLflow run with params and
    # metrics, plus the summary run that holds the table.
    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["benchmark-tiny"])
    training = runs[runs["tags.role"] == "cell"]
    assert len(training) == 6 and set(training["status"]) == {"FINISHED"}
    assert set(training["params.method"]) == {"none", "ig"}
    assert training["metrics.test/auc"].between(0, 1).all()
    assert training["metrics.valid/gauc"].notna().all()
    assert (runs["tags.role"] == "benchmark").sum() == 1 and len(runs) == 7


def _ray_cli() -> str:
    found = Path(sys.executable).parent / "ray"
    return str(found) if found.exists() else shutil.which("ray") or "ray"


@pytest.mark.ray
@pytest.mark.slow
def test_ray_job_submit_runs_the_main_job_on_a_running_cluster(ray_session, tmp_path):
    """The README's cluster flow, end to end, against the test session's local cluster.

    The session's Ray is started with its dashboard (the job server), as `ray start --head
    --include-dashboard=true` starts it; `ray start`/`ray stop` themselves are not run here, since
    `ray stop` would stop every Ray process on the machine, the session's included.
    """
    from ray._private.worker import get_dashboard_url

    dashboard = get_dashboard_url()
    if not dashboard:
        pytest.skip("the session's Ray has no dashboard, so no job server")
    out = tmp_path / "submitted"
    env = {**os.environ, "RAY_API_SERVER_ADDRESS": f"http://{dashboard}"}
    env.pop("RAY_ADDRESS", None)
    completed = subprocess.run(
        [
            _ray_cli(),
            "job",
            "submit",
            "--working-dir",
            str(REPO_ROOT),
            "--",
            # The job's `python` would be whatever the raylet's PATH finds; name this one.
            sys.executable,
            "pipelines/full_benchmark.py",
            "--smoke-test",
            "--methods",
            "none",
            "--seeds",
            "1",
            "--ratios",
            "",
            "--out",
            str(out),
            # The job server of a cluster started by ray.init (not `ray start`) resolves its
            # drivers' "auto" address by scanning processes, and would pick another cluster on
            # this machine (the emulated multi-node one): name the session's.
            "--address",
            ray_session.get_runtime_context().gcs_address,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = completed.stdout + completed.stderr
    assert completed.returncode == 0, log[-4000:]
    assert "succeeded" in log, log[-4000:]
    assert "| GMF | None |" in log
    assert (out / "results.md").is_file() and (out / "mlflow.db").is_file()
