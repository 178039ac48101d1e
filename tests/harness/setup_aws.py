"""Create the AWS side of the local stack in moto, from the synthesized CDK template.

Each resource the Lambdas' environment or the state machine refers to is created in moto when the
template resolver first needs it (`LocalProvider`), with the template's own properties where moto
can take them; the Lambdas then get exactly the environment the template gives them. The GitHub App
secrets are created by running infra/README.md's own commands (`guide_secrets`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from harness.common import (
    CLUSTER_NAME,
    DUMMY_ACCESS_KEY,
    DUMMY_SECRET_KEY,
    KMS_ALIAS,
    REGION,
    REPO_ROOT,
    STATE_DIR,
    TABLE_NAME,
    lambda_arn,
)
from harness.template import (
    Local,
    Resolver,
    Unresolvable,
    definition_text,
    lambda_environment,
    pseudo_parameters,
    stack_name_of,
    state_machine_resource,
    substitute_definition,
    tasuki_functions,
)

log = logging.getLogger("setup")

DEPLOY_GUIDE = REPO_ROOT / "infra" / "README.md"
GUIDE_DIR = STATE_DIR / "guide"


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


def asl_override() -> Path | None:
    """TASUKI_LOCAL_ASL_FILE: run this definition instead of the template's (same substitutions)."""
    raw = os.environ.get("TASUKI_LOCAL_ASL_FILE", "").strip()
    return Path(raw) if raw else None


def check_asl_override() -> None:
    path = asl_override()
    if path is None:
        return
    if not path.is_file():
        raise FileNotFoundError(f"TASUKI_LOCAL_ASL_FILE: {path} not found")
    json.loads(path.read_text())


def generate_app_key() -> str:
    """A fresh RSA 2048 GitHub App private key, PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`) like GitHub's."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


# ---------------------------------------------------------------------------------------------------
# The deploy guide's secret commands, run literally
# ---------------------------------------------------------------------------------------------------
def guide_commands(guide_text: str) -> list[str]:
    """The `openssl rand -hex 32 …` and `aws secretsmanager create-secret …` commands of the guide's
    ```sh blocks, backslash continuations joined, in the guide's order."""
    commands: list[str] = []
    for block in re.findall(r"^```sh[ \t]*\n(.*?)^```", guide_text, flags=re.S | re.M):
        joined = re.sub(r"[ \t]*\\\n[ \t]*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if line.startswith("openssl rand -hex 32") or line.startswith("aws secretsmanager create-secret"):
                commands.append(line)
    if not any(c.startswith("openssl rand") for c in commands):
        raise ValueError(f"{DEPLOY_GUIDE}: no `openssl rand -hex 32` command in a ```sh block")
    if sum(c.startswith("aws secretsmanager create-secret") for c in commands) < 2:
        raise ValueError(f"{DEPLOY_GUIDE}: fewer than two `aws secretsmanager create-secret` commands in ```sh blocks")
    return commands


def guide_secrets(
    endpoint_url: str, deploy_config: dict[str, Any], guide: Path = DEPLOY_GUIDE, workdir: Path = GUIDE_DIR
) -> dict[str, Any]:
    """Do infra/README.md steps 1–2 as a user would: GitHub's downloaded private key file (made here,
    named as the guide names it), then the guide's own shell commands, literally, against the local
    endpoint. Returns the pasted webhook secret (what the user gives GitHub in step 6: the file's 64
    hex characters, without the newline `>` wrote), the App key and the secret names created."""
    commands = guide_commands(guide.read_text())
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    pems = sorted({m for c in commands for m in re.findall(r"file://(\S+\.pem)\b", c)})
    if len(pems) != 1:
        raise ValueError(
            f"{guide}: expected one `file://<…>.pem` private key file in the secret commands, found {pems}"
        )
    # GitHub's "Generate a private key" downloads a PKCS#1 PEM:
    # https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/managing-private-keys-for-github-apps
    private_key_pem = generate_app_key()
    (workdir / pems[0]).write_text(private_key_pem)
    # The file the `openssl rand -hex 32 … > <file>` pipeline writes (its last redirection).
    secret_file_m = [re.search(r">\s*([^\s>|;&]+)\s*$", c) for c in commands if c.startswith("openssl rand")]
    secret_files = [m.group(1) for m in secret_file_m if m]
    if len(secret_files) != 1:
        raise ValueError(f"{guide}: expected one `openssl rand -hex 32 … > <file>`, found {secret_files}")
    names = [m.group(1) for c in commands if (m := re.search(r"--name\s+(\S+)", c))]
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(workdir),
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_KEY,
        "AWS_PAGER": "",
        "AWS_CONFIG_FILE": str(workdir / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "aws-credentials"),
    }
    if not shutil.which("aws", path=env["PATH"]):
        raise RuntimeError(
            "the AWS CLI (`aws`) is not in the venv: run scripts/bootstrap.sh (tests/requirements.txt has awscli)"
        )
    script = "set -euo pipefail\n" + "\n".join(commands) + "\n"
    with open(workdir / "guide.log", "w") as out:
        proc = subprocess.run(
            ["bash", "-c", script],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
    if proc.returncode != 0:
        tail = (workdir / "guide.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the deploy guide's secret commands failed (exit {proc.returncode}):\n{tail}")
    content = (workdir / secret_files[0]).read_text()
    pasted = content.rstrip("\r\n")
    if not re.fullmatch(r"[0-9a-f]{64}", pasted):
        raise RuntimeError(f"{secret_files[0]} does not hold 64 hex characters")
    gh = deploy_config.get("github") or {}
    for key in ("private_key_secret_name", "webhook_secret_name"):
        if gh.get(key) not in names:
            raise RuntimeError(
                f"the local deploy config's github.{key} {gh.get(key)!r} is not a secret the guide creates ({names})"
            )
    return {
        "webhook_secret": pasted,
        "webhook_secret_file": str(workdir / secret_files[0]),
        "private_key_pem": private_key_pem,
        "secret_names": names,
    }


# ---------------------------------------------------------------------------------------------------
# Template resources -> moto
# ---------------------------------------------------------------------------------------------------
# CloudFormation property maps whose keys are data, not property names (kept as they are when the
# properties are turned into ECS API parameters).
_MAP_PROPERTIES = {"Options", "DockerLabels", "Labels", "DriverOpts", "SecretOptions"}


def cfn_to_api(value: Any, parent: str = "") -> Any:
    """CloudFormation `PascalCase` properties -> the API's `camelCase` parameters (ECS)."""
    if isinstance(value, list):
        return [cfn_to_api(v, parent) for v in value]
    if isinstance(value, dict):
        if parent in _MAP_PROPERTIES:
            return dict(value)
        return {k[:1].lower() + k[1:]: cfn_to_api(v, k) for k, v in value.items()}
    return value


class LocalProvider:
    """Creates in moto what a logical id of the template stands for, the first time it is needed."""

    def __init__(self, moto_port: int, template: dict[str, Any], stack_name: str, cdk_out: Path):
        self.port = moto_port
        self.template = template
        self.stack = stack_name
        self.cdk_out = cdk_out
        self.resolver: Resolver  # set by create_resources
        self.bins = {lid: b for b, lid in tasuki_functions(template).items()}
        self.subnet_azs: dict[str, str] = {}
        self.cluster_capacity_providers: list[str] = []
        self._clients: dict[str, Any] = {}

    def c(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = client(service, self.port)
        return self._clients[service]

    def r(self, lid: str, props: dict[str, Any], key: str, default: Any = None) -> Any:
        if key not in props:
            return default
        return self.resolver.resolve(props[key], f"Resources/{lid}/Properties/{key}")

    def physical_name(self, lid: str) -> str:
        # CloudFormation names unnamed resources `<stack>-<logical id>-<random>`.
        return f"{self.stack}-{lid}"

    def __call__(self, lid: str, resource: dict[str, Any]) -> Local:
        kind = resource.get("Type", "")
        handler = getattr(self, "make_" + kind.replace("::", "__"), None)
        if handler is None:
            raise Unresolvable(f"{lid} ({kind}): the local stack has no equivalent for this resource type")
        props = resource.get("Properties") or {}
        found = handler(lid, props)
        log.info("template %s (%s) -> %s", lid, kind, found.ref)
        return found

    # ---- Lambda (served by cargo lambda watch under the bin's name) ------------------------------
    def make_AWS__Lambda__Function(self, lid: str, props: dict[str, Any]) -> Local:
        if lid not in self.bins:
            raise Unresolvable(f"{lid} (AWS::Lambda::Function) is not a tasuki bin; nothing serves it locally")
        name = self.bins[lid]
        return Local(name, {"Arn": lambda_arn(name)})

    # ---- DynamoDB --------------------------------------------------------------------------------
    def make_AWS__DynamoDB__Table(self, lid: str, props: dict[str, Any]) -> Local:
        name = self.r(lid, props, "TableName") or TABLE_NAME
        args: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": self.r(lid, props, "AttributeDefinitions"),
            "KeySchema": self.r(lid, props, "KeySchema"),
            "BillingMode": self.r(lid, props, "BillingMode", "PROVISIONED"),
        }
        if "GlobalSecondaryIndexes" in props:
            args["GlobalSecondaryIndexes"] = self.r(lid, props, "GlobalSecondaryIndexes")
        if "ProvisionedThroughput" in props:
            args["ProvisionedThroughput"] = {k: int(v) for k, v in self.r(lid, props, "ProvisionedThroughput").items()}
        ddb = self.c("dynamodb")
        arn = ddb.create_table(**args)["TableDescription"]["TableArn"]
        ttl = self.r(lid, props, "TimeToLiveSpecification")
        if ttl:
            ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
        return Local(name, {"Arn": arn})

    # ---- KMS -------------------------------------------------------------------------------------
    def make_AWS__KMS__Key(self, lid: str, props: dict[str, Any]) -> Local:
        kms = self.c("kms")
        meta = kms.create_key(Description=self.r(lid, props, "Description", ""))["KeyMetadata"]
        # Not in the template: an alias for people poking at the local stack by hand.
        kms.create_alias(AliasName=KMS_ALIAS, TargetKeyId=meta["KeyId"])
        return Local(meta["KeyId"], {"Arn": meta["Arn"], "KeyId": meta["KeyId"]})

    # ---- IAM -------------------------------------------------------------------------------------
    def make_AWS__IAM__Role(self, lid: str, props: dict[str, Any]) -> Local:
        name = (self.r(lid, props, "RoleName") or self.physical_name(lid))[:64]
        doc = self.r(lid, props, "AssumeRolePolicyDocument", {})
        role = self.c("iam").create_role(
            RoleName=name, AssumeRolePolicyDocument=json.dumps(doc), Path=self.r(lid, props, "Path", "/")
        )["Role"]
        return Local(role["RoleName"], {"Arn": role["Arn"], "RoleId": role["RoleId"]})

    # ---- CloudWatch Logs -------------------------------------------------------------------------
    def make_AWS__Logs__LogGroup(self, lid: str, props: dict[str, Any]) -> Local:
        name = self.r(lid, props, "LogGroupName") or self.physical_name(lid)
        self.c("logs").create_log_group(logGroupName=name)
        return Local(
            name, {"Arn": f"arn:aws:logs:{REGION}:{self.resolver.pseudo['AWS::AccountId']}:log-group:{name}:*"}
        )

    # ---- EC2 -------------------------------------------------------------------------------------
    def make_AWS__EC2__VPC(self, lid: str, props: dict[str, Any]) -> Local:
        ec2 = self.c("ec2")
        vpc = ec2.create_vpc(CidrBlock=self.r(lid, props, "CidrBlock"))["Vpc"]
        vpc_id = vpc["VpcId"]
        ec2.modify_vpc_attribute(
            VpcId=vpc_id, EnableDnsSupport={"Value": bool(self.r(lid, props, "EnableDnsSupport", True))}
        )
        # moto's ECS RunTask (awsvpc) fails (AttributeError private_dns_name) unless DNS hostnames
        # are on; CDK's Vpc turns them on anyway.
        ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
        tags = self.r(lid, props, "Tags") or []
        if tags:
            ec2.create_tags(Resources=[vpc_id], Tags=tags)
        default_sg = ec2.describe_security_groups(
            Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": ["default"]}]
        )["SecurityGroups"][0]["GroupId"]
        return Local(vpc_id, {"VpcId": vpc_id, "CidrBlock": vpc["CidrBlock"], "DefaultSecurityGroup": default_sg})

    def make_AWS__EC2__Subnet(self, lid: str, props: dict[str, Any]) -> Local:
        az = self.r(lid, props, "AvailabilityZone")
        vpc_id = self.r(lid, props, "VpcId")
        sn = self.c("ec2").create_subnet(VpcId=vpc_id, CidrBlock=self.r(lid, props, "CidrBlock"), AvailabilityZone=az)[
            "Subnet"
        ]
        self.subnet_azs[sn["SubnetId"]] = sn["AvailabilityZone"]
        return Local(
            sn["SubnetId"], {"SubnetId": sn["SubnetId"], "AvailabilityZone": sn["AvailabilityZone"], "VpcId": vpc_id}
        )

    def make_AWS__EC2__SecurityGroup(self, lid: str, props: dict[str, Any]) -> Local:
        vpc_id = self.r(lid, props, "VpcId")
        args: dict[str, Any] = {
            "GroupName": self.r(lid, props, "GroupName") or self.physical_name(lid),
            "Description": self.r(lid, props, "GroupDescription"),
        }
        if vpc_id:
            args["VpcId"] = vpc_id
        gid = self.c("ec2").create_security_group(**args)["GroupId"]
        return Local(gid, {"GroupId": gid, "VpcId": vpc_id})

    def make_AWS__EC2__LaunchTemplate(self, lid: str, props: dict[str, Any]) -> Local:
        # The template's launch template takes its AMI from an SSM public parameter
        # (/aws/service/ecs/optimized-ami/...) that moto does not hold: one of moto's AMIs instead.
        ec2 = self.c("ec2")
        image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        name = self.physical_name(lid)
        lt = ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={"ImageId": image_id})[
            "LaunchTemplate"
        ]
        return Local(
            lt["LaunchTemplateId"],
            {
                "LaunchTemplateId": lt["LaunchTemplateId"],
                "LatestVersionNumber": str(lt["LatestVersionNumber"]),
                "DefaultVersionNumber": str(lt["DefaultVersionNumber"]),
            },
        )

    # ---- Auto Scaling ----------------------------------------------------------------------------
    def make_AWS__AutoScaling__AutoScalingGroup(self, lid: str, props: dict[str, Any]) -> Local:
        name = self.r(lid, props, "AutoScalingGroupName") or self.physical_name(lid)
        subnets = self.r(lid, props, "VPCZoneIdentifier") or []
        args: dict[str, Any] = {
            "AutoScalingGroupName": name,
            "MinSize": int(self.r(lid, props, "MinSize")),
            "MaxSize": int(self.r(lid, props, "MaxSize")),
            "DesiredCapacity": 0,  # nothing runs on the instances locally
            "VPCZoneIdentifier": ",".join(subnets),
        }
        mixed = self.r(lid, props, "MixedInstancesPolicy")
        if mixed:
            spec = mixed["LaunchTemplate"]["LaunchTemplateSpecification"]
            args["MixedInstancesPolicy"] = {
                "LaunchTemplate": {
                    "LaunchTemplateSpecification": {
                        "LaunchTemplateId": spec["LaunchTemplateId"],
                        "Version": str(spec.get("Version", "$Latest")),
                    },
                    "Overrides": [
                        {"InstanceType": o["InstanceType"]} for o in mixed["LaunchTemplate"].get("Overrides", [])
                    ],
                },
                "InstancesDistribution": mixed.get("InstancesDistribution", {}),
            }
        elif "LaunchTemplate" in props:
            spec = self.r(lid, props, "LaunchTemplate")
            args["LaunchTemplate"] = {
                "LaunchTemplateId": spec["LaunchTemplateId"],
                "Version": str(spec.get("Version", "$Latest")),
            }
        else:
            raise Unresolvable(
                f"{lid} (AWS::AutoScaling::AutoScalingGroup): no launch template the local stack can use"
            )
        asg = self.c("autoscaling")
        asg.create_auto_scaling_group(**args)
        arn = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0][
            "AutoScalingGroupARN"
        ]
        return Local(name, {"Arn": arn})

    # ---- ECS -------------------------------------------------------------------------------------
    def make_AWS__ECS__CapacityProvider(self, lid: str, props: dict[str, Any]) -> Local:
        name = self.r(lid, props, "Name") or self.physical_name(lid)
        asgp = self.r(lid, props, "AutoScalingGroupProvider")
        asg_ref = asgp["AutoScalingGroupArn"]
        if not asg_ref.startswith("arn:"):
            # ECS takes the group's name or ARN; moto only its ARN.
            asg_ref = self.c("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[asg_ref])[
                "AutoScalingGroups"
            ][0]["AutoScalingGroupARN"]
        self.c("ecs").create_capacity_provider(
            name=name,
            autoScalingGroupProvider={
                "autoScalingGroupArn": asg_ref,
                "managedScaling": cfn_to_api(asgp.get("ManagedScaling") or {}),
                "managedTerminationProtection": asgp.get("ManagedTerminationProtection", "DISABLED"),
            },
        )
        return Local(name, {})

    def make_AWS__ECS__Cluster(self, lid: str, props: dict[str, Any]) -> Local:
        name = self.r(lid, props, "ClusterName") or CLUSTER_NAME
        providers = list(self.r(lid, props, "CapacityProviders") or [])
        for alid, res in (self.template.get("Resources") or {}).items():
            if res.get("Type") == "AWS::ECS::ClusterCapacityProviderAssociations" and (res.get("Properties") or {}).get(
                "Cluster"
            ) == {"Ref": lid}:
                providers += self.r(alid, res["Properties"], "CapacityProviders") or []
        cluster = self.c("ecs").create_cluster(clusterName=name, capacityProviders=providers)["cluster"]
        self.cluster_capacity_providers = providers
        return Local(name, {"Arn": cluster["clusterArn"]})

    def make_AWS__ECS__TaskDefinition(self, lid: str, props: dict[str, Any]) -> Local:
        resolved = self.resolver.resolve(props, f"Resources/{lid}/Properties")
        args = cfn_to_api(resolved)
        args.setdefault("family", self.physical_name(lid))
        for c in args.get("containerDefinitions", []):
            # moto registers a Fargate task definition only with a container-level memory (or
            # memoryReservation); ECS itself takes the task-level one.
            if "memory" not in c and "memoryReservation" not in c and "memory" in args:
                c["memory"] = int(args["memory"])
        arn = self.c("ecs").register_task_definition(**args)["taskDefinition"]["taskDefinitionArn"]
        return Local(arn, {"TaskDefinitionArn": arn})

    # ---- Step Functions --------------------------------------------------------------------------
    def make_AWS__StepFunctions__StateMachine(self, lid: str, props: dict[str, Any]) -> Local:
        override = asl_override()
        text = override.read_text() if override else definition_text(self.template, self.cdk_out, self.resolver)
        subs = self.r(lid, props, "DefinitionSubstitutions") or {}
        definition = substitute_definition(text, subs)
        name = self.r(lid, props, "StateMachineName") or self.physical_name(lid)
        arn = self.c("stepfunctions").create_state_machine(
            name=name,
            definition=definition,
            roleArn=self.r(lid, props, "RoleArn"),
            type=self.r(lid, props, "StateMachineType", "STANDARD"),
        )["stateMachineArn"]
        return Local(arn, {"Arn": arn, "Name": name})


def create_resources(
    moto_port: int, endpoint_url: str, cdk_out: Path, template: dict[str, Any], deploy_config: dict[str, Any]
) -> dict[str, Any]:
    """Everything the local stack needs in moto; returns the Lambdas' environment and the ids the daemon needs."""
    moto_api(moto_port, "/moto-api/config", {"stepfunctions": {"execute_state_machine": True}})
    # moto advances an ECS task's status on every DescribeTasks (RUNNING -> ... -> STOPPED) by
    # default; tasks must only stop when someone stops them.
    moto_api(
        moto_port,
        "/moto-api/state-manager/set-transition",
        {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1_000_000_000}},
    )
    secrets = guide_secrets(endpoint_url, deploy_config)

    stack = stack_name_of(cdk_out)
    provider = LocalProvider(moto_port, template, stack, cdk_out)
    # Fn::GetAZs: the region's AZs in alphabetical order (CloudFormation docs, Fn::GetAZs).
    azs = sorted(z["ZoneName"] for z in provider.c("ec2").describe_availability_zones()["AvailabilityZones"])
    resolver = Resolver(template, provider, pseudo_parameters(stack), azs)
    provider.resolver = resolver
    env = lambda_environment(template, resolver)
    sm_lid, _ = state_machine_resource(template)
    state_machine = resolver.local(sm_lid)

    def only(kind: str) -> str:
        refs = [loc.ref for lid, loc in resolver.locals.items() if template["Resources"][lid].get("Type") == kind]
        if len(refs) != 1:
            raise Unresolvable(f"expected the Lambdas to use one {kind}, they use {refs}")
        return refs[0]

    return {
        "table_name": only("AWS::DynamoDB::Table"),
        "cluster_name": only("AWS::ECS::Cluster"),
        "stack_name": stack,
        "lambda_env": env,
        "state_machine_arn": state_machine.ref,
        "subnet_azs": dict(provider.subnet_azs),
        "capacity_providers": list(provider.cluster_capacity_providers),
        "locals": {lid: {"ref": loc.ref, "attrs": loc.attrs} for lid, loc in resolver.locals.items()},
        "azs": azs,
        **secrets,
    }


def local_overrides(env: dict[str, str], github_url: str) -> dict[str, str]:
    """The one difference between the template's environment and the local Lambdas': GitHub's API URL.

    The deploy config's schema takes only `https://` API URLs; the GitHub mock serves plain HTTP on
    127.0.0.1. Everything else in TASUKI_CONFIG is the template's, resolved.
    """
    out = dict(env)
    if "TASUKI_CONFIG" not in out:
        raise Unresolvable("the template gives the Lambdas no TASUKI_CONFIG")
    config = json.loads(out["TASUKI_CONFIG"])
    github = config.get("github")
    if not isinstance(github, dict) or "api_url" not in github:
        raise Unresolvable("TASUKI_CONFIG has no github.api_url to point at the GitHub mock")
    github["api_url"] = github_url
    out["TASUKI_CONFIG"] = json.dumps(config, separators=(",", ":"))
    return out
