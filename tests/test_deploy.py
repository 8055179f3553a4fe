"""deploy/: manifests parse and agree with each other, and every job they run exists."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"

# file -> (apiVersion, kind) of each YAML document in it
EXPECTED = {
    "workspace-pvc.yaml": [("v1", "PersistentVolumeClaim")],
    "raycluster.yaml": [("ray.io/v1", "RayCluster")],
    "rayjob-tag-corpus.yaml": [("ray.io/v1", "RayJob")],
    "raycronjob-nightly.yaml": [("ray.io/v1", "RayCronJob")],
    "cronjob-nightly.yaml": [("batch/v1", "CronJob")],
}
WORKSPACE_MOUNT = "/data/workspace"
JOB_RE = re.compile(r"\bpython3?\s+-m\s+jobs\.([A-Za-z_]\w*)")
CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-]+$")


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d is not None]


def doc(name: str) -> dict:
    (d,) = docs(name)
    return d


def job_names(text: str) -> set[str]:
    return set(JOB_RE.findall(text))


def deploy_texts() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(DEPLOY.iterdir()) if p.is_file()}


def ray_cluster_specs() -> dict[str, dict]:
    return {
        "raycluster.yaml": doc("raycluster.yaml")["spec"],
        "rayjob-tag-corpus.yaml": doc("rayjob-tag-corpus.yaml")["spec"]["rayClusterSpec"],
        "raycronjob-nightly.yaml": doc("raycronjob-nightly.yaml")["spec"]["jobTemplate"]["rayClusterSpec"],
    }


def pod_specs(cluster: dict) -> list[dict]:
    groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
    return [g["template"]["spec"] for g in groups]


def dockerfile_arg(name: str) -> str:
    m = re.search(rf"^ARG\s+{name}=(\S+)", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert m, f"Dockerfile has no ARG {name}=..."
    return m.group(1)


# --- YAML ------------------------------------------------------------------------------------

def test_every_yaml_is_known():
    assert sorted(p.name for p in DEPLOY.glob("*.y*ml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_yaml_parses_with_expected_kind(name):
    got = [(d.get("apiVersion"), d.get("kind")) for d in docs(name)]
    assert got == EXPECTED[name]
    for d in docs(name):
        assert d["metadata"]["name"]


@pytest.mark.parametrize("name", sorted(ray_cluster_specs()))
def test_ray_pods_use_image_and_mount_workspace(name):
    cluster = ray_cluster_specs()[name]
    claim = doc("workspace-pvc.yaml")["metadata"]["name"]
    assert cluster["rayVersion"] == dockerfile_arg("RAY_VERSION")
    for pod in pod_specs(cluster):
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in pod["containers"]:
            assert c["image"].startswith("tagger")
            (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == WORKSPACE_MOUNT]
            assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim


def test_raycluster_groups():
    spec = doc("raycluster.yaml")["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"gpu", "cpu"}
    for g in groups.values():
        assert 0 <= g["minReplicas"] <= g["maxReplicas"]
    gpu_limits = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu_limits["nvidia.com/gpu"] == 1
    cpu_limits = groups["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in cpu_limits


def test_rayjob_encodes_then_tags():
    spec = doc("rayjob-tag-corpus.yaml")["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["submissionMode"] == "K8sJobMode"
    assert isinstance(spec["ttlSecondsAfterFinished"], int)
    entry = spec["entrypoint"]
    # the chain must run on the Ray head, not in the submitter's shell
    assert entry.startswith('bash -c "') and entry.endswith('"')
    assert entry.index("jobs.encode") < entry.index("jobs.tag")
    assert all(f"--workspace {WORKSPACE_MOUNT}" in part for part in entry.split("&&"))


def test_raycronjob_nightly():
    spec = doc("raycronjob-nightly.yaml")["spec"]
    assert spec["schedule"] == "0 2 * * *"
    job = spec["jobTemplate"]
    assert job_names(job["entrypoint"]) == {"nightly"}
    assert f"--workspace {WORKSPACE_MOUNT}" in job["entrypoint"] and "--source " in job["entrypoint"]
    assert job["shutdownAfterJobFinishes"] is True


def test_cronjob_submits_to_the_raycluster():
    cron = doc("cronjob-nightly.yaml")["spec"]
    assert len(cron["schedule"].split()) == 5
    assert cron["concurrencyPolicy"] == "Forbid"
    (container,) = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    command = " ".join(container.get("command", []) + container.get("args", []))
    head_svc = doc("raycluster.yaml")["metadata"]["name"] + "-head-svc"
    assert f"ray job submit --address http://{head_svc}:8265 --working-dir /app" in command
    assert job_names(command) == {"nightly"}


# --- entrypoints -----------------------------------------------------------------------------

def test_deploy_files_name_the_expected_jobs():
    texts = deploy_texts()
    named = set().union(*(job_names(t) for t in texts.values()))
    assert {"encode", "tag", "nightly"} <= named
    assert job_names(texts["crontab.example"]) == {"nightly"}


@pytest.mark.parametrize("name", sorted(deploy_texts()))
def test_named_jobs_exist(name):
    for job in sorted(job_names(deploy_texts()[name])):
        assert (ROOT / "jobs" / f"{job}.py").is_file(), f"deploy/{name} runs jobs.{job}: no jobs/{job}.py"


# --- crontab, Dockerfile ---------------------------------------------------------------------

def cron_entry(line: str) -> tuple[list[str], str]:
    parts = line.split(None, 5)
    assert len(parts) == 6, f"not 5 fields + command: {line!r}"
    assert all(CRON_FIELD.match(f) for f in parts[:5]), f"bad cron fields: {parts[:5]}"
    return parts[:5], parts[5]


def test_crontab_lines_parse():
    lines = (DEPLOY / "crontab.example").read_text().splitlines()
    active = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    assert active, "no cron line"
    for line in active:
        fields, command = cron_entry(line)
        assert fields == ["0", "2", "*", "*", "*"]
        assert "ray job submit --address http://127.0.0.1:8265 --working-dir" in command
        assert "%" not in command  # cron turns % into newlines
    guarded = [ln.lstrip("# ") for ln in lines if ln.lstrip().startswith("#") and "flock" in ln]
    guarded = [g for g in guarded if g[:1].isdigit()]
    assert guarded, "no commented flock line"
    for line in guarded:
        _, command = cron_entry(line)
        assert command.startswith("flock -n ") and job_names(command) == {"nightly"}


def test_dockerfile():
    text = (DEPLOY / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms and re.match(r"nvidia/cuda:12\.[\d.]+-(cudnn-)?runtime-ubuntu", froms[-1])
    assert re.search(r"^ARG PYTHON_VERSION=3\.11$", text, re.M)
    assert re.search(r"pip uninstall -y faiss-cpu\s*\\?\s*&& pip install faiss-gpu\b", text)
    assert "ray[default,data]" in text and "pip install ." in text
    copied = set(re.findall(r"^COPY\s+(\S+)\s", text, re.M))
    assert {"tagger", "jobs", "schemas"} <= copied  # every folder pyproject.toml builds from
    assert re.search(r"^WORKDIR /app$", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
