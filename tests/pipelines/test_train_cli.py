"""The train and recommend command lines: option checking, resolved config, end-to-end runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.scripts import load_script

from invlearn_ray.models.checkpoint import load_model
from invlearn_ray.training.config import TrainConfig


def load_cli(name: str):
    return load_script(f"pipelines/{name}.py", f"{name}_cli")


@pytest.fixture(scope="module")
def train_cli():
    return load_cli("train")


@pytest.fixture(scope="module")
def smoke_run(train_cli, tmp_path_factory) -> Path:
    """One real smoke-test run (one process, no Ray), shared by the end-to-end tests; tracked
    in its default MLflow store, whatever the shell's ``MLFLOW_TRACKING_URI`` says."""
    out = tmp_path_factory.mktemp("cli") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert train_cli.main(["--smoke-test", "--method", "ig", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "--dataset is required"),
        (["--smoke-test", "--bogus"], "unrecognized arguments: --bogus"),
        (["--smoke-test", "--set", "learning_rate=1"], "is not a TrainConfig field; valid:"),
        (["--smoke-test", "--set", "lr"], "--set takes KEY=VALUE"),
        (["--smoke-test", "--set", "lr=fast"], "TrainConfig.lr expects a float, got str 'fast'"),
        (["--smoke-test", "--set", "epochs=2.5"], "TrainConfig.epochs expects an int"),
        (["--smoke-test", "--set", "compile=maybe"], "expects true or false"),
        (["--smoke-test", "--method", "ig", "--set", "method=ns"], "method is given twice"),
        (["--smoke-test", "--set", "lr=1", "--set", "lr=2"], "lr is given twice"),
        (["--smoke-test", "--method", "magic"], "invalid choice: 'magic'"),
        (["--smoke-test", "--set", "method=magic"], "method = 'magic' is not one of"),
        (["--smoke-test", "--set", "step_rule=newton"], "step_rule = 'newton' is not one of"),
        (["--smoke-test", "--set", "batch_size=0"], "batch_size must be > 0"),
        (["--smoke-test", "--workers", "-1"], "expected an integer >= 0"),
        (["--smoke-test", "--address", "auto"], "apply to --workers >= 1"),
        (["--smoke-test", "--workers", "2", "--cpus-per-worker", "0"], "--cpus-per-worker must"),
    ],
)
def test_malformed_options_are_errors(train_cli, capsys, argv, message):
    with pytest.raises(SystemExit) as stopped:
        train_cli.parse_args(argv)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_set_key_lists_every_valid_option(train_cli, capsys):
    with pytest.raises(SystemExit):
        train_cli.parse_args(["--smoke-test", "--set", "nope=1"])
    error = capsys.readouterr().err
    assert all(name in error for name in TrainConfig().to_dict())


def test_options_resolve_over_smoke_test_defaults(train_cli, tmp_path):
    config, args = train_cli.parse_args(
        [
            "--dataset",
            str(tmp_path / "data"),
            "--smoke-test",
            "--method",
            "ig",
            "--epochs",
            "3",
            "--set",
            "lr=0.005",
            "--set",
            "compile=false",
            "--set",
            "step_rule=adam",
        ]
    )
    assert config == TrainConfig(
        method="ig",
        epochs=3,
        lr=0.005,
        step_rule="adam",
        batch_size=64,
        test_batch_size=32,
        embedding_dim=8,
    )
    assert Path(args.out) == train_cli.DEFAULT_RUNS_ROOT / "data-ig-gmf-seed0"


def test_smoke_run_writes_a_loadable_model_and_strict_json_metrics(smoke_run, capsys):
    metrics = json.loads((smoke_run / "metrics.json").read_text(), parse_constant=_reject)
    assert metrics["config"]["method"] == "ig"
    assert metrics["epochs_run"] == 2 == len(metrics["history"])
    assert 0.0 <= metrics["test"]["auc"] <= 1.0
    assert metrics["best_epoch"] in (0, 1)
    model = load_model(smoke_run / "model")
    assert model.n_users == 40 and model.n_items == 60  # the tiny synthetic preset


def test_smoke_run_prints_its_config_and_where_results_are(
    train_cli, tmp_path, capsys, no_tracking_env
):
    out = tmp_path / "run"
    assert train_cli.main(["--smoke-test", "--out", str(out), "--set", "method=ns"]) == 0
    printed = capsys.readouterr().out
    resolved = json.loads(printed.split("resolved config:\n", 1)[1].split("\n}\n", 1)[0] + "\n}")
    assert resolved["train"]["method"] == "ns" and resolved["workers"] == 0
    assert f"model:         {out / 'model'}" in printed
    assert f"metrics:       {out / 'metrics.json'}" in printed
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert f"in MLflow experiment 'train' (id 1) at {store}" in printed


def test_a_run_is_logged_to_mlflow_beside_its_folder(smoke_run, no_tracking_env):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{smoke_run.parent / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("train")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.params["method"] == "ig" and run.data.tags["role"] == "train"
    assert 0.0 <= run.data.metrics["test/auc"] <= 1.0
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2  # one per epoch
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"model", "metrics.json"} <= artifacts


def test_a_folder_that_is_not_a_dataset_fails_with_a_clear_message(train_cli, tmp_path, capsys):
    assert train_cli.main(["--dataset", str(tmp_path), "--out", str(tmp_path / "run")]) == 1
    assert "not a built dataset" in capsys.readouterr().err


def test_a_finished_run_is_replaced_only_with_overwrite(train_cli, tiny_dataset, tmp_path, capsys):
    out = tmp_path / "base"
    base = ["--dataset", str(tiny_dataset), "--smoke-test", "--epochs", "1", "--out", str(out)]
    assert train_cli.main(base) == 0
    before = {path: path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()}
    capsys.readouterr()
    assert train_cli.main([*base, "--backbone", "neumf"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith(f"error: {out} already holds a finished run; pass --overwrite")
    assert {path: path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()} == before
    assert train_cli.main([*base, "--backbone", "neumf", "--overwrite"]) == 0
    assert json.loads((out / "metrics.json").read_text())["config"]["backbone"] == "neumf"


def test_a_dataset_whose_manifest_was_edited_is_refused(train_cli, tiny_dataset, tmp_path, capsys):
    dataset = Path(shutil.copytree(tiny_dataset, tmp_path / "tiny"))
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["n_items"] = 5000
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    argv = ["--dataset", str(dataset), "--smoke-test", "--out", str(tmp_path / "run")]
    assert train_cli.main(argv) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "n_items is 5000, but" in error
    assert not (tmp_path / "run").exists()


def test_a_storage_path_inside_the_run_folder_is_a_usage_error(train_cli, tmp_path, capsys):
    argv = ["--smoke-test", "--workers", "2", "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as stopped:
        train_cli.parse_args([*argv, "--storage-path", str(tmp_path / "run" / "ckpt")])
    assert stopped.value.code == 2
    assert "--storage-path must lie outside --out" in capsys.readouterr().err


def _reject(constant: str):
    raise AssertionError(f"metrics.json holds {constant}, which is not JSON")


@pytest.mark.ray
def test_recommend_cli_writes_top_k_of_a_trained_run(ray_session, smoke_run, capsys):
    recommend_cli = load_cli("recommend")
    out = smoke_run / "recs"
    assert recommend_cli.main(["--model", str(smoke_run), "--smoke-test", "--out", str(out)]) == 0
    table = pq.read_table(out)
    assert table.column_names == ["user", "rank", "item", "score"]
    assert table.num_rows == recommend_cli.SMOKE_TEST_USERS * recommend_cli.SMOKE_TEST_K
    assert "50 recommendations" in capsys.readouterr().out

    assert recommend_cli.main(["--model", str(smoke_run), "--users", "0", "ghost"]) == 1
    assert "unknown user id(s), e.g. ['ghost']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        recommend_cli.parse_args(["--model", str(smoke_run / "nothing")])
    assert "holds model.json" in capsys.readouterr().err


def test_a_setting_the_chosen_method_ignores_is_a_one_line_error(train_cli, capsys):
    with pytest.raises(SystemExit) as stopped:
        train_cli.parse_args(["--smoke-test", "--method", "ig", "--set", "tau=0.5"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "--set tau=0.5: method 'ig' does not read tau (read by: sl, sl_epsce" in error
