"""infra/serverless.yml: it packages without AWS or network, lints clean, deploys into moto, and
matches the code it deploys (handlers, environment, stream settings, least-privilege IAM).

`scripts/package_infra.sh` runs once per module (npm ci and the layer build only when their
inputs changed); every test reads what it produced in infra/.serverless/.
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
from dataclasses import dataclass
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
    "AssetCreatedLambdaFunction": "indexer.s3assets.created",
    "AssetDeletedLambdaFunction": "indexer.s3assets.deleted",
}
ROLES = {"IndexerLambdaFunction": "IndexerRole", "AssetCreatedLambdaFunction": "AssetCreatedRole",
         "AssetDeletedLambdaFunction": "AssetDeletedRole"}
#: Variables the code reads that a deployment leaves at their default, and why.
NOT_DEPLOYED = {
    "TIME_BUDGET_SECONDS": "used only without a Lambda context (local runs)",
    "AWS_REGION": "set by the Lambda runtime (reserved: a function may not set it)",
    "AWS_DEFAULT_REGION": "set by the Lambda runtime (reserved: a function may not set it)",
}
#: The only configuration warnings v3 may print: its schema predates the python3.12 runtime.
EXPECTED_WARNINGS = {"provider.runtime", "layers.dependencies.compatibleRuntimes.0"}
#: Resource types moto's CloudFormation does not create (it logs and skips them).
MOTO_SKIPS = {"AWS::CloudWatch::Alarm", "AWS::Lambda::EventInvokeConfig", "AWS::S3::BucketPolicy"}
#: Serverless adds DependsOn on a custom role that the function's GetAtt already implies.
ALLOWED_LINT_WARNINGS = {"W3005"}

pytestmark = pytest.mark.skipif(
    shutil.which("npm") is None,
    reason="npm is not installed: `serverless package` runs the Serverless Framework on Node.js",
)


@dataclass
class Packaged:
    template: dict[str, Any]
    output: str
    offline: bool

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


@pytest.fixture(scope="module")
def packaged() -> Packaged:
    offline = _can_unshare()
    command = ["bash", str(ROOT / "scripts" / "package_infra.sh"), "--stage", STAGE] + (["--offline"] if offline else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHON": sys.executable, "NO_COLOR": "1"})
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"package_infra.sh failed:\n{output[-6000:]}"
    template = json.loads((BUILD / "cloudformation-template-update-stack.json").read_text())
    return Packaged(template, output, offline)


def _zip(name: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(BUILD / name)


# ---------------------------------------------------------------- packaging and lint


def test_packaging_needs_no_network(packaged: Packaged) -> None:
    if not packaged.offline:
        pytest.skip("unshare --net is not permitted here, so packaging ran with the network up")
    assert "Service packaged" in packaged.output


def test_packaging_warns_only_about_the_python312_runtime(packaged: Packaged) -> None:
    warned = set(re.findall(r"^\s+at '([^']+)'", packaged.output, re.M))
    assert warned == EXPECTED_WARNINGS
    assert "deprecation" not in packaged.output.lower()


def test_template_passes_cfn_lint(packaged: Packaged) -> None:
    from cfnlint.api import ManualArgs, lint_file

    for name in ("cloudformation-template-update-stack.json", "cloudformation-template-create-stack.json"):
        matches = lint_file(BUILD / name, ManualArgs(regions=["us-east-1", "eu-west-1", "ap-southeast-2"]))
        unexpected = [str(m) for m in matches if m.rule.id not in ALLOWED_LINT_WARNINGS]
        assert unexpected == [], name


def test_function_package_holds_exactly_the_indexer_package(packaged: Packaged) -> None:
    code = {p.relative_to(ROOT).as_posix(): p.read_bytes() for p in (ROOT / "indexer").glob("*.py")}
    with _zip("dynamodb-es-indexer.zip") as shipped:
        assert sorted(shipped.namelist()) == sorted(code)
        for name, text in code.items():
            assert shipped.read(name) == text, name


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
        "from indexer import handler, s3assets\n"
        "print(json.dumps({'indexer': handler.handler({'Records': []}, None),\n"
        "                  'created': s3assets.created({'Records': []}),\n"
        "                  'orjson': orjson.__file__}))\n"
    )
    env = {"PATH": os.environ["PATH"], "DLQ_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/q",
           "ELASTICSEARCH_URL": "http://127.0.0.1:9", "TABLE_NAME": "assets", "LOG_LEVEL": "WARNING"}
    done = subprocess.run([python, "-I", "-S", "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["indexer"] == {"batchItemFailures": []}
    assert result["created"] == {"written": 0, "deleted": 0, "skipped": 0}
    assert result["orjson"].startswith(str(tmp_path / "opt"))


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
    if isinstance(value, dict):
        return {"AssetsTable": "dynamodb-es-indexer-test",
                "DeadLetterQueue": "https://sqs.us-east-1.amazonaws.com/123456789012/dead-letters"}[value["Ref"]]
    if value.startswith("{{resolve:ssm:"):
        return "https://search.example.com:9243"
    if value.startswith("{{resolve:secretsmanager:"):
        return "from-secrets-manager"
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


def test_every_variable_the_code_reads_is_set_for_its_function(packaged: Packaged, monkeypatch: pytest.MonkeyPatch) -> None:
    from indexer import handler, s3assets

    for function, modules in (("IndexerLambdaFunction", ["settings.py", "handler.py"]),
                              ("AssetCreatedLambdaFunction", ["s3assets.py"]),
                              ("AssetDeletedLambdaFunction", ["s3assets.py"])):
        deployed = {name: _concrete(value) for name, value in packaged.env(function).items()}
        recorder = RecordingEnv(deployed)
        monkeypatch.setattr(os, "environ", recorder)
        handler.reset()
        s3assets.reset()
        try:
            # The real entry points, with the deployed environment: it must also pass validation.
            if function == "IndexerLambdaFunction":
                assert handler.handler({"Records": []}, None) == {"batchItemFailures": []}
            else:
                getattr(s3assets, HANDLERS[function].rpartition(".")[2])({"Records": []})
        finally:
            monkeypatch.undo()
            handler.reset()
        read = recorder.read | set().union(*(_names_in_source(ROOT / "indexer" / m) for m in modules))
        assert read - set(deployed) - set(NOT_DEPLOYED) == set(), function
        assert {"TABLE_NAME", "LOG_LEVEL"} <= read


def test_credentials_and_url_come_from_ssm_and_secrets_manager(packaged: Packaged) -> None:
    env = packaged.env("IndexerLambdaFunction")
    assert env["ELASTICSEARCH_URL"].startswith("{{resolve:ssm:/dynamodb-es-indexer/test/")
    assert env["ELASTICSEARCH_API_KEY"].startswith("{{resolve:secretsmanager:dynamodb-es-indexer/test/elasticsearch:")
    for name in ("ELASTICSEARCH_USERNAME", "ELASTICSEARCH_PASSWORD"):
        assert env[name] == "", name  # api_key is the default auth; blank means unset
    assert env["SEARCH_AUTH"] == "api_key"
    assert env["DLQ_URL"] == {"Ref": "DeadLetterQueue"} and env["TABLE_NAME"] == {"Ref": "AssetsTable"}


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
    # indexer.s3assets keys items by the object key, attribute "key".
    assert table["KeySchema"] == [{"AttributeName": "key", "KeyType": "HASH"}]


def test_dead_letter_queues_keep_14_days_and_raise_alarms(packaged: Packaged) -> None:
    from replay.messages import parking_url

    resources = packaged.template["Resources"]
    queues = packaged.resources("AWS::SQS::Queue")
    assert set(queues) == {"DeadLetterQueue", "ParkingQueue", "S3EventFailuresQueue"}
    for queue in queues.values():
        assert queue["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    dlq = queues["DeadLetterQueue"]["Properties"]["QueueName"]
    # Redrive's default parking queue is the DLQ's URL with "-parking": this is that queue.
    assert parking_url(f"https://sqs.example/1/{dlq}").endswith("/" + queues["ParkingQueue"]["Properties"]["QueueName"])
    alarms = {a["Properties"]["Dimensions"][0]["Value"].get("Fn::GetAtt", [None])[0]: a["Properties"]
              for a in packaged.resources("AWS::CloudWatch::Alarm").values()}
    for queue in queues:
        alarm = alarms[queue]
        assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
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
        *{(a, _arn({"Fn::GetAtt": ["AssetsTable", "Arn"]})) for a in ("dynamodb:DescribeTable", "dynamodb:Scan", "dynamodb:GetItem")},
        *{(a, _arn({"Fn::GetAtt": ["AssetsTable", "StreamArn"]}))
          for a in ("dynamodb:DescribeStream", "dynamodb:GetShardIterator", "dynamodb:GetRecords")},
        *{(a, _arn({"Fn::GetAtt": [queue, "Arn"]})) for queue in ("DeadLetterQueue", "ParkingQueue")
          for a in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                    "sqs:GetQueueAttributes", "sqs:SendMessage")},
        ("ssm:GetParameter", _arn({"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:"
                                               "parameter/dynamodb-es-indexer/test/elasticsearch-url"})),
        ("secretsmanager:GetSecretValue", _arn({"Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:"
                                                           "${AWS::AccountId}:secret:dynamodb-es-indexer/test/elasticsearch-??????"})),
    },
    "AssetDeletedRole": {
        ("logs:CreateLogStream", _arn({"Fn::GetAtt": ["AssetDeletedLogGroup", "Arn"]})),
        ("logs:PutLogEvents", _arn({"Fn::GetAtt": ["AssetDeletedLogGroup", "Arn"]})),
        ("dynamodb:DeleteItem", _arn({"Fn::GetAtt": ["AssetsTable", "Arn"]})),
        ("sqs:SendMessage", _arn({"Fn::GetAtt": ["S3EventFailuresQueue", "Arn"]})),
    },
}


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


def test_each_function_has_its_own_role(packaged: Packaged) -> None:
    functions = packaged.resources("AWS::Lambda::Function")
    assert {name: f["Properties"]["Role"] for name, f in functions.items()} == {
        name: {"Fn::GetAtt": [role, "Arn"]} for name, role in ROLES.items()}
    assert set(packaged.resources("AWS::IAM::Role")) == set(ROLES.values())
    assert not packaged.resources("AWS::IAM::Policy")


def _policies(packaged: Packaged) -> dict[str, dict[str, Any]]:
    return {**packaged.resources("AWS::IAM::Role"), **packaged.resources("AWS::IAM::ManagedPolicy")}


def test_policies_grant_exactly_what_each_user_needs(packaged: Packaged) -> None:
    policies = _policies(packaged)
    assert set(policies) == set(EXPECTED_GRANTS)
    for name, policy in policies.items():
        assert "ManagedPolicyArns" not in policy["Properties"], name
        assert _grants(policy) == EXPECTED_GRANTS[name], name


def test_no_wildcards_except_where_aws_requires_them(packaged: Packaged) -> None:
    only_star = _actions_without_resource_types()
    for name, policy in _policies(packaged).items():
        for action, resource in _grants(policy):
            assert "*" not in action, (name, action)
            value = json.loads(resource)
            if value == "*":
                assert action.lower() in only_star, f"{name}: {action} on * but IAM can scope it"
                continue
            text = value if isinstance(value, str) else json.dumps(value)
            # Objects of one named bucket ("arn:...:s3:::bucket/*") are the one pattern allowed.
            assert "*" not in re.sub(r"^(\{\"Fn::Sub\": \"arn:\$\{AWS::Partition\}:s3:::[a-z0-9.-]+)/\*", r"\1", text), (name, text)


# ---------------------------------------------------------------- the stack in moto


def test_stack_deploys_into_moto_and_its_wiring_works(packaged: Packaged, aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `serverless deploy` does: create the bootstrap stack, upload the zips to its bucket,
    update the stack. moto skips AWS::CloudWatch::Alarm, AWS::Lambda::EventInvokeConfig and
    AWS::S3::BucketPolicy, leaves {{resolve:...}} unresolved, and attaches no layers."""
    import boto3

    from indexer import s3assets

    stack = f"dynamodb-es-indexer-{STAGE}"
    cloudformation = boto3.client("cloudformation")
    create = (BUILD / "cloudformation-template-create-stack.json").read_text()
    s3 = boto3.client("s3")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cloudformation.create_stack(StackName=stack, TemplateBody=create)
        outputs = _outputs(cloudformation, stack)
        for resource in packaged.template["Resources"].values():
            content = resource["Properties"].get("Code") or resource["Properties"].get("Content")
            if resource["Type"] in ("AWS::Lambda::Function", "AWS::Lambda::LayerVersion"):
                key = content["S3Key"]
                s3.upload_file(str(BUILD / key.rsplit("/", 1)[1]), outputs["ServerlessDeploymentBucketName"], key)
        cloudformation.update_stack(StackName=stack, TemplateBody=json.dumps(packaged.template), Capabilities=["CAPABILITY_IAM"])
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
    assert indexer["Environment"]["Variables"]["DLQ_URL"] == outputs["DeadLetterQueueUrl"]
    assert indexer["Environment"]["Variables"]["TABLE_NAME"] == outputs["TableName"]
    (mapping,) = [m for m in awslambda.list_event_source_mappings()["EventSourceMappings"]
                  if m["FunctionArn"] == indexer["FunctionArn"]]
    assert mapping["EventSourceArn"] == outputs["TableStreamArn"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["DestinationConfig"]["OnFailure"]["Destination"].endswith(":" + outputs["DeadLetterQueueUrl"].rsplit("/", 1)[1])
    role = indexer["Role"].rsplit("/", 1)[1]
    iam = boto3.client("iam")
    (policy,) = iam.list_role_policies(RoleName=role)["PolicyNames"]
    # The role's policy names this stack's own stream and queue (moto answers its text, not JSON).
    document = str(iam.get_role_policy(RoleName=role, PolicyName=policy)["PolicyDocument"])
    assert outputs["TableStreamArn"] in document
    assert mapping["DestinationConfig"]["OnFailure"]["Destination"] in document

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


def _outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    described = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
