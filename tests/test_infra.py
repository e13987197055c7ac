"""infra/ against the code: every manifest, the compose file and the Dockerfile parse and
validate, and what they name exists. This machine has no container engine and no
Kubernetes, so nothing here is run: the files are checked for what can drift from the
code — images and tags, commands and their options (ede's own parser, Ray's `ray start`),
environment variables (each one some code reads), GPU requests where a run asks for GPUs,
the Ray version — and Kubernetes manifests are validated against Kubernetes' schemas
(kubernetes-validate) and KubeRay's (tests/fixtures/kuberay-v1.schema.json).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
import shlex
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from ede.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
INFRA = REPO / "infra"
K8S_VERSION = "1.33.0"
KUBERAY = Draft202012Validator(
    json.loads((REPO / "tests" / "fixtures" / "kuberay-v1.schema.json").read_text())
)
INVALID = (kubernetes_validate.ValidationError, jsonschema.ValidationError)
MANIFESTS = ["ray-cluster.yaml", "ray-job.yaml", "prefect-worker-k8s.yaml"]
COMPOSE = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
PROJECT = yaml.safe_load((REPO / "prefect.yaml").read_text())


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((INFRA / name).read_text()) if d]


def _one(kind: str) -> dict:
    (doc,) = [d for name in MANIFESTS for d in _docs(name) if d["kind"] == kind]
    return doc


def _version() -> str:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def _pod_templates(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    if doc["kind"] == "RayCluster":
        groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
        return [g["template"] for g in groups]
    if doc["kind"] == "RayJob":
        return [spec["submitterPodTemplate"]] if "submitterPodTemplate" in spec else []
    return [spec["template"]] if "template" in spec else []


def validate(doc: dict) -> None:
    """Kubernetes' own kinds by kubernetes-validate (strict: unknown fields are errors);
    KubeRay's by its schema, their pod templates as Kubernetes PodTemplates."""
    if doc["apiVersion"].startswith("ray.io/"):
        error = best_match(KUBERAY.iter_errors(doc))
        if error is not None:
            raise error
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    for template in _pod_templates(doc) if doc["apiVersion"].startswith("ray.io/") else []:
        pod = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}}
        kubernetes_validate.validate({**pod, "template": template}, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name", MANIFESTS)
def test_kubernetes_manifests_validate(name):
    docs = _docs(name)
    assert docs
    for doc in docs:
        validate(doc)


def test_the_validators_catch_mistakes():
    """A typo in KubeRay's fields, in a pod template, and in a Kubernetes kind fails."""
    import copy

    cluster = _one("RayCluster")
    typo = copy.deepcopy(cluster)
    typo["spec"]["workerGroupSpecs"][0]["maxReplica"] = 4
    with pytest.raises(INVALID):
        validate(typo)
    pod = copy.deepcopy(cluster)
    pod["spec"]["workerGroupSpecs"][1]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(INVALID):
        validate(pod)
    deployment = copy.deepcopy(_one("Deployment"))
    deployment["spec"]["replicas"] = "one"
    with pytest.raises(INVALID):
        validate(deployment)


# ------------------------------------------------------------------ images and versions


def _ede_images() -> dict[str, str]:
    """Where an ede image is named: {place: image}."""
    found = {}
    for name, service in COMPOSE["services"].items():
        if "build" in service:
            found[f"compose:{name}"] = service["image"]
    for doc in [*_docs("ray-cluster.yaml")]:
        for i, template in enumerate(_pod_templates(doc)):
            for c in template["spec"]["containers"]:
                found[f"RayCluster[{i}]:{c['name']}"] = c["image"]
    for d in PROJECT["deployments"]:
        image = d["work_pool"].get("job_variables", {}).get("image")
        if image:
            found[f"prefect.yaml:{d['name']}"] = image
    return found


def test_ede_images_are_the_package_version_cpu_or_cuda():
    version = _version()
    images = _ede_images()
    assert len(images) >= 8, images
    assert set(images.values()) == {f"ede:{version}", f"ede:{version}-cuda"}, images
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert f"-t ede:{version} " in dockerfile and f"-t ede:{version}-cuda" in dockerfile


def test_pinned_versions_are_the_installed_ones():
    from importlib.metadata import version

    assert _one("RayCluster")["spec"]["rayVersion"] == version("ray")
    prefect_images = [COMPOSE["services"]["prefect-server"]["image"]] + [
        c["image"] for c in _one("Deployment")["spec"]["template"]["spec"]["containers"]
    ]
    for image in prefect_images:
        assert image.startswith(f"prefecthq/prefect:{version('prefect')}-python3.11"), image
    assert PROJECT["prefect-version"] == version("prefect")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", (INFRA / "Dockerfile").read_text(), re.M))
    assert args["TORCH_VERSION"] == version("torch").split("+")[0]
    assert args["TORCH_INDEX"].endswith("/whl/cpu")  # CPU by default, CUDA by build arg


# --------------------------------------------------------------------- the Dockerfile


def _instructions() -> list[tuple[str, str]]:
    text = (INFRA / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or a folder above it decides;
    `!` re-includes."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    out = False
    for pattern in patterns:
        glob = pattern.removeprefix("!")
        if any(fnmatch.fnmatch(p, glob) for p in prefixes):
            out = not pattern.startswith("!")
    return out


def test_dockerfile_installs_the_repo_as_a_non_root_user_without_secrets():
    steps = _instructions()
    users = [arg for op, arg in steps if op == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    assert [op for op, _ in steps].index("USER") > max(
        i for i, (op, _) in enumerate(steps) if op == "RUN"
    ), "USER after the last RUN: nothing runs as root at run time"
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = []
    for op, arg in steps:
        if op == "COPY":
            *sources, _ = arg.split()
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: not in the repo"
                assert not _ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
                copied.append(source)
    assert {"pyproject.toml", "ede", "flows"} <= set(copied)
    assert any('pip install ".[flows]"' in arg for op, arg in steps if op == "RUN")
    for path in (".venv/bin/python", ".env", "key.pem", "tests/conftest.py", ".git/config"):
        assert _ignored(path, patterns), f"{path} would be sent to the build"
    cmd = json.loads(dict(steps)["CMD"])
    assert cmd[0] == "ede"
    env = [arg for op, arg in steps if op in ("ENV", "ARG")]
    assert not any(re.search(r"AWS_|SECRET|TOKEN|PASSWORD", e) for e in env)


# ----------------------------------------------------------------- commands and options


def _compose_text(value: str) -> str:
    """A compose value with `${VAR:-default}` as its default and `${VAR:?msg}` as `x`."""
    value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{\w+(:?\?[^}]*)?\}", "x", value)


def _ray_start(argv: list[str]) -> dict:
    """`ray start`'s options, parsed by Ray's own command (nothing is started)."""
    from ray.scripts.scripts import start

    assert argv[:2] == ["ray", "start"], argv
    return start.make_context("start", argv[2:]).params


def test_ray_commands_parse_and_offer_the_trial_driver_resource():
    head = _ray_start(shlex.split(_compose_text(COMPOSE["services"]["ray-head"]["command"])))
    assert head["head"] and json.loads(head["resources"])["trial_driver"] >= 1
    worker = _ray_start(shlex.split(_compose_text(COMPOSE["services"]["ray-worker"]["command"])))
    assert worker["address"] == "ray-head:6379"
    cluster = _one("RayCluster")["spec"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        argv = ["ray", "start"] + [
            a for k, v in group["rayStartParams"].items() for a in shlex.split(f"--{k}={v}")
        ]
        _ray_start(argv)
    params = cluster["headGroupSpec"]["rayStartParams"]
    assert json.loads(shlex.split(params["resources"])[0])["trial_driver"] >= 1


def _ede_commands() -> dict[str, list[str]]:
    job = _one("RayJob")["spec"]["entrypoint"]
    dockerfile = json.loads(dict(_instructions())["CMD"])
    return {"RayJob": shlex.split(job), "Dockerfile CMD": dockerfile}


@pytest.mark.parametrize("place", ["RayJob", "Dockerfile CMD"])
def test_ede_commands_parse(place, capsys):
    argv = _ede_commands()[place]
    assert argv[0] == "ede"
    if argv[1:] == ["--help"]:
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(argv[1:])
        assert exit_.value.code == 0
    else:
        build_parser().parse_args(argv[1:])


def test_the_flows_job_entrypoint_parses():
    from ede.distributed.cluster import Scaling
    from ede.pipeline import training_job
    from ede.pipeline.layout import RunLayout
    from ede.pipeline.settings import Budget

    run = training_job.TrainingRun(
        "s3://b/prepared/k",
        RunLayout("s3://b", "v1"),
        Budget(3, 64, 2),
        4,
        Scaling(2, True, 0.5),
        0.02,
        False,
    )
    argv = run.argv()
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.prepared, args.storage, args.version) == (
        "train-run",
        "s3://b/prepared/k",
        "s3://b",
        "v1",
    )
    assert (args.trials, args.seed, args.batch_size, args.epochs) == (4, 3, 64, 2)
    assert (args.workers, args.gpu, args.cpus_per_worker, args.target_fpr) == (2, True, 0.5, 0.02)
    assert args.no_refit
    assert training_job.TrainingRun.from_args(args) == run  # the command line, parsed back
    for changed in (
        dataclasses.replace(run, refit=True),
        dataclasses.replace(run, budget=Budget()),
    ):
        assert (
            training_job.TrainingRun.from_args(build_parser().parse_args(changed.argv()[1:]))
            == changed
        )


def _prefect(argv: list[str]) -> dict:
    """A `prefect server|worker ...` command's arguments, parsed by Prefect's own CLI."""
    from prefect.cli.server import server_app
    from prefect.cli.worker import worker_app

    assert argv[0] == "prefect", argv
    app = {"server": server_app, "worker": worker_app}[argv[1]]
    _, bound, _ = app.parse_args(argv[2:], exit_on_error=False, print_error=False)
    return dict(bound.arguments)


def test_every_work_pool_has_a_worker_of_its_type():
    """Process pools: a compose worker; the Kubernetes pool: infra's worker Deployment.
    Every Prefect command parses with Prefect's CLI."""
    compose = {}
    for service in COMPOSE["services"].values():
        argv = shlex.split(str(service.get("command", "")))
        if argv[:1] == ["prefect"]:
            args = _prefect(argv)
            if argv[1] == "worker":
                compose[args["work_pool_name"]] = args["worker_type"]
    (container,) = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    args = _prefect(container["command"])
    k8s = {args["work_pool_name"]: args["worker_type"]}
    for d in PROJECT["deployments"]:
        pool = d["work_pool"]["name"]
        cluster = "cluster" in d.get("tags", [])
        assert (k8s if cluster else compose).get(pool) == (
            "kubernetes" if cluster else "process"
        ), f"{d['name']}: no worker for pool {pool}"


# --------------------------------------------------------------- environment variables


def _read_by_code() -> set[str]:
    """Names ede and its flows read from the environment: the UPPER_CASE string literals
    of every module that touches os.environ (a name read through a constant or a tuple
    of names, such as `ede.distributed.cluster.PASS_ENV`, counts)."""
    names = set()
    for path in [*REPO.glob("ede/**/*.py"), *REPO.glob("flows/*.py")]:
        text = path.read_text()
        if "os.environ" in text or "getenv" in text:
            names |= set(re.findall(r"[\"']([A-Z][A-Z0-9]*_[A-Z0-9_]+)[\"']", text))
    return names


# Read by the tools the images run, not by ede: each checked against the tool itself below.
PREFECT_SETTINGS = {"PREFECT_API_URL", "PREFECT_SERVER_ANALYTICS_ENABLED"}
RAY_SETTINGS = {"RAY_ADDRESS", "RAY_AUTH_MODE"}


def _env_set() -> dict[str, set[str]]:
    """{variable: places} for every variable infra/ or prefect.yaml sets for ede's image."""
    found: dict[str, set[str]] = {}

    def add(names, place):
        for n in names:
            found.setdefault(n, set()).add(place)

    for name, service in COMPOSE["services"].items():
        if "build" in service:
            add(service.get("environment", {}), f"compose:{name}")
    for doc in _docs("ray-cluster.yaml"):
        for template in _pod_templates(doc):
            for c in template["spec"]["containers"]:
                add([e["name"] for e in c.get("env", [])], "RayCluster")
    job_env = yaml.safe_load(_one("RayJob")["spec"]["runtimeEnvYAML"])["env_vars"]
    add(job_env, "RayJob")
    for d in PROJECT["deployments"]:
        add(d["work_pool"].get("job_variables", {}).get("env", {}), f"prefect.yaml:{d['name']}")
    return found


def test_every_variable_set_is_one_the_code_reads():
    from prefect import settings

    known = _read_by_code()
    assert {"EDE_RAY_SUBMIT", "RAY_JOBS_ADDRESS", "AWS_SECRET_ACCESS_KEY"} <= known
    for name in PREFECT_SETTINGS:
        assert hasattr(settings, name), f"{name}: not a Prefect setting"
    ray_source = Path(__import__("ray").__file__).parent
    for name in RAY_SETTINGS:
        hits = subprocess.run(
            ["grep", "-rlq", "--include=*.py", name, str(ray_source / "_private")],
            check=False,
        )
        assert hits.returncode == 0, f"{name}: Ray does not read it"
    unknown = {
        n: sorted(places)
        for n, places in _env_set().items()
        if n not in known | PREFECT_SETTINGS | RAY_SETTINGS
    }
    assert not unknown, f"set but read by nothing: {unknown}"
    server = COMPOSE["services"]["prefect-server"]["environment"]
    assert set(server) <= PREFECT_SETTINGS


def test_no_credential_value_is_written_down():
    """Credentials come from the shell (compose) or a Kubernetes secret, never a value."""
    for name, service in COMPOSE["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY", key):
                assert str(value).startswith("${"), f"compose:{name}: {key} has a value"
        for key, value in (service.get("environment") or {}).items():
            if key.startswith("MC_HOST"):
                assert "${MINIO_ROOT_PASSWORD" in value
    for name in MANIFESTS:
        for doc in _docs(name):
            for template in _pod_templates(doc):
                for c in template["spec"]["containers"]:
                    for e in c.get("env", []):
                        assert not re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY", e["name"])
                    for source in c.get("envFrom", []):
                        assert source["secretRef"]["name"] == "ede-s3"


# ------------------------------------------------------------------------------- GPUs


def _groups() -> list[dict]:
    return _one("RayCluster")["spec"]["workerGroupSpecs"]


def _limits(group: dict) -> dict:
    (c,) = group["template"]["spec"]["containers"]
    assert c["resources"]["requests"] == c["resources"]["limits"], group["groupName"]
    return c["resources"]["limits"]


def _cpus(quantity) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _gpu_runs() -> list[tuple[str, int, float]]:
    """(place, workers, CPUs per worker) of every run infra/ or prefect.yaml asks GPUs for."""
    runs = []
    job = build_parser().parse_args(_ede_commands()["RayJob"][1:])
    if job.gpu:
        runs.append(("RayJob", job.workers, job.cpus_per_worker))
    for d in PROJECT["deployments"]:
        p = d.get("parameters", {})
        if p.get("use_gpu"):
            runs.append((d["name"], p.get("workers", 1), p.get("cpus_per_worker", 1.0)))
    return runs


def test_gpu_workers_exist_wherever_a_run_asks_for_gpus():
    runs = _gpu_runs()
    assert runs, "infra/ asks for GPUs somewhere (the RayJob, the cluster deployment)"
    gpu_groups = [g for g in _groups() if int(_limits(g).get("nvidia.com/gpu", 0)) > 0]
    assert gpu_groups, "use_gpu is set but the RayCluster has no GPU worker group"
    for place, workers, cpus in runs:
        fits = [
            g
            for g in gpu_groups
            if _cpus(_limits(g)["cpu"]) >= cpus
            and g["maxReplicas"] * int(_limits(g)["nvidia.com/gpu"]) >= workers
        ]
        assert fits, f"{place}: {workers} worker(s) x (1 GPU, {cpus} CPUs) fit no GPU group"
    head = _one("RayCluster")["spec"]["headGroupSpec"]["rayStartParams"]
    assert head.get("num-cpus") == "0"  # trial drivers and job drivers hold no CPU there
    for g in _groups():
        cuda = g["template"]["spec"]["containers"][0]["image"].endswith("-cuda")
        assert cuda == (g in gpu_groups), f"{g['groupName']}: CUDA image iff GPUs"
        assert 0 <= g["minReplicas"] <= g.get("replicas", 0) <= g["maxReplicas"]
    assert _one("RayCluster")["spec"]["enableInTreeAutoscaling"] is True
