"""Unit tests of the template resolver (tests/harness/template.py) and the deploy-guide parsing, on
small hand-written templates: no local stack, no moto, no synth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.common import LAMBDA_BINS, lambda_arn
from harness.setup_aws import DEPLOY_GUIDE, cfn_to_api, guide_commands, local_overrides
from harness.template import (
    Local,
    Resolver,
    Unresolvable,
    definition_text,
    lambda_environment,
    pseudo_parameters,
    substitute_definition,
    tasuki_functions,
)

AZS = ["us-east-1a", "us-east-1b", "us-east-1c"]


def resolver_for(
    resources: dict[str, Any],
    locals_: dict[str, Local],
    parameters: dict[str, Any] | None = None,
    calls: list[str] | None = None,
) -> Resolver:
    def provider(lid: str, _res: dict[str, Any]) -> Local:
        if calls is not None:
            calls.append(lid)
        if lid not in locals_:
            raise Unresolvable(f"{lid} ({_res.get('Type')}): the local stack has no equivalent for this resource type")
        return locals_[lid]

    template = {"Resources": resources, "Parameters": parameters or {}}
    return Resolver(template, provider, pseudo_parameters("Tasuki"), AZS)


TABLE = {"Type": "AWS::DynamoDB::Table", "Properties": {}}
KEY = {"Type": "AWS::KMS::Key", "Properties": {}}
SUBNET = {"Type": "AWS::EC2::Subnet", "Properties": {}}


def test_join_of_refs_getatts_and_pseudo_parameters() -> None:
    r = resolver_for(
        {"Jobs1": TABLE, "Key1": KEY},
        {"Jobs1": Local("tasuki-jobs"), "Key1": Local("kid", {"Arn": "arn:aws:kms:us-east-1:123456789012:key/kid"})},
    )
    value = {
        "Fn::Join": [
            "",
            [
                '{"t":"',
                {"Ref": "Jobs1"},
                '","k":"',
                {"Fn::GetAtt": ["Key1", "Arn"]},
                '","sm":"arn:',
                {"Ref": "AWS::Partition"},
                ":states:",
                {"Ref": "AWS::Region"},
                ":",
                {"Ref": "AWS::AccountId"},
                ":stateMachine:",
                {"Ref": "AWS::StackName"},
                '-runner-job","u":"',
                {"Ref": "AWS::URLSuffix"},
                '"}',
            ],
        ]
    }
    assert json.loads(r.resolve(value)) == {
        "t": "tasuki-jobs",
        "k": "arn:aws:kms:us-east-1:123456789012:key/kid",
        "sm": "arn:aws:states:us-east-1:123456789012:stateMachine:Tasuki-runner-job",
        "u": "amazonaws.com",
    }


def test_getatt_dotted_form_select_getazs_split_and_sub() -> None:
    r = resolver_for({"Key1": KEY, "Sn1": SUBNET}, {"Key1": Local("kid", {"Arn": "arn:k"}), "Sn1": Local("subnet-1")})
    assert r.resolve({"Fn::GetAtt": "Key1.Arn"}) == "arn:k"
    assert r.resolve({"Fn::Select": [1, {"Fn::GetAZs": ""}]}) == "us-east-1b"
    assert r.resolve({"Fn::Select": ["0", {"Fn::GetAZs": {"Ref": "AWS::Region"}}]}) == "us-east-1a"
    assert r.resolve({"Fn::Split": [",", {"Fn::Join": [",", ["a", {"Ref": "Sn1"}]]}]}) == ["a", "subnet-1"]
    assert (
        r.resolve({"Fn::Sub": "arn:${AWS::Partition}:x:${Sn1}:${Key1.Arn}:${!Literal}"})
        == "arn:aws:x:subnet-1:arn:k:${Literal}"
    )
    assert r.resolve({"Fn::Sub": ["${A}-${Sn1}", {"A": {"Ref": "AWS::Region"}}]}) == "us-east-1-subnet-1"
    # plain structures pass through, resolved inside
    assert r.resolve({"a": [{"Ref": "Sn1"}, 3, True]}) == {"a": ["subnet-1", 3, True]}


def test_each_logical_id_is_provided_once() -> None:
    calls: list[str] = []
    r = resolver_for({"Jobs1": TABLE}, {"Jobs1": Local("tasuki-jobs")}, calls=calls)
    assert r.resolve([{"Ref": "Jobs1"}, {"Ref": "Jobs1"}]) == ["tasuki-jobs", "tasuki-jobs"]
    assert calls == ["Jobs1"]


def test_unresolvable_reference_is_named_with_where_it_is() -> None:
    r = resolver_for({"Queue1": {"Type": "AWS::SQS::Queue", "Properties": {}}}, {})
    value = {"TASUKI_CONFIG": {"Fn::Join": ["", ['{"q":"', {"Ref": "Queue1"}, '"}']]}}
    with pytest.raises(Unresolvable) as err:
        r.resolve(value, "Resources/F/Properties/Environment/Variables")
    msg = str(err.value)
    assert "Queue1" in msg and "AWS::SQS::Queue" in msg
    assert "Resources/F/Properties/Environment/Variables/TASUKI_CONFIG/Fn::Join[1][1]" in msg


@pytest.mark.parametrize(
    "value, named",
    [
        ({"Ref": "Nope"}, "'Nope'"),
        ({"Fn::GetAtt": ["Nope", "Arn"]}, "'Nope'"),
        ({"Fn::GetAtt": ["Key1", "KeyId"]}, "'KeyId'"),
        ({"Ref": "AWS::NotificationARNs"}, "AWS::NotificationARNs"),
        ({"Fn::ImportValue": "shared-vpc"}, "Fn::ImportValue"),
        ({"Fn::If": ["C", "a", "b"]}, "Fn::If"),
        ({"Ref": "SsmParam"}, "SsmParam"),
        ({"Fn::Select": [5, {"Fn::GetAZs": ""}]}, "index 5"),
        ({"Fn::GetAZs": "eu-west-1"}, "eu-west-1"),
    ],
)
def test_what_cannot_be_resolved_is_an_error_naming_it(value: Any, named: str) -> None:
    r = resolver_for(
        {"Key1": KEY},
        {"Key1": Local("kid", {"Arn": "arn:k"})},
        parameters={"SsmParam": {"Type": "AWS::SSM::Parameter::Value<String>", "Default": "/cdk-bootstrap/x/version"}},
    )
    with pytest.raises(Unresolvable) as err:
        r.resolve(value)
    assert named in str(err.value)


def test_parameter_with_a_default_resolves() -> None:
    r = resolver_for({}, {}, parameters={"Size": {"Type": "String", "Default": "small"}})
    assert r.resolve({"Ref": "Size"}) == "small"


def test_reference_cycle_is_an_error() -> None:
    resources = {
        "A": {"Type": "X::A", "Properties": {"P": {"Ref": "B"}}},
        "B": {"Type": "X::B", "Properties": {"P": {"Ref": "A"}}},
    }
    holder: dict[str, Resolver] = {}

    def provider(lid: str, res: dict[str, Any]) -> Local:
        return Local(holder["r"].resolve(res["Properties"]["P"]))

    holder["r"] = Resolver({"Resources": resources}, provider, pseudo_parameters("S"), AZS)
    with pytest.raises(Unresolvable, match="cycle A -> B -> A"):
        holder["r"].resolve({"Ref": "A"})


# ---- the template's Lambdas ----------------------------------------------------------------------
def _pascal(b: str) -> str:
    return "".join(p.capitalize() for p in b.split("-"))


def lambdas_template(env_of: Any) -> dict[str, Any]:
    res: dict[str, Any] = {"Jobs1": TABLE}
    for b in LAMBDA_BINS:
        res[f"{_pascal(b)}FunctionAAAA0000"] = {
            "Type": "AWS::Lambda::Function",
            "Properties": {"Environment": {"Variables": env_of(b)}},
            "Metadata": {"aws:cdk:path": f"Tasuki/{_pascal(b)}Function/Resource"},
        }
    res["CustomProviderHandlerAAAA0000"] = {
        "Type": "AWS::Lambda::Function",
        "Properties": {},
        "Metadata": {"aws:cdk:path": "Tasuki/Custom::X/Handler"},
    }
    return {"Resources": res}


def test_every_bin_is_found_and_custom_resource_handlers_are_not_bins() -> None:
    t = lambdas_template(lambda b: {"TASUKI_CONFIG": "{}"})
    fns = tasuki_functions(t)
    assert sorted(fns) == sorted(LAMBDA_BINS)
    assert fns["resolve-labels"] == "ResolveLabelsFunctionAAAA0000"


def test_a_missing_bin_is_an_error() -> None:
    t = lambdas_template(lambda b: {})
    del t["Resources"]["EcsEventsFunctionAAAA0000"]
    with pytest.raises(Unresolvable, match="ecs-events"):
        tasuki_functions(t)


def test_lambda_environment_is_the_one_every_bin_gets() -> None:
    t = lambdas_template(lambda b: {"TASUKI_CONFIG": {"Fn::Join": ["", ['{"t":"', {"Ref": "Jobs1"}, '"}']]}})
    r = Resolver(t, lambda lid, res: Local("tasuki-jobs"), pseudo_parameters("Tasuki"), AZS)
    assert lambda_environment(t, r) == {"TASUKI_CONFIG": '{"t":"tasuki-jobs"}'}


def test_lambdas_with_different_environments_are_refused() -> None:
    t = lambdas_template(lambda b: {"TASUKI_CONFIG": "{}", **({"EXTRA": "1"} if b == "run-task" else {})})
    r = Resolver(t, lambda lid, res: Local("x"), pseudo_parameters("Tasuki"), AZS)
    with pytest.raises(Unresolvable, match="run-task"):
        lambda_environment(t, r)


# ---- state machine -----------------------------------------------------------------------------------
def test_definition_from_the_s3_asset_and_substitutions(tmp_path: Path) -> None:
    asl = {
        "StartAt": "A",
        "States": {
            "A": {
                "Type": "Task",
                "Resource": "arn:${Partition}:states:::lambda:invoke",
                "Parameters": {"FunctionName": "${RunTaskFunctionArn}"},
                "End": True,
            }
        },
    }
    (tmp_path / "asset.abc.json").write_text(json.dumps(asl))
    (tmp_path / "Tasuki.assets.json").write_text(
        json.dumps(
            {"files": {"abc": {"source": {"path": "asset.abc.json"}, "destinations": {"d": {"objectKey": "abc.json"}}}}}
        )
    )
    t: dict[str, Any] = {
        "Resources": {
            "Sm": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {
                    "DefinitionS3Location": {"Bucket": "b", "Key": "abc.json"},
                    "DefinitionSubstitutions": {
                        "Partition": {"Ref": "AWS::Partition"},
                        "RunTaskFunctionArn": {"Fn::GetAtt": ["Fn1", "Arn"]},
                    },
                },
            },
            "Fn1": {"Type": "AWS::Lambda::Function", "Properties": {}},
        }
    }
    r = Resolver(t, lambda lid, res: Local("run-task", {"Arn": lambda_arn("run-task")}), pseudo_parameters("T"), AZS)
    text = definition_text(t, tmp_path, r)
    subs = r.resolve(t["Resources"]["Sm"]["Properties"]["DefinitionSubstitutions"])
    out = json.loads(substitute_definition(text, subs))
    assert out["States"]["A"]["Resource"] == "arn:aws:states:::lambda:invoke"
    assert out["States"]["A"]["Parameters"]["FunctionName"] == lambda_arn("run-task")


def test_a_placeholder_without_substitution_is_an_error() -> None:
    with pytest.raises(Unresolvable, match=r"\$\{NopeFunctionArn\}"):
        substitute_definition('{"Resource": "${NopeFunctionArn}"}', {"Partition": "aws"})


# ---- ECS parameters, overrides, the guide ----------------------------------------------------------
def test_cfn_properties_become_api_parameters_but_option_maps_keep_their_keys() -> None:
    props = {
        "Family": "f",
        "ContainerDefinitions": [
            {
                "Name": "runner",
                "LogConfiguration": {
                    "LogDriver": "awslogs",
                    "Options": {"awslogs-group": "g", "awslogs-stream-prefix": "x64"},
                },
            }
        ],
    }
    assert cfn_to_api(props) == {
        "family": "f",
        "containerDefinitions": [
            {
                "name": "runner",
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {"awslogs-group": "g", "awslogs-stream-prefix": "x64"},
                },
            }
        ],
    }


def test_local_overrides_change_only_the_github_api_url() -> None:
    config: dict[str, Any] = {
        "github": {"api_url": "https://api.github.com", "webhook_secret_id": "tasuki/webhook-secret"},
        "x": [1],
    }
    out = local_overrides({"TASUKI_CONFIG": json.dumps(config), "OTHER": "1"}, "http://127.0.0.1:47113")
    assert out["OTHER"] == "1"
    got = json.loads(out["TASUKI_CONFIG"])
    assert got["github"].pop("api_url") == "http://127.0.0.1:47113"
    config["github"].pop("api_url")
    assert got == config


def test_the_deploy_guide_has_the_secret_commands() -> None:
    commands = guide_commands(DEPLOY_GUIDE.read_text())
    assert any(c.startswith("openssl rand -hex 32") for c in commands)
    creates = [c for c in commands if c.startswith("aws secretsmanager create-secret")]
    assert len(creates) >= 2 and all("--name" in c for c in creates)
    assert not any("\\" in c for c in creates)  # continuations joined


def test_guide_parsing_reads_only_sh_blocks() -> None:
    guide = (
        "x\n```sh\nopenssl rand -hex 32 > s.txt\naws secretsmanager create-secret --name a \\\n  --secret-string file://k.pem\n```\n"
        "```\naws secretsmanager create-secret --name not-sh\n```\n"
        "```sh\naws secretsmanager create-secret --name b --secret-string file://s.txt\n```\n"
    )
    assert guide_commands(guide) == [
        "openssl rand -hex 32 > s.txt",
        "aws secretsmanager create-secret --name a --secret-string file://k.pem",
        "aws secretsmanager create-secret --name b --secret-string file://s.txt",
    ]
    piped = guide_commands(
        "```sh\nopenssl rand -hex 32 | tr -d '\\n' > w.txt\n```\n```sh\n"
        "aws secretsmanager create-secret --name a\naws secretsmanager create-secret --name b\n```\n"
    )
    assert piped[0] == "openssl rand -hex 32 | tr -d '\\n' > w.txt"
    with pytest.raises(ValueError, match="openssl"):
        guide_commands(
            "```sh\naws secretsmanager create-secret --name a\naws secretsmanager create-secret --name b\n```\n"
        )
