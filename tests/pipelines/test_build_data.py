"""The build_data command line: option checking, resolved config, and end-to-end runs."""

from __future__ import annotations

import pytest
import torch
from support.scripts import load_script

from invlearn_ray.data import dataset_dir as dd
from invlearn_ray.data.labels import FinishRateRule, RatingRule
from invlearn_ray.data.loading import load_dataset
from invlearn_ray.data.manifest import Manifest


@pytest.fixture(scope="module")
def cli():
    return load_script("pipelines/build_data.py", "build_data_cli")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--source", "excel", "x.xlsx"], "unknown kind 'excel'"),
        (["--source", "ml1m"], "--source ml1m needs a path"),
        (["--source", "synthetic", "x"], "takes no path"),
        (["--source", "presplit", "."], "needs exactly one folder and --name"),
        (["--columns", "user"], "NAME=SOURCE pairs"),
        (["--columns", "score=s"], "unknown column 'score'"),
        (["--source", "ml1m", "r.dat", "--columns", "user=u"], "--columns applies to inter"),
        (["--pos-threshold", "4"], "--pos-threshold needs --rule rating"),
        (["--rule", "finish-rate", "--pos-threshold", "4"], "applies to --rule rating"),
        (["--rule", "rating", "--pos-threshold", "2", "--neg-threshold", "3"], "must be below"),
        (["--fractions", "0.5,0.5"], "takes three numbers"),
        (["--fractions", "0.5,0.3,0.3"], "sum to 1"),
        (["--shards", "0"], "positive integer"),
        (["--smoke-test", "--source", "synthetic"], "drop --source"),
        (["--engine", "memory", "--num-cpus", "2"], "apply to --engine ray"),
        (["--source", "ml1m", "r.dat", "--feedback", "rating"], "--source synthetic only"),
        (["--source", "ml1m", "r.dat", "--rows", "5"], "--source synthetic only"),
        (["--rows", "0"], "positive integer"),
        (["--preset", "tiny", "--rows", "100000"], "--rows: synthetic: labeled_density"),
        (["--smoke-test", "--rows", "50"], "drop --source/--rows"),
        (["--preset", "huge"], "invalid choice: 'huge'"),
    ],
)
def test_malformed_options_are_errors(cli, capsys, argv, message):
    with pytest.raises(SystemExit) as stopped:
        cli.config_from_args(argv)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_no_arguments_resolve_to_the_synthetic_default(cli):
    config, args = cli.config_from_args([])
    assert config.source.kind == "synthetic"
    assert config.source.synthetic.n_users == 1000
    assert config.dataset_name == "synthetic"
    assert args.out == str(cli.DEFAULT_OUT_ROOT / "synthetic")
    assert config.rule is None and config.source.synthetic.default_rule() == FinishRateRule()


def test_source_and_rule_options_resolve(cli, tmp_path):
    data = tmp_path / "ml-100k.inter"
    data.write_text("user_id:token\titem_id:token\trating:float\n1\t2\t3\n")
    config, args = cli.config_from_args(
        [
            "--source",
            "ml100k-inter",
            str(data),
            "--rule",
            "rating",
            "--pos-threshold",
            "4",
            "--neg-threshold",
            "1",
            "--label-fraction",
            "0.3",
            "--cold-policy",
            "drop",
            "--shards",
            "4",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert (config.source.kind, config.dataset_name) == ("inter", "ml100k")
    assert config.rule == RatingRule(4, 1)
    assert config.split.label_fraction == 0.3 and config.split.cold_policy == "drop"
    assert config.shards == 4 and args.out == str(tmp_path / "o")


def test_out_takes_a_uri_as_is_and_a_relative_path_made_absolute(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.config_from_args(["--out", "s3://bucket/ds"])[1].out == "s3://bucket/ds"
    assert cli.config_from_args(["--out", "rel/ds"])[1].out == str(tmp_path / "rel" / "ds")
    assert not (tmp_path / "s3:").exists()


def test_preset_and_rows_keep_the_shape_and_set_the_clear_rows(cli):
    config, _ = cli.config_from_args(["--preset", "micro_video", "--rows", "1000000"])
    synthetic = config.source.synthetic
    assert (synthetic.n_users, synthetic.n_items) == (37_692, 131_690)
    assert synthetic.expected_clear_rows == pytest.approx(1_000_000)
    assert synthetic.exposure == "sampled" and synthetic.feedback == "micro_video"
    default, _ = cli.config_from_args(["--synthetic-preset", "ml20m_scale"])
    assert default.source.synthetic.expected_observed_rows == pytest.approx(20_000_263)


@pytest.mark.slow
def test_micro_video_shape_builds_small_without_ray(cli, tmp_path):
    """The paper-sized ids at 3,000 clear rows: the sampled generator, end to end."""
    out = tmp_path / "micro"
    argv = ["--preset", "micro_video", "--rows", "3000", "--engine", "memory", "--out", str(out)]
    assert cli.main(argv) == 0
    manifest = Manifest.read(out)
    assert (manifest.n_users, manifest.n_items) == (37_692, 131_690)
    stats = manifest.synthetic["stats"]
    assert stats["clear_rows"] == pytest.approx(3000, rel=0.1)
    assert stats["observed_rows"] == manifest.input_rows and manifest.duplicates_dropped == 0
    data = load_dataset(out)
    unlabeled = data.observed_unlabeled
    assert torch.equal(unlabeled.hidden_labels, data.truth(unlabeled.users, unlabeled.items))


def test_memory_engine_smoke_run_prints_config_and_counts(cli, capsys, tmp_path):
    assert cli.main(["--smoke-test", "--engine", "memory", "--out", str(tmp_path / "s")]) == 0
    printed = capsys.readouterr().out
    assert "resolved config:" in printed and f"written to {tmp_path / 's'}" in printed
    assert ": holds" in printed
    assert len(load_dataset(tmp_path / "s").train_train) > 0


def test_bad_input_exits_with_the_error_message(cli, capsys, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,rating\n1,2,3\n1,3,inf\n")
    code = cli.main(
        ["--source", "csv", str(bad), "--engine", "memory", "--out", str(tmp_path / "o")]
    )
    assert code == 1
    assert "bad.csv:3: column 'rating': value inf is infinite" in capsys.readouterr().err


@pytest.mark.ray
@pytest.mark.slow
def test_ray_smoke_run_writes_a_complete_dataset(cli, ray_session, tmp_path):
    out = tmp_path / "smoke"
    assert cli.main(["--smoke-test", "--shards", "2", "--out", str(out)]) == 0
    assert all((out / name).is_dir() for name in dd.ALL_SPLITS)
    assert (out / dd.TRUTH_FILE).is_file()
    manifest = Manifest.read(out)
    assert manifest.engine == "ray" and manifest.conservation["holds"]
    assert cli.main(["--smoke-test", "--seed", "3", "--out", str(out)]) == 1  # different dataset


def test_the_default_build_is_the_dataset_the_quick_benchmark_trains_on(cli):
    from invlearn_ray.experiments.benchmark import PROFILES

    (quick_dataset,) = PROFILES["quick"].datasets
    config, _ = cli.config_from_args([])
    assert config.inputs() == quick_dataset.build_config().inputs()
