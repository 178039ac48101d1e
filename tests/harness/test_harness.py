"""Self-tests of the local stack harness.

Part 1 needs nothing running: the gateway against fake upstreams, JWT checks, ASL substitution.
Part 2 needs the stack (`make local-up`): moto setup, fault injection, the GitHub mock and the
simulated runner. Jobs queued here use labels tasuki does not serve (`ubuntu-latest`), so the real
Lambdas ignore them and the harness can play the runner side by hand.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from harness import client
from harness.common import (
    ASL_BINS,
    LAMBDA_BINS,
    TASK_DEFINITIONS,
    lambda_arn,
    placeholder_for,
    port_is_free,
    substitute_asl,
)
from harness.gateway import (
    EcsLedger,
    Gateway,
    GatewayHandler,
    function_name_from_path_segment,
    job_of_execution_name,
    parse_started_by,
)
from harness.github_mock import verify_app_jwt
from harness.httputil import QuietServer
from harness.runner_sim import grant_for_job, seal_jit_config

NOT_OURS = ["ubuntu-latest"]


# =====================================================================================================
# Part 1: no stack needed
# =====================================================================================================
def test_placeholders_follow_the_contract_rule() -> None:
    assert placeholder_for("resolve-labels") == "ResolveLabelsFunctionArn"
    assert placeholder_for("wait-for-registration") == "WaitForRegistrationFunctionArn"
    assert placeholder_for("validate") == "ValidateFunctionArn"
    assert set(ASL_BINS) < set(LAMBDA_BINS)


def test_asl_substitution_replaces_every_known_placeholder_and_rejects_unknown_ones() -> None:
    text = json.dumps({"A": {"Resource": "${RunTaskFunctionArn}"}, "B": {"Resource": "${CleanupFunctionArn}"}})
    out = json.loads(substitute_asl(text))
    assert out["A"]["Resource"] == "arn:aws:lambda:us-east-1:123456789012:function:run-task"
    assert out["B"]["Resource"] == lambda_arn("cleanup")
    with pytest.raises(ValueError, match=r"\$\{NopeFunctionArn\}"):
        substitute_asl('{"Resource": "${NopeFunctionArn}"}')


def test_started_by_and_function_names_are_parsed() -> None:
    assert parse_started_by("tasuki/123/2") == ("123", 2)
    assert parse_started_by("ecs-svc/1") == (None, None)
    assert parse_started_by(None) == (None, None)
    assert (
        function_name_from_path_segment("arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Arun-task")
        == "run-task"
    )
    assert (
        function_name_from_path_segment("arn:aws:lambda:us-east-1:123456789012:function:confirm:$LATEST") == "confirm"
    )
    assert function_name_from_path_segment("123456789012:function:finalize") == "finalize"
    assert function_name_from_path_segment("validate") == "validate"


def test_fault_rules_match_fields_and_expire_after_times() -> None:
    ledger = EcsLedger()
    ledger.add_rule({"kind": "capacity", "job_id": "7", "capacity_provider": "FARGATE_SPOT", "times": 2})
    assert ledger.match_rule({"job_id": "7", "capacity_provider": "FARGATE", "subnet": "s"}) is None
    assert ledger.match_rule({"job_id": "8", "capacity_provider": "FARGATE_SPOT", "subnet": "s"}) is None
    first = ledger.match_rule({"job_id": "7", "capacity_provider": "FARGATE_SPOT", "subnet": "s"})
    assert first is not None and first["kind"] == "capacity" and "Capacity is unavailable" in first["reason"]
    assert ledger.match_rule({"job_id": "7", "capacity_provider": "FARGATE_SPOT", "subnet": "s"}) is not None
    assert ledger.match_rule({"job_id": "7", "capacity_provider": "FARGATE_SPOT", "subnet": "s"}) is None
    with pytest.raises(ValueError):
        ledger.add_rule({"kind": "explode"})
    with pytest.raises(ValueError):
        ledger.add_rule({"kind": "capacity", "times": 0})
    with pytest.raises(ValueError):
        ledger.add_rule({"kind": "capacity", "colour": "red"})


def test_start_execution_rules_match_the_job_only_and_never_a_run_task() -> None:
    assert set(ASL_BINS) == set(LAMBDA_BINS) - {"webhook", "ecs-events", "rescue"}
    assert job_of_execution_name("123-1") == "123" and job_of_execution_name("123-12") == "123"
    assert job_of_execution_name("tasuki-x") is None and job_of_execution_name(None) is None
    ledger = EcsLedger()
    rule = ledger.add_rule({"kind": "start_execution_throttle", "job_id": "9", "times": 1})
    assert (rule["operation"], rule["reason"]) == ("StartExecution", "Rate exceeded")
    ledger.add_rule({"kind": "throttle"})  # every RunTask
    assert ledger.match_rule({"job_id": "9"}, operation="StartExecution") is not None
    assert ledger.match_rule({"job_id": "9"}, operation="StartExecution") is None, "expired after times"
    ledger.add_rule({"kind": "start_execution_throttle"})  # every StartExecution
    assert ledger.match_rule({"job_id": "9"})["kind"] == "throttle"  # type: ignore[index]
    assert ledger.match_rule({"job_id": "5"}, operation="StartExecution")["kind"] == "start_execution_throttle"  # type: ignore[index]
    with pytest.raises(ValueError, match="cannot match on"):
        ledger.add_rule({"kind": "start_execution_throttle", "capacity_provider": "FARGATE"})


class _Recorder(BaseHTTPRequestHandler):
    """A fake upstream: answers what `self.server.answer(path, body)` says and records requests."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *_: Any) -> None:
        return

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.path, dict(self.headers.items()), body))  # type: ignore[attr-defined]
        status, headers, data = self.server.answer(self.path, body)  # type: ignore[attr-defined]
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def fake_gateway() -> Any:
    """A Gateway in front of a fake moto and a fake cargo lambda watch, on ephemeral ports."""
    servers = []

    def serve(answer: Any) -> Any:
        srv = QuietServer(("127.0.0.1", 0), _Recorder)
        srv.seen = []  # type: ignore[attr-defined]
        srv.answer = answer  # type: ignore[attr-defined]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    def lambda_answer(path: str, body: bytes) -> Any:
        payload = json.loads(body or b"{}")
        if "/functions/missing/" in path:
            return 404, [("Content-Type", "application/json")], b'{"title":"Missing function"}'
        if payload.get("fail"):
            return (
                500,
                [("Content-Type", "application/json")],
                b'{"errorType":"CapacityUnavailable","errorMessage":"no"}',
            )
        if payload.get("crash"):
            return 502, [], b"bad gateway"
        return 200, [("Content-Type", "application/json")], json.dumps({"echo": payload}).encode()

    def moto_answer(path: str, body: bytes) -> Any:
        req = json.loads(body or b"{}")
        if "stateMachineArn" in req:
            arn = f"arn:aws:states:us-east-1:123456789012:execution:tasuki-runner-job:{req['name']}"
            started = {"executionArn": arn, "startDate": 1.0}
            return 200, [("Content-Type", "application/x-amz-json-1.0")], json.dumps(started).encode()
        if "SecretId" in req:  # moto resolves any ARN leniently, partial or not
            arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tasuki/webhook-secret-AbCdEf"
            secret = {"ARN": arn, "Name": "tasuki/webhook-secret", "SecretString": "s3cr3t"}
            return 200, [("Content-Type", "application/x-amz-json-1.1")], json.dumps(secret).encode()
        task = {
            "taskArn": "arn:aws:ecs:us-east-1:123456789012:task/tasuki-local/abc",
            "lastStatus": "RUNNING",
            "launchType": req.get("launchType"),
            "startedBy": req.get("startedBy"),
        }
        return (
            200,
            [("Content-Type", "application/x-amz-json-1.1")],
            json.dumps({"tasks": [task], "failures": []}).encode(),
        )

    lam = serve(lambda_answer)
    moto = serve(moto_answer)
    ledger = EcsLedger()
    ledger.subnet_azs = {"subnet-a": "us-east-1a"}
    gw = Gateway(moto.server_address[1], lam.server_address[1], ledger)
    front = QuietServer(("127.0.0.1", 0), GatewayHandler)
    front.ctx = gw  # type: ignore[attr-defined]
    threading.Thread(target=front.serve_forever, daemon=True).start()
    servers.append(front)
    yield {"url": f"http://127.0.0.1:{front.server_address[1]}", "lambda": lam, "moto": moto, "ledger": ledger}
    for s in servers:
        s.shutdown()
        s.server_close()


def _invoke(url: str, name: str, payload: Any) -> tuple[int, Any, dict[str, str]]:
    return client.http("POST", f"{url}/2015-03-31/functions/{name}/invocations", payload)


def test_gateway_strips_arns_and_turns_function_errors_into_function_error_header(fake_gateway: Any) -> None:
    url = fake_gateway["url"]
    status, body, headers = _invoke(
        url, "arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Avalidate", {"a": 1}
    )
    assert status == 200 and body == {"echo": {"a": 1}}
    assert "X-Amz-Function-Error" not in headers
    assert fake_gateway["lambda"].seen[-1][0] == "/2015-03-31/functions/validate/invocations"

    status, body, headers = _invoke(url, "run-task", {"fail": True})
    assert status == 200
    assert headers.get("X-Amz-Function-Error") == "Unhandled"
    assert body == {"errorType": "CapacityUnavailable", "errorMessage": "no"}

    status, body, headers = _invoke(url, "run-task", {"crash": True})
    assert status == 200 and headers.get("X-Amz-Function-Error") == "Unhandled"
    assert body["errorType"] == "Runtime.ExitError"

    status, body, headers = _invoke(url, "missing", {})
    assert status == 404 and headers.get("x-amzn-ErrorType") == "ResourceNotFoundException"


def test_gateway_is_what_boto3_lambda_expects(fake_gateway: Any) -> None:
    lam = boto3.client(
        "lambda",
        region_name="us-east-1",
        endpoint_url=fake_gateway["url"],
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    ok = lam.invoke(FunctionName="arn:aws:lambda:us-east-1:123456789012:function:confirm", Payload=b'{"k":1}')
    assert ok["StatusCode"] == 200 and "FunctionError" not in ok
    assert json.loads(ok["Payload"].read()) == {"echo": {"k": 1}}
    failed = lam.invoke(FunctionName="confirm", Payload=b'{"fail":true}')
    assert failed["FunctionError"] == "Unhandled"
    assert json.loads(failed["Payload"].read())["errorType"] == "CapacityUnavailable"
    with pytest.raises(ClientError) as err:
        lam.invoke(FunctionName="missing", Payload=b"{}")
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"


def _ecs(url: str, retries: int = 1) -> Any:
    return boto3.client(
        "ecs",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=Config(retries={"total_max_attempts": retries, "mode": "standard"}),
    )


RUN = dict(
    cluster="tasuki-local",
    taskDefinition="tasuki-runner-x64",
    count=1,
    networkConfiguration={
        "awsvpcConfiguration": {"subnets": ["subnet-a"], "securityGroups": ["sg-1"], "assignPublicIp": "DISABLED"}
    },
)


def test_gateway_injects_run_task_faults_and_forwards_the_rest_as_fargate(fake_gateway: Any) -> None:
    ecs = _ecs(fake_gateway["url"])
    ledger: EcsLedger = fake_gateway["ledger"]
    ledger.add_rule({"kind": "capacity", "job_id": "42", "capacity_provider": "FARGATE_SPOT", "times": 1})
    ledger.add_rule({"kind": "throttle", "job_id": "43"})
    spot = [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]

    r = ecs.run_task(startedBy="tasuki/42/1", capacityProviderStrategy=spot, **RUN)
    assert r["tasks"] == []
    assert r["failures"][0]["reason"].startswith("Capacity is unavailable at this time")
    assert fake_gateway["moto"].seen == []  # never reached moto

    r = ecs.run_task(startedBy="tasuki/42/2", capacityProviderStrategy=spot, **RUN)  # the rule expired
    task = r["tasks"][0]
    assert task["capacityProviderName"] == "FARGATE_SPOT" and task["availabilityZone"] == "us-east-1a"
    forwarded = json.loads(fake_gateway["moto"].seen[-1][2])
    assert forwarded["launchType"] == "FARGATE" and "capacityProviderStrategy" not in forwarded

    with pytest.raises(ClientError) as err:
        ecs.run_task(startedBy="tasuki/43/1", launchType="FARGATE", **RUN)
    assert err.value.response["Error"]["Code"] == "ThrottlingException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    with pytest.raises(ClientError) as err:
        ecs.run_task(startedBy="tasuki/44/1", launchType="FARGATE", capacityProviderStrategy=spot, **RUN)
    assert err.value.response["Error"]["Code"] == "InvalidParameterException"

    outcomes = [
        (r["job_id"], r["attempt"], r["capacity_provider"], r["outcome"])
        for r in ledger.snapshot()["run_task_requests"]
    ]
    assert outcomes == [
        ("42", 1, "FARGATE_SPOT", "capacity"),
        ("42", 2, "FARGATE_SPOT", "started"),
        ("43", 1, "FARGATE", "throttle"),
        ("44", 1, "FARGATE_SPOT", "error"),
    ]


def test_gateway_throttles_start_execution_as_step_functions_does(fake_gateway: Any) -> None:
    sfn = boto3.client(
        "stepfunctions",
        region_name="us-east-1",
        endpoint_url=fake_gateway["url"],
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )
    machine = "arn:aws:states:us-east-1:123456789012:stateMachine:tasuki-runner-job"
    ledger: EcsLedger = fake_gateway["ledger"]
    ledger.add_rule({"kind": "start_execution_throttle", "job_id": "70", "times": 1})
    ledger.add_rule({"kind": "throttle"})  # a RunTask rule: never a StartExecution

    with pytest.raises(ClientError) as err:
        sfn.start_execution(stateMachineArn=machine, name="70-1", input="{}")
    # HTTP 400, ThrottlingException (https://docs.aws.amazon.com/step-functions/latest/apireference/CommonErrors.html)
    assert err.value.response["Error"] == {"Code": "ThrottlingException", "Message": "Rate exceeded"}
    meta = err.value.response["ResponseMetadata"]
    assert meta["HTTPStatusCode"] == 400
    assert meta["HTTPHeaders"]["x-amzn-errortype"] == "ThrottlingException"
    assert meta["HTTPHeaders"]["content-type"] == "application/x-amz-json-1.0"
    assert fake_gateway["moto"].seen == [], "a throttled request never reaches moto"

    started = sfn.start_execution(stateMachineArn=machine, name="70-1", input="{}")  # the rule expired
    assert started["executionArn"].endswith(":70-1")
    assert json.loads(fake_gateway["moto"].seen[-1][2])["name"] == "70-1"
    assert sfn.start_execution(stateMachineArn=machine, name="71-1", input="{}")["executionArn"].endswith(":71-1")

    records = [(r["name"], r["job_id"], r["outcome"]) for r in ledger.snapshot()["start_execution_requests"]]
    assert records == [("70-1", "70", "throttle"), ("70-1", "70", "started"), ("71-1", "71", "started")]
    assert ledger.snapshot()["run_task_requests"] == []


def test_gateway_refuses_run_task_requests_as_ecs_does(fake_gateway: Any) -> None:
    """Issue 8, defects 3 and 4: each of these passed before (moto checks none of them)."""
    ecs = _ecs(fake_gateway["url"])
    env = [{"name": "TASUKI_JIT_CONFIG_SEALED", "value": "A" * 8200}]
    too_big = {"containerOverrides": [{"name": "runner", "environment": env}], "cpu": "2048", "memory": "4096"}
    with pytest.raises(ClientError) as err:
        ecs.run_task(startedBy="tasuki/50/1", launchType="FARGATE", overrides=too_big, **RUN)
    assert err.value.response["Error"]["Code"] == "InvalidParameterException"
    assert err.value.response["Error"]["Message"] == "Container Overrides length must be at most 8192"

    with pytest.raises(ClientError) as err:
        ecs.run_task(
            startedBy="tasuki/51/1",
            launchType="FARGATE",
            tags=[{"key": "tasuki:workflow", "value": "Build (linux, x64) & test"}],
            **RUN,
        )
    assert err.value.response["Error"]["Code"] == "InvalidParameterException"
    assert "'('" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError):
        ecs.run_task(startedBy="tasuki/52/1", launchType="FARGATE", tags=[{"key": "k", "value": "v" * 257}], **RUN)
    with pytest.raises(ClientError):
        ecs.run_task(startedBy="tasuki/53/1", launchType="FARGATE", tags=[{"key": "aws:x", "value": "v"}], **RUN)

    with pytest.raises(ClientError) as err:
        ecs.run_task(startedBy="tasuki/54/1", launchType="FARGATE", overrides={"cpu": "2048", "memory": "2048"}, **RUN)
    assert err.value.response["Error"]["Code"] == "ClientException"
    assert (
        "No Fargate configuration exists for given values: 2048 CPU, 2048 memory"
        in err.value.response["Error"]["Message"]
    )

    ok = ecs.run_task(
        startedBy="tasuki/55/1",
        launchType="FARGATE",
        overrides={"cpu": "2048", "memory": "4096"},
        tags=[{"key": "tasuki:workflow", "value": "Build _linux_ x64_ _ test"}],
        **RUN,
    )
    assert ok["tasks"]
    refused = [r["job_id"] for r in fake_gateway["ledger"].snapshot()["run_task_requests"] if r["outcome"] == "error"]
    assert refused == ["50", "51", "52", "53", "54"]
    assert len(fake_gateway["moto"].seen) == 1  # only the valid request reached moto


def test_gateway_answers_account_quota_failures(fake_gateway: Any) -> None:
    ecs = _ecs(fake_gateway["url"])
    ledger: EcsLedger = fake_gateway["ledger"]
    ledger.add_rule({"kind": "quota", "job_id": "60"})
    ledger.add_rule({"kind": "cpu_limit", "job_id": "61"})
    r = ecs.run_task(startedBy="tasuki/60/1", launchType="FARGATE", **RUN)
    assert r["tasks"] == [] and "limit on the number of vCPUs" in r["failures"][0]["reason"]
    with pytest.raises(ClientError) as err:
        ecs.run_task(startedBy="tasuki/61/1", launchType="FARGATE", **RUN)
    assert err.value.response["Error"]["Message"] == "The requested CPU configuration is above your limit"


def test_gateway_reads_an_arn_ending_in_six_characters_as_complete(fake_gateway: Any) -> None:
    """Issue 8, defect 1: `…:secret:tasuki/webhook-secret` is not found on AWS; moto finds it."""
    sm = boto3.client(
        "secretsmanager",
        region_name="us-east-1",
        endpoint_url=fake_gateway["url"],
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    partial = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tasuki/webhook-secret"
    with pytest.raises(ClientError) as err:
        sm.get_secret_value(SecretId=partial)
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert sm.get_secret_value(SecretId=partial + "-AbCdEf")["SecretString"] == "s3cr3t"
    assert sm.get_secret_value(SecretId="tasuki/webhook-secret")["SecretString"] == "s3cr3t"


def test_app_jwt_verification() -> None:
    from cryptography.hazmat.primitives import serialization

    from harness.setup_aws import generate_app_key

    pem = generate_app_key()
    assert pem.startswith("-----BEGIN RSA PRIVATE KEY-----")
    public = serialization.load_pem_private_key(pem.encode(), password=None).public_key()
    assert verify_app_jwt(client.app_jwt(pem), public, 424242) is None
    assert verify_app_jwt(client.app_jwt(pem, iss="424242"), public, 424242) is None
    assert "Issuer" in (verify_app_jwt(client.app_jwt(pem, iss=1), public, 424242) or "")
    assert "exp" in (verify_app_jwt(client.app_jwt(pem, lifetime=-10, iat_offset=-100), public, 424242) or "")
    assert "too far" in (verify_app_jwt(client.app_jwt(pem, lifetime=3600), public, 424242) or "")
    assert "signature" in (verify_app_jwt(client.app_jwt(generate_app_key()), public, 424242) or "")
    assert verify_app_jwt("not-a-jwt", public, 424242) is not None


def test_port_check_sees_a_listening_socket() -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        assert not port_is_free(s.getsockname()[1])
    finally:
        s.close()


# =====================================================================================================
# Part 2: with the stack up
# =====================================================================================================
@pytest.fixture(scope="session")
def stack() -> dict[str, str]:
    try:
        env = client.env()
    except client.StackNotUp as exc:
        pytest.fail(str(exc))
    status, body = client.mock("GET", "/_mock/health")
    assert status == 200 and body["ok"], f"local stack unhealthy: {body}"
    return env


@pytest.fixture()
def config(stack: dict[str, str]) -> dict[str, Any]:
    with open(stack["TASUKI_CONFIG_FILE"]) as f:
        return json.load(f)


@pytest.fixture(autouse=True)
def _no_leftover_faults(request: Any) -> Any:
    yield
    if "stack" in request.fixturenames:
        client.clear_faults()


def test_moto_has_what_the_config_names(stack: dict[str, str], config: dict[str, Any]) -> None:
    ddb = client.boto("dynamodb").describe_table(TableName=stack["TASUKI_TABLE"])["Table"]
    assert config["table_name"] == stack["TASUKI_TABLE"]
    assert {k["AttributeName"]: k["KeyType"] for k in ddb["KeySchema"]} == {"pk": "HASH", "sk": "RANGE"}
    assert ddb["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    indexes = {
        i["IndexName"]: {k["AttributeName"]: k["KeyType"] for k in i["KeySchema"]}
        for i in ddb["GlobalSecondaryIndexes"]
    }
    assert indexes == {
        "by-state-deadline": {"gsi_state": "HASH", "deadline": "RANGE"},
        "by-received-day": {"gsi_list": "HASH", "created_at": "RANGE"},
    }
    ttl = client.boto("dynamodb").describe_time_to_live(TableName=stack["TASUKI_TABLE"])["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}

    ec2 = client.boto("ec2")
    subnets = ec2.describe_subnets(SubnetIds=list(config["network"]["subnets"].values()))["Subnets"]
    assert {s["SubnetId"]: s["AvailabilityZone"] for s in subnets} == {
        v: k for k, v in config["network"]["subnets"].items()
    }
    sgs = config["network"]["security_groups"] + config["network"]["security_group_allowlist"]
    assert len(ec2.describe_security_groups(GroupIds=sgs)["SecurityGroups"]) == len(set(sgs)) >= 1

    ecs = client.boto("ecs")
    cluster = ecs.describe_clusters(clusters=[config["ecs"]["cluster"]])["clusters"][0]
    assert {"FARGATE", "FARGATE_SPOT"} <= set(cluster["capacityProviders"])
    assert set(config["ecs"]["ec2_capacity_providers"].values()) <= set(cluster["capacityProviders"])
    assert set(config["ecs"]["task_definitions"]) == set(TASK_DEFINITIONS)
    for key, arn in config["ecs"]["task_definitions"].items():
        td = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        assert td["taskDefinitionArn"] == arn and td["family"].endswith("-runner-" + key.replace("_", "-"))
        # the grant's grantee: the simulated runner opens its config only as this role
        assert td["taskRoleArn"] == config["runner"]["task_role_arn"]
        assert td["networkMode"] == "awsvpc"
        assert td["requiresCompatibilities"] == (["EC2"] if key.endswith("docker") else ["FARGATE"])
        if key.endswith("docker"):  # EC2: the arch is a placement constraint, as the template has it
            arch = "arm64" if key.startswith("arm64") else "x86_64"
            assert [c["expression"] for c in td["placementConstraints"]] == [
                f"attribute:ecs.cpu-architecture == {arch}"
            ]
        else:
            assert td["runtimePlatform"]["cpuArchitecture"] == ("ARM64" if key.startswith("arm64") else "X86_64")
        runner = [c for c in td["containerDefinitions"] if c["name"] == "runner"][0]
        assert (runner.get("memory") or runner.get("memoryReservation") or 0) > 0

    assert client.boto("kms").describe_key(KeyId=config["runner"]["kms_key_id"])["KeyMetadata"]["Enabled"]
    sm = client.boto("secretsmanager")
    # stored as the deploy guide stores it; the Lambda trims what the file adds
    stored = sm.get_secret_value(SecretId=config["github"]["webhook_secret_id"])["SecretString"]
    assert stored.strip() == stack["TASUKI_WEBHOOK_SECRET"]
    pem = sm.get_secret_value(SecretId=config["github"]["private_key_secret_id"])["SecretString"]
    assert pem.startswith("-----BEGIN RSA PRIVATE KEY-----")
    definition = client.boto("stepfunctions").describe_state_machine(stateMachineArn=stack["TASUKI_STATE_MACHINE_ARN"])[
        "definition"
    ]
    assert "${" not in definition and lambda_arn("run-task") in definition

    assert config["github"]["api_url"] == stack["TASUKI_GITHUB_URL"] and config["github"]["app_id"] == 424242
    assert config["access"] == {"orgs": ["*"], "repositories": [], "allow_public_repositories": False}
    assert config["capacity_order"] == ["fargate-spot", "fargate", "ec2"]
    assert config["timeouts"]["job_seconds"] == 120


def test_unknown_lambda_is_resource_not_found(stack: dict[str, str]) -> None:
    with pytest.raises(ClientError) as err:
        client.boto("lambda").invoke(FunctionName="no-such-function", Payload=b"{}")
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"


def _run_task(
    config: dict[str, Any],
    started_by: str,
    provider: str | None = "FARGATE_SPOT",
    az: str = "us-east-1a",
    env: list[dict[str, str]] | None = None,
    retries: int = 1,
) -> dict[str, Any]:
    ecs = boto3.client(
        "ecs",
        region_name="us-east-1",
        endpoint_url=client.env()["AWS_ENDPOINT_URL"],
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=Config(retries={"total_max_attempts": retries, "mode": "standard"}),
    )
    kwargs: dict[str, Any] = dict(
        cluster=config["ecs"]["cluster"],
        taskDefinition=config["ecs"]["task_definitions"]["x64"],
        count=1,
        startedBy=started_by,
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": [config["network"]["subnets"][az]],
                "securityGroups": config["network"]["security_groups"],
                "assignPublicIp": "DISABLED",
            }
        },
        overrides={
            "cpu": "2048",
            "memory": "4096",
            "containerOverrides": [{"name": "runner", "environment": env or []}],
        },
    )
    if provider in (None, "FARGATE"):
        kwargs["launchType"] = "FARGATE"
    else:
        kwargs["capacityProviderStrategy"] = [{"capacityProvider": provider, "weight": 1}]
    return ecs.run_task(**kwargs)


def _event_for(task_arn: str, timeout: float = 20) -> dict[str, Any]:
    def find() -> Any:
        events = [e for e in client.mock_state()["ecs_events_sent"] if e["task_arn"] == task_arn]
        return events[0] if events else None

    return client.wait_until(find, timeout, what=f"ECS event for {task_arn}")


def test_run_task_faults_through_the_real_gateway(stack: dict[str, str], config: dict[str, Any]) -> None:
    job = f"h{uuid.uuid4().hex[:10]}"
    sub_b = config["network"]["subnets"]["us-east-1b"]
    client.add_fault("capacity", job_id=job, capacity_provider="FARGATE_SPOT", times=1)
    client.add_fault("capacity", job_id=job, subnet=sub_b, reason="RESOURCE:MEMORY")
    client.add_fault("throttle", job_id=job, capacity_provider="FARGATE", times=1)

    r = _run_task(config, f"tasuki/{job}/1", "FARGATE_SPOT")
    assert r["tasks"] == [] and "Capacity is unavailable" in r["failures"][0]["reason"]
    r = _run_task(config, f"tasuki/{job}/2", "FARGATE_SPOT", az="us-east-1b")
    assert r["tasks"] == [] and r["failures"][0]["reason"] == "RESOURCE:MEMORY"
    with pytest.raises(ClientError) as err:
        _run_task(config, f"tasuki/{job}/3", "FARGATE")
    assert err.value.response["Error"]["Code"] == "ThrottlingException"
    # with the SDK's own retries a one-shot throttle is absorbed, as against AWS
    r = _run_task(config, f"tasuki/{job}/4", "FARGATE_SPOT", retries=3)
    task = r["tasks"][0]
    assert task["capacityProviderName"] == "FARGATE_SPOT" and task["availabilityZone"] == "us-east-1a"

    mine = [x for x in client.mock_state()["run_task_requests"] if x["job_id"] == job]
    assert [(x["attempt"], x["capacity_provider"], x["subnet"] == sub_b, x["outcome"]) for x in mine] == [
        (1, "FARGATE_SPOT", False, "capacity"),
        (2, "FARGATE_SPOT", True, "capacity"),
        (3, "FARGATE", False, "throttle"),
        (4, "FARGATE_SPOT", False, "started"),
    ]
    # the task has no runner env: the simulated runner cannot boot, exits 1, ECS says so once
    event = _event_for(task["taskArn"])
    assert event["stop_code"] == "EssentialContainerExited" and event["status"] == 200
    described = client.ecs_tasks_for_job(job)
    assert [(t["lastStatus"], t["stopCode"]) for t in described] == [("STOPPED", "EssentialContainerExited")]
    boot = [e for e in client.mock_state()["runner_events"] if e["task_arn"] == task["taskArn"]]
    assert boot[0]["event"] == "boot-failed" and "missing container env" in boot[0]["reason"]


# ---- GitHub mock ------------------------------------------------------------------------------------
def test_access_tokens_need_a_jwt_signed_by_the_app_key(stack: dict[str, str]) -> None:
    from harness.setup_aws import generate_app_key

    path = "/app/installations/23154469/access_tokens"
    for auth in (
        None,
        "Bearer not.a.jwt",
        f"Bearer {client.app_jwt(generate_app_key())}",
        f"Bearer {client.app_jwt(iss=99)}",
        f"token {client.app_jwt()}",
    ):
        status, body = client.mock("POST", path, {}, {"Authorization": auth} if auth else {})
        assert status == 401, auth
        assert body["message"] and body["documentation_url"].startswith("https://docs.github.com")
    status, body = client.mock("POST", path, {}, {"Authorization": f"Bearer {client.app_jwt(iss='424242')}"})
    assert status == 201
    assert body["token"].startswith("ghs_") and len(body["token"]) == 40
    assert body["repository_selection"] == "all" and isinstance(body["permissions"], dict)
    expires = time.mktime(time.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert 3500 < expires - time.time() < 3700


def test_generate_jitconfig_validates_and_answers_like_github(stack: dict[str, str]) -> None:
    path = "/repos/octo-org/app/actions/runners/generate-jitconfig"
    name = f"harness-{uuid.uuid4().hex[:8]}"
    good = {"name": name, "runner_group_id": 1, "labels": ["self-hosted", "tasuki"], "work_folder": "_work"}
    assert client.mock("POST", path, good)[0] == 401
    assert client.mock("POST", path, good, {"Authorization": "Bearer ghs_unknown"})[0] == 401
    assert client.mock("POST", path, good, {"Authorization": f"Bearer {client.app_jwt()}"})[0] == 401

    auth = {"Authorization": f"token {client.installation_token()}"}
    for bad in (
        {**good, "name": ""},
        {k: v for k, v in good.items() if k != "name"},
        {**good, "labels": []},
        {**good, "labels": [f"l{i}" for i in range(101)]},
        {**good, "labels": "tasuki"},
        {**good, "runner_group_id": "1"},
        {**good, "work_folder": 3},
    ):
        status, body = client.mock("POST", path, bad, auth)
        assert status == 422, bad
        # The OpenAPI check answers a body the schema refuses; the mock's own rules what it lets through.
        assert body["message"].startswith("Invalid request.\n\n") or (
            body["message"] == "Validation Failed" and body["errors"]
        ), body

    status, body = client.mock("POST", path, good, auth)
    assert status == 201
    runner = body["runner"]
    assert (
        runner["name"] == name and runner["os"] == "linux" and runner["status"] == "offline" and runner["busy"] is False
    )
    assert [(label["name"], label["type"]) for label in runner["labels"]] == [
        ("self-hosted", "read-only"),
        ("tasuki", "custom"),
    ]
    outer = json.loads(base64.b64decode(body["encoded_jit_config"]))
    assert set(outer) == {".runner", ".credentials", ".credentials_rsaparams"}
    dot_runner = json.loads(base64.b64decode(outer[".runner"]))
    assert dot_runner["agentId"] == runner["id"] and dot_runner["agentName"] == name
    assert dot_runner["gitHubUrl"] == "https://github.com/octo-org/app" and dot_runner["workFolder"] == "_work"
    assert body["encoded_jit_config"] in client.secrets_for_leak_check()

    status, body = client.mock("POST", path, good, auth)
    assert status == 409 and "already exists" in body["message"]

    rid = runner["id"]
    status, got = client.mock("GET", f"/repos/octo-org/app/actions/runners/{rid}", None, auth)
    assert status == 200 and got["name"] == name
    assert client.mock("GET", f"/orgs/octo-org/actions/runners/{rid}", None, auth)[0] == 404  # repo runner
    assert client.mock("DELETE", f"/repos/octo-org/app/actions/runners/{rid}", None, {})[0] == 401
    assert client.mock("DELETE", f"/repos/octo-org/app/actions/runners/{rid}", None, auth)[0] == 204
    assert client.mock("GET", f"/repos/octo-org/app/actions/runners/{rid}", None, auth)[0] == 404
    assert client.mock("DELETE", f"/repos/octo-org/app/actions/runners/{rid}", None, auth)[0] == 404
    # the name is free again once deleted; org-level runners work the same way
    assert client.mock("POST", path, good, auth)[0] == 201
    status, body = client.mock(
        "POST", "/orgs/octo-org/actions/runners/generate-jitconfig", {**good, "name": name + "-org"}, auth
    )
    assert status == 201
    oid = body["runner"]["id"]
    assert client.mock("GET", f"/orgs/octo-org/actions/runners/{oid}", None, auth)[0] == 200
    assert client.mock("DELETE", f"/orgs/octo-org/actions/runners/{oid}", None, auth)[0] == 204
    state = client.mock_state()
    mine = {r["name"]: r for r in state["runners"] if r["name"].startswith(name)}
    assert mine[name + "-org"]["deleted"] is True and mine[name + "-org"]["deleted_by"] == "api"


def test_mock_jobs_deliver_signed_webhooks_and_redeliver_the_same_bytes(stack: dict[str, str]) -> None:
    assert client.mock("POST", "/_mock/jobs", {"labels": []})[0] == 422
    assert client.mock("POST", "/_mock/jobs", {"labels": ["x"], "behaviour": {"explode": 1}})[0] == 422
    first = client.queue_job_full(NOT_OURS, private=True, repository="octo-org/harness")
    job = str(first["job_id"])
    assert first["status"] < 500 and first["delivery_id"]
    again = client.redeliver(first["delivery_id"])
    assert again["delivery_id"] == first["delivery_id"]
    requeued = client.queue_again(job)
    assert requeued["delivery_id"] != first["delivery_id"]
    cancelled = client.cancel_job(job)
    assert client.mock("POST", f"/_mock/jobs/{job}/cancel", {})[0] == 409

    state = client.mock_state()
    sent = [w for w in state["webhooks_sent"] if str(w["job_id"]) == job]
    assert [w["action"] for w in sent] == ["queued", "queued", "queued", "completed"]
    assert sent[0]["request_sha256"] == sent[1]["request_sha256"] and sent[0]["signature"] == sent[1]["signature"]
    assert sent[2]["request_sha256"] == sent[0]["request_sha256"]  # same job, new delivery
    assert [w["delivery_id"] for w in sent].count(first["delivery_id"]) == 2
    assert sent[3]["delivery_id"] == cancelled["delivery_id"]
    wj = sent[3]["workflow_job"]
    assert (wj["status"], wj["conclusion"], wj["runner_id"], wj["runner_name"]) == (
        "completed",
        "cancelled",
        None,
        None,
    )
    assert str(sent[0]["workflow_job"]["id"]) == job and sent[0]["workflow_job"]["run_attempt"] == 1
    assert sent[0]["workflow_job"]["labels"] == NOT_OURS
    record = [j for j in state["jobs"] if j["job_id"] == job][0]
    assert record["repository"] == "octo-org/harness" and record["status"] == "completed"

    # a raw webhook with a bad signature is refused by the webhook Lambda
    status, _ = client.send_raw_webhook(
        b'{"action":"queued"}',
        {"X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": "sha256=00"},
    )
    assert status == 401
    body = b'{"zen":"Keep it logically awesome.","hook_id":1}'
    status, _ = client.send_raw_webhook(
        body,
        {"X-GitHub-Event": "ping", "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": client.sign(body)},
    )
    assert status < 500 and status != 401


def test_leak_check_lists_every_secret_handed_out(stack: dict[str, str]) -> None:
    token = client.installation_token()
    values = client.secrets_for_leak_check()
    assert stack["TASUKI_WEBHOOK_SECRET"] in values
    assert token in values


# ---- the simulated runner -----------------------------------------------------------------------------
def _launch_by_hand(
    config: dict[str, Any], behaviour: dict[str, Any] | None = None, attempt: int = 1, provider: str = "FARGATE_SPOT"
) -> tuple[str, dict[str, Any]]:
    """What issue-token + run-task do, for a job the real Lambdas ignore: returns (job_id, task)."""
    job = client.queue_job(NOT_OURS, behaviour=behaviour)
    auth = {"Authorization": f"Bearer {client.installation_token()}"}
    name = f"tasuki-{job}-{attempt}"
    status, body = client.mock(
        "POST",
        "/repos/octo-org/app/actions/runners/generate-jitconfig",
        {"name": name, "runner_group_id": 1, "labels": ["tasuki"]},
        auth,
    )
    assert status == 201
    kms, key = client.boto("kms"), config["runner"]["kms_key_id"]
    sealed = seal_jit_config(kms, job, body["encoded_jit_config"], key_id=key)
    grant_for_job(kms, key, config["runner"]["task_role_arn"], job, attempt)
    env = [
        {"name": "TASUKI_JOB_ID", "value": job},
        {"name": "TASUKI_ATTEMPT", "value": str(attempt)},
        {"name": "TASUKI_RUNNER_NAME", "value": name},
        {"name": "TASUKI_JIT_CONFIG_SEALED", "value": sealed},
        {"name": "TASUKI_KMS_KEY_ID", "value": key},
    ]
    r = _run_task(config, f"tasuki/{job}/{attempt}", provider, env=env)
    return job, r["tasks"][0]


def _actions(job: str) -> list[str]:
    return [w["action"] for w in client.mock_state()["webhooks_sent"] if str(w["job_id"]) == job]


def test_simulated_runner_boots_from_the_kms_encrypted_config_and_runs_the_job(
    stack: dict[str, str], config: dict[str, Any]
) -> None:
    job, task = _launch_by_hand(config, {"conclusion": "failure"})
    event = _event_for(task["taskArn"])
    assert event["stop_code"] == "EssentialContainerExited"
    assert _actions(job) == ["queued", "in_progress", "completed"]
    state = client.mock_state()
    sent = [w for w in state["webhooks_sent"] if str(w["job_id"]) == job]
    in_progress, completed = sent[1]["workflow_job"], sent[2]["workflow_job"]
    runner = [r for r in state["runners"] if r["name"] == f"tasuki-{job}-1"][0]
    assert in_progress["runner_name"] == runner["name"] and in_progress["runner_id"] == runner["id"]
    assert in_progress["runner_group_id"] == 1 and in_progress["status"] == "in_progress"
    assert completed["conclusion"] == "failure" and completed["run_id"] == sent[0]["workflow_job"]["run_id"]
    assert runner["booted"] and runner["deleted"] and runner["deleted_by"] == "github"
    [described] = client.ecs_tasks_for_job(job)
    assert described["lastStatus"] == "STOPPED" and described["stopCode"] == "EssentialContainerExited"
    time.sleep(1)  # the event is sent once, not on every poll
    assert len([e for e in client.mock_state()["ecs_events_sent"] if e["task_arn"] == task["taskArn"]]) == 1


def test_runner_that_fails_to_start_and_one_that_never_registers(stack: dict[str, str], config: dict[str, Any]) -> None:
    job, task = _launch_by_hand(config, {"stop_early": [1]})
    event = _event_for(task["taskArn"])
    assert event["stop_code"] == "TaskFailedToStart" and event["stopped_reason"].startswith("CannotPullContainerError")
    assert _actions(job) == ["queued"]

    job, task = _launch_by_hand(config, {"never_register": [1]})
    client.wait_until(
        lambda: any(
            e["event"] == "never-registers" and e["task_arn"] == task["taskArn"]
            for e in client.mock_state()["runner_events"]
        ),
        10,
        what="runner boot",
    )
    time.sleep(0.6)
    assert client.ecs_tasks_for_job(job)[0]["lastStatus"] == "RUNNING"
    client.boto("ecs").stop_task(cluster=config["ecs"]["cluster"], task=task["taskArn"], reason="cleanup")
    event = _event_for(task["taskArn"])
    assert event["stop_code"] == "UserInitiated" and event["stopped_reason"] == "cleanup"
    assert _actions(job) == ["queued"]
    runner = [r for r in client.mock_state()["runners"] if r["name"] == f"tasuki-{job}-1"][0]
    assert runner["status"] == "offline" and not runner["deleted"]


def test_held_job_completes_when_told(stack: dict[str, str], config: dict[str, Any]) -> None:
    job, task = _launch_by_hand(config, {"hold": True})
    client.wait_until(lambda: _actions(job) == ["queued", "in_progress"], 10, what="in_progress")
    time.sleep(0.5)
    assert client.ecs_tasks_for_job(job)[0]["lastStatus"] == "RUNNING"
    busy = [r for r in client.mock_state()["runners"] if r["name"] == f"tasuki-{job}-1"][0]
    assert busy["status"] == "online" and busy["busy"]
    client.complete_job(job, "cancelled")
    event = _event_for(task["taskArn"])
    assert event["stop_code"] == "EssentialContainerExited"
    sent = [w for w in client.mock_state()["webhooks_sent"] if str(w["job_id"]) == job]
    assert [w["action"] for w in sent] == ["queued", "in_progress", "completed"]
    assert sent[-1]["workflow_job"]["conclusion"] == "cancelled" and sent[-1]["workflow_job"]["runner_name"]


def test_leak_report_finds_a_secret_planted_in_a_log(stack: dict[str, str]) -> None:
    from harness.common import LOG_DIR

    token = client.installation_token()
    planted = LOG_DIR / "zz-planted-by-test.log"
    planted.write_text(f"oops: Authorization: token {token}\n")
    try:
        findings = client.leak_report()
        assert any("zz-planted-by-test.log" in f and "installation token" in f for f in findings), findings
    finally:
        planted.unlink()
    assert not any("zz-planted-by-test.log" in f for f in client.leak_report())
