// The deployment file (`tasuki.config.json`): read, validated against the JSON Schema generated from
// the Rust type `tasuki_core::domain::deploy::DeployConfig` (checked in next to this package as
// `tasuki.config.schema.json`), with the schema's defaults filled in.
//
// The schema is the single source of truth for the file's shape, types, ranges and defaults. The few
// rules JSON Schema cannot say (they relate two fields, or need Fargate's size table) are checked in
// `crossFieldErrors` below; they mirror `DeployConfig::validate` in Rust, so that a bad file fails
// `cdk synth` instead of every Lambda's init after a deploy.

import * as fs from 'node:fs';
import * as path from 'node:path';
import Ajv2020, { type ErrorObject } from 'ajv/dist/2020';

export type Capacity = 'fargate-spot' | 'fargate' | 'ec2';
export type Arch = 'x64' | 'arm64';

export interface DeployConfig {
  github: {
    app_id: number;
    api_url: string;
    private_key_secret_name: string;
    webhook_secret_name: string;
  };
  access: { orgs: string[]; repositories: string[]; allow_public_repositories: boolean };
  runner: { group_id: number; extra_labels: string[]; image: string; stop_grace_seconds: number };
  sizes: { default: string; aliases: Record<string, string>; fallback?: Record<string, string[]> };
  capacity_order: Capacity[];
  network: {
    vpc:
      | { create: { max_azs: number; availability_zones?: string[] } }
      | { import: { vpc_id: string; subnets: Record<string, string>; s3_gateway_endpoint?: boolean } };
    security_group_allowlist: string[];
  };
  ec2?: { instance_types: Partial<Record<Arch, string[]>>; max_instances: number } | null;
  timeouts: {
    registration_seconds: number;
    job_seconds: number;
    capacity_wait_seconds?: number;
    rescue_grace_seconds?: number;
  };
  retention_days: number;
  log_retention_days: number;
  /** Filled in by the schema's defaults when the file has no `alarms` section. */
  alarms: { email?: string | null; queued_minutes: number; fallback_rate: number };
}

/** The checked-in schema, generated from Rust (`make schema`). */
export const SCHEMA_PATH = path.join(__dirname, '..', 'tasuki.config.schema.json');

/** A config file that does not validate; the message names every bad field, one per line. */
export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly problems: string[],
  ) {
    super(problems.map((p) => `${file}: ${p}`).join('\n'));
    this.name = 'ConfigError';
  }
}

const UNSIGNED: Record<string, number> = {
  uint8: 2 ** 8 - 1,
  uint16: 2 ** 16 - 1,
  uint32: 2 ** 32 - 1,
  uint64: Number.MAX_SAFE_INTEGER,
  uint: Number.MAX_SAFE_INTEGER,
};

function compileSchema(schemaPath: string) {
  const schema = JSON.parse(fs.readFileSync(schemaPath, 'utf8'));
  // useDefaults: the schema's `default`s (from serde's defaults) fill in what the file leaves out.
  // Ajv cannot apply a default inside a `oneOf` branch (which branch applies is not known while
  // defaults are filled: https://ajv.js.org/guide/modifying-data.html#assigning-defaults) and strict
  // mode reports it; those few (`network.vpc.import.s3_gateway_endpoint`) are applied by the code that
  // reads them (`?? false`). Every other strict-mode finding still fails.
  const logger = {
    log: console.log,
    error: console.error,
    warn: (message: string) => {
      if (!/^strict mode: default is ignored for: /.test(message)) throw new Error(message);
    },
  };
  const ajv = new Ajv2020({ allErrors: true, useDefaults: true, strict: true, strictSchema: 'log', strictTypes: false, logger });
  // schemars' integer formats.
  for (const [name, max] of Object.entries(UNSIGNED)) {
    ajv.addFormat(name, { type: 'number', validate: (n: number) => Number.isInteger(n) && n >= 0 && n <= max });
  }
  for (const name of ['int8', 'int16', 'int32', 'int64', 'int']) {
    ajv.addFormat(name, { type: 'number', validate: (n: number) => Number.isInteger(n) });
  }
  for (const name of ['float', 'double']) {
    ajv.addFormat(name, { type: 'number', validate: () => true });
  }
  return ajv.compile(schema);
}

/** Reads and validates a deployment file; throws `ConfigError` naming every bad field. */
export function loadDeployConfig(file: string, schemaPath: string = SCHEMA_PATH): DeployConfig {
  const label = path.basename(file);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(label, [
      `cannot read ${file} (${(e as Error).message}); copy tasuki.config.example.json and edit it`,
    ]);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(label, [`not JSON: ${(e as Error).message}`]);
  }
  return validateDeployConfig(value, label, schemaPath);
}

/** Validates a parsed deployment file (defaults are filled in place). */
export function validateDeployConfig(value: unknown, label = 'tasuki.config.json', schemaPath = SCHEMA_PATH): DeployConfig {
  const validate = compileSchema(schemaPath);
  if (!validate(value)) {
    throw new ConfigError(label, describeErrors(validate.errors ?? []));
  }
  const config = value as DeployConfig;
  const problems = crossFieldErrors(config);
  if (problems.length > 0) {
    throw new ConfigError(label, problems);
  }
  return config;
}

function where(error: ErrorObject): string {
  return error.instancePath === '' ? '/' : error.instancePath;
}

/** One line per problem: `<JSON pointer> <what is wrong>`, e.g. `/timeouts/registration_seconds must be >= 1`. */
export function describeErrors(errors: ErrorObject[]): string[] {
  const kept = pickOneOfBranches(errors);
  const lines = kept.map((e) => {
    switch (e.keyword) {
      case 'additionalProperties':
        return `${joinPointer(e.instancePath, e.params.additionalProperty)} is not a known field`;
      case 'required':
        return `${joinPointer(e.instancePath, e.params.missingProperty)} is required`;
      case 'enum':
        return `${where(e)} must be one of ${(e.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
      case 'oneOf':
        return `${where(e)} must be exactly one of its alternatives (see the schema)`;
      default:
        return `${where(e)} ${e.message ?? 'is invalid'}`;
    }
  });
  return [...new Set(lines)];
}

function joinPointer(base: string, key: string): string {
  return `${base}/${String(key).replace(/~/g, '~0').replace(/\//g, '~1')}`;
}

/**
 * With `allErrors`, a failed `oneOf` (e.g. `network.vpc`: `create` or `import`) reports every
 * branch's errors. Keep the errors of the branch the file meant: the one whose own required keys are
 * present (fewest `required`/`additionalProperties` failures at the oneOf's own object).
 */
function pickOneOfBranches(errors: ErrorObject[]): ErrorObject[] {
  const oneOfs = errors.filter((e) => e.keyword === 'oneOf');
  let kept = errors;
  for (const oneOf of oneOfs) {
    const prefix = oneOf.schemaPath.replace(/\/oneOf$/, '/oneOf/');
    const inBranch = kept.filter((e) => e.schemaPath.startsWith(prefix));
    if (inBranch.length === 0) continue;
    const branches = new Map<string, ErrorObject[]>();
    for (const e of inBranch) {
      const branch = e.schemaPath.slice(prefix.length).split('/')[0];
      branches.set(branch, [...(branches.get(branch) ?? []), e]);
    }
    const shapeMisses = (list: ErrorObject[]) =>
      list.filter(
        (e) => e.instancePath === oneOf.instancePath && (e.keyword === 'required' || e.keyword === 'additionalProperties'),
      ).length;
    const best = [...branches.values()].sort((a, b) => shapeMisses(a) - shapeMisses(b))[0];
    kept = kept.filter((e) => e === oneOf || !inBranch.includes(e) || best.includes(e));
    if (best.length > 0) {
      kept = kept.filter((e) => e !== oneOf);
    }
  }
  return kept;
}

/** The retention periods CloudWatch Logs accepts (days). */
export const LOG_RETENTION_DAYS = [
  1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
];

/** Fargate's whole-vCPU sizes, as `tasuki_core::domain::size::Size::new` accepts them. */
export function sizeProblem(text: string): string | undefined {
  const m = /^(\d{1,4})cpu-(\d{1,4})gb$/.exec(text.toLowerCase());
  if (!m) return `\`${text}\` is not a size: expected \`<N>cpu-<M>gb\`, e.g. \`4cpu-8gb\``;
  const cpu = Number(m[1]);
  const gb = Number(m[2]);
  const table: Record<number, [number, number, number, string]> = {
    1: [2, 8, 1, '1 vCPU: 2-8 GB'],
    2: [4, 16, 1, '2 vCPU: 4-16 GB'],
    4: [8, 30, 1, '4 vCPU: 8-30 GB'],
    8: [16, 60, 4, '8 vCPU: 16-60 GB in steps of 4'],
    16: [32, 120, 8, '16 vCPU: 32-120 GB in steps of 8'],
  };
  const row = table[cpu];
  if (!row) return `${cpu} vCPU with ${gb} GB is not a combination Fargate can serve (vCPU must be 1, 2, 4, 8 or 16)`;
  const [min, max, step, allowed] = row;
  if (gb < min || gb > max || gb % step !== 0) {
    return `${cpu} vCPU with ${gb} GB is not a combination Fargate can serve (${allowed})`;
  }
  return undefined;
}

/** vCPU and GB of a size `<N>cpu-<M>gb` (already checked). */
function cpuAndGb(size: string): [number, number] {
  const m = /^(\d+)cpu-(\d+)gb$/.exec(size.toLowerCase());
  return m ? [Number(m[1]), Number(m[2])] : [0, 0];
}

/** `sizes.fallback`, as `check_sizes` sees it: aliases only, each strictly larger, none twice. */
function fallbackProblems(sizes: DeployConfig['sizes']): string[] {
  const problems: string[] = [];
  for (const [name, larger] of Object.entries(sizes.fallback ?? {})) {
    const at = joinPointer('/sizes/fallback', name);
    const from = sizes.aliases[name];
    if (from === undefined) {
      problems.push(`${at} is not an alias of /sizes/aliases`);
      continue;
    }
    const [fromCpu, fromGb] = cpuAndGb(from);
    larger.forEach((to, i) => {
      const toSize = sizes.aliases[to];
      if (toSize === undefined) {
        problems.push(`${at} \`${to}\` is not an alias of /sizes/aliases`);
        return;
      }
      const [cpu, gb] = cpuAndGb(toSize);
      if (cpu < fromCpu || gb < fromGb || (cpu === fromCpu && gb === fromGb)) {
        problems.push(`${at} \`${to}\` (${toSize}) is not larger than \`${name}\` (${from}): a fallback only grows`);
      } else if (larger.indexOf(to) !== i) {
        problems.push(`${at} \`${to}\` is listed twice`);
      }
    });
  }
  return problems;
}

/** Rules JSON Schema cannot express; they mirror `DeployConfig::validate`. */
export function crossFieldErrors(config: DeployConfig): string[] {
  const problems: string[] = [];
  const { access, sizes, capacity_order, timeouts, ec2, network } = config;
  if (access.orgs.length === 0 && access.repositories.length === 0) {
    problems.push('/access serves nothing: list orgs or repositories ("*" for any)');
  }
  access.repositories.forEach((r, i) => {
    if (r !== '*' && r.split('/').filter((p) => p !== '').length !== 2) {
      problems.push(`/access/repositories/${i} \`${r}\` is not \`owner/name\``);
    }
  });
  for (const [name, size] of Object.entries(sizes.aliases)) {
    if (!/^[a-z0-9-]+$/.test(name) || sizeProblem(name) === undefined) {
      problems.push(
        `${joinPointer('/sizes/aliases', name)} an alias is a lowercase word (letters, digits, '-') that is not itself a size`,
      );
    }
    const bad = sizeProblem(size);
    if (bad) problems.push(`${joinPointer('/sizes/aliases', name)} ${bad}`);
  }
  const def = sizes.default.toLowerCase();
  if (!(def in sizes.aliases) && sizeProblem(def) !== undefined) {
    problems.push('/sizes/default is neither an alias nor a size');
  }
  problems.push(...fallbackProblems(sizes));
  if (new Set(capacity_order).size !== capacity_order.length) {
    problems.push('/capacity_order lists a capacity twice');
  }
  if (capacity_order.includes('ec2') && !ec2) {
    problems.push('/ec2 is required: capacity_order lists ec2, but no ec2 capacity is configured');
  }
  if (ec2) {
    const arches = Object.entries(ec2.instance_types);
    if (arches.length === 0 || arches.some(([, types]) => !types || types.length === 0)) {
      problems.push('/ec2/instance_types name at least one instance type per architecture');
    }
  }
  for (const field of ['private_key_secret_name', 'webhook_secret_name'] as const) {
    const problem = secretIdProblem(config.github[field]);
    if (problem) problems.push(`/github/${field} ${problem}`);
  }
  if ('create' in network.vpc) {
    const { max_azs, availability_zones = [] } = network.vpc.create;
    if (availability_zones.length === 0 && max_azs > 2) {
      problems.push(
        `/network/vpc/create/availability_zones is required for max_azs ${max_azs}: the stack is environment-agnostic, ` +
          `so CDK sees only 2 zones and would silently create 2; name them, e.g. ["us-east-1a", "us-east-1b", "us-east-1c"]`,
      );
    }
    if (availability_zones.length > 0 && availability_zones.length !== max_azs) {
      problems.push(`/network/vpc/create/availability_zones names ${availability_zones.length} zones, but max_azs is ${max_azs}`);
    }
    if (new Set(availability_zones).size !== availability_zones.length) {
      problems.push('/network/vpc/create/availability_zones names a zone twice');
    }
  }
  if ('import' in network.vpc) {
    const subnets = Object.entries(network.vpc.import.subnets);
    if (subnets.length === 0) problems.push('/network/vpc/import/subnets must map at least one AZ to a subnet');
    for (const [az, subnet] of subnets) {
      if (!subnet.startsWith('subnet-')) problems.push(`${joinPointer('/network/vpc/import/subnets', az)} is not a subnet id`);
    }
  }
  network.security_group_allowlist.forEach((g, i) => {
    if (!g.startsWith('sg-')) problems.push(`/network/security_group_allowlist/${i} \`${g}\` is not a security group id`);
  });
  if (!LOG_RETENTION_DAYS.includes(config.log_retention_days)) {
    problems.push(`/log_retention_days must be one of CloudWatch Logs' retention periods: ${LOG_RETENTION_DAYS.join(', ')}`);
  }
  if (timeouts.registration_seconds >= timeouts.job_seconds) {
    problems.push('/timeouts/registration_seconds must be shorter than /timeouts/job_seconds');
  }
  const email = config.alarms?.email;
  if (email && !emailLooksRight(email)) {
    problems.push(`/alarms/email \`${email}\` is not an email address (name@example.com)`);
  }
  return problems;
}

/** What the schema's pattern cannot say of an address: no empty label in the domain (`a@b..com`). Mirrors `looks_like_email`. */
function emailLooksRight(address: string): boolean {
  const [, domain = ''] = address.split('@');
  const labels = domain.split('.');
  return labels.length >= 2 && labels.every((l) => l !== '');
}

/**
 * A secret is named by its name, or by its complete ARN (with the `-XXXXXX` suffix Secrets Manager
 * adds). A partial ARN is refused: Secrets Manager reads one whose name ends in a hyphen and six
 * characters (`…:secret:tasuki/webhook-secret`) as a complete ARN and does not find the secret
 * (SecretId, https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_GetSecretValue.html).
 * Mirrors `check_secret_id` of the runtime Config.
 */
export function secretIdProblem(id: string): string | undefined {
  if (!id.startsWith('arn:')) return undefined;
  const parts = id.slice('arn:'.length).split(':');
  const name = parts.length >= 6 && parts[1] === 'secretsmanager' && parts[4] === 'secret' ? parts.slice(5).join(':') : '';
  const suffix = name.lastIndexOf('-') >= 0 ? name.slice(name.lastIndexOf('-') + 1) : '';
  if (name !== '' && /^[A-Za-z0-9]{6}$/.test(suffix)) return undefined;
  return `\`${id}\` is not a complete secret ARN (arn:…:secretsmanager:<region>:<account>:secret:<name>-XXXXXX): give the secret's name, or its complete ARN`;
}
