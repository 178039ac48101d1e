"""Create the AWS side of the local stack in moto and build the local config JSON."""

from __future__ import annotations

import json
import logging
import os
import secrets
import urllib.request
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from harness.common import (
    APP_ID,
    CLUSTER_NAME,
    CONTAINER_NAME,
    DEFAULT_ASL_FILE,
    DUMMY_ACCESS_KEY,
    DUMMY_SECRET_KEY,
    EC2_CAPACITY_PROVIDERS,
    KMS_ALIAS,
    PRIVATE_KEY_SECRET_NAME,
    REGION,
    RUNNER_GROUP_ID,
    STATE_MACHINE_NAME,
    TABLE_NAME,
    TASK_DEFINITIONS,
    WEBHOOK_SECRET_NAME,
    substitute_asl,
)

log = logging.getLogger("setup")

RUNNER_IMAGE = "ghcr.io/actions/actions-runner:latest"
DIND_IMAGE = "public.ecr.aws/docker/library/docker:dind"


def client(service: str, port: int) -> Any:
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id=DUMMY_ACCESS_KEY,
        aws_secret_access_key=DUMMY_SECRET_KEY,
        config=Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=60),
    )


def moto_api(port: int, path: str, payload: dict[str, Any]) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def asl_path() -> Path:
    override = os.environ.get("TASUKI_LOCAL_ASL_FILE")
    return Path(override) if override else DEFAULT_ASL_FILE


def load_asl() -> str:
    """The state machine definition with every `${XxxFunctionArn}` substituted (ValueError if unknown)."""
    path = asl_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"state machine definition not found: {path} (set TASUKI_LOCAL_ASL_FILE to use another file)"
        )
    text = path.read_text()
    out = substitute_asl(text)
    json.loads(out)  # must still be JSON
    return out


def generate_app_key() -> str:
    """A fresh RSA 2048 GitHub App private key, PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`) like GitHub's."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def _task_definition(ecs: Any, family: str, arch: str, docker: bool) -> str:
    runner = {
        "name": CONTAINER_NAME,
        "image": RUNNER_IMAGE,
        "essential": True,
        "memory": 4096,  # moto needs a container-level memory (or memoryReservation)
        "command": ["./run.sh", "--jitconfig-from-env"],
        "environment": [{"name": "RUNNER_ALLOW_RUNASROOT", "value": "0"}],
    }
    containers = [runner]
    if docker:
        runner["environment"].append({"name": "DOCKER_HOST", "value": "tcp://127.0.0.1:2375"})
        runner["dependsOn"] = [{"containerName": "dockerd", "condition": "START"}]
        containers.append(
            {
                "name": "dockerd",
                "image": DIND_IMAGE,
                "essential": True,
                "privileged": True,
                "memory": 1024,
                "environment": [{"name": "DOCKER_TLS_CERTDIR", "value": ""}],
            }
        )
    td = ecs.register_task_definition(
        family=family,
        networkMode="awsvpc",
        requiresCompatibilities=["EC2"] if docker else ["FARGATE"],
        cpu="2048",
        memory="4096" if not docker else "5120",
        runtimePlatform={"cpuArchitecture": "ARM64" if arch == "arm64" else "X86_64", "operatingSystemFamily": "LINUX"},
        containerDefinitions=containers,
        tags=[{"key": "tasuki:component", "value": "runner"}],
    )
    return td["taskDefinition"]["taskDefinitionArn"]


def create_resources(moto_port: int, asl_definition: str) -> dict[str, Any]:
    """Create everything in moto; returns the ids/ARNs the config and the daemon need."""
    moto_api(moto_port, "/moto-api/config", {"stepfunctions": {"execute_state_machine": True}})
    # moto advances an ECS task's status on every DescribeTasks (RUNNING -> ... -> STOPPED) by
    # default; tasks must only stop when someone stops them.
    moto_api(
        moto_port,
        "/moto-api/state-manager/set-transition",
        {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1_000_000_000}},
    )
    out: dict[str, Any] = {"notes": []}

    # ---- network ----
    ec2 = client("ec2", moto_port)
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": True})
    # moto's ECS RunTask fails (AttributeError private_dns_name) unless DNS hostnames are on.
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    ec2.create_tags(Resources=[vpc], Tags=[{"Key": "Name", "Value": "tasuki-local"}])
    subnets = {}
    for i, az in enumerate(("us-east-1a", "us-east-1b")):
        sn = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{i + 1}.0/24", AvailabilityZone=az)["Subnet"]["SubnetId"]
        subnets[az] = sn
    default_sg = ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "group-name", "Values": ["default"]}]
    )["SecurityGroups"][0]["GroupId"]
    extra_sg = ec2.create_security_group(
        GroupName="tasuki-local-extra", Description="allowlisted extra SG (local)", VpcId=vpc
    )["GroupId"]
    out.update(vpc_id=vpc, subnets=subnets, default_sg=default_sg, extra_sg=extra_sg)

    # ---- ECS ----
    ecs = client("ecs", moto_port)
    providers = ["FARGATE", "FARGATE_SPOT"]
    ec2_providers: dict[str, str] = {}
    try:
        asg = client("autoscaling", moto_port)
        image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        for arch, name in EC2_CAPACITY_PROVIDERS.items():
            lt = f"tasuki-local-{arch}"
            ec2.create_launch_template(
                LaunchTemplateName=lt,
                LaunchTemplateData={"ImageId": image_id, "InstanceType": "m7g.xlarge" if arch == "arm64" else "m7i.xlarge"},
            )
            asg.create_auto_scaling_group(
                AutoScalingGroupName=name,
                LaunchTemplate={"LaunchTemplateName": lt, "Version": "$Latest"},
                MinSize=0,
                MaxSize=4,
                DesiredCapacity=0,
                VPCZoneIdentifier=",".join(subnets.values()),
            )
            asg_arn = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0][
                "AutoScalingGroupARN"
            ]
            ecs.create_capacity_provider(
                name=name,
                autoScalingGroupProvider={
                    "autoScalingGroupArn": asg_arn,
                    "managedScaling": {"status": "ENABLED", "targetCapacity": 100},
                    "managedTerminationProtection": "DISABLED",
                },
            )
            ec2_providers[arch] = name
            providers.append(name)
    except Exception as exc:  # moto could not: no EC2 capacity (docker jobs are refused)
        log.warning("EC2 capacity providers not created: %s", exc)
        out["notes"].append(f"EC2 capacity providers not created: {exc}")
        ec2_providers = {}
        providers = ["FARGATE", "FARGATE_SPOT"]
    cluster = ecs.create_cluster(clusterName=CLUSTER_NAME, capacityProviders=providers)["cluster"]
    out.update(cluster_arn=cluster["clusterArn"], capacity_providers=providers, ec2_capacity_providers=ec2_providers)
    task_defs = {}
    for key, family in TASK_DEFINITIONS.items():
        arch = "arm64" if key.startswith("arm64") else "x64"
        task_defs[key] = _task_definition(ecs, family, arch, docker=key.endswith("_docker"))
    out["task_definition_arns"] = task_defs

    # ---- KMS ----
    kms = client("kms", moto_port)
    key_id = kms.create_key(Description="tasuki runner JIT config (local)")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=KMS_ALIAS, TargetKeyId=key_id)
    out["kms_key_id"] = key_id

    # ---- Secrets Manager ----
    sm = client("secretsmanager", moto_port)
    webhook_secret = secrets.token_hex(32)
    private_key_pem = generate_app_key()
    out["webhook_secret"] = webhook_secret
    out["private_key_pem"] = private_key_pem
    out["webhook_secret_arn"] = sm.create_secret(Name=WEBHOOK_SECRET_NAME, SecretString=webhook_secret)["ARN"]
    out["private_key_secret_arn"] = sm.create_secret(Name=PRIVATE_KEY_SECRET_NAME, SecretString=private_key_pem)["ARN"]

    # ---- DynamoDB ----
    ddb = client("dynamodb", moto_port)
    ddb.create_table(
        TableName=TABLE_NAME,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "gsi_state", "AttributeType": "S"},
            {"AttributeName": "deadline", "AttributeType": "N"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-state-deadline",
                "KeySchema": [
                    {"AttributeName": "gsi_state", "KeyType": "HASH"},
                    {"AttributeName": "deadline", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    ddb.update_time_to_live(
        TableName=TABLE_NAME, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
    )
    out["table_name"] = TABLE_NAME

    # ---- Step Functions ----
    sfn = client("stepfunctions", moto_port)
    out["state_machine_arn"] = sfn.create_state_machine(
        name=STATE_MACHINE_NAME,
        definition=asl_definition,
        roleArn="arn:aws:iam::123456789012:role/tasuki-local-state-machine",
        type="STANDARD",
    )["stateMachineArn"]
    return out


def registration_seconds() -> int:
    raw = os.environ.get("TASUKI_LOCAL_REGISTRATION_SECONDS", "").strip()
    return int(raw) if raw else 8


def build_config(ids: dict[str, Any], github_url: str) -> dict[str, Any]:
    """The config JSON (docs/contracts.md shape) with the ids created in moto."""
    return {
        "table_name": ids["table_name"],
        "state_machine_arn": ids["state_machine_arn"],
        "github": {
            "api_url": github_url,
            "app_id": APP_ID,
            "private_key_secret_arn": ids["private_key_secret_arn"],
            "webhook_secret_arn": ids["webhook_secret_arn"],
        },
        "access": {"orgs": ["*"], "repositories": [], "allow_public_repositories": False},
        "runner": {"group_id": RUNNER_GROUP_ID, "kms_key_id": KMS_ALIAS, "extra_labels": []},
        "sizes": {
            "default": "small",
            "aliases": {"small": "2cpu-4gb", "medium": "4cpu-8gb", "large": "8cpu-16gb"},
        },
        "capacity_order": ["fargate-spot", "fargate", "ec2"],
        "network": {
            "subnets": dict(ids["subnets"]),
            "security_groups": [ids["default_sg"]],
            "security_group_allowlist": [ids["extra_sg"]],
        },
        "ecs": {
            "cluster": CLUSTER_NAME,
            "container_name": CONTAINER_NAME,
            "task_definitions": dict(TASK_DEFINITIONS),
            "ec2_capacity_providers": dict(ids["ec2_capacity_providers"]),
        },
        "timeouts": {"registration_seconds": registration_seconds(), "job_seconds": 120},
        "retention_days": 90,
    }
