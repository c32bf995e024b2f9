"""infra/serverless.yml: it packages without AWS or network, lints clean, deploys into moto, and
matches the code it deploys (handlers, environment, stream settings, least-privilege IAM), for
each search backend it can target: Elasticsearch with an API key (the default), Amazon OpenSearch
Service with SigV4 (a domain, or a serverless collection) and OpenSearch with basic auth.

`scripts/package_infra.sh` runs once per configuration and module (npm ci and the layer build
only when their inputs changed); every test reads what it produced.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from glob import glob
from importlib.metadata import requires
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
BUILD = INFRA / ".serverless"
STAGE = "test"
HANDLERS = {
    "IndexerLambdaFunction": "indexer.handler.handler",
    "AssetCreatedLambdaFunction": "indexer.sampleapp.s3assets.created",
    "AssetDeletedLambdaFunction": "indexer.sampleapp.s3assets.deleted",
    "RebuildStepsLambdaFunction": "replay.steps.handler",
    "RebuildWorkerLambdaFunction": "replay.worker.handler",
}
ROLES = {"IndexerLambdaFunction": "IndexerRole", "AssetCreatedLambdaFunction": "AssetCreatedRole",
         "AssetDeletedLambdaFunction": "AssetDeletedRole", "RebuildStepsLambdaFunction": "RebuildStepsRole",
         "RebuildWorkerLambdaFunction": "RebuildWorkerRole"}
#: Roles that belong to no function: the rebuild state machine's.
SERVICE_ROLES = {"RebuildStateMachineRole"}
#: Variables the code reads that a deployment leaves at their default, and why.
NOT_DEPLOYED = {
    "TIME_BUDGET_SECONDS": "used only without a Lambda context (local runs)",
    "PARKING_QUEUE_URL": "read only by python -m replay --redrive",
    "AWS_REGION": "set by the Lambda runtime (reserved: a function may not set it)",
    "AWS_DEFAULT_REGION": "set by the Lambda runtime (reserved: a function may not set it)",
    "ELASTICSEARCH_ALLOW_INSECURE": "for local clusters only: a deployment sends credentials over verified TLS",
    "ELASTICSEARCH_API_KEY": "local runs: a deployment reads its credentials from ELASTICSEARCH_SECRET_ARN",
    "ELASTICSEARCH_USERNAME": "local runs: a deployment reads its credentials from ELASTICSEARCH_SECRET_ARN",
    "ELASTICSEARCH_PASSWORD": "local runs: a deployment reads its credentials from ELASTICSEARCH_SECRET_ARN",
    "AWS_LAMBDA_FUNCTION_NAME": "set by the Lambda runtime (a metric dimension)",
}
#: What the Lambda runtime sets in every function's environment (the role's credentials among it).
LAMBDA_RUNTIME_ENV = {
    "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "ASIAEXAMPLEEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "the-role-session-secret", "AWS_SESSION_TOKEN": "the-role-session-token",
}
#: The only configuration warnings v3 may print: its schema predates the python3.12 runtime.
EXPECTED_WARNINGS = {"provider.runtime", "layers.dependencies.compatibleRuntimes.0"}
#: Resource types moto's CloudFormation does not create (it logs and skips them).
MOTO_SKIPS = {"AWS::CloudWatch::Alarm", "AWS::Lambda::EventInvokeConfig", "AWS::S3::BucketPolicy",
              "AWS::SQS::QueuePolicy"}
#: Serverless adds DependsOn on a custom role that the function's GetAtt already implies.
ALLOWED_LINT_WARNINGS = {"W3005"}
DOMAIN_ARN = "arn:aws:es:us-east-1:123456789012:domain/assets"
COLLECTION_ARN = "arn:aws:aoss:us-east-1:123456789012:collection/0a1b2c3d4e5f6g7h8i9j"
#: A customer managed key for table exports (param rebuildExportKmsKeyArn).
EXPORT_KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
#: HTTP methods of the requests indexer.handler sends (test_handler_sends_only_these_methods).
HANDLER_METHODS = {"GET", "POST", "PUT"}
#: HTTP methods of every request the store can send: replay, verify and redrive use all of it
#: (test_store_sends_only_these_methods).
STORE_METHODS = {"GET", "POST", "PUT", "DELETE"}


@dataclass(frozen=True)
class Config:
    """One way to deploy: the --param values, and what the template must then say."""

    params: dict[str, str]
    backend: str
    auth: str
    service: str = "es"
    #: "domain" or "collection": what signed requests go to (sigv4); None without SigV4.
    signed: str | None = None
    #: Credential variables the indexer gets: the secret's ARN, read at run time.
    credentials: frozenset[str] = frozenset()
    #: The KMS key table exports are encrypted with (rebuildExportKmsKeyArn); None: SSE-S3.
    export_key: str | None = None

    @property
    def env_auth(self) -> str:
        """SEARCH_AUTH as deployed: the secret's content decides between api_key and basic."""
        return "secret" if self.credentials else self.auth


DEFAULT = "elasticsearch-api_key"
CONFIGS = {
    DEFAULT: Config({}, "elasticsearch", "api_key", credentials=frozenset({"ELASTICSEARCH_SECRET_ARN"})),
    "opensearch-sigv4-domain": Config(
        {"searchBackend": "opensearch", "searchAuth": "sigv4", "sigv4Service": "es", "openSearchDomainArn": DOMAIN_ARN},
        "opensearch", "sigv4", "es", signed="domain"),
    "opensearch-sigv4-collection": Config(
        {"searchBackend": "opensearch", "searchAuth": "sigv4", "sigv4Service": "aoss",
         "openSearchCollectionArn": COLLECTION_ARN},
        "opensearch", "sigv4", "aoss", signed="collection"),
    "opensearch-basic": Config(
        {"searchBackend": "opensearch", "searchAuth": "basic"}, "opensearch", "basic",
        credentials=frozenset({"ELASTICSEARCH_SECRET_ARN"})),
    "elasticsearch-api_key-export-kms": Config(
        {"rebuildExportKmsKeyArn": EXPORT_KEY_ARN}, "elasticsearch", "api_key",
        credentials=frozenset({"ELASTICSEARCH_SECRET_ARN"}), export_key=EXPORT_KEY_ARN),
}
CREDENTIAL_VARIABLES = {"ELASTICSEARCH_SECRET_ARN", "ELASTICSEARCH_API_KEY", "ELASTICSEARCH_USERNAME",
                        "ELASTICSEARCH_PASSWORD"}

pytestmark = pytest.mark.skipif(
    shutil.which("npm") is None,
    reason="npm is not installed: `serverless package` runs the Serverless Framework on Node.js",
)


@dataclass
class Packaged:
    """One configuration's build: the raw template, and the template as CloudFormation would
    deploy it with the parameters' defaults (conditions decided, AWS::NoValue removed)."""

    raw: dict[str, Any]
    output: str
    offline: bool
    build: Path
    template: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.template = resolved(self.raw)

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: r for name, r in self.template["Resources"].items() if r["Type"] == kind}

    def env(self, function: str) -> dict[str, Any]:
        return self.template["Resources"][function]["Properties"]["Environment"]["Variables"]


def _can_unshare() -> bool:
    """Whether `package_infra.sh --offline` can run here (root, or user namespaces allowed)."""
    try:
        probe = ["unshare", "--net", "ip", "link", "set", "lo", "up"]
        return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


def _package(params: dict[str, str], out: Path | None, offline: bool) -> subprocess.CompletedProcess[str]:
    command = ["bash", str(ROOT / "scripts" / "package_infra.sh"), "--stage", STAGE]
    command += [arg for name, value in params.items() for arg in ("--param", f"{name}={value}")]
    command += (["--out", str(out)] if out else []) + (["--offline"] if offline else [])
    return subprocess.run(command, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHON": sys.executable, "NO_COLOR": "1"})


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Packaged]:
    """Packages a configuration the first time a test asks for it (the default into
    infra/.serverless, as `serverless deploy` would; the others into their own directories)."""
    offline = _can_unshare()
    done: dict[str, Packaged] = {}

    def build(name: str) -> Packaged:
        if name not in done:
            out = None if name == DEFAULT else tmp_path_factory.mktemp(name)
            run = _package(CONFIGS[name].params, out, offline)
            output = run.stdout + run.stderr
            assert run.returncode == 0, f"package_infra.sh ({name}) failed:\n{output[-6000:]}"
            where = out or BUILD
            raw = json.loads((where / "cloudformation-template-update-stack.json").read_text())
            done[name] = Packaged(raw, output, offline, where)
        return done[name]

    return build


@pytest.fixture(scope="module")
def packaged(builds: Callable[[str], Packaged]) -> Packaged:
    return builds(DEFAULT)


@pytest.fixture(params=sorted(CONFIGS))
def config(request: pytest.FixtureRequest, builds: Callable[[str], Packaged]) -> tuple[Config, Packaged]:
    """Each configuration with its build (tests taking it run once per configuration)."""
    return CONFIGS[request.param], builds(request.param)


# ---------------------------------------------------------------- the template as deployed


_DROP = object()


def resolved(template: dict[str, Any]) -> dict[str, Any]:
    """``template`` with what CloudFormation decides from the parameters alone: each ``Ref`` to a
    parameter is its default, conditions pick their ``Fn::If`` branch, ``AWS::NoValue`` removes
    its key or list item, a ``Fn::Join`` of plain strings is joined, and resources whose
    condition is false are gone. References to resources (``Ref``, ``Fn::GetAtt``, ``Fn::Sub``)
    and dynamic references stay as written."""
    parameters = {name: p.get("Default") for name, p in template.get("Parameters", {}).items()}
    conditions = template.get("Conditions", {})

    def condition(node: Any) -> bool:
        if isinstance(node, dict) and set(node) == {"Condition"}:
            return condition(conditions[node["Condition"]])
        (function, args), = node.items()
        if function == "Fn::Equals":
            left, right = (value(arg) for arg in args)
            return bool(left == right)
        if function == "Fn::Not":
            return not condition(args[0])
        if function == "Fn::And":
            return all(condition(arg) for arg in args)
        if function == "Fn::Or":
            return any(condition(arg) for arg in args)
        raise AssertionError(f"unknown condition function {function}")

    def value(node: Any) -> Any:
        if isinstance(node, list):
            return [item for item in map(value, node) if item is not _DROP]
        if not isinstance(node, dict):
            return node
        if set(node) == {"Ref"} and node["Ref"] == "AWS::NoValue":
            return _DROP
        if set(node) == {"Ref"} and node["Ref"] in parameters:
            return parameters[node["Ref"]]
        if set(node) == {"Fn::If"}:
            name, yes, no = node["Fn::If"]
            return value(yes if condition(conditions[name]) else no)
        if set(node) == {"Fn::Join"}:
            separator, parts = node["Fn::Join"]
            parts = value(parts)
            if all(isinstance(part, str) for part in parts):
                return separator.join(parts)
            return {"Fn::Join": [separator, parts]}
        return {key: item for key, item in ((k, value(v)) for k, v in node.items()) if item is not _DROP}

    resources = {name: resource for name, resource in template["Resources"].items()
                 if "Condition" not in resource or condition(conditions[resource["Condition"]])}
    return {**template, "Resources": value(resources), "Outputs": value(template.get("Outputs", {}))}


def test_resolved_follows_cloudformation_semantics() -> None:
    template = {
        "Parameters": {"Mode": {"Type": "String", "Default": "b"}, "Arn": {"Type": "String", "Default": "arn:x"}},
        "Conditions": {"IsA": {"Fn::Equals": [{"Ref": "Mode"}, "a"]},
                       "NotA": {"Fn::Not": [{"Condition": "IsA"}]},
                       "Both": {"Fn::And": [{"Condition": "NotA"}, {"Fn::Not": [{"Fn::Equals": [{"Ref": "Arn"}, ""]}]}]}},
        "Resources": {
            "Gone": {"Type": "T", "Condition": "IsA"},
            "Kept": {"Type": "T", "Properties": {
                "List": [1, {"Fn::If": ["IsA", 2, {"Ref": "AWS::NoValue"}]}, {"Fn::If": ["Both", 3, 4]}],
                "Dropped": {"Ref": "AWS::NoValue"},
                "Joined": {"Fn::Join": ["", [{"Ref": "Arn"}, "/*"]]},
                "Kept": {"Fn::GetAtt": ["Other", "Arn"]},
            }},
        },
    }
    assert resolved(template)["Resources"] == {"Kept": {"Type": "T", "Properties": {
        "List": [1, 3], "Joined": "arn:x/*", "Kept": {"Fn::GetAtt": ["Other", "Arn"]}}}}


def _zip(name: str, build: Path = BUILD) -> zipfile.ZipFile:
    return zipfile.ZipFile(build / name)


# ---------------------------------------------------------------- packaging and lint


def test_packaging_needs_no_network(config: tuple[Config, Packaged]) -> None:
    _, packaged = config
    if not packaged.offline:
        pytest.skip("unshare --net is not permitted here, so packaging ran with the network up")
    assert "Service packaged" in packaged.output


def test_packaging_warns_only_about_the_python312_runtime(config: tuple[Config, Packaged]) -> None:
    _, packaged = config
    warned = set(re.findall(r"^\s+at '([^']+)'", packaged.output, re.M))
    assert warned == EXPECTED_WARNINGS
    assert "deprecation" not in packaged.output.lower()


def test_template_passes_cfn_lint(config: tuple[Config, Packaged], packaged: Packaged) -> None:
    from cfnlint.api import ManualArgs, lint_file

    expected, build = config
    templates = ["cloudformation-template-update-stack.json"]
    create = "cloudformation-template-create-stack.json"
    if expected == CONFIGS[DEFAULT]:
        templates.append(create)
    else:  # the bootstrap stack (the deployment bucket) does not depend on the configuration
        assert (build.build / create).read_text() == (packaged.build / create).read_text()
    for name in templates:
        matches = lint_file(build.build / name, ManualArgs(regions=["us-east-1", "eu-west-1", "ap-southeast-2"]))
        unexpected = [str(m) for m in matches if m.rule.id not in ALLOWED_LINT_WARNINGS]
        assert unexpected == [], name


def test_sigv4_without_its_arn_fails_packaging_naming_the_param(tmp_path: Path) -> None:
    # custom.signedArnParam: the same lookup names openSearchCollectionArn for sigv4Service=aoss.
    run = _package({"searchBackend": "opensearch", "searchAuth": "sigv4", "sigv4Service": "es"}, tmp_path, offline=False)
    assert run.returncode != 0
    assert 'The param "openSearchDomainArn" cannot be resolved' in run.stdout + run.stderr


def test_an_unknown_search_auth_fails_packaging(tmp_path: Path) -> None:
    """CloudFormation takes whatever SearchAuth was packaged: custom.credentials is the check."""
    run = _package({"searchAuth": "sigv5"}, tmp_path, offline=False)
    assert run.returncode != 0
    assert 'Cannot resolve variable at "functions.indexer.environment.SEARCH_AUTH"' in run.stdout + run.stderr


def test_arn_parameters_take_one_domain_or_collection_and_no_wildcard(packaged: Packaged) -> None:
    parameters = packaged.raw["Parameters"]
    domain = re.compile(parameters["OpenSearchDomainArn"]["AllowedPattern"])
    collection = re.compile(parameters["OpenSearchCollectionArn"]["AllowedPattern"])
    assert domain.fullmatch(DOMAIN_ARN) and domain.fullmatch("")
    assert collection.fullmatch(COLLECTION_ARN) and collection.fullmatch("")
    for wrong in ("arn:aws:es:us-east-1:123456789012:domain/*", "arn:aws:es:us-east-1:123456789012:domain/assets/*",
                  "arn:aws:es:*:123456789012:domain/assets", COLLECTION_ARN, "*"):
        assert not domain.fullmatch(wrong), wrong
    for wrong in ("arn:aws:aoss:us-east-1:123456789012:collection/*", DOMAIN_ARN, "*"):
        assert not collection.fullmatch(wrong), wrong


#: The conversion walk in C, built by `make install` and by scripts/package_infra.sh.
C_WALK = ROOT / "indexer" / "_walk.abi3.so"
#: manylinux2014, what the layer's wheels are built for: the newest glibc the C walk may need.
NEWEST_GLIBC = (2, 17)


def test_the_shipped_c_walk_needs_no_newer_glibc_than_the_layers_wheels(packaged: Packaged, tmp_path: Path) -> None:
    """Built on this machine, it must load on Amazon Linux (the stable ABI covers python3.12;
    the glibc symbol versions it links to must not be newer than the wheels' platform)."""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("no objdump (binutils) to read the symbol versions")
    with _zip("dynamodb-es-indexer.zip") as shipped:
        shipped.extract("indexer/_walk.abi3.so", tmp_path)
    symbols = subprocess.run([objdump, "-T", str(tmp_path / "indexer" / "_walk.abi3.so")],
                             capture_output=True, text=True, check=True).stdout
    needed = {tuple(int(part) for part in version.split(".")) for version in re.findall(r"GLIBC_([0-9.]+)", symbols)}
    assert needed and max(needed) <= NEWEST_GLIBC, sorted(needed)


def test_function_package_holds_the_lambda_core_and_the_sample_app_only(packaged: Packaged) -> None:
    """The zip ships what the deployed functions run: the core and the S3 sample handlers, not
    local sync (an emulator of the event source mapping, which imports fcntl) nor the CLIs."""
    core = [p for p in (ROOT / "indexer").glob("*.py") if p.name not in ("__main__.py", "cliutil.py")]
    sample = list((ROOT / "indexer" / "sampleapp").glob("*.py"))
    code = {p.relative_to(ROOT).as_posix(): p.read_bytes() for p in [*core, C_WALK, *sample]}
    with _zip("dynamodb-es-indexer.zip") as shipped:
        assert sorted(shipped.namelist()) == sorted(code)
        for name, text in code.items():
            assert shipped.read(name) == text, name
        assert not [n for n in shipped.namelist() if "localsync" in n]
        assert not [n for n in shipped.namelist() if b"fcntl" in shipped.read(n)]


def _imported_files(*modules: str) -> set[str]:
    """The project's files the modules import, transitively: every ``import`` anywhere in them
    (lazy ones inside functions too), and the packages they are in."""
    def file_of(module: str) -> Path | None:
        stem = ROOT / module.replace(".", "/")
        if stem.with_suffix(".abi3.so") == C_WALK:
            return C_WALK if C_WALK.is_file() else None
        for path in (ROOT / (module.replace(".", "/") + ".py"), ROOT / module.replace(".", "/") / "__init__.py"):
            if path.is_file():
                return path
        return None

    seen: set[Path] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        path = file_of(module)
        if path is None or path in seen:
            continue
        seen.add(path)
        if path == C_WALK:
            continue
        parts = module.split(".")
        todo += [".".join(parts[:n]) for n in range(1, len(parts))]
        package = parts if path.name == "__init__.py" else parts[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                    if node.level else (node.module or "")
                todo += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return {path.relative_to(ROOT).as_posix() for path in seen}


def test_rebuild_packages_hold_what_their_handlers_import(packaged: Packaged) -> None:
    """Each rebuild function's zip: exactly the files its handler's module imports (the indexer's
    core it shares, replay/ without the CLIs), byte for byte."""
    for function, zip_name in (("RebuildStepsLambdaFunction", "rebuildSteps.zip"),
                               ("RebuildWorkerLambdaFunction", "rebuildWorker.zip")):
        module = HANDLERS[function].rpartition(".")[0]
        wanted = _imported_files("replay.steps", "replay.worker")
        assert _imported_files(module) <= wanted
        with _zip(zip_name) as shipped:
            assert sorted(shipped.namelist()) == sorted(wanted), function
            for name in wanted:
                assert shipped.read(name) == (ROOT / name).read_bytes(), name
        assert not {"replay/cli.py", "indexer/handler.py", "replay/verify.py"} & wanted
        code = packaged.template["Resources"][function]["Properties"]["Code"]["S3Key"]
        assert code.endswith("/" + zip_name)


def _filled(text: str, values: dict[str, str]) -> Any:
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    return json.loads(text)


def test_the_deployed_state_machine_is_the_generated_definition_and_valid_asl(packaged: Packaged,
                                                                               tmp_path: Path) -> None:
    """One source of truth: the template's text is replay.statemachine's, Fn::Sub fills it with
    this stack's Lambdas, bucket and MaxConcurrency parameter, and the result is valid ASL for
    asl-validator and cfn-lint's state machine checks (neither checks an Fn::Sub text itself)."""
    from cfnlint.api import ManualArgs, lint_file

    from replay.statemachine import SUBSTITUTIONS, cloudformation_text, definition

    machine = packaged.raw["Resources"]["RebuildStateMachine"]["Properties"]
    text, values = machine["DefinitionString"]["Fn::Sub"]
    assert text == cloudformation_text()
    assert values == {"RebuildStepsArn": {"Fn::GetAtt": ["RebuildStepsLambdaFunction", "Arn"]},
                      "RebuildWorkerArn": {"Fn::GetAtt": ["RebuildWorkerLambdaFunction", "Arn"]},
                      "RebuildMaxConcurrency": {"Ref": "RebuildMaxConcurrency"},
                      "RebuildBucket": {"Ref": "RebuildBucket"}}
    assert set(values) == set(SUBSTITUTIONS)
    assert set(re.findall(r"\$\{([^}]+)\}", text)) == set(SUBSTITUTIONS)
    assert (machine["StateMachineName"], machine["StateMachineType"]) == (MACHINE, "STANDARD")
    assert machine["RoleArn"] == {"Fn::GetAtt": ["RebuildStateMachineRole", "Arn"]}
    parameter = packaged.raw["Parameters"]["RebuildMaxConcurrency"]
    assert (parameter["Type"], int(parameter["Default"])) == ("Number", 10)

    steps = "arn:aws:lambda:us-east-1:123456789012:function:dynamodb-es-indexer-test-rebuildSteps"
    worker = "arn:aws:lambda:us-east-1:123456789012:function:dynamodb-es-indexer-test-rebuildWorker"
    deployed = _filled(text, {"RebuildStepsArn": steps, "RebuildWorkerArn": worker,
                              "RebuildMaxConcurrency": str(parameter["Default"]), "RebuildBucket": "the-bucket"})
    assert deployed == definition(steps, worker, 10, "the-bucket")
    path = tmp_path / "definition.json"
    path.write_text(json.dumps(deployed))
    validated = subprocess.run([str(INFRA / "node_modules" / ".bin" / "asl-validator"), "--json-path", str(path)],
                               capture_output=True, text=True, timeout=120)
    assert validated.returncode == 0 and "is valid" in validated.stdout, validated.stdout + validated.stderr
    broken = dict(deployed, States={**deployed["States"], "Load": {**deployed["States"]["Load"], "ResultWriter": {}}})
    path.write_text(json.dumps(broken))
    refused = subprocess.run([str(INFRA / "node_modules" / ".bin" / "asl-validator"), "--json-path", str(path)],
                             capture_output=True, text=True, timeout=120)
    assert "is invalid" in refused.stdout + refused.stderr  # the validator does check the Map's fields
    template = tmp_path / "machine.json"
    template.write_text(json.dumps({"AWSTemplateFormatVersion": "2010-09-09", "Resources": {"Rebuild": {
        "Type": "AWS::StepFunctions::StateMachine",
        "Properties": {"RoleArn": "arn:aws:iam::123456789012:role/rebuild", "Definition": deployed}}}}))
    assert [str(m) for m in lint_file(template, ManualArgs(regions=["us-east-1"]))] == []


def test_the_rebuild_on_step_functions_can_be_left_out(tmp_path: Path, packaged: Packaged) -> None:
    """rebuildOnStepFunctions=false: the same template with every rebuild resource, function, log
    group and output conditioned away, still lint-clean; by default all of them are deployed."""
    from cfnlint.api import ManualArgs, lint_file

    run = _package({"rebuildOnStepFunctions": "false"}, tmp_path, offline=False)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    path = tmp_path / "cloudformation-template-update-stack.json"
    raw = json.loads(path.read_text())
    left_out = resolved(raw)
    rebuild = {name for name in packaged.template["Resources"] if name.startswith("Rebuild")}
    assert {"RebuildStateMachine", "RebuildBucket", "RebuildStepsLambdaFunction", "RebuildWorkerLambdaFunction",
            "RebuildStepsLogGroup", "RebuildWorkerLogGroup", "RebuildStateMachineRole"} <= rebuild
    assert {name for name in raw["Resources"] if name.startswith("Rebuild")} == rebuild
    assert not {name for name in left_out["Resources"] if name.startswith("Rebuild")}
    assert {name for name, out in raw["Outputs"].items() if out.get("Condition") == "DeploysRebuild"} == {
        "RebuildStateMachineArn", "RebuildBucketName", "RebuildOperatorPolicyArn"}
    assert set(left_out["Resources"]) == set(packaged.template["Resources"]) - rebuild
    unexpected = [str(m) for m in lint_file(path, ManualArgs(regions=["us-east-1"])) if m.rule.id not in ALLOWED_LINT_WARNINGS]
    assert unexpected == []


def test_the_rebuild_bucket_is_private_encrypted_tls_only_and_expires_what_rebuilds_write(packaged: Packaged) -> None:
    from replay import steps
    from replay.mapresults import RESULTS_PREFIX

    resources = packaged.template["Resources"]
    bucket = resources["RebuildBucket"]["Properties"]
    assert bucket["BucketName"] == "dynamodb-es-indexer-test-rebuild"
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"}
    assert bucket["PublicAccessBlockConfiguration"] == dict.fromkeys(
        ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"), True)
    rules = {rule["Prefix"]: rule for rule in bucket["LifecycleConfiguration"]["Rules"]}
    # Every key a rebuild writes: units files (rebuilds/<index>/units.json), the map's results and exports.
    for key in ("rebuilds/i-r1/units.json", f"{RESULTS_PREFIX}/run/manifest.json", f"{steps.EXPORT_PREFIX}/AWSDynamoDB/x"):
        (rule,) = [rule for prefix, rule in rules.items() if key.startswith(prefix)]
        assert rule["Status"] == "Enabled" and 1 <= int(rule["ExpirationInDays"]) <= 90, key
        assert rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1
    (statement,) = resources["RebuildBucketTlsOnly"]["Properties"]["PolicyDocument"]["Statement"]
    assert (statement["Effect"], statement["Principal"], statement["Action"]) == ("Deny", "*", "s3:*")
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert statement["Resource"] == [{"Fn::GetAtt": ["RebuildBucket", "Arn"]}, {"Fn::Sub": "${RebuildBucket.Arn}/*"}]
    for function in ("RebuildStepsLambdaFunction", "RebuildWorkerLambdaFunction"):
        assert packaged.env(function)["REBUILD_BUCKET"] == bucket["BucketName"]
    outputs = packaged.template["Outputs"]
    assert outputs["RebuildStateMachineArn"]["Value"] == {"Ref": "RebuildStateMachine"}
    assert "REBUILD_STATE_MACHINE_ARN" in outputs["RebuildStateMachineArn"]["Description"]


def test_layer_holds_the_dependencies_for_the_lambda_platform(packaged: Packaged) -> None:
    with _zip("dependencies.zip") as layer:
        names = layer.namelist()
    assert all(name.startswith("python/") for name in names)
    tops = {name.split("/")[1] for name in names}
    assert {"elasticsearch", "elastic_transport", "tenacity", "structlog", "orjson"} <= tops
    assert not tops & {"boto3", "botocore", "s3transfer"}, "the runtime ships boto3: a copy would shadow it"
    assert any(re.fullmatch(r"python/orjson/orjson\.cpython-312-x86_64-linux-gnu\.so", n) for n in names)
    assert not any("__pycache__" in name for name in names)


def _layer_versions() -> dict[str, Version]:
    with _zip("dependencies.zip") as layer:
        found = {re.match(r"python/([^/]+)-([^-/]+)\.dist-info/", n) for n in layer.namelist()}
    return {m.group(1).lower().replace("_", "-"): Version(m.group(2)) for m in found if m}


def test_layer_versions_satisfy_the_project_and_the_runtimes_botocore(packaged: Packaged) -> None:
    versions = _layer_versions()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for line in project:
        requirement = Requirement(line)
        if requirement.name in versions:
            assert versions[requirement.name] in requirement.specifier, line
    # The layer precedes the runtime on sys.path: what it shares with botocore must suit botocore.
    lambda_python = {"python_version": "3.12", "python_full_version": "3.12.0", "extra": ""}
    for line in requires("botocore") or []:
        requirement = Requirement(line)
        if requirement.name in versions and (requirement.marker is None or requirement.marker.evaluate(lambda_python)):
            assert versions[requirement.name] in requirement.specifier, line


def _python312() -> str | None:
    candidates = [shutil.which("python3.12"), *sorted(glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 12)"], capture_output=True)
        if probe.returncode == 0:
            return candidate
    return None


def test_shipped_zips_run_both_handlers_on_python_312(packaged: Packaged, tmp_path: Path) -> None:
    python = _python312()
    if python is None:
        pytest.skip("no CPython 3.12 on this machine to load the layer's cp312 wheels")
    with _zip("dynamodb-es-indexer.zip") as code, _zip("dependencies.zip") as layer:
        code.extractall(tmp_path / "task")
        layer.extractall(tmp_path / "opt")
    # Lambda's order: the task root, then the layer; -I -S: nothing from this machine's site.
    script = (
        "import json, sys\n"
        f"sys.path[:0] = [{str(tmp_path / 'task')!r}, {str(tmp_path / 'opt' / 'python')!r}]\n"
        "import orjson, elasticsearch, structlog, tenacity\n"
        "from indexer import convert, handler\n"
        "from indexer.sampleapp import s3assets\n"
        "print(json.dumps({'indexer': handler.handler({'Records': []}, None),\n"
        "                  'created': s3assets.created({'Records': []}),\n"
        "                  'orjson': orjson.__file__, 'walk': convert._native.__file__,\n"
        "                  'converted': convert.item({'n': {'N': '1.5'}, 'b': {'BS': ['AQ==', 'AA==']}})}))\n"
    )
    env = {"PATH": os.environ["PATH"], "DLQ_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/q",
           "ELASTICSEARCH_URL": "http://127.0.0.1:9", "TABLE_NAME": "assets", "LOG_LEVEL": "WARNING"}
    done = subprocess.run([python, "-I", "-S", "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["indexer"] == {"batchItemFailures": []}
    assert result["created"] == {"written": 0, "deleted": 0, "skipped": 0}
    assert result["orjson"].startswith(str(tmp_path / "opt"))
    assert result["walk"] == str(tmp_path / "task" / "indexer" / "_walk.abi3.so")  # the C walk loads on 3.12
    assert result["converted"] == {"n": 1.5, "b": ["AA==", "AQ=="]}


def test_shipped_rebuild_zips_import_their_handlers_on_python_312(packaged: Packaged, tmp_path: Path) -> None:
    """Each rebuild zip with the layer, as Lambda loads them: the handler imports, and a step it
    cannot serve fails with the product's own error, not an ImportError."""
    python = _python312()
    if python is None:
        pytest.skip("no CPython 3.12 on this machine to load the layer's cp312 wheels")
    with _zip("dependencies.zip") as layer:
        layer.extractall(tmp_path / "opt")
    for zip_name in ("rebuildSteps.zip", "rebuildWorker.zip"):
        task = tmp_path / zip_name
        with _zip(zip_name) as code:
            code.extractall(task)
        script = (
            "import json, sys\n"
            f"sys.path[:0] = [{str(task)!r}, {str(tmp_path / 'opt' / 'python')!r}]\n"
            "from replay import steps, worker\n"
            "from indexer.errors import SettingsError\n"
            "try:\n"
            "    steps.handler({'step': 'nonsense'}, None)\n"
            "except SettingsError as exc:\n"
            "    print(json.dumps({'refused': str(exc), 'worker': callable(worker.handler)}))\n"
        )
        done = subprocess.run([python, "-I", "-S", "-c", script], capture_output=True, text=True, timeout=120,
                              env={"PATH": os.environ["PATH"], "LOG_LEVEL": "WARNING"})
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout.strip().splitlines()[-1]) == {"refused": "unknown step 'nonsense'", "worker": True}


#: What the Lambda Python runtime ships besides the standard library (after the layer on sys.path).
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath")


def test_shipped_zips_build_the_deployed_search_client_on_python_312(config: tuple[Config, Packaged],
                                                                     tmp_path: Path) -> None:
    """The indexer from the zips, with its deployed environment and the runtime's boto3: it
    builds the client for the configured backend and, for sigv4, signs for the right service."""
    expected, packaged = config
    python = _python312()
    if python is None:
        pytest.skip("no CPython 3.12 on this machine to load the layer's cp312 wheels")
    with _zip("dynamodb-es-indexer.zip", packaged.build) as code, _zip("dependencies.zip", packaged.build) as layer:
        code.extractall(tmp_path / "task")
        layer.extractall(tmp_path / "opt")
        tops = {name.split("/")[1] for name in layer.namelist()}
    if expected.backend == "opensearch" and "opensearchpy" not in tops:
        pytest.xfail("the layer has no opensearch-py: infra/requirements.txt must list it to deploy OpenSearch")
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    for name in RUNTIME_PACKAGES:
        module = importlib.import_module(name)
        (runtime / name).symlink_to(Path(module.__file__).parent)
    script = (
        "import json, sys\n"
        f"sys.path[:0] = [{str(tmp_path / 'task')!r}, {str(tmp_path / 'opt' / 'python')!r}, {str(runtime)!r}]\n"
        "from indexer import handler\n"
        "response = handler.handler({'Records': []}, None)\n"
        "transport = handler.pipeline().store.transport\n"
        "client = getattr(transport, 'client', transport)\n"
        "auth = client.transport.get_connection().http_auth if hasattr(getattr(client, 'transport', None), 'get_connection') else None\n"
        "signed = auth('GET', 'https://search.example.com:9243/_alias/x', None) if callable(auth) else {}\n"
        "print(json.dumps({'indexer': response, 'client': type(client).__module__,\n"
        "                  'authorization': signed.get('Authorization', '')}))\n"
    )
    env = {"PATH": os.environ["PATH"], **LAMBDA_RUNTIME_ENV, "LOG_LEVEL": "WARNING"}
    env.update({name: _concrete(value) for name, value in packaged.env("IndexerLambdaFunction").items()})
    done = subprocess.run([python, "-I", "-S", "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["indexer"] == {"batchItemFailures": []}
    if expected.credentials:  # the secret is read on the first request, not when building
        assert result["client"] == "indexer.backends"
    else:
        assert result["client"].startswith({"elasticsearch": "elasticsearch", "opensearch": "opensearchpy"}[expected.backend])
    if expected.auth == "sigv4":
        assert f"/us-east-1/{expected.service}/aws4_request" in result["authorization"]
    else:
        assert result["authorization"] == ""


# ---------------------------------------------------------------- the file matches the code


def test_every_handler_imports_and_is_callable(packaged: Packaged) -> None:
    functions = packaged.resources("AWS::Lambda::Function")
    assert {name: f["Properties"]["Handler"] for name, f in functions.items()} == HANDLERS
    for name, path in HANDLERS.items():
        module, _, attribute = path.rpartition(".")
        assert functions[name]["Properties"]["Runtime"] == "python3.12"
        assert callable(getattr(importlib.import_module(module), attribute)), path


def _concrete(value: Any) -> str:
    """A value the code can parse in place of a reference that CloudFormation resolves."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        return (value["Fn::Sub"].replace("${AWS::Partition}", "aws").replace("${AWS::Region}", "us-east-1")
                .replace("${AWS::AccountId}", "123456789012"))
    if isinstance(value, dict):
        return {"AssetsTable": "dynamodb-es-indexer-test",
                "DeadLetterQueue": "https://sqs.us-east-1.amazonaws.com/123456789012/dead-letters"}[value["Ref"]]
    if value.startswith("{{resolve:ssm:"):
        return "https://search.example.com:9243"
    return value


class RecordingEnv(dict):
    """os.environ stand-in that remembers every name the code looks up."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def _note(self, key: object) -> None:
        # Only the project's own reads: libraries may look up proxies and the like.
        if sys._getframe(2).f_globals.get("__name__", "").startswith("indexer"):
            self.read.add(str(key))

    def get(self, key: str, default: Any = None) -> Any:
        self._note(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self._note(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._note(key)
        return super().__contains__(key)


def _names_in_source(path: Path) -> set[str]:
    """Environment names a module reads: constants passed to ``get``/``getenv``, or to a helper
    that is handed ``get`` (``_positive(get, "ELASTICSEARCH_TIMEOUT", 30.0)``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if func in ("get", "getenv") or any(isinstance(a, ast.Name) and a.id == "get" for a in node.args):
            names |= {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                      and re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+", a.value)}
    return names


def test_every_variable_the_code_reads_is_set_for_its_function(config: tuple[Config, Packaged],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from indexer import handler
    from indexer.sampleapp import s3assets

    expected, packaged = config
    for function, modules in (("IndexerLambdaFunction", ["settings.py", "handler.py"]),
                              ("AssetCreatedLambdaFunction", ["sampleapp/s3assets.py"]),
                              ("AssetDeletedLambdaFunction", ["sampleapp/s3assets.py"])):
        deployed = {name: _concrete(value) for name, value in packaged.env(function).items()}
        recorder = RecordingEnv({**LAMBDA_RUNTIME_ENV, **deployed})
        monkeypatch.setattr(os, "environ", recorder)
        handler.reset()
        s3assets.reset()
        try:
            # The real entry points, with the deployed environment: it must also pass validation
            # and build its client (for sigv4: signing with the role's credentials).
            if function == "IndexerLambdaFunction":
                assert handler.handler({"Records": []}, None) == {"batchItemFailures": []}
            else:
                getattr(s3assets, HANDLERS[function].rpartition(".")[2])({"Records": []})
        finally:
            monkeypatch.undo()
            handler.reset()
        read = recorder.read | set().union(*(_names_in_source(ROOT / "indexer" / m) for m in modules))
        # Credentials another auth mode reads are left out on purpose (no secret to resolve).
        unused_credentials = CREDENTIAL_VARIABLES - expected.credentials
        assert read - set(deployed) - set(NOT_DEPLOYED) - unused_credentials == set(), function
        assert {"TABLE_NAME", "LOG_LEVEL"} <= read


#: Settings the indexer's handler uses that the rebuild's Lambdas read (Settings.from_env) but never use.
REBUILD_NOT_DEPLOYED = {
    "DLQ_URL": "the rebuild dead-letters nothing: an item it cannot index is counted as refused and logged",
    "METRICS": "the handler's per-batch metric lines; a rebuild's counts are its report",
    "METRICS_NAMESPACE": "the handler's per-batch metric lines; a rebuild's counts are its report",
}


def test_every_variable_the_rebuild_reads_is_set_for_its_functions(config: tuple[Config, Packaged],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The rebuild's Lambdas read their settings as replay.wiring does, plus REBUILD_BUCKET (steps):
    each name they read is deployed, and the deployed settings pass validation."""
    from indexer.settings import Settings

    expected, packaged = config
    for function in ("RebuildStepsLambdaFunction", "RebuildWorkerLambdaFunction"):
        deployed = {name: _concrete(value) for name, value in packaged.env(function).items()}
        recorder = RecordingEnv({**LAMBDA_RUNTIME_ENV, **deployed})
        settings = Settings.from_env(recorder, require=("TABLE_NAME",))
        assert (settings.required("table_name"), settings.required("index_name")) == (
            "dynamodb-es-indexer-test", "dynamodb-es-indexer-test")
        sources = ("indexer/settings.py", "replay/steps.py", "replay/worker.py", "replay/wiring.py")
        read = recorder.read | set().union(*(_names_in_source(ROOT / m) for m in sources))
        unused_credentials = CREDENTIAL_VARIABLES - expected.credentials
        assert read - set(deployed) - set(NOT_DEPLOYED) - set(REBUILD_NOT_DEPLOYED) - unused_credentials == set(), function
        assert {"TABLE_NAME", "INDEX_NAME", "REBUILD_BUCKET"} <= read
        # The same search settings and target cache as the indexer: a rebuild announces its index
        # and waits longer than the indexer caches its targets.
        indexer = packaged.env("IndexerLambdaFunction")
        for name in ("SEARCH_BACKEND", "SEARCH_AUTH", "SIGV4_SERVICE", "ELASTICSEARCH_URL", "TARGETS_TTL_SECONDS",
                     "INDEX_NAME", "INDEX_MAPPING", "ELASTICSEARCH_VERIFY_CERTS"):
            assert packaged.env(function).get(name) == indexer.get(name), (function, name)


def test_search_settings_are_the_params(config: tuple[Config, Packaged]) -> None:
    expected, packaged = config
    env = packaged.env("IndexerLambdaFunction")
    settings = (env["SEARCH_BACKEND"], env["SEARCH_AUTH"], env["SIGV4_SERVICE"])
    assert settings == (expected.backend, expected.env_auth, expected.service)
    assert env["ELASTICSEARCH_URL"].startswith("{{resolve:ssm:/dynamodb-es-indexer/test/")
    assert env["DLQ_URL"] == {"Ref": "DeadLetterQueue"} and env["TABLE_NAME"] == {"Ref": "AssetsTable"}
    for function in ("AssetCreatedLambdaFunction", "AssetDeletedLambdaFunction"):
        # The asset functions write the table only: no search settings, no credentials.
        assert not {name for name in packaged.env(function) if "SEARCH" in name or name.startswith("ELASTICSEARCH")}


def test_credentials_are_exactly_what_the_auth_mode_reads(config: tuple[Config, Packaged]) -> None:
    expected, packaged = config
    env = packaged.env("IndexerLambdaFunction")
    assert set(env) & CREDENTIAL_VARIABLES == expected.credentials
    # No credential in the template, not even as a reference CloudFormation would resolve into
    # the function's configuration: the indexer reads the secret at run time.
    assert "{{resolve:secretsmanager:" not in json.dumps(packaged.raw)
    if expected.credentials:
        assert env["ELASTICSEARCH_SECRET_ARN"] == {"Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:"
                                                              "${AWS::AccountId}:secret:dynamodb-es-indexer/test/elasticsearch"}


def test_stream_mapping_is_what_the_handler_is_built_for(packaged: Packaged) -> None:
    from indexer.handler import RESERVE_SECONDS

    (mapping,) = packaged.resources("AWS::Lambda::EventSourceMapping").values()
    props = mapping["Properties"]
    assert props["EventSourceArn"] == {"Fn::GetAtt": ["AssetsTable", "StreamArn"]}
    assert props["FunctionName"] == {"Fn::GetAtt": ["IndexerLambdaFunction", "Arn"]}
    # The handler answers {"batchItemFailures": [...]}: without this Lambda would ignore it.
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["BisectBatchOnFunctionError"] is True
    assert props["DestinationConfig"] == {"OnFailure": {"Destination": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}}}
    assert props["StartingPosition"] == "TRIM_HORIZON"
    assert 1 <= props["BatchSize"] <= 10000 and 0 <= props["MaximumBatchingWindowInSeconds"] <= 300
    assert props["MaximumRetryAttempts"] == -1 or props["MaximumRetryAttempts"] >= 1
    # Records older than this go to the DLQ as positions; redrive reads them back from the
    # stream, which keeps them 24 h: leave at least half of that for it.
    assert 60 <= props["MaximumRecordAgeInSeconds"] <= 12 * 3600
    indexer = packaged.template["Resources"]["IndexerLambdaFunction"]["Properties"]
    es_timeout = float(indexer["Environment"]["Variables"]["ELASTICSEARCH_TIMEOUT"])
    # One request hanging for its whole timeout still leaves room for a retry and the reserve.
    assert indexer["Timeout"] >= RESERVE_SECONDS + 1.5 * es_timeout
    assert indexer["MemorySize"] >= 512


def test_table_streams_both_images(packaged: Packaged) -> None:
    table = packaged.template["Resources"]["AssetsTable"]["Properties"]
    assert table["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    # indexer.sampleapp.s3assets keys items by the object key, attribute "key".
    assert table["KeySchema"] == [{"AttributeName": "key", "KeyType": "HASH"}]


def test_dead_letter_queues_keep_14_days_and_raise_alarms(packaged: Packaged) -> None:
    from replay.redrive.messages import parking_url

    resources = packaged.template["Resources"]
    queues = packaged.resources("AWS::SQS::Queue")
    assert set(queues) == {"DeadLetterQueue", "ParkingQueue", "S3EventFailuresQueue"}
    for queue in queues.values():
        assert queue["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    dlq = queues["DeadLetterQueue"]["Properties"]["QueueName"]
    # Redrive's default parking queue is the DLQ's URL with "-parking": this is that queue.
    assert parking_url(f"https://sqs.example/1/{dlq}").endswith("/" + queues["ParkingQueue"]["Properties"]["QueueName"])
    alarms = {a["Properties"]["Dimensions"][0]["Value"].get("Fn::GetAtt", [None])[0]: a["Properties"]
              for a in packaged.resources("AWS::CloudWatch::Alarm").values()
              if a["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"}
    for queue in queues:
        alarm = alarms[queue]
        assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
        assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": "AlarmTopic"}]
    assert resources["AlarmTopic"]["Type"] == "AWS::SNS::Topic"
    for function in ("AssetCreated", "AssetDeleted"):
        config = resources[f"{function}LambdaEvConf"]["Properties"]
        assert config["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["S3EventFailuresQueue", "Arn"]}


# ---------------------------------------------------------------- IAM


def _arn(resource: Any) -> str:
    return json.dumps(resource, sort_keys=True)


EXPECTED_GRANTS = {
    "IndexerRole": {
        ("logs:CreateLogStream", _arn({"Fn::GetAtt": ["IndexerLogGroup", "Arn"]})),
        ("logs:PutLogEvents", _arn({"Fn::GetAtt": ["IndexerLogGroup", "Arn"]})),
        ("dynamodb:DescribeStream", _arn({"Fn::GetAtt": ["AssetsTable", "StreamArn"]})),
        ("dynamodb:GetRecords", _arn({"Fn::GetAtt": ["AssetsTable", "StreamArn"]})),
        ("dynamodb:GetShardIterator", _arn({"Fn::GetAtt": ["AssetsTable", "StreamArn"]})),
        ("dynamodb:ListStreams", _arn("*")),
        ("dynamodb:BatchGetItem", _arn({"Fn::GetAtt": ["AssetsTable", "Arn"]})),
        ("sqs:SendMessage", _arn({"Fn::GetAtt": ["DeadLetterQueue", "Arn"]})),
    },
    "AssetCreatedRole": {
        ("logs:CreateLogStream", _arn({"Fn::GetAtt": ["AssetCreatedLogGroup", "Arn"]})),
        ("logs:PutLogEvents", _arn({"Fn::GetAtt": ["AssetCreatedLogGroup", "Arn"]})),
        ("s3:GetObject", _arn({"Fn::Sub": "arn:${AWS::Partition}:s3:::dynamodb-es-indexer-test-images-in/*"})),
        ("s3:ListBucket", _arn({"Fn::Sub": "arn:${AWS::Partition}:s3:::dynamodb-es-indexer-test-images-in"})),
        ("dynamodb:PutItem", _arn({"Fn::GetAtt": ["AssetsTable", "Arn"]})),
        ("sqs:SendMessage", _arn({"Fn::GetAtt": ["S3EventFailuresQueue", "Arn"]})),
    },
    "ReplayOperatorPolicy": {
        *{(a, _arn({"Fn::GetAtt": ["AssetsTable", "Arn"]}))
          for a in ("dynamodb:DescribeTable", "dynamodb:Scan", "dynamodb:GetItem", "dynamodb:BatchGetItem")},
        *{(a, _arn({"Fn::GetAtt": ["AssetsTable", "StreamArn"]}))
          for a in ("dynamodb:DescribeStream", "dynamodb:GetShardIterator", "dynamodb:GetRecords")},
        *{(a, _arn({"Fn::GetAtt": [queue, "Arn"]})) for queue in ("DeadLetterQueue", "ParkingQueue")
          for a in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                    "sqs:GetQueueAttributes", "sqs:SendMessage")},
        ("ssm:GetParameter", _arn({"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:"
                                               "parameter/dynamodb-es-indexer/test/elasticsearch-url"})),
    },
    "AssetDeletedRole": {
        ("logs:CreateLogStream", _arn({"Fn::GetAtt": ["AssetDeletedLogGroup", "Arn"]})),
        ("logs:PutLogEvents", _arn({"Fn::GetAtt": ["AssetDeletedLogGroup", "Arn"]})),
        ("dynamodb:DeleteItem", _arn({"Fn::GetAtt": ["AssetsTable", "Arn"]})),
        ("sqs:SendMessage", _arn({"Fn::GetAtt": ["S3EventFailuresQueue", "Arn"]})),
    },
}


MACHINE = "dynamodb-es-indexer-test-rebuild"


def _in_rebuild_bucket(prefix: str) -> str:
    return _arn({"Fn::Sub": "${RebuildBucket.Arn}/" + prefix + "/*"})


def _states(resource: str) -> str:
    return _arn({"Fn::Sub": "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:" + resource})


def _logs(function: str) -> set[tuple[str, str]]:
    return {(action, _arn({"Fn::GetAtt": [f"{function}LogGroup", "Arn"]}))
            for action in ("logs:CreateLogStream", "logs:PutLogEvents")}


#: The rebuild's grants on AWS (the search grants follow the configuration, below), each the
#: least its code calls (test_rebuild_roles_grant_what_its_lambdas_call records those calls).
REBUILD_GRANTS = {
    "RebuildStepsRole": {
        *_logs("RebuildSteps"),
        *{(a, _arn({"Fn::GetAtt": ["AssetsTable", "Arn"]}))
          for a in ("dynamodb:DescribeTable", "dynamodb:DescribeContinuousBackups", "dynamodb:ExportTableToPointInTime",
                    "dynamodb:BatchGetItem")},
        ("dynamodb:DescribeExport", _arn({"Fn::Sub": "${AssetsTable.Arn}/export/*"})),
        *{(a, _in_rebuild_bucket("rebuilds")) for a in ("s3:PutObject", "s3:GetObject")},
        *{(a, _in_rebuild_bucket("exports"))
          for a in ("s3:PutObject", "s3:AbortMultipartUpload", "s3:PutObjectAcl", "s3:GetObject")},
        ("states:DescribeExecution", _states(f"execution:{MACHINE}:*")),
    },
    "RebuildWorkerRole": {
        *_logs("RebuildWorker"),
        ("dynamodb:Scan", _arn({"Fn::GetAtt": ["AssetsTable", "Arn"]})),
        ("s3:GetObject", _in_rebuild_bucket("exports")),
    },
    "RebuildStateMachineRole": {
        ("lambda:InvokeFunction", _arn({"Fn::GetAtt": ["RebuildStepsLambdaFunction", "Arn"]})),
        ("lambda:InvokeFunction", _arn({"Fn::GetAtt": ["RebuildWorkerLambdaFunction", "Arn"]})),
        # Only its own Distributed Map's child executions.
        ("states:StartExecution", _states(f"stateMachine:{MACHINE}")),
        *{(a, _states(f"execution:{MACHINE}/*"))
          for a in ("states:DescribeExecution", "states:StopExecution", "states:RedriveExecution")},
        # ItemReader and ResultWriter (AWS's documented permissions for them).
        *{(a, _in_rebuild_bucket("rebuilds")) for a in ("s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload",
                                                         "s3:ListMultipartUploadParts")},
    },
    "RebuildOperatorPolicy": {
        ("states:StartExecution", _arn({"Ref": "RebuildStateMachine"})),
        ("states:DescribeExecution", _states(f"execution:{MACHINE}:*")),
        ("states:ListMapRuns", _states(f"execution:{MACHINE}:*")),
        ("states:DescribeMapRun", _states(f"mapRun:{MACHINE}/*")),
    },
}
EXPECTED_GRANTS.update(REBUILD_GRANTS)
#: HTTP methods the rebuild's worker sends (test_rebuild_roles_grant_what_its_lambdas_call).
WORKER_METHODS = {"POST"}


#: The indexer reads its credentials at run time; whoever runs python -m replay reads them too.
SECRET_GRANT = ("secretsmanager:GetSecretValue", _arn({
    "Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:"
               "secret:dynamodb-es-indexer/test/elasticsearch-??????"}))


def _http_grants(methods: set[str]) -> set[tuple[str, str]]:
    return {(f"es:ESHttp{method.capitalize()}", _arn(f"{DOMAIN_ARN}/*")) for method in methods}


def expected_grants(config: Config) -> dict[str, set[tuple[str, str]]]:
    """What each role and the operator policy must grant, exactly, in ``config``."""
    grants = {name: set(base) for name, base in EXPECTED_GRANTS.items()}
    if config.credentials:
        for name in ("ReplayOperatorPolicy", "IndexerRole", "RebuildStepsRole", "RebuildWorkerRole"):
            grants[name].add(SECRET_GRANT)
    if config.signed == "domain":
        # Every path of the one domain; the handler's methods, and the store's for the operator
        # and the rebuild's steps (they create, swap and delete indices).
        grants["IndexerRole"] |= _http_grants(HANDLER_METHODS)
        grants["ReplayOperatorPolicy"] |= _http_grants(STORE_METHODS)
        grants["RebuildStepsRole"] |= _http_grants(STORE_METHODS)
        grants["RebuildWorkerRole"] |= _http_grants(WORKER_METHODS)
    if config.signed == "collection":
        # The collection's one IAM action; the data access policy on it says what it allows.
        for name in ("IndexerRole", "ReplayOperatorPolicy", "RebuildStepsRole", "RebuildWorkerRole"):
            grants[name].add(("aoss:APIAccessAll", _arn(COLLECTION_ARN)))
    if config.export_key:
        for name, actions in EXPORT_KEY_ACTIONS.items():
            grants[name] |= {(action, _arn(config.export_key)) for action in actions}
    return grants


#: Who may use the export key, for what, with rebuildExportKmsKeyArn set. Whoever starts an export
#: has DynamoDB write it with their permissions: S3 asks KMS for a data key per object
#: (kms:GenerateDataKey) and to complete a multipart upload (kms:Decrypt); whoever reads the
#: export's files has S3 decrypt their data keys (kms:Decrypt). The local engine's operator does
#: both; the steps start the export and read its manifests; the worker reads data files. The
#: state machine (its units and results are SSE-S3) and RebuildOperatorPolicy (it starts an
#: execution, not an export) get nothing.
EXPORT_KEY_ACTIONS = {
    "ReplayOperatorPolicy": {"kms:GenerateDataKey", "kms:Decrypt"},
    "RebuildStepsRole": {"kms:GenerateDataKey", "kms:Decrypt"},
    "RebuildWorkerRole": {"kms:Decrypt"},
}
#: ... and only through S3, in the stack's region (the key must be in the bucket's region).
THROUGH_S3 = {"StringEquals": {"kms:ViaService": {"Fn::Sub": "s3.${AWS::Region}.amazonaws.com"}}}


def _documents(resource: dict[str, Any]) -> list[dict[str, Any]]:
    if resource["Type"] == "AWS::IAM::ManagedPolicy":
        return [resource["Properties"]["PolicyDocument"]]
    return [policy["PolicyDocument"] for policy in resource["Properties"].get("Policies", [])]


def _grants(resource: dict[str, Any]) -> set[tuple[str, str]]:
    grants = set()
    for document in _documents(resource):
        for statement in document["Statement"]:
            assert statement["Effect"] == "Allow" and "NotAction" not in statement and "NotResource" not in statement
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            grants |= {(action, _arn(resource)) for action in actions for resource in resources}
    return grants


def _actions_without_resource_types() -> set[str]:
    """Actions IAM authorizes only on "*", from the IAM reference data cfn-lint ships."""
    import cfnlint

    policies = json.loads((Path(cfnlint.__file__).parent / "data" / "AdditionalSpecs" / "Policies.json").read_text())
    return {f"{service}:{action}" for service, spec in policies.items()
            for action, detail in spec.get("Actions", {}).items() if not detail.get("Resources")}


def test_each_function_has_its_own_role(config: tuple[Config, Packaged]) -> None:
    _, packaged = config
    functions = packaged.resources("AWS::Lambda::Function")
    assert {name: f["Properties"]["Role"] for name, f in functions.items()} == {
        name: {"Fn::GetAtt": [role, "Arn"]} for name, role in ROLES.items()}
    assert set(packaged.resources("AWS::IAM::Role")) == set(ROLES.values()) | SERVICE_ROLES
    assert not packaged.resources("AWS::IAM::Policy")


def _policies(packaged: Packaged) -> dict[str, dict[str, Any]]:
    return {**packaged.resources("AWS::IAM::Role"), **packaged.resources("AWS::IAM::ManagedPolicy")}


def test_policies_grant_exactly_what_each_user_needs(config: tuple[Config, Packaged]) -> None:
    expected, packaged = config
    policies = _policies(packaged)
    wanted = expected_grants(expected)
    assert set(policies) == set(wanted)
    for name, policy in policies.items():
        assert "ManagedPolicyArns" not in policy["Properties"], name
        assert _grants(policy) == wanted[name], name


def test_no_wildcards_except_where_aws_requires_them(config: tuple[Config, Packaged]) -> None:
    _, packaged = config
    only_star = _actions_without_resource_types()
    for name, policy in _policies(packaged).items():
        for action, resource in _grants(policy):
            assert "*" not in action, (name, action)
            value = json.loads(resource)
            if value == "*":
                assert action.lower() in only_star, f"{name}: {action} on * but IAM can scope it"
                continue
            text = value if isinstance(value, str) else json.dumps(value)
            # Objects of one named bucket ("arn:...:s3:::bucket/*") and the paths of one named
            # domain ("arn:aws:es:...:domain/name/*", what IAM authorizes requests on) are the
            # only patterns allowed.
            text = re.sub(r"^(\{\"Fn::Sub\": \"arn:\$\{AWS::Partition\}:s3:::[a-z0-9.-]+)/\*", r"\1", text)
            text = re.sub(r"^(arn:aws:es:[a-z0-9-]+:[0-9]{12}:domain/[a-z][a-z0-9-]+)/\*$", r"\1", text)
            # The rebuild: objects under one fixed prefix of its bucket, the exports of the one
            # table, the executions and map runs of the one state machine.
            text = re.sub(r'^(\{"Fn::Sub": "\$\{RebuildBucket\.Arn\}/(rebuilds|exports))/\*"\}$', r"\1", text)
            text = re.sub(r'^(\{"Fn::Sub": "\$\{AssetsTable\.Arn\}/export)/\*"\}$', r"\1", text)
            text = re.sub(rf'^(\{{"Fn::Sub": "arn:\$\{{AWS::Partition\}}:states:\$\{{AWS::Region\}}:\$\{{AWS::AccountId\}}:'
                          rf'(execution|mapRun):{MACHINE})[:/]\*"\}}$', r"\1", text)
            assert "*" not in text, (name, text)


def test_the_export_key_is_granted_only_when_set_only_through_s3_and_only_to_who_exports_or_reads(
        config: tuple[Config, Packaged]) -> None:
    """rebuildExportKmsKeyArn: empty, no statement names KMS at all; set, exactly the roles in
    EXPORT_KEY_ACTIONS hold KMS actions, on that one key, through S3 only; and the steps Lambda
    gets the key as the default for the exports it starts."""
    expected, packaged = config
    holders: dict[str, set[str]] = {}
    for name, policy in _policies(packaged).items():
        for document in _documents(policy):
            for statement in document["Statement"]:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                kms = {action for action in actions if action.startswith("kms:")}
                if not kms:
                    continue
                assert kms == set(actions), (name, actions)  # a statement of its own
                assert statement["Resource"] == expected.export_key, name
                assert statement["Condition"] == THROUGH_S3, name
                holders.setdefault(name, set()).update(kms)
    assert holders == (EXPORT_KEY_ACTIONS if expected.export_key else {})
    for function in ("RebuildStepsLambdaFunction", "RebuildWorkerLambdaFunction"):
        assert _concrete(packaged.env(function)["REBUILD_EXPORT_KMS_KEY"]) == (expected.export_key or "")
    parameter = packaged.raw["Parameters"]["RebuildExportKmsKeyArn"]
    pattern = re.compile(parameter["AllowedPattern"])
    assert pattern.fullmatch(EXPORT_KEY_ARN) and pattern.fullmatch("")
    for wrong in ("*", "arn:aws:kms:us-east-1:123456789012:key/*", "arn:aws:kms:us-east-1:123456789012:alias/exports",
                  "arn:aws:kms:*:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"):
        assert not pattern.fullmatch(wrong), wrong


def test_functions_that_do_not_search_get_no_search_grants(config: tuple[Config, Packaged]) -> None:
    _, packaged = config
    for role in ("AssetCreatedRole", "AssetDeletedRole", "RebuildStateMachineRole"):
        services = {action.split(":")[0] for action, _ in _grants(packaged.template["Resources"][role])}
        assert not services & {"es", "aoss", "secretsmanager"}, role


def _request_methods(path: Path) -> set[str]:
    """The literal methods of every ``_request("METHOD", ...)`` call in ``path``."""
    return {node.args[0].value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "_request"
            and node.args and isinstance(node.args[0], ast.Constant)}


def test_store_sends_only_these_methods() -> None:
    """Every request to the cluster goes through ``SearchStore._request`` (no other module calls
    the client's transport), so its methods are all replay, verify and redrive can send."""
    sources = [*sorted((ROOT / "indexer").rglob("*.py")), *sorted((ROOT / "replay").rglob("*.py"))]
    assert set().union(*map(_request_methods, sources)) == STORE_METHODS
    bypassing = [p.name for p in sources if "perform_request" in p.read_text() and p.name not in ("search.py", "backends.py")]
    assert bypassing == []


def test_handler_sends_only_these_methods(sync: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler on the real cluster, from a fresh alias (it creates the first index) through
    inserts, updates, deletes and a stale record: the HTTP methods it sends are the ones the
    indexer role may send to an OpenSearch domain."""
    from stream_events import put, remove

    from indexer.search import SearchStore

    sent: set[str] = set()
    request = SearchStore._request

    def recording(self: SearchStore, method: str, *args: Any, **options: Any) -> Any:
        sent.add(method)
        return request(self, method, *args, **options)

    monkeypatch.setattr(SearchStore, "_request", recording)
    assert sync.deliver(put("a", 2, colour="red"), put("b", 3), put("c", 4)) == {"batchItemFailures": []}
    assert sync.deliver(put("a", 5, colour="blue"), remove("b", 6), put("c", 1)) == {"batchItemFailures": []}
    assert len(sync.docs()) == 2 and sync.dead_letters() == []  # a and c; b deleted
    assert sent == HANDLER_METHODS


# ---------------------------------------------------------------- the stack in moto


@pytest.fixture
def moto_drops_no_value_list_items(monkeypatch: pytest.MonkeyPatch) -> None:
    """CloudFormation removes a list item that is ``{"Ref": "AWS::NoValue"}`` (here: a policy
    statement whose condition is false); moto 5 leaves None in its place, which its IAM then
    rejects as a malformed policy. Make moto's template evaluation drop it, as AWS does."""
    from moto.cloudformation import parsing

    clean_json = parsing.clean_json

    def dropping(value: Any, resources_map: Any) -> Any:
        if isinstance(value, list):
            return [item for item in (dropping(v, resources_map) for v in value) if item is not None]
        return clean_json(value, resources_map)

    monkeypatch.setattr(parsing, "clean_json", dropping)


def test_stack_deploys_into_moto_and_its_wiring_works(config: tuple[Config, Packaged], aws: None,
                                                      moto_drops_no_value_list_items: None,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """What `serverless deploy` does: create the bootstrap stack, upload the zips to its bucket,
    update the stack; moto decides the template's conditions from its parameters' defaults.
    moto skips AWS::CloudWatch::Alarm, AWS::Lambda::EventInvokeConfig and AWS::S3::BucketPolicy,
    leaves {{resolve:...}} unresolved, and attaches no layers."""
    import boto3

    from indexer.sampleapp import s3assets

    expected, packaged = config
    stack = f"dynamodb-es-indexer-{STAGE}"
    cloudformation = boto3.client("cloudformation")
    create = (packaged.build / "cloudformation-template-create-stack.json").read_text()
    s3 = boto3.client("s3")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cloudformation.create_stack(StackName=stack, TemplateBody=create)
        outputs = _outputs(cloudformation, stack)
        for resource in packaged.raw["Resources"].values():
            content = resource["Properties"].get("Code") or resource["Properties"].get("Content")
            if resource["Type"] in ("AWS::Lambda::Function", "AWS::Lambda::LayerVersion"):
                key = content["S3Key"]
                s3.upload_file(str(packaged.build / key.rsplit("/", 1)[1]), outputs["ServerlessDeploymentBucketName"], key)
        cloudformation.update_stack(StackName=stack, TemplateBody=json.dumps(packaged.raw), Capabilities=["CAPABILITY_IAM"])
    skipped = {m.group(1) for w in caught if (m := re.search(r"parse (AWS::\S+) but it's not supported", str(w.message)))}
    assert skipped <= MOTO_SKIPS, f"moto skipped more than it used to: {skipped - MOTO_SKIPS}"
    assert cloudformation.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"] == "UPDATE_COMPLETE"
    outputs = _outputs(cloudformation, stack)

    table = boto3.client("dynamodb").describe_table(TableName=outputs["TableName"])["Table"]
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert table["LatestStreamArn"] == outputs["TableStreamArn"]
    sqs = boto3.client("sqs")
    for key in ("DeadLetterQueueUrl", "ParkingQueueUrl", "S3EventFailuresQueueUrl"):
        attributes = sqs.get_queue_attributes(QueueUrl=outputs[key], AttributeNames=["All"])["Attributes"]
        assert attributes["MessageRetentionPeriod"] == "1209600", key

    awslambda = boto3.client("lambda")
    indexer = awslambda.get_function_configuration(FunctionName=f"{stack}-indexer")
    assert indexer["Handler"] == "indexer.handler.handler" and indexer["Runtime"] == "python3.12"
    variables = indexer["Environment"]["Variables"]
    assert variables["DLQ_URL"] == outputs["DeadLetterQueueUrl"]
    assert variables["TABLE_NAME"] == outputs["TableName"]
    assert (variables["SEARCH_BACKEND"], variables["SEARCH_AUTH"], variables["SIGV4_SERVICE"]) == (
        expected.backend, expected.env_auth, expected.service)
    assert set(variables) & CREDENTIAL_VARIABLES == expected.credentials
    (mapping,) = [m for m in awslambda.list_event_source_mappings()["EventSourceMappings"]
                  if m["FunctionArn"] == indexer["FunctionArn"]]
    assert mapping["EventSourceArn"] == outputs["TableStreamArn"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["DestinationConfig"]["OnFailure"]["Destination"].endswith(":" + outputs["DeadLetterQueueUrl"].rsplit("/", 1)[1])
    # The ARN docs/deploy.md maps in OpenSearch (FGAC backend role, Serverless data access policy).
    assert outputs["IndexerRoleArn"] == indexer["Role"]
    role = indexer["Role"].rsplit("/", 1)[1]
    iam = boto3.client("iam")
    (policy,) = iam.list_role_policies(RoleName=role)["PolicyNames"]
    # The role's policy names this stack's own stream and queue (moto answers its text, not JSON).
    document = str(iam.get_role_policy(RoleName=role, PolicyName=policy)["PolicyDocument"])
    assert outputs["TableStreamArn"] in document
    assert mapping["DestinationConfig"]["OnFailure"]["Destination"] in document
    # The search grants as deployed, with the ARN given as a param, for the role and the policy.
    operator = iam.get_policy(PolicyArn=outputs["ReplayOperatorPolicyArn"])["Policy"]
    operator_document = iam.get_policy_version(PolicyArn=operator["Arn"], VersionId=operator["DefaultVersionId"])
    for methods, text in ((HANDLER_METHODS, document), (STORE_METHODS, str(operator_document["PolicyVersion"]["Document"]))):
        assert ("es:ESHttp" in text) == (expected.signed == "domain")
        assert ("aoss:" in text) == (expected.signed == "collection")
        assert ("secretsmanager:" in text) == bool(expected.credentials)
        if expected.signed == "domain":
            assert f"'Resource': '{DOMAIN_ARN}/*'" in text
            assert set(re.findall(r"es:ESHttp(\w+)", text)) == {m.capitalize() for m in methods}
        if expected.signed == "collection":
            assert f"'Action': 'aoss:APIAccessAll', 'Resource': '{COLLECTION_ARN}'" in text
    # The export key as deployed, for the local engine's operator (moto answers the policy's text).
    operator_text = str(operator_document["PolicyVersion"]["Document"])
    assert ("kms:" in operator_text) == bool(expected.export_key)
    if expected.export_key:
        assert f"'Resource': '{expected.export_key}'" in operator_text
        assert "'kms:ViaService': 's3.us-east-1.amazonaws.com'" in operator_text

    # The S3 handler with its deployed environment writes an item the deployed table accepts.
    created = awslambda.get_function_configuration(FunctionName=f"{stack}-assetCreated")
    for name, value in created["Environment"]["Variables"].items():
        monkeypatch.setenv(name, value)
    s3.put_object(Bucket=outputs["ImagesBucketName"], Key="cats/tom.jpg", Body=b"jpeg", ContentType="image/jpeg")
    s3assets.reset()
    try:
        event = s3assets.object_event("ObjectCreated:Put", outputs["ImagesBucketName"], "cats/tom.jpg", sequencer="0A1")
        assert s3assets.created(event) == {"written": 1, "deleted": 0, "skipped": 0}
    finally:
        s3assets.reset()
    item = boto3.client("dynamodb").get_item(TableName=outputs["TableName"], Key={"key": {"S": "cats/tom.jpg"}})["Item"]
    assert item["content_type"] == {"S": "image/jpeg"}

    # The dashboard's body is valid JSON once CloudFormation substitutes it, naming this function.
    body = boto3.client("cloudwatch").get_dashboard(DashboardName=outputs["IndexerDashboardName"])["DashboardBody"]
    assert f'"{indexer["FunctionName"]}"' in body and json.loads(body)["widgets"]

    # The rebuild: its state machine, as deployed, is the generated definition with this stack's
    # Lambdas and bucket (what REBUILD_STATE_MACHINE_ARN, the output, names), and the bucket is
    # encrypted (moto's CloudFormation applies neither a bucket's public access block nor its
    # lifecycle rules: test_the_rebuild_bucket_is_private... reads those from the template).
    from replay.statemachine import definition

    functions = {name: awslambda.get_function_configuration(FunctionName=f"{stack}-{name}")
                 for name in ("rebuildSteps", "rebuildWorker")}
    assert {f["Handler"] for f in functions.values()} == {"replay.steps.handler", "replay.worker.handler"}
    for function in functions.values():
        assert function["Environment"]["Variables"]["REBUILD_BUCKET"] == outputs["RebuildBucketName"]
        assert function["Environment"]["Variables"]["TABLE_NAME"] == outputs["TableName"]
    machine = boto3.client("stepfunctions").describe_state_machine(stateMachineArn=outputs["RebuildStateMachineArn"])
    deployed = definition(functions["rebuildSteps"]["FunctionArn"], functions["rebuildWorker"]["FunctionArn"], 10,
                          outputs["RebuildBucketName"])
    # moto's Fn::Sub is Python's string.Template, which reads "$$" as an escaped "$"; CloudFormation
    # has no such escape ("${!...}" is its only one) and keeps the context paths ("$$.Map.Item.Value").
    assert json.loads(machine["definition"]) == json.loads(json.dumps(deployed).replace('"$$.', '"$.'))
    assert machine["roleArn"].split("/")[-1].startswith(f"{stack}-RebuildStateMachineRole")
    # The CLI finds it by the documented setting (the output as REBUILD_STATE_MACHINE_ARN) and
    # starts an execution of it; moto runs nothing (no Lambda to run), so it detaches.
    from replay import stepfunctions
    from replay.full import FullOptions

    def detach(seconds: float) -> None:
        raise KeyboardInterrupt

    follow = stepfunctions.follow
    monkeypatch.setattr(stepfunctions, "follow",
                        lambda sfn, execution, progress, poll: follow(sfn, execution, progress, poll, sleep=detach))
    said: list[str] = []
    options = FullOptions(engine="stepfunctions", source="export", progress=False)
    followed = stepfunctions.run(options, {"REBUILD_STATE_MACHINE_ARN": outputs["RebuildStateMachineArn"]}, said.append)
    assert followed.report is None and said == [f"started {followed.execution}"]
    started = boto3.client("stepfunctions").describe_execution(executionArn=followed.execution)
    assert started["stateMachineArn"] == outputs["RebuildStateMachineArn"]
    assert json.loads(started["input"]) == stepfunctions.request_of(options)
    bucket = outputs["RebuildBucketName"]
    assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0][
        "ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def _outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    described = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}


# ---------------------------------------------------------------- security (docs/security.md)


def _deny_statements(packaged: Packaged, kind: str) -> dict[str, list[dict[str, Any]]]:
    return {name: [s for s in r["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
            for name, r in packaged.resources(kind).items()}


def test_only_the_indexer_and_the_operators_may_send_to_the_dead_letter_queues(packaged: Packaged) -> None:
    (statement,) = [s for s in _deny_statements(packaged, "AWS::SQS::QueuePolicy")["DeadLetterQueuesPolicy"]
                    if s["Action"] == "sqs:SendMessage"]
    assert statement["Principal"] == "*"
    allowed = statement["Condition"]["StringNotEquals"]["aws:PrincipalArn"]
    # Without operatorRoleArn (as packaged here) the indexer's role alone; with it, that role too.
    assert allowed == [{"Fn::GetAtt": ["IndexerRole", "Arn"]}] * 2
    raw = packaged.raw["Resources"]["DeadLetterQueuesPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert raw["Condition"]["StringNotEquals"]["aws:PrincipalArn"][1]["Fn::If"][:2] == [
        "HasOperatorRole", {"Ref": "OperatorRoleArn"}]
    queues = packaged.resources("AWS::SQS::QueuePolicy")["DeadLetterQueuesPolicy"]["Properties"]["Queues"]
    assert queues == [{"Ref": "DeadLetterQueue"}, {"Ref": "ParkingQueue"}]


def test_every_queue_and_the_bucket_refuse_requests_without_tls(packaged: Packaged) -> None:
    protected: set[str] = set()
    for kind in ("AWS::SQS::QueuePolicy", "AWS::S3::BucketPolicy"):
        for name, statements in _deny_statements(packaged, kind).items():
            for statement in statements:
                if statement.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false":
                    resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
                    protected |= {json.dumps(r, sort_keys=True) for r in resources}
    for queue in ("DeadLetterQueue", "ParkingQueue", "S3EventFailuresQueue"):
        assert json.dumps({"Fn::GetAtt": [queue, "Arn"]}, sort_keys=True) in protected, queue
    assert any("images-in/*" in text for text in protected) and any(text.endswith('images-in"}') for text in protected)


def test_the_table_is_deletion_protected_outside_throwaway_stages(packaged: Packaged) -> None:
    # STAGE is "test", the throwaway stage: protection off there, on by default.
    assert packaged.template["Resources"]["AssetsTable"]["Properties"]["DeletionProtectionEnabled"] is False
    assert "tableDeletionProtection: true" in (ROOT / "infra" / "serverless.yml").read_text()


def test_the_indexer_s_errors_throttles_and_old_dead_letters_raise_alarms_and_clear_them(packaged: Packaged) -> None:
    alarms = {(a["Properties"]["Namespace"], a["Properties"]["MetricName"]): a["Properties"]
              for a in packaged.resources("AWS::CloudWatch::Alarm").values()}
    for key in (("AWS/Lambda", "Errors"), ("AWS/Lambda", "Throttles"), ("AWS/SQS", "ApproximateAgeOfOldestMessage")):
        alarm = alarms[key]
        assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": "AlarmTopic"}], key
    assert alarms[("AWS/SQS", "ApproximateAgeOfOldestMessage")]["Threshold"] < 14 * 24 * 3600


def test_a_kms_key_option_covers_the_functions_environment_and_the_alarm_topic(packaged: Packaged) -> None:
    resources = packaged.raw["Resources"]
    key = {"Fn::If": ["HasKmsKey", {"Ref": "KmsKeyArn"}, {"Ref": "AWS::NoValue"}]}
    for function in ROLES:
        assert resources[function]["Properties"]["KmsKeyArn"] == key, function
    assert resources["AlarmTopic"]["Properties"]["KmsMasterKeyId"] == key
    # Without the param, AWS managed keys: nothing names a key.
    assert "KmsKeyArn" not in packaged.template["Resources"]["IndexerLambdaFunction"]["Properties"]
# ---------------------------------------------------------------- metrics: dashboard and alarms


#: What the dashboard must show (issue 15): lag, throughput, dead letters, failures, bulk latency.
DASHBOARD_METRICS = {"ReplicationLag", "OldestRecordAge", "RecordsReceived", "RecordsIndexed", "RecordsDeadLettered",
                     "RecordsFailed", "BulkLatency", "VersionConflicts"}


def _dashboard(packaged: Packaged, function_name: str = "the-function") -> dict[str, Any]:
    """The dashboard body as CloudFormation substitutes it, parsed."""
    body, variables = packaged.template["Resources"]["IndexerDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    names = {**variables, "AWS::Region": "us-east-1", "IndexerLambdaFunction": function_name,
             "DeadLetterQueue.QueueName": "the-queue"}
    text = re.sub(r"\$\{([^}]+)\}", lambda m: str(names[m.group(1)]), body)
    return json.loads(text)


def _emitted_dimensions(packaged: Packaged, function_name: str) -> dict[str, str]:
    """The dimensions the deployed handler puts on its metrics."""
    from indexer import metrics

    return metrics.dimensions(packaged.env("IndexerLambdaFunction")["INDEX_NAME"], function_name)


def test_the_dashboard_graphs_the_metrics_the_handler_emits(packaged: Packaged) -> None:
    from indexer.metrics import HANDLER_UNITS

    env = packaged.env("IndexerLambdaFunction")
    assert env["METRICS"] == "on"
    rows = [row for widget in _dashboard(packaged)["widgets"] for row in widget["properties"]["metrics"]]
    ours: set[str] = set()
    for row in rows:
        namespace, name, *dims = [item for item in row if not isinstance(item, dict)]
        if namespace == env["METRICS_NAMESPACE"]:
            assert name in HANDLER_UNITS, name
            assert dict(zip(dims[::2], dims[1::2])) == _emitted_dimensions(packaged, "the-function"), name
            ours.add(name)
        else:
            assert (namespace, name) in {("AWS/Lambda", "IteratorAge"), ("AWS/Lambda", "Errors"),
                                         ("AWS/SQS", "ApproximateNumberOfMessagesVisible")}
    assert DASHBOARD_METRICS <= ours
    assert any(row[:2] == ["AWS/Lambda", "IteratorAge"] for row in rows)


def test_alarms_watch_lag_failures_and_dead_letters_as_the_handler_emits_them(packaged: Packaged) -> None:
    from indexer.metrics import HANDLER_UNITS

    env = packaged.env("IndexerLambdaFunction")
    alarms = {a["Properties"]["MetricName"]: a["Properties"] for a in packaged.resources("AWS::CloudWatch::Alarm").values()
              if a["Properties"]["Namespace"] == env["METRICS_NAMESPACE"]}
    assert set(alarms) == {"ReplicationLag", "RecordsFailed", "RecordsDeadLettered"}
    for name, alarm in alarms.items():
        assert name in HANDLER_UNITS
        dimensions = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
        assert dimensions["FunctionName"] == {"Ref": "IndexerLambdaFunction"}
        # An alarm matches only the exact dimension set the metric is emitted with.
        assert dimensions == {**_emitted_dimensions(packaged, "fn"), "FunctionName": {"Ref": "IndexerLambdaFunction"}}
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}] and alarm["TreatMissingData"] == "notBreaching"
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarms["ReplicationLag"]["Threshold"] == 60000 and alarms["ReplicationLag"]["Statistic"] == "Maximum"
    assert (alarms["RecordsFailed"]["Statistic"], alarms["RecordsFailed"]["Threshold"]) == ("Sum", 0)
    assert (alarms["RecordsDeadLettered"]["Statistic"], alarms["RecordsDeadLettered"]["Threshold"]) == ("Sum", 0)
    annotation = _dashboard(packaged)["widgets"][0]["properties"]["annotations"]["horizontal"][0]["value"]
    assert annotation == alarms["ReplicationLag"]["Threshold"]


def test_the_lag_alarm_threshold_is_a_param(tmp_path: Path) -> None:
    run = _package({"replicationLagAlarmMilliseconds": "5000", "metricsNamespace": "Shop/Search"}, tmp_path, offline=False)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    template = json.loads((tmp_path / "cloudformation-template-update-stack.json").read_text())
    alarm = template["Resources"]["ReplicationLagAlarm"]["Properties"]
    assert (float(alarm["Threshold"]), alarm["Namespace"]) == (5000.0, "Shop/Search")
    env = template["Resources"]["IndexerLambdaFunction"]["Properties"]["Environment"]["Variables"]
    assert env["METRICS_NAMESPACE"] == "Shop/Search"


# ---------------------------------------------------------------- the rebuild's roles vs its calls


from test_replay import rebuild  # noqa: E402,F401  (fixtures the rebuild's Lambdas run on)
from test_steps import deployed, load_all  # noqa: E402,F401

#: What DynamoDB does with the steps role's permissions when it writes an export (AWS's export
#: documentation): calls the code never makes itself.
ON_BEHALF = {"RebuildStepsRole": {"s3:AbortMultipartUpload", "s3:PutObjectAcl"}}
#: Calls a rebuild makes only when live writers wrote documents while switching to its index
#: (replay/transition.py: finish's sweep reads those items again). The walk-through here meets
#: none; tests/test_rebuild_transition.py runs that code against moto.
ON_TRANSITION = {"RebuildStepsRole": {"dynamodb:BatchGetItem"}}


def _aws_actions(grants: set[tuple[str, str]]) -> dict[str, set[str]]:
    """action -> the first path segment of the rebuild-bucket objects it is granted on ("" otherwise)."""
    granted: dict[str, set[str]] = {}
    for action, resource in grants:
        match = re.match(r'\{"Fn::Sub": "\$\{RebuildBucket\.Arn\}/([a-z]+)/\*"\}$', resource)
        granted.setdefault(action, set()).add(match.group(1) if match else "")
    return granted


def test_rebuild_roles_grant_what_its_lambdas_call(deployed: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The steps and worker Lambdas through a whole scan rebuild, a whole export rebuild (after
    an orphan left by a gone execution) and an abandoned one, on moto and the real cluster: every
    AWS call and HTTP method each makes, against what its role grants. The role's AWS actions
    are exactly those calls (plus what DynamoDB's export does on its behalf); every S3 key is
    under a prefix granted for that action."""
    import boto3
    from botocore.client import BaseClient

    from conftest import LambdaContext
    from indexer.search import SearchStore
    from replay import steps, worker
    from tables import put_items

    who: list[str | None] = [None]
    calls: dict[str, set[tuple[str, str]]] = {"RebuildStepsRole": set(), "RebuildWorkerRole": set()}
    methods: dict[str, set[str]] = {"RebuildStepsRole": set(), "RebuildWorkerRole": set()}
    call, request = BaseClient._make_api_call, SearchStore._request

    def recording_call(self: Any, operation: str, params: dict[str, Any]) -> Any:
        if who[0]:
            key = str(params.get("Key", "")).split("/")[0] if "Key" in params else ""
            calls[who[0]].add((f"{self.meta.service_model.signing_name}:{operation}", key))
        return call(self, operation, params)

    def recording_request(self: SearchStore, method: str, *args: Any, **options: Any) -> Any:
        if who[0]:
            methods[who[0]].add(method)
        return request(self, method, *args, **options)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording_call)
    monkeypatch.setattr(SearchStore, "_request", recording_request)

    def step(**event: Any) -> Any:
        who[0] = "RebuildStepsRole"
        try:
            return steps.handler(event, None)
        finally:
            who[0] = None

    def unit(event: dict[str, Any]) -> dict[str, Any]:
        who[0] = "RebuildWorkerRole"
        try:
            return worker.handler(event, LambdaContext(60))
        finally:
            who[0] = None

    def load(build: dict[str, Any], planned: dict[str, Any]) -> dict[str, Any]:
        return load_all(build, planned, unit)

    put_items(deployed.table, [{"pk": {"S": f"k{n}"}, "sk": {"N": str(n)}} for n in range(120)])
    boto3.client("dynamodb").update_continuous_backups(
        TableName=deployed.table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    abandoned = step(step="prepare", request={"segments": 2}, execution="")
    step(step="abandon", build=abandoned, error=None)
    build = step(step="prepare", request={"source": "scan", "segments": 2}, execution="")
    planned = step(step="plan", build=build, plan={})
    step(step="finish", build=build, plan=planned, loaded=load(build, planned))
    gone = f"arn:aws:states:us-east-1:123456789012:execution:{MACHINE}:gone"
    step(step="prepare", request={"segments": 1}, execution=gone)  # an orphan once its execution is gone
    build = step(step="prepare", request={"source": "export"}, execution="")
    planned = step(step="plan", build=build, plan={})
    while not planned["ready"]:
        planned = step(step="plan", build=build, plan=planned)
    report = step(step="finish", build=build, plan=planned, loaded=load(build, planned))
    assert report["read"] == 120

    for role, recorded in calls.items():
        granted = _aws_actions({g for g in REBUILD_GRANTS[role] if not g[0].startswith("logs:")})
        assert set(granted) == ({action for action, _ in recorded} | ON_BEHALF.get(role, set())
                                | ON_TRANSITION.get(role, set())), role
        for action, key in recorded:
            assert key in granted[action], (role, action, key)
    assert methods["RebuildWorkerRole"] == WORKER_METHODS
    assert methods["RebuildStepsRole"] <= STORE_METHODS
