"""Checks requests and responses against GitHub's own OpenAPI descriptions.

Sources (npm devDependencies of tests/package.json, installed into tests/node_modules):
- `@octokit/openapi` `generated/api.github.com.json`: GitHub's REST API description for
  api.github.com (OpenAPI 3.0.3, https://github.com/github/rest-api-description, repackaged by Octokit).
- `@octokit/openapi-webhooks` `generated/api.github.com.json`: the webhook payloads (OpenAPI 3.1,
  `webhooks.workflow-job-<action>`).

The non-dereferenced files are loaded (13 MB + 5 MB, ~0.4 s) instead of `*.deref.json` (73 MB, ~2 s);
`$ref`s are resolved here, lazily, only for the schemas a check needs, and each compiled validator is
cached. Both documents are loaded once per process (`rest_spec()`, `webhook_spec()`).

OpenAPI 3.0 schemas are not JSON Schema: `nullable: true` is turned into "or null" here; the 3.1
webhook schemas are JSON Schema 2020-12 already. Formats (`date-time`, `uri`) are not checked.

Request errors are answered the way GitHub answers a request its schema refuses: HTTP 422,
`{"message": "Invalid request.\\n\\n<what>", "documentation_url": <operation's doc>, "status": "422"}`
(the `basic-error` schema of the description has `status`; the wording of <what> follows GitHub's
answers such as `"name" wasn't supplied.` and `For 'properties/labels', "x" is not an array.`).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from harness.common import REPO_ROOT

NODE_MODULES = REPO_ROOT / "tests" / "node_modules"
REST_SPEC_FILE = NODE_MODULES / "@octokit" / "openapi" / "generated" / "api.github.com.json"
WEBHOOK_SPEC_FILE = NODE_MODULES / "@octokit" / "openapi-webhooks" / "generated" / "api.github.com.json"
MISSING_HINT = "run scripts/bootstrap.sh (npm ci in tests/ installs @octokit/openapi and @octokit/openapi-webhooks)"

JSON_TYPE_NAMES = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "null": "null",
}


class SpecMissing(RuntimeError):
    pass


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpecMissing(f"{path} is missing: {MISSING_HINT}")
    return json.loads(path.read_text())


def _pointer(doc: dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#/"):
        raise ValueError(f"only local $refs are supported, got {ref!r}")
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


class SchemaCompiler:
    """Turns a (possibly `$ref`-ing) schema of one document into a self-contained JSON Schema."""

    def __init__(self, doc: dict[str, Any], openapi30: bool):
        self.doc = doc
        self.openapi30 = openapi30
        self.lock = threading.Lock()
        self.cache: dict[str, jsonschema.protocols.Validator] = {}

    def _convert(self, node: Any, defs: dict[str, Any]) -> Any:
        if isinstance(node, list):
            return [self._convert(x, defs) for x in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node and isinstance(node["$ref"], str):
            ref = node["$ref"]
            key = ref[2:].replace("/", ".")
            if key not in defs:
                defs[key] = {}  # placeholder first: recursive schemas terminate
                defs[key] = self._convert(_pointer(self.doc, ref), defs)
            return {"$ref": f"#/$defs/{key}"}
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k in ("example", "examples", "x-github", "x-octokit", "discriminator", "xml", "externalDocs"):
                continue
            if k == "properties" and isinstance(v, dict):
                out[k] = {name: self._convert(sub, defs) for name, sub in v.items()}
            elif k == "nullable":
                continue
            else:
                out[k] = self._convert(v, defs)
        if self.openapi30 and node.get("nullable") is True:
            # OpenAPI 3.0.3 §4.7.25.1: `nullable: true` allows null in addition to the other values.
            if "enum" in out and None not in out["enum"]:
                out["enum"] = list(out["enum"]) + [None]
            return {"anyOf": [out, {"type": "null"}]}
        return out

    def validator(self, schema: Any, cache_key: str | None = None) -> jsonschema.protocols.Validator:
        with self.lock:
            if cache_key and cache_key in self.cache:
                return self.cache[cache_key]
            defs: dict[str, Any] = {}
            root = self._convert(schema, defs)
            if not isinstance(root, dict):
                root = {}
            root = dict(root)
            root["$defs"] = defs
            root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
            v = jsonschema.Draft202012Validator(root)
            if cache_key:
                self.cache[cache_key] = v
            return v


def schema_path(err: jsonschema.ValidationError) -> str:
    """GitHub names the place of a body error by schema keywords: `properties/labels`, `items`."""
    return "/".join(f"properties/{p}" if isinstance(p, str) else "items" for p in err.absolute_path)


def describe_error(err: jsonschema.ValidationError) -> str:
    """One line per schema error, worded like GitHub's "Invalid request" details."""
    where = schema_path(err)
    value = json.dumps(err.instance)[:200]
    prefix = f"For '{where}', " if where else ""
    if err.validator == "type":
        wanted: list[Any] = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        return prefix + f"{value} is not {' or '.join(JSON_TYPE_NAMES.get(t, t) for t in wanted)}."
    if err.validator == "minItems":
        return prefix + f"{value} has fewer than {err.validator_value} item(s)."
    if err.validator == "maxItems":
        return prefix + f"{value} has more than {err.validator_value} items."
    if err.validator == "enum":
        return prefix + f"{value} is not a member of {json.dumps(err.validator_value)}."
    if err.validator == "additionalProperties":
        return (
            prefix
            + err.message.replace("Additional properties are not allowed", "Not a permitted key").rstrip(".")
            + "."
        )
    if err.validator in ("anyOf", "oneOf"):
        return prefix + f'No subschema in "{err.validator}" matched.'
    return prefix + err.message


def schema_errors(validator: jsonschema.protocols.Validator, instance: Any, limit: int = 10) -> list[str]:
    errors = sorted(
        validator.iter_errors(instance), key=lambda e: ([str(p) for p in e.absolute_path], str(e.validator))
    )
    lines: list[str] = []
    missing: dict[str, list[str]] = {}
    for e in errors:
        if e.validator == "required":
            # one line per object, like GitHub: `"name", "labels" weren't supplied.`
            missing.setdefault(schema_path(e), []).extend(re.findall(r"'([^']+)' is a required property", e.message))
        else:
            lines.append(describe_error(e))
    for where, names in missing.items():
        quoted = ", ".join(f'"{n}"' for n in names)
        prefix = f"For '{where}', " if where else ""
        lines.insert(0, f"{prefix}{quoted} {'wasn' if len(names) == 1 else 'weren'}'t supplied.")
    return lines[:limit]


@dataclass
class Operation:
    method: str
    template: str
    raw: dict[str, Any]
    parameters: list[dict[str, Any]]
    doc_url: str
    operation_id: str
    pattern: re.Pattern[str] = field(repr=False, default=re.compile(""))
    literal_segments: int = 0


class RestSpec:
    """GitHub's REST description, indexed by method + path template."""

    def __init__(self, path: Path = REST_SPEC_FILE):
        self.doc = _load(path)
        self.version = self.doc.get("info", {}).get("version")
        self.compiler = SchemaCompiler(self.doc, openapi30=str(self.doc.get("openapi", "")).startswith("3.0"))
        self.templates: list[tuple[re.Pattern[str], int, str, dict[str, Operation]]] = []
        for template, item in self.doc["paths"].items():
            shared = item.get("parameters") or []
            ops: dict[str, Operation] = {}
            for method, raw in item.items():
                if method not in ("get", "put", "post", "delete", "patch", "head", "options"):
                    continue
                params = [self._deref(p) for p in shared + (raw.get("parameters") or [])]
                ops[method.upper()] = Operation(
                    method=method.upper(),
                    template=template,
                    raw=raw,
                    parameters=params,
                    doc_url=(raw.get("externalDocs") or {}).get("url") or "https://docs.github.com/rest",
                    operation_id=raw.get("operationId", ""),
                )
            segments = template.strip("/").split("/")
            regex = (
                "^"
                + re.sub(
                    r"\\\{([^}]*)\\\}",
                    lambda m: f"(?P<{re.sub(r'[^0-9A-Za-z_]', '_', m.group(1))}>[^/]+)",
                    re.escape(template),
                )
                + "$"
            )
            literal = sum(1 for s in segments if "{" not in s)
            self.templates.append((re.compile(regex), literal, template, ops))
        # the most literal template first: `/runners/generate-jitconfig` before `/runners/{runner_id}`
        self.templates.sort(key=lambda t: -t[1])

    def _deref(self, node: dict[str, Any]) -> dict[str, Any]:
        for _ in range(10):
            if "$ref" not in node:
                return node
            node = _pointer(self.doc, node["$ref"])
        return node

    def match(self, method: str, path: str) -> tuple[Operation | None, dict[str, str], bool]:
        """(operation, path params, path known). The path is known when some template matches it."""
        known = False
        for pattern, _, _, ops in self.templates:
            m = pattern.match(path)
            if not m:
                continue
            known = True
            op = ops.get(method.upper())
            if op is not None:
                return op, m.groupdict(), True
        return None, {}, known

    # ---- requests ---------------------------------------------------------------------------------
    def check_request(
        self, op: Operation, path_params: dict[str, str], query: dict[str, list[str]], body: bytes
    ) -> list[str]:
        problems: list[str] = []
        for p in op.parameters:
            where, name = p.get("in"), p.get("name", "")
            if where == "path":
                raw = path_params.get(name.replace("-", "_"))
            elif where == "query":
                values = query.get(name)
                raw = values[-1] if values else None
            else:
                continue
            if raw is None:
                if p.get("required") or where == "path":
                    problems.append(f'"{name}" wasn\'t supplied.')
                continue
            schema = p.get("schema") or {}
            value = coerce(raw, schema)
            v = self.compiler.validator(schema, f"param:{op.method}:{op.template}:{where}:{name}")
            problems += [f"For '{name}', {e}" for e in schema_errors(v, value)]
        rb = op.raw.get("requestBody")
        if rb is not None:
            rb = self._deref(rb)
            media = (rb.get("content") or {}).get("application/json")
            if not body.strip():
                if rb.get("required"):
                    schema = (media or {}).get("schema") or {}
                    req = self._deref(schema).get("required") if isinstance(schema, dict) else None
                    if req:
                        names = ", ".join(f'"{n}"' for n in req)
                        problems.append(f"{names} {'wasn' if len(req) == 1 else 'weren'}'t supplied.")
                    else:
                        problems.append("The request body is required.")
            elif media is not None and "schema" in media:
                try:
                    data = json.loads(body)
                except (ValueError, UnicodeDecodeError):
                    problems.append("Problems parsing JSON")
                else:
                    v = self.compiler.validator(media["schema"], f"body:{op.method}:{op.template}")
                    problems += schema_errors(v, data)
        return problems

    # ---- responses --------------------------------------------------------------------------------
    def check_response(self, op: Operation, status: int, body: Any) -> list[str]:
        """Why `body` (parsed JSON, None for no body) is not what the description says for `status`."""
        responses = op.raw.get("responses") or {}
        spec = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX") or responses.get("default")
        where = f"{op.method} {op.template} -> {status}"
        if spec is None:
            if status >= 400:
                # GitHub answers 401/403/404/5xx on every operation; many omit them: check the basic error.
                schema: Any = {"$ref": "#/components/schemas/basic-error"}
                v = self.compiler.validator(schema, "basic-error")
                errs = schema_errors(v, body)
                if not isinstance(body, dict) or "message" not in body:
                    errs.append("an error answer must carry a message")
                return [f"{where}: {e}" for e in errs]
            return [f"{where}: status {status} is not a documented answer ({sorted(responses)})"]
        spec = self._deref(spec)
        media = (spec.get("content") or {}).get("application/json")
        if media is None:
            return [] if body is None else [f"{where}: the description has no body for this answer"]
        if body is None:
            return [f"{where}: the description has a JSON body for this answer, none sent"]
        v = self.compiler.validator(media.get("schema") or {}, f"resp:{op.method}:{op.template}:{status}")
        return [f"{where}: {e}" for e in schema_errors(v, body)]


class WebhookSpec:
    """The webhook payload descriptions (`webhooks.<event>-<action>`)."""

    def __init__(self, path: Path = WEBHOOK_SPEC_FILE):
        self.doc = _load(path)
        self.compiler = SchemaCompiler(self.doc, openapi30=str(self.doc.get("openapi", "")).startswith("3.0"))

    def check(self, event: str, payload: Any, headers: dict[str, str] | None = None) -> list[str]:
        action = payload.get("action") if isinstance(payload, dict) else None
        key = f"{event.replace('_', '-')}-{str(action).replace('_', '-')}"
        hook = (self.doc.get("webhooks") or {}).get(key)
        if hook is None:
            return [f"webhook {key}: not in the webhook description"]
        post = hook["post"]
        problems: list[str] = []
        if headers is not None:
            lower = {k.lower(): v for k, v in headers.items()}
            for p in post.get("parameters") or []:
                if p.get("in") == "header" and p.get("required") and p["name"].lower() not in lower:
                    problems.append(f"webhook {key}: header {p['name']} is required")
        schema = post["requestBody"]["content"]["application/json"]["schema"]
        v = self.compiler.validator(schema, f"webhook:{key}")
        problems += [f"webhook {key}: {e}" for e in schema_errors(v, payload)]
        return problems


def coerce(raw: str, schema: dict[str, Any]) -> Any:
    """A path or query string as the type its schema wants (GitHub parses them the same way)."""
    t = schema.get("type")
    if t == "integer" and re.fullmatch(r"-?\d+", raw):
        return int(raw)
    if t == "number":
        try:
            return float(raw)
        except ValueError:
            return raw
    if t == "boolean" and raw in ("true", "false"):
        return raw == "true"
    return raw


_rest: RestSpec | None = None
_webhooks: WebhookSpec | None = None
_load_lock = threading.Lock()


def rest_spec() -> RestSpec:
    global _rest
    with _load_lock:
        if _rest is None:
            _rest = RestSpec()
        return _rest


def webhook_spec() -> WebhookSpec:
    global _webhooks
    with _load_lock:
        if _webhooks is None:
            _webhooks = WebhookSpec()
        return _webhooks


def invalid_request_body(op: Operation, problems: list[str]) -> dict[str, Any]:
    """GitHub's answer to a request its schema refuses (HTTP 422)."""
    return {
        "message": "Invalid request.\n\n" + "\n".join(problems),
        "documentation_url": op.doc_url,
        "status": "422",
    }
