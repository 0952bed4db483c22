"""cluster.yaml: Ray's own schema and validators accept it, and it keeps the issue's promises.

Nothing here contacts a cloud: the JSON schema, ``prepare_config`` + ``validate_config`` (what
``ray up`` runs before it touches AWS) and the v2 autoscaler's config reader (what the head runs)
are all offline. Shell commands are parsed with ``bash -n``; the two that write a node's
environment file are run for real in a temporary HOME, since a quoting slip there would leave
every node without its PATH, token mode or MLflow address.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import ray.autoscaler
import ray.util
import yaml
from packaging.requirements import Requirement
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.autoscaler.v2.instance_manager.config import AutoscalingConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO_ROOT / "cluster.yaml"
RAY_SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"

# The directory file_mounts fill and the setup commands install the project from (as the
# shell spells it there), and the node environment file.
REMOTE_PROJECT = "~/invlearn-ray"
REMOTE_PROJECT_IN_SHELL = REMOTE_PROJECT.replace("~", "$HOME", 1)
ENV_FILE = "invlearn-env.sh"
VENV_PYTHON = '--python "$HOME/invlearn-venv/bin/python"'
CPU_TORCH_INDEX = "--index-url https://download.pytorch.org/whl/cpu"
COMMAND_KEYS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)


@pytest.fixture(scope="module")
def loaded_config() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture
def config(loaded_config: dict[str, Any]) -> dict[str, Any]:
    """A fresh copy per test: Ray's prepare_config and the negative tests mutate what they get."""
    return copy.deepcopy(loaded_config)


@pytest.fixture(scope="module")
def ray_schema() -> dict[str, Any]:
    return json.loads(RAY_SCHEMA.read_text())


def validate_like_ray(config: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Check a raw config the way Ray does before launching anything; return the prepared one.

    The raw file is checked against the schema first (prepare_config fills in defaults that could
    hide a broken field), then Ray's own preparation and semantic validation run on a copy.
    """
    jsonschema.validate(config, schema)
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def gpu_node_types(config: dict[str, Any]) -> list[str]:
    return [
        name
        for name, spec in config["available_node_types"].items()
        if spec["resources"].get("GPU", 0) > 0
    ]


def cpu_worker_node_types(config: dict[str, Any]) -> list[str]:
    return [
        name
        for name, spec in config["available_node_types"].items()
        if name != config["head_node_type"] and spec["resources"].get("GPU", 0) == 0
    ]


def worker_node_types(config: dict[str, Any]) -> list[str]:
    return [name for name in config["available_node_types"] if name != config["head_node_type"]]


def is_spot(node_spec: dict[str, Any]) -> bool:
    market = node_spec["node_config"].get("InstanceMarketOptions", {})
    return market.get("MarketType") == "spot"


def setup_commands_by_node_type(config: dict[str, Any]) -> dict[str, list[str]]:
    """What each node type runs to set itself up, resolved by Ray's own config reader.

    The head runs setup_commands + head_setup_commands; a worker type runs its own
    worker_setup_commands when it has them, else setup_commands + worker_setup_commands.
    """
    reader = AutoscalingConfig(copy.deepcopy(config), skip_content_hash=True)
    commands = {config["head_node_type"]: reader.get_head_setup_commands()}
    for name in worker_node_types(config):
        commands[name] = reader.get_worker_setup_commands(name)
    return commands


def first_cpu_worker_setup(config: dict[str, Any]) -> list[str]:
    return setup_commands_by_node_type(config)[cpu_worker_node_types(config)[0]]


def all_commands(config: dict[str, Any]) -> list[str]:
    prepared = prepare_config(copy.deepcopy(config))
    commands = [command for key in COMMAND_KEYS for command in prepared[key]]
    for spec in config["available_node_types"].values():
        commands += spec.get("worker_setup_commands", [])
        commands += spec.get("initialization_commands", [])
    return commands


def project_install_command(commands: list[str]) -> str:
    """The one command that installs this project from the mounted checkout."""
    installs = [c for c in commands if "pip install" in c and REMOTE_PROJECT_IN_SHELL in c]
    assert len(installs) == 1, f"expected one project install, found {installs}"
    return installs[0]


def torch_install_command(commands: list[str]) -> str:
    """The command that installs torch before the project (so the project keeps that build)."""
    installs = [c for c in commands if "pip install" in c and '"torch==' in c]
    assert len(installs) == 1, f"expected one torch install, found {installs}"
    return installs[0]


def pinned_version(command: str, package_pattern: str) -> str:
    match = re.search(package_pattern + r"==([0-9][\w.+]*)", command)
    assert match, f"no pinned {package_pattern} in: {command}"
    return match.group(1)


def env_writer_command(commands: list[str]) -> str:
    writers = [c for c in commands if f"> ~/{ENV_FILE}" in c]
    assert len(writers) == 1, f"expected one command writing ~/{ENV_FILE}, found {writers}"
    return writers[0]


def run_bash(command: str, home: Path, extra_env: dict[str, str]) -> subprocess.CompletedProcess:
    env = {"HOME": str(home), "PATH": os.environ["PATH"], **extra_env}
    return subprocess.run(
        ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60
    )


def sourced_environment(home: Path) -> dict[str, str]:
    """The variables a node shell has after sourcing the env file the setup wrote."""
    probe = f'source ~/{ENV_FILE} && printf "%s\\n" "$PATH" "$RAY_AUTH_MODE" "$MLFLOW_TRACKING_URI"'
    result = run_bash(probe, home, {})
    assert result.returncode == 0, result.stderr
    path, auth_mode, tracking_uri = result.stdout.splitlines()
    return {"PATH": path, "RAY_AUTH_MODE": auth_mode, "MLFLOW_TRACKING_URI": tracking_uri}


def test_raw_file_matches_rays_schema(config, ray_schema):
    validator = jsonschema.Draft7Validator(ray_schema)
    errors = [
        f"{'/'.join(map(str, error.absolute_path)) or '<top>'}: {error.message}"
        for error in validator.iter_errors(config)
    ]
    assert not errors, "cluster.yaml breaks ray-schema.json:\n" + "\n".join(errors)


def test_prepared_config_passes_rays_validate_config(config, ray_schema):
    prepared = validate_like_ray(config, ray_schema)
    assert prepared["provider"]["type"] == "aws"
    assert prepared["provider"]["region"]
    assert prepared["head_node_type"] == config["head_node_type"]


def test_every_command_list_is_explicit_so_ray_defaults_never_run(config):
    """Ray's AWS defaults pip-install a nightly Ray wheel into the system Python."""
    missing = [key for key in COMMAND_KEYS if key not in config]
    assert not missing, f"cluster.yaml must set {missing}, or Ray's defaults fill them in"
    for command in all_commands(config):
        assert "ray-wheels" not in command, command
        if "pip install" in command:
            assert "uv" in command and VENV_PYTHON in command, (
                f"install outside the pinned venv: {command}"
            )


def test_node_types_are_head_cpu_and_gpu_workers_scaling_from_zero(config):
    node_types = config["available_node_types"]
    head = config["head_node_type"]
    assert head in node_types
    assert cpu_worker_node_types(config), "no CPU worker node type"
    assert gpu_node_types(config), "no GPU worker node type"
    assert head not in gpu_node_types(config)
    for name in worker_node_types(config):
        spec = node_types[name]
        assert spec["min_workers"] == 0, f"{name}: an idle cluster must cost only the head"
        assert 1 <= spec["max_workers"] <= config["max_workers"], name
    assert not is_spot(node_types[head]), "the head must stay on-demand"
    # The head hosts the GCS, job drivers and MLflow: no Ray tasks there.
    assert node_types[head]["resources"] == {"CPU": 0}


def test_every_spot_type_has_an_identical_on_demand_fallback(config):
    node_types = config["available_node_types"]
    spot_types = [name for name in worker_node_types(config) if is_spot(node_types[name])]
    assert set(gpu_node_types(config)) & set(spot_types), "GPU workers should use spot"
    assert set(cpu_worker_node_types(config)) & set(spot_types), "CPU workers should use spot"
    reader = AutoscalingConfig(copy.deepcopy(config), skip_content_hash=True)
    priorities = {name: spec.priority for name, spec in reader.get_node_type_configs().items()}
    for spot in spot_types:
        spot_spec = copy.deepcopy(node_types[spot])
        del spot_spec["node_config"]["InstanceMarketOptions"]
        twins = [
            name
            for name in worker_node_types(config)
            if not is_spot(node_types[name])
            and node_types[name]["node_config"] == spot_spec["node_config"]
        ]
        assert len(twins) == 1, f"{spot}: expected one on-demand twin, found {twins}"
        twin = twins[0]
        for field in ("resources", "max_workers", "worker_setup_commands", "idle_timeout_s"):
            assert spot_spec.get(field) == node_types[twin].get(field), f"{spot}/{twin}: {field}"
        # Autoscaler v2 (ray up's default) prefers the higher priority among equal fits ...
        assert priorities[spot] > priorities[twin]
        # ... and v1 breaks ties by the larger node type name.
        assert max(spot, twin) == spot


def test_setup_installs_the_project_with_the_right_torch_build(config):
    commands_by_type = setup_commands_by_node_type(config)
    gpu_types = set(gpu_node_types(config))
    for name, commands in commands_by_type.items():
        project = project_install_command(commands)
        torch = torch_install_command(commands)
        assert commands.index(torch) < commands.index(project), f"{name}: torch must come first"
        assert VENV_PYTHON in project and "--reinstall-package invlearn-ray" in project, name
        if name in gpu_types:
            assert f'"{REMOTE_PROJECT_IN_SHELL}"' in project, f"{name}: no `cpu` extra on GPU"
            assert CPU_TORCH_INDEX not in torch, f"{name}: GPU nodes need PyPI's CUDA torch"
            cuda_checks = [c for c in commands if "torch.cuda.is_available()" in c]
            assert cuda_checks and commands.index(cuda_checks[0]) > commands.index(project)
        else:
            assert f'"{REMOTE_PROJECT_IN_SHELL}[cpu]"' in project, name
            assert CPU_TORCH_INDEX in torch, f"{name}: CPU nodes take torch from the CPU index"


def test_pins_match_the_project_and_the_ray_that_validates_here(config):
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    cpu_extra = [Requirement(r) for r in pyproject["project"]["optional-dependencies"]["cpu"]]
    (torch_pin,) = [str(r.specifier) for r in cpu_extra if r.name == "torch"]
    (ray_requirement,) = [
        Requirement(r) for r in pyproject["project"]["dependencies"] if r.startswith("ray")
    ]
    for name, commands in setup_commands_by_node_type(config).items():
        torch_version = pinned_version(torch_install_command(commands), "torch")
        assert f"=={torch_version}" == torch_pin, f"{name}: torch {torch_version} vs {torch_pin}"
        ray_version = pinned_version(project_install_command(commands), r"ray\[[\w,]+\]")
        # Every node joins only a head of the same Ray, and `ray up` must run that Ray too.
        assert ray_version == ray.__version__, f"{name}: ray {ray_version}"
        assert ray_requirement.specifier.contains(ray_version), name


def test_file_mounts_ship_what_installing_the_project_needs(config):
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    mounts = config["file_mounts"]
    shipped = {}
    for remote, local in mounts.items():
        if local.startswith("~"):
            continue
        source = (REPO_ROOT / local).resolve()
        assert source.exists(), f"file mount source {local} does not exist (run ray up from root)"
        shipped[remote] = source.relative_to(REPO_ROOT).as_posix()
    needed = {"pyproject.toml", pyproject["project"]["readme"]}
    package_patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    needed |= {pattern.rstrip("*") for pattern in package_patterns}
    for relative in needed:
        assert shipped.get(f"{REMOTE_PROJECT}/{relative}") == relative, f"{relative} not mounted"
    assert mounts.get("~/.ray/auth_token") == "~/.ray/auth_token", "token not shipped to nodes"


def test_start_commands_start_ray_with_the_autoscaler_and_token_mode(config):
    head_start = " ; ".join(config["head_start_ray_commands"])
    worker_start = " ; ".join(config["worker_start_ray_commands"])
    assert config["head_start_ray_commands"][0].endswith("ray stop")
    assert config["worker_start_ray_commands"][0].endswith("ray stop")
    # `ray up` warns and the head runs no autoscaler without this exact flag.
    assert "ray start --head" in head_start
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start
    assert "ray start --address=$RAY_HEAD_IP:6379" in worker_start
    # Bound to loopback, the dashboard is advertised as 127.0.0.1 and the State / job API that
    # processes on worker nodes call becomes unreachable.
    assert "--dashboard-host=0.0.0.0" in head_start
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in command:
            assert f"source ~/{ENV_FILE}" in command and "unset OMP_NUM_THREADS" in command
    assert "mlflow server" in head_start and "/health" in head_start


def test_every_command_is_valid_bash(config):
    for command in all_commands(config):
        result = subprocess.run(
            ["bash", "-n", "-c", command], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, f"{command}\n{result.stderr}"


def test_worker_env_file_points_at_the_head_and_is_idempotent(config, tmp_path):
    writer = env_writer_command(first_cpu_worker_setup(config))
    for _ in range(2):  # setup runs again on every `ray up`
        result = run_bash(writer, tmp_path, {"RAY_HEAD_IP": "10.20.30.40"})
        assert result.returncode == 0, result.stderr
    environment = sourced_environment(tmp_path)
    assert environment["MLFLOW_TRACKING_URI"] == "http://10.20.30.40:5000"
    assert environment["RAY_AUTH_MODE"] == "token"
    assert environment["PATH"].split(":")[0] == f"{tmp_path}/invlearn-venv/bin"
    bashrc = (tmp_path / ".bashrc").read_text().splitlines()
    assert bashrc.count(f"source ~/{ENV_FILE}") == 1


def test_every_gpu_type_writes_the_same_worker_env_file(config):
    commands_by_type = setup_commands_by_node_type(config)
    expected = env_writer_command(first_cpu_worker_setup(config))
    for name in gpu_node_types(config):
        assert env_writer_command(commands_by_type[name]) == expected, name


def test_worker_env_file_refuses_to_guess_the_head_address(config, tmp_path):
    writer = env_writer_command(first_cpu_worker_setup(config))
    result = run_bash(writer, tmp_path, {})
    assert result.returncode != 0
    assert "RAY_HEAD_IP" in result.stderr
    assert not (tmp_path / ENV_FILE).exists()


def test_head_env_file_uses_the_address_ray_advertises(config, tmp_path):
    """The head's MLflow URI must be reachable from workers: Ray's node address, not loopback."""
    venv_bin = tmp_path / "invlearn-venv" / "bin"
    venv_bin.mkdir(parents=True)
    fake_python = venv_bin / "python"  # stands in for the node's venv, which has Ray installed
    fake_python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    fake_python.chmod(0o755)
    writer = env_writer_command(setup_commands_by_node_type(config)[config["head_node_type"]])
    result = run_bash(writer, tmp_path, {})
    assert result.returncode == 0, result.stderr
    environment = sourced_environment(tmp_path)
    assert environment["MLFLOW_TRACKING_URI"] == f"http://{ray.util.get_node_ip_address()}:5000"
    assert environment["RAY_AUTH_MODE"] == "token"


@pytest.mark.parametrize(
    ("break_config", "error", "message"),
    [
        pytest.param(
            lambda c: c["available_node_types"]["gpu_spot"]["resources"].update(GPU=0.5),
            jsonschema.ValidationError,
            "is not of type 'integer'",
            id="fractional-resource",
        ),
        pytest.param(
            lambda c: c.update(idle_timeout_minute=5),
            jsonschema.ValidationError,
            "Additional properties are not allowed",
            id="unknown-top-level-key",
        ),
        pytest.param(
            lambda c: c["available_node_types"]["cpu_spot"].update(max_worker=3),
            jsonschema.ValidationError,
            "Additional properties are not allowed",
            id="unknown-node-type-key",
        ),
        pytest.param(
            lambda c: c.update(head_node_type="head_typo"),
            ValueError,
            "`head_node_type` must be one of `available_node_types`",
            id="unknown-head-node-type",
        ),
        pytest.param(
            lambda c: c["available_node_types"]["gpu_spot"].update(min_workers=13),
            ValueError,
            "smaller than the sum of `min_workers`",
            id="min-workers-above-cap",
        ),
    ],
)
def test_validation_catches_a_broken_file(config, ray_schema, break_config, error, message):
    validate_like_ray(copy.deepcopy(config), ray_schema)  # the unbroken file passes
    break_config(config)
    with pytest.raises(error, match=re.escape(message)):
        validate_like_ray(config, ray_schema)
