"""The Helm chart, rendered and checked with the real helm (v3.18, from ``.ci/install-tools.sh``).

* ``helm lint --strict`` with default values and with every flag on;
* every rendered object validated offline with ``kubernetes-validate --strict`` for Kubernetes 1.29 and
  1.33. Its schemas have no ServiceMonitor / PrometheusRule (monitoring.coreos.com CRD kinds): exactly those
  two kinds are left out of that run and validated instead with jsonschema against a strict subset of the
  Prometheus Operator's schema (below). The TrainingRun CRD itself is a built-in kind and is validated like
  the rest;
* values.schema.json rejects typos and wrong types (helm's error is asserted);
* crds/ equals manifests/crd.yaml; manifests/rbac.yaml and manifests/operator.yaml equal a fresh render;
* the operator's env contract, security settings and RBAC verbs (trainer defaults and profiles:
  ``test_chart_profiles``).

A missing helm fails the tests with the hint to run .ci/install-tools.sh (never a silent skip)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support.helm_tools import sync

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "crypto-price-predictor"
K8S_VERSIONS = ["1.29.0", "1.33.0"]
NOT_IN_K8S_SCHEMAS = {"ServiceMonitor", "PrometheusRule"}
ALL_ON = [
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "metrics.prometheusRule.enabled=true",
    "--set",
    "metrics.grafanaDashboard.enabled=true",
    "--set",
    "image.tag=1.2.3",
    "--set",
    "trainer.defaults.image=registry.example.com/trainer:1.2.3",
    "--set",
    "s3.endpoint=http://minio.minio:9000",
    "--set",
    "s3.secretName=s3-creds",
    "--set",
    "s3.checkpointPrefix=s3://models/runs",
]
NAMESPACED = ["--set", "watchNamespaces={ml,research}"]
CONFIGS = {"default": [], "all-flags": ALL_ON, "namespaced": [*ALL_ON, *NAMESPACED]}


@pytest.fixture(scope="module")
def helm_bin() -> str:
    try:
        return str(sync.find_tool("helm"))
    except sync.ToolMissing as exc:
        pytest.fail(str(exc), pytrace=False)


def render(*set_args: str, crds: bool = False) -> list[dict[str, Any]]:
    extra = ["--include-crds"] if crds else []
    return sync.split_docs(sync.helm_template(*set_args, *extra))


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


# --- lint and offline schema validation ---------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS)
def test_helm_lint(helm_bin: str, config: str) -> None:
    res = sync.helm("lint", "--strict", str(CHART), *CONFIGS[config], check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 chart(s) failed" in res.stdout


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("config", CONFIGS)
def test_rendered_objects_pass_kubernetes_validate_strict(
    helm_bin: str, config: str, version: str, tmp_path: Path
) -> None:
    docs = render(*CONFIGS[config], crds=True)
    builtin = [d for d in docs if d["kind"] not in NOT_IN_K8S_SCHEMAS]
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(builtin, sort_keys=False))
    res = subprocess.run(
        [str(REPO / ".venv/bin/kubernetes-validate"), "--strict", "-k", version, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "Couldn't find schema" not in out, out  # every object was really checked against a schema
    assert out.count(" passed for resource ") == len(builtin), out


def test_kubernetes_validate_is_really_strict(tmp_path: Path) -> None:
    """Guard for the test above: a misspelt Deployment field must fail --strict."""
    dep = one(render(), "Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesytem"] = True
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(dep))
    res = subprocess.run(
        [str(REPO / ".venv/bin/kubernetes-validate"), "--strict", "-k", K8S_VERSIONS[0], str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode != 0
    assert "readOnlyRootFilesytem" in res.stdout + res.stderr


# The subset of monitoring.coreos.com/v1 the chart uses, strict (additionalProperties: false), so a typo in
# the templates fails here; field names and types follow the Prometheus Operator's CRDs.
_DURATION = {
    "type": "string",
    "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
_META = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _STRMAP},
}


def _strict(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": required, "properties": props}


MONITORING_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": _strict(
        {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _META,
            "spec": _strict(
                {
                    "selector": _strict({"matchLabels": _STRMAP}, ["matchLabels"]),
                    "namespaceSelector": _strict(
                        {"matchNames": {"type": "array", "items": {"type": "string"}}}, []
                    ),
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": _strict(
                            {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "interval": _DURATION,
                                "scrapeTimeout": _DURATION,
                                "honorLabels": {"type": "boolean"},
                            },
                            ["port"],
                        ),
                    },
                },
                ["selector", "endpoints"],
            ),
        },
        ["apiVersion", "kind", "metadata", "spec"],
    ),
    "PrometheusRule": _strict(
        {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PrometheusRule"},
            "metadata": _META,
            "spec": _strict(
                {
                    "groups": {
                        "type": "array",
                        "items": _strict(
                            {
                                "name": {"type": "string", "minLength": 1},
                                "interval": _DURATION,
                                "rules": {
                                    "type": "array",
                                    "items": _strict(
                                        {
                                            "alert": {"type": "string"},
                                            "record": {"type": "string"},
                                            "expr": {"type": "string", "minLength": 1},
                                            "for": _DURATION,
                                            "labels": _STRMAP,
                                            "annotations": _STRMAP,
                                        },
                                        ["expr"],
                                    ),
                                },
                            },
                            ["name", "rules"],
                        ),
                    }
                },
                ["groups"],
            ),
        },
        ["apiVersion", "kind", "metadata", "spec"],
    ),
}


def test_monitoring_objects_validate_with_jsonschema(helm_bin: str) -> None:
    docs = render(*ALL_ON)
    for kind, schema in MONITORING_SCHEMAS.items():
        jsonschema.validate(one(docs, kind), schema)


def test_monitoring_objects_are_off_by_default(helm_bin: str) -> None:
    kinds = {d["kind"] for d in render()}
    assert not kinds & NOT_IN_K8S_SCHEMAS


# --- values.schema.json -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "imag.tag=1.0"], "Additional property imag is not allowed"),
        (["--set", "metrics.serviceMonitor.enable=true"], "Additional property enable is not allowed"),
        (["--set", "trainer.gpu=2"], "Additional property gpu is not allowed"),
        (["--set", "metrics.port=http"], "metrics.port: Invalid type. Expected: integer, given: string"),
        (["--set", "watchNamespaces=ml"], "watchNamespaces: Invalid type. Expected: array, given: string"),
        # The trainer's pod fields live under trainer.defaults and trainer.profiles.<name> (trainop.profiles).
        (["--set", "trainer.gpus=1"], "Additional property gpus is not allowed"),
        (["--set", "trainer.nodeSelector.pool=gpu"], "Additional property nodeSelector is not allowed"),
        (["--set", "trainer.resources.limits.memory=8Gi"], "Additional property resources is not allowed"),
        (["--set", "trainer.tolerations[0].key=x"], "Additional property tolerations is not allowed"),
        (
            ["--set", "trainer.image=x"],
            "Additional property image is not allowed",
        ),  # now trainer.defaults.image
        (
            ["--set", "trainer.defaults.nodeSelectr.pool=gpu"],
            "Additional property nodeSelectr is not allowed",
        ),
        (["--set", "trainer.profiles.a100.gpus=1"], "trainer.profiles.a100: Additional property gpus is not"),
        (
            ["--set", "trainer.profiles.A100.image=x"],
            'trainer.profiles: Property name of "A100" does not match',
        ),
        (["--set", "trainer.defaults.stallTimeout=soon"], "trainer.defaults.stallTimeout: Does not match"),
        (
            ["--set", "trainer.defaults.resources.limits.cpu=lots"],
            "resources.limits.cpu: Does not match pattern",
        ),
        (["--set", "s3.checkpointPrefix=models/runs"], "s3.checkpointPrefix: Does not match pattern"),
        (["--set", "checkpointVolume.accessMode=ReadOnlyMany"], "checkpointVolume.accessMode must be one of"),
        (["--set", "checkpointVolume.size=lots"], "checkpointVolume.size: Does not match pattern"),
    ],
)
def test_bad_values_are_rejected_by_the_schema(helm_bin: str, args: list[str], message: str) -> None:
    res = sync.helm("template", "cpp", str(CHART), *args, check=False)
    assert res.returncode != 0, "helm accepted a bad value"
    assert "values don't meet the specifications of the schema" in res.stderr
    assert message in res.stderr, res.stderr


def _objects_without_closed_properties(node: Any, path: str = "$") -> list[str]:
    """Schema nodes with `properties` that would still accept unknown keys."""
    bad = []
    if isinstance(node, dict):
        if "properties" in node and node.get("additionalProperties") is not False:
            bad.append(path)
        for key, value in node.items():
            bad += _objects_without_closed_properties(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            bad += _objects_without_closed_properties(value, f"{path}[{i}]")
    return bad


def test_values_schema_closes_every_object() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert _objects_without_closed_properties(schema) == []
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema)  # the defaults pass their own schema


# --- generated files ----------------------------------------------------------------------------------------


def test_chart_crds_equal_manifests_crd() -> None:
    crds = sorted((CHART / "crds").glob("*.yaml"))
    assert [p.name for p in crds] == ["trainingruns.yaml", "trainingschedules.yaml", "trainingsweeps.yaml"]
    manifests = ("crd.yaml", "crd-schedule.yaml", "crd-sweep.yaml")
    for chart_crd, manifest in zip(crds, manifests, strict=True):
        assert chart_crd.read_text() == (REPO / "manifests" / manifest).read_text(), (
            f"charts/crypto-price-predictor/crds/{chart_crd.name} differs from manifests/{manifest}: "
            "run scripts/sync-manifests.sh"
        )


def test_plain_manifests_equal_a_fresh_render(helm_bin: str) -> None:
    for path, text in sync.render_plain().items():
        assert path.read_text() == text, f"{path.relative_to(REPO)} is stale: run scripts/sync-manifests.sh"


def test_plain_manifests_split(helm_bin: str) -> None:
    rbac = sync.split_docs((REPO / "manifests/rbac.yaml").read_text())
    operator = sync.split_docs((REPO / "manifests/operator.yaml").read_text())
    assert sorted(d["kind"] for d in rbac) == ["ClusterRole", "ClusterRoleBinding", "ServiceAccount"]
    assert sorted(d["kind"] for d in operator) == ["Deployment", "Service"]
    assert all(
        d["metadata"].get("namespace") == "ml" for d in rbac + operator if not d["kind"].startswith("Cluster")
    )


# --- the objects themselves ---------------------------------------------------------------------------------


def _env(dep: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_operator_deployment(helm_bin: str) -> None:
    docs = render(*ALL_ON)
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}  # never two standalone operators at once
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "ghcr.io/crypto-price-predictor/operator:1.2.3"
    assert c["command"] == ["python", "-m", "trainop"]
    assert _env(dep) == {
        "TRAINOP_NAMESPACES": "",
        "TRAINOP_TRAINER_DEFAULTS": '{"image":"registry.example.com/trainer:1.2.3","stallTimeout":"15m"}',
        "TRAINOP_TRAINER_PROFILES": "{}",
        "TRAINOP_METRICS_PORT": "8080",
        "TRAINOP_STATUS_THROTTLE_SECONDS": "10",
        "TRAINOP_S3_ENDPOINT": "http://minio.minio:9000",
        "TRAINOP_S3_SECRET_NAME": "s3-creds",
        "TRAINOP_CHECKPOINT_PREFIX": "s3://models/runs",
        "TRAINOP_CHECKPOINT_VOLUME_SIZE": "10Gi",
        "TRAINOP_CHECKPOINT_VOLUME_STORAGE_CLASS": "",
        "TRAINOP_CHECKPOINT_VOLUME_ACCESS_MODE": "ReadWriteOnce",
        "TRAINOP_TIMER_INTERVAL_SECONDS": "30",
    }
    assert c["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsUser"] == 1000
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]


def test_default_checkpoints_go_to_a_volume_per_run(helm_bin: str) -> None:
    """No S3 values: no checkpoint prefix, so the operator creates a PersistentVolumeClaim per run."""
    env = _env(one(render(), "Deployment"))
    assert env["TRAINOP_CHECKPOINT_PREFIX"] == ""
    assert env["TRAINOP_CHECKPOINT_VOLUME_STORAGE_CLASS"] == ""  # the cluster's default class
    custom = render(
        "--set",
        "checkpointVolume.size=50Gi",
        "--set",
        "checkpointVolume.storageClassName=fast-rwx",
        "--set",
        "checkpointVolume.accessMode=ReadWriteMany",
    )
    env = _env(one(custom, "Deployment"))
    assert env["TRAINOP_CHECKPOINT_VOLUME_SIZE"] == "50Gi"
    assert env["TRAINOP_CHECKPOINT_VOLUME_STORAGE_CLASS"] == "fast-rwx"
    assert env["TRAINOP_CHECKPOINT_VOLUME_ACCESS_MODE"] == "ReadWriteMany"


def test_watch_namespaces_env(helm_bin: str) -> None:
    assert _env(one(render(*NAMESPACED), "Deployment"))["TRAINOP_NAMESPACES"] == "ml,research"


def test_metrics_service_and_service_monitor(helm_bin: str) -> None:
    docs = render(*ALL_ON)
    svc = one(docs, "Service")
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    dep = one(docs, "Deployment")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    sm = one(docs, "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True  # keep the run's `namespace` label (the alerts group by it)


def test_helm_test_hook_pod(helm_bin: str) -> None:
    docs = render()
    pods = by_kind(docs, "Pod")
    assert len(pods) == 1
    pod = pods[0]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = "\n".join(pod["spec"]["containers"][0]["args"])
    assert "cpp-crypto-price-predictor-metrics.ml.svc:8080" in script and "/metrics" in script
    # The test pod must not match the metrics Service's selector.
    selector = one(docs, "Service")["spec"]["selector"]
    assert not selector.items() <= pod["metadata"]["labels"].items()


def test_labels_on_every_object(helm_bin: str) -> None:
    for doc in render(*ALL_ON):
        labels = doc["metadata"]["labels"]
        for key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ):
            assert key in labels, f"{doc['kind']}/{doc['metadata']['name']} lacks {key}"
        assert labels["app.kubernetes.io/name"] == "crypto-price-predictor"


# --- RBAC ---------------------------------------------------------------------------------------------------

EXPECTED_NAMESPACED_RULES = {
    ("cryptopredictor.dev", "trainingruns"): {"get", "list", "watch", "create", "patch", "update", "delete"},
    ("cryptopredictor.dev", "trainingruns/status"): {"get", "patch", "update"},
    ("cryptopredictor.dev", "trainingsweeps"): {"get", "list", "watch", "patch", "update"},
    ("cryptopredictor.dev", "trainingsweeps/status"): {"get", "patch", "update"},
    ("cryptopredictor.dev", "trainingschedules"): {"get", "list", "watch", "patch", "update"},
    ("cryptopredictor.dev", "trainingschedules/status"): {"get", "patch", "update"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "pods"): {"get", "list", "watch", "delete"},
    ("", "services"): {"get", "list", "watch", "create", "delete"},
    ("", "persistentvolumeclaims"): {"get", "create", "delete"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("", "serviceaccounts"): {"get", "create", "patch", "delete"},
    ("rbac.authorization.k8s.io", "roles"): {"get", "create", "patch", "delete"},
    ("rbac.authorization.k8s.io", "rolebindings"): {"get", "create", "patch", "delete"},
}
CRD_RULES = {("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"}}
NAMESPACE_RULES = {("", "namespaces"): {"list", "watch"}}


def _rules(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_rbac_cluster_wide(helm_bin: str) -> None:
    docs = render()
    assert not by_kind(docs, "Role") and not by_kind(docs, "RoleBinding")
    role = one(docs, "ClusterRole")
    assert _rules(role) == {**EXPECTED_NAMESPACED_RULES, **CRD_RULES, **NAMESPACE_RULES}
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": one(docs, "ServiceAccount")["metadata"]["name"], "namespace": "ml"}
    ]


def test_rbac_namespaced(helm_bin: str) -> None:
    docs = render(*NAMESPACED)
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert _rules(cluster_role) == CRD_RULES  # nothing namespaced is granted cluster-wide
    roles = {r["metadata"]["namespace"]: r for r in by_kind(docs, "Role")}
    bindings = {b["metadata"]["namespace"]: b for b in by_kind(docs, "RoleBinding")}
    assert sorted(roles) == sorted(bindings) == ["ml", "research"]
    for ns, role in roles.items():
        assert _rules(role) == EXPECTED_NAMESPACED_RULES
        assert bindings[ns]["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert bindings[ns]["subjects"][0]["namespace"] == "ml"  # the operator's namespace


def test_per_run_role_is_grantable_by_the_operator() -> None:
    """RBAC escalation check: the operator may only create a Role granting what it holds itself."""
    per_run = {("cryptopredictor.dev", "trainingruns/status"): {"get", "patch"}}
    for key, verbs in per_run.items():
        assert verbs <= EXPECTED_NAMESPACED_RULES[key]


# --- NOTES.txt and samples ----------------------------------------------------------------------------------


def test_notes_render(helm_bin: str, tmp_path: Path) -> None:
    """NOTES.txt renders (helm template does not print it; render it through tpl in a copy of the chart)."""
    import shutil

    copy = tmp_path / "chart"
    shutil.copytree(CHART, copy)
    (copy / "notes-source.txt").write_text((CHART / "templates" / "NOTES.txt").read_text())
    (copy / "templates" / "zz-notes.yaml").write_text(
        'notes: {{ tpl (.Files.Get "notes-source.txt") . | toJson }}\n'
    )
    res = sync.helm(
        "template",
        "cpp",
        str(copy),
        "-n",
        "ml",
        *ALL_ON,
        "--show-only",
        "templates/zz-notes.yaml",
        check=False,
    )
    assert res.returncode == 0, res.stderr
    notes = yaml.safe_load(res.stdout)["notes"]
    assert "helm test cpp -n ml" in notes
    assert "create secret generic s3-creds" in notes
    assert "Runs without spec.stallTimeout (or a profile's) use this release's 15m." in notes
    assert "Profiles (spec.profile): none." in notes
    assert "nvidia.com/gpu" not in notes, "the chart has no trainer GPU/resources defaults to print"
    assert "kubectl apply --server-side -f charts/crypto-price-predictor/crds/" in notes
    assert "ConfigMap cpp-crypto-price-predictor-dashboard in namespace ml" in notes
    assert 'labelled grafana_dashboard="1"' in notes


SAMPLES = sorted((REPO / "manifests" / "samples").glob("*run.yaml"))


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_samples_validate_with_the_spec_model(sample: Path) -> None:
    from trainer.api.manifest import load_manifest

    _, spec = load_manifest(sample)
    assert spec.resources.limits.get("nvidia.com/gpu") == 1
    assert any(t.key == "nvidia.com/gpu" for t in spec.tolerations)


def test_sample_set() -> None:
    from trainer.api.manifest import load_manifest

    names = {p.name for p in SAMPLES}
    assert {"sol-run.yaml", "multi-symbol-run.yaml", "kueue-gpu-run.yaml"} <= names
    _, multi = load_manifest(REPO / "manifests/samples/multi-symbol-run.yaml")
    assert multi.symbol == "BTC" and multi.symbols == ["BTC", "ETH", "SOL"]
    _, kueue = load_manifest(REPO / "manifests/samples/kueue-gpu-run.yaml")
    assert kueue.queue_name


def test_s3_secret_example_has_no_real_keys() -> None:
    secret = yaml.safe_load((REPO / "manifests/samples/s3-secret.example.yaml").read_text())
    assert secret["kind"] == "Secret"
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert set(secret["stringData"].values()) == {"REPLACE_ME"}
    assert "data" not in secret


def test_a_missing_tool_fails_with_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("TOOLS_DIR", raising=False)
    with pytest.raises(sync.ToolMissing, match=r"run \.ci/install-tools\.sh"):
        sync.find_tool("helm-not-installed")
