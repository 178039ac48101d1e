"""The synthesized CDK template, as the local stack uses it: synth (cached) and intrinsic resolution.

The local stack runs the Lambdas with the environment the template gives them, resolved against the
resources created in moto, the way CloudFormation resolves it against the real ones. Only the
intrinsic functions the template uses are supported; anything else, and every reference the local
stack cannot answer, is an `Unresolvable` error naming the reference and where it is — never a
silent default.

CloudFormation's rules followed here (https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/intrinsic-function-reference.html):
- `Ref` of a resource: its physical id (per type: table name, key id, subnet id, task definition ARN,
  ...); of a parameter: its value (`Default` here; SSM-typed parameters are not resolvable offline);
  pseudo parameters `AWS::Partition`, `AWS::Region`, `AWS::AccountId`, `AWS::StackName`,
  `AWS::URLSuffix`, `AWS::StackId`
  (https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/pseudo-parameter-reference.html).
- `Fn::GetAtt [LogicalId, Attr]` (or `"LogicalId.Attr"`), `Fn::Join [delim, [values]]`,
  `Fn::Select [index, list]`, `Fn::Split [delim, string]`, `Fn::GetAZs ""` (the region's AZs in
  alphabetical order), `Fn::Sub` (string or `[string, {vars}]`; `${!Literal}` escapes).
- `AWS::StepFunctions::StateMachine` `DefinitionSubstitutions`: every `${key}` of the definition is
  replaced by its value (https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-stepfunctions-statemachine.html);
  a `${...}` left without a substitution is an error here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.common import ACCOUNT_ID, LAMBDA_BINS, REGION, REPO_ROOT, run_bounded

INFRA_DIR = REPO_ROOT / "infra"
INFRA_NODE_STAMP = INFRA_DIR / "node_modules" / ".tasuki-package.sha256"
LOCAL_DEPLOY_CONFIG = Path(__file__).resolve().parent / "local.tasuki.config.json"

PSEUDO_DEFAULTS = {
    "AWS::Partition": "aws",
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT_ID,
    "AWS::URLSuffix": "amazonaws.com",
}


class Unresolvable(ValueError):
    """A reference the local stack cannot answer; the message names it and where it is."""


@dataclass
class Local:
    """What a logical id stands for locally: its `Ref` value and its `Fn::GetAtt` attributes."""

    ref: str
    attrs: dict[str, Any] = field(default_factory=dict)


Provider = Callable[[str, dict[str, Any]], Local]


def pseudo_parameters(stack_name: str) -> dict[str, str]:
    p = dict(PSEUDO_DEFAULTS)
    p["AWS::StackName"] = stack_name
    # Any fixed, well-formed id: CloudFormation's is `arn:aws:cloudformation:<region>:<account>:stack/<name>/<uuid>`.
    p["AWS::StackId"] = (
        f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{stack_name}/00000000-0000-4000-8000-000000000000"
    )
    return p


def _where(path: str) -> str:
    return f" at {path}" if path else ""


class Resolver:
    """Resolves intrinsic functions of `template` with `provider(logical_id, resource)` (memoized)."""

    def __init__(self, template: dict[str, Any], provider: Provider, pseudo: dict[str, str], azs: list[str]):
        self.template = template
        self.resources: dict[str, Any] = template.get("Resources") or {}
        self.parameters: dict[str, Any] = template.get("Parameters") or {}
        self.provider = provider
        self.pseudo = pseudo
        self.azs = list(azs)
        self.locals: dict[str, Local] = {}
        self._providing: list[str] = []

    # ---- logical ids ------------------------------------------------------------------------------
    def local(self, logical_id: str, path: str = "") -> Local:
        if logical_id in self.locals:
            return self.locals[logical_id]
        resource = self.resources.get(logical_id)
        if resource is None:
            raise Unresolvable(f"{logical_id!r} is not a resource of the template{_where(path)}")
        if logical_id in self._providing:
            cycle = " -> ".join([*self._providing[self._providing.index(logical_id) :], logical_id])
            raise Unresolvable(f"reference cycle {cycle}{_where(path)}")
        self._providing.append(logical_id)
        try:
            found = self.provider(logical_id, resource)
        except Unresolvable as exc:
            raise Unresolvable(f"{exc} (needed{_where(path) or ' here'})") from None
        finally:
            self._providing.pop()
        self.locals[logical_id] = found
        return found

    def ref(self, name: Any, path: str) -> Any:
        if not isinstance(name, str):
            raise Unresolvable(f"Ref of a non-string {name!r}{_where(path)}")
        if name.startswith("AWS::"):
            if name not in self.pseudo:
                raise Unresolvable(f"{{'Ref': {name!r}}}: pseudo parameter not known locally{_where(path)}")
            return self.pseudo[name]
        if name in self.parameters:
            param = self.parameters[name]
            if str(param.get("Type", "")).startswith("AWS::SSM::Parameter"):
                raise Unresolvable(f"{{'Ref': {name!r}}}: SSM-typed parameter ({param.get('Default')}){_where(path)}")
            if "Default" not in param:
                raise Unresolvable(f"{{'Ref': {name!r}}}: parameter without a Default{_where(path)}")
            return param["Default"]
        if name not in self.resources:
            raise Unresolvable(f"{{'Ref': {name!r}}}: no such resource or parameter{_where(path)}")
        return self.local(name, path).ref

    def get_att(self, arg: Any, path: str) -> Any:
        if isinstance(arg, str) and "." in arg:
            arg = arg.split(".", 1)
        if not (isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str)):
            raise Unresolvable(f"malformed Fn::GetAtt {arg!r}{_where(path)}")
        logical_id, attr = arg[0], self.resolve(arg[1], path + "/Fn::GetAtt[1]")
        if logical_id not in self.resources:
            raise Unresolvable(f"{{'Fn::GetAtt': {[logical_id, attr]!r}}}: no such resource{_where(path)}")
        found = self.local(logical_id, path)
        if attr not in found.attrs:
            kind = self.resources[logical_id].get("Type")
            raise Unresolvable(
                f"{{'Fn::GetAtt': {[logical_id, attr]!r}}}: attribute {attr!r} of {kind} not known locally"
                f" (known: {', '.join(sorted(found.attrs)) or 'none'}){_where(path)}"
            )
        return found.attrs[attr]

    # ---- values ----------------------------------------------------------------------------------
    def resolve(self, value: Any, path: str = "") -> Any:
        if isinstance(value, list):
            return [self.resolve(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            here = f"{path}/{key}"
            if key == "Ref":
                return self.ref(arg, path)
            if key == "Fn::GetAtt":
                return self.get_att(arg, path)
            if key == "Fn::Join":
                if not (isinstance(arg, list) and len(arg) == 2):
                    raise Unresolvable(f"malformed Fn::Join{_where(path)}")
                delim = self.resolve(arg[0], here + "[0]")
                items = self.resolve(arg[1], here + "[1]")
                if not isinstance(items, list):
                    raise Unresolvable(f"Fn::Join of a non-list {items!r}{_where(path)}")
                return delim.join(self._text(v, here) for v in items)
            if key == "Fn::Select":
                if not (isinstance(arg, list) and len(arg) == 2):
                    raise Unresolvable(f"malformed Fn::Select{_where(path)}")
                index = int(self.resolve(arg[0], here + "[0]"))
                items = self.resolve(arg[1], here + "[1]")
                if not isinstance(items, list) or not 0 <= index < len(items):
                    raise Unresolvable(f"Fn::Select index {index} out of range of {items!r}{_where(path)}")
                return items[index]
            if key == "Fn::Split":
                if not (isinstance(arg, list) and len(arg) == 2):
                    raise Unresolvable(f"malformed Fn::Split{_where(path)}")
                delim = self.resolve(arg[0], here + "[0]")
                return self._text(self.resolve(arg[1], here + "[1]"), here).split(delim)
            if key == "Fn::GetAZs":
                region = self.resolve(arg, here)
                if region not in ("", self.pseudo.get("AWS::Region")):
                    raise Unresolvable(
                        f"Fn::GetAZs of region {region!r}: only {self.pseudo.get('AWS::Region')} is local{_where(path)}"
                    )
                return list(self.azs)
            if key == "Fn::Sub":
                return self.sub(arg, here)
            if key.startswith("Fn::") or key == "Condition":
                raise Unresolvable(f"{key} is not supported by the local stack{_where(path)}")
        return {k: self.resolve(v, f"{path}/{k}") for k, v in value.items()}

    def _text(self, v: Any, path: str) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (str, int, float)):
            return str(v)
        raise Unresolvable(f"cannot use {v!r} as text{_where(path)}")

    _SUB_RE = re.compile(r"\$\{([^}]*)\}")

    def sub(self, arg: Any, path: str) -> str:
        if isinstance(arg, str):
            text, variables = arg, {}
        elif isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str) and isinstance(arg[1], dict):
            text, variables = arg[0], {k: self.resolve(v, f"{path}[1]/{k}") for k, v in arg[1].items()}
        else:
            raise Unresolvable(f"malformed Fn::Sub{_where(path)}")

        def one(m: re.Match[str]) -> str:
            name = m.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return self._text(variables[name], path)
            if "." in name and not name.startswith("AWS::"):
                return self._text(self.get_att(name.split(".", 1), path), path)
            return self._text(self.ref(name, path), path)

        return self._SUB_RE.sub(one, text)


# ---------------------------------------------------------------------------------------------------
# What the local stack reads from the template
# ---------------------------------------------------------------------------------------------------
def _pascal(bin_name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in bin_name.split("-"))


def tasuki_functions(template: dict[str, Any]) -> dict[str, str]:
    """bin -> logical id of its AWS::Lambda::Function (CDK construct `<PascalBin>Function`, infra/lib/functions.ts).

    Every bin of docs/contracts.md must be there exactly once. Other functions (CDK's own custom
    resource providers) must not carry a `TASUKI_*` variable.
    """
    by_pascal = {_pascal(b) + "Function": b for b in LAMBDA_BINS}
    found: dict[str, list[str]] = {}
    for lid, res in (template.get("Resources") or {}).items():
        if res.get("Type") != "AWS::Lambda::Function":
            continue
        cdk_path = str((res.get("Metadata") or {}).get("aws:cdk:path", ""))
        parts = cdk_path.split("/")
        construct = parts[-2] if len(parts) >= 3 else re.sub(r"[0-9A-F]{8}$", "", lid)
        bin_name = by_pascal.get(construct)
        if bin_name is None:
            env = ((res.get("Properties") or {}).get("Environment") or {}).get("Variables") or {}
            stray = sorted(k for k in env if k.startswith("TASUKI_"))
            if stray:
                raise Unresolvable(
                    f"{lid} ({cdk_path or 'no cdk path'}) is not a tasuki bin but has {', '.join(stray)}"
                )
            continue
        found.setdefault(bin_name, []).append(lid)
    missing = [b for b in LAMBDA_BINS if b not in found]
    twice = {b: lids for b, lids in found.items() if len(lids) > 1}
    if missing or twice:
        raise Unresolvable(f"template Lambdas do not match the bins: missing {missing}, more than one {twice}")
    return {b: lids[0] for b, lids in found.items()}


def lambda_environment(template: dict[str, Any], resolver: Resolver) -> dict[str, str]:
    """The one environment every tasuki Lambda gets (cargo lambda watch serves all bins with one)."""
    envs: dict[str, dict[str, str]] = {}
    for bin_name, lid in tasuki_functions(template).items():
        props = template["Resources"][lid].get("Properties") or {}
        raw = (props.get("Environment") or {}).get("Variables") or {}
        resolved = resolver.resolve(raw, f"Resources/{lid}/Properties/Environment/Variables")
        envs[bin_name] = {k: resolver._text(v, f"Resources/{lid}/Environment/{k}") for k, v in resolved.items()}
    first_bin, first = next(iter(envs.items()))
    differ = [b for b, e in envs.items() if e != first]
    if differ:
        detail = "; ".join(f"{b}: {sorted(set(envs[b].items()) ^ set(first.items()))}"[:400] for b in differ)
        raise Unresolvable(
            f"the Lambdas' environments differ ({', '.join(differ)} vs {first_bin}); cargo lambda watch "
            f"serves every bin with one environment: {detail}"
        )
    return first


def state_machine_resource(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    machines = [
        (lid, r)
        for lid, r in (template.get("Resources") or {}).items()
        if r.get("Type") == "AWS::StepFunctions::StateMachine"
    ]
    if len(machines) != 1:
        raise Unresolvable(f"expected one AWS::StepFunctions::StateMachine, found {[lid for lid, _ in machines]}")
    return machines[0]


def definition_text(template: dict[str, Any], cdk_out: Path | None, resolver: Resolver) -> str:
    """The state machine's definition as the template carries it (DefinitionString or the S3 asset)."""
    lid, res = state_machine_resource(template)
    props = res.get("Properties") or {}
    where = f"Resources/{lid}/Properties"
    if "DefinitionString" in props:
        return resolver._text(resolver.resolve(props["DefinitionString"], where + "/DefinitionString"), where)
    if "Definition" in props:
        return json.dumps(resolver.resolve(props["Definition"], where + "/Definition"))
    loc = props.get("DefinitionS3Location")
    if loc is None or cdk_out is None:
        raise Unresolvable(f"no definition the local stack can read{_where(where)}")
    key = str(loc.get("Key"))
    # The asset manifest maps each S3 object key to its file in the cloud assembly.
    for manifest in sorted(cdk_out.glob("*.assets.json")):
        for asset in (json.loads(manifest.read_text()).get("files") or {}).values():
            for dest in (asset.get("destinations") or {}).values():
                if dest.get("objectKey") == key:
                    return (cdk_out / asset["source"]["path"]).read_text()
    raise Unresolvable(f"DefinitionS3Location key {key!r} is in no asset manifest of {cdk_out}{_where(where)}")


_PLACEHOLDER_RE = re.compile(r"\$\{([^}]*)\}")


def substitute_definition(text: str, substitutions: dict[str, str]) -> str:
    unknown = sorted({m.group(1) for m in _PLACEHOLDER_RE.finditer(text) if m.group(1) not in substitutions})
    if unknown:
        raise Unresolvable(
            "state machine definition placeholder(s) without a DefinitionSubstitution: "
            + ", ".join(f"${{{u}}}" for u in unknown)
        )
    out = _PLACEHOLDER_RE.sub(lambda m: str(substitutions[m.group(1)]), text)
    json.loads(out)
    return out


def stack_name_of(cdk_out: Path) -> str:
    manifest = json.loads((cdk_out / "manifest.json").read_text())
    stacks = [(k, a) for k, a in manifest.get("artifacts", {}).items() if a.get("type") == "aws:cloudformation:stack"]
    if len(stacks) != 1:
        raise Unresolvable(f"{cdk_out}: expected one stack, found {[k for k, _ in stacks]}")
    key, art = stacks[0]
    return str((art.get("properties") or {}).get("stackName") or art.get("displayName") or key)


def load_template(cdk_out: Path) -> dict[str, Any]:
    manifest = json.loads((cdk_out / "manifest.json").read_text())
    for art in manifest.get("artifacts", {}).values():
        if art.get("type") == "aws:cloudformation:stack":
            return json.loads((cdk_out / art["properties"]["templateFile"]).read_text())
    raise Unresolvable(f"{cdk_out}: no stack template")


# ---------------------------------------------------------------------------------------------------
# Synth (offline, placeholder Lambda code), cached by a hash of its inputs
# ---------------------------------------------------------------------------------------------------
def _files_under(root: Path, skip: set[str]) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        out += [Path(dirpath) / f for f in sorted(filenames)]
    return out


def synth_inputs_hash(config_path: Path, context: dict[str, str]) -> str:
    h = hashlib.sha256()
    files = _files_under(INFRA_DIR, {"node_modules", "cdk.out", "test", ".git"})
    files += _files_under(REPO_ROOT / "statemachines", set())
    files += [INFRA_NODE_STAMP, config_path]
    for f in files:
        h.update(str(f.relative_to(REPO_ROOT) if f.is_relative_to(REPO_ROOT) else f).encode() + b"\0")
        try:
            h.update(f.read_bytes())
        except OSError:
            h.update(b"<missing>")
        h.update(b"\0")
    h.update(json.dumps(context, sort_keys=True).encode())
    return h.hexdigest()


def _run(cmd: list[str], cwd: Path, log_file: Path, limit: float, what: str) -> None:
    with open(log_file, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        rc = run_bounded(cmd, cwd, out, limit, env=dict(os.environ, CDK_DISABLE_CLI_TELEMETRY="true"))
        if rc is None:
            raise RuntimeError(f"{what} did not finish within {int(limit)} s (log: {log_file})")
    if rc != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{what} failed (exit {rc}; log: {log_file})\n{tail}")


def infra_npm_ci(log_file: Path, limit: float = 900) -> None:
    """`npm ci` in infra/ when package.json / package-lock.json changed (the stamp infra/infra.mk keeps)."""
    want = hashlib.sha256(
        (INFRA_DIR / "package.json").read_bytes() + (INFRA_DIR / "package-lock.json").read_bytes()
    ).hexdigest()
    try:
        have = INFRA_NODE_STAMP.read_text().strip()
    except OSError:
        have = ""
    if (INFRA_DIR / "node_modules").is_dir() and have == want:
        return
    _run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], INFRA_DIR, log_file, limit, "npm ci in infra/")
    INFRA_NODE_STAMP.write_text(want + "\n")


def synth(
    config_path: Path, out_dir: Path, log_file: Path, context: dict[str, str] | None = None, limit: float = 600
) -> bool:
    """`npx cdk synth -c lambdaCode=placeholder -c config=<file> -o <out_dir>` from infra/, unless the
    inputs are unchanged since the last synth into out_dir. Returns True when it synthesized."""
    context = {"lambdaCode": "placeholder", "config": str(config_path.resolve()), **(context or {})}
    infra_npm_ci(log_file)
    digest = synth_inputs_hash(config_path, context)
    stamp = out_dir / ".tasuki-synth-inputs.sha256"
    try:
        if stamp.read_text().strip() == digest and (out_dir / "manifest.json").exists():
            return False
    except OSError:
        pass
    cmd = ["npx", "--no-install", "cdk", "synth", "--quiet", "--no-notices"]
    for k, v in context.items():
        cmd += ["-c", f"{k}={v}"]
    cmd += ["-o", str(out_dir.resolve())]
    started = time.monotonic()
    with contextlib.suppress(OSError):
        stamp.unlink()
    _run(cmd, INFRA_DIR, log_file, limit, "cdk synth")
    stamp.write_text(digest + "\n")
    with open(log_file, "a") as out:
        out.write(f"synth done in {time.monotonic() - started:.0f} s\n")
    return True
