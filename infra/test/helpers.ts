// Shared by the infra tests: synthesize offline (placeholder Lambda code, no Rust build) and read
// the template, resolving CloudFormation intrinsics to realistic fake values where a test needs the
// deployed value (the Lambdas' TASUKI_CONFIG, the console URL).

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { INFRA_DIR, buildApp, type TasukiAppOptions } from '../lib/app';
import type { TasukiStack } from '../lib/stack';

export const EXAMPLE_CONFIG = path.join(INFRA_DIR, 'tasuki.config.example.json');

/** One temporary directory per test process, removed when it exits. */
const TMP_ROOT = fs.mkdtempSync(path.join(os.tmpdir(), 'tasuki-infra-test-'));
process.on('exit', () => fs.rmSync(TMP_ROOT, { recursive: true, force: true }));

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(TMP_ROOT, `${prefix}-`));
}

export type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

export interface Synth {
  stack: TasukiStack;
  template: Json;
  outdir: string;
  /** The cloud assembly's file for an asset hash (e.g. the state machine definition). */
  assetPath(hash: string): string;
}

/** Synthesizes the app as `bin/tasuki.ts` would, with placeholder Lambda code, into a temp dir. */
export function synth(options: Partial<TasukiAppOptions> & { config?: Json } = {}): Synth {
  const outdir = tempDir('synth');
  let configPath = options.configPath ?? EXAMPLE_CONFIG;
  if (options.config !== undefined) {
    configPath = path.join(outdir, 'tasuki.config.json');
    fs.writeFileSync(configPath, JSON.stringify(options.config));
  }
  const { app, stack } = buildApp({ lambdaCode: 'placeholder', ...options, configPath, outdir: path.join(outdir, 'cdk.out') });
  const assembly = app.synth();
  const artifact = assembly.getStackByName(stack.stackName);
  return {
    stack,
    template: artifact.template,
    outdir: assembly.directory,
    assetPath(hash: string) {
      const assets = JSON.parse(fs.readFileSync(path.join(assembly.directory, `${artifact.stackName}.assets.json`), 'utf8'));
      return path.join(assembly.directory, assets.files[hash].source.path);
    },
  };
}

export function exampleConfig(): Json {
  return JSON.parse(fs.readFileSync(EXAMPLE_CONFIG, 'utf8'));
}

export function resourcesOfType(template: Json, type: string): [string, Json][] {
  return Object.entries(template.Resources as Record<string, Json>).filter(([, r]) => r.Type === type);
}

/** Every IAM statement of the template: from AWS::IAM::Policy resources and roles' inline policies. */
export function iamStatements(template: Json): { owner: string; role: string; statement: Json }[] {
  const out: { owner: string; role: string; statement: Json }[] = [];
  for (const [id, r] of Object.entries(template.Resources as Record<string, Json>)) {
    if (r.Type === 'AWS::IAM::Policy') {
      const roles = (r.Properties.Roles ?? []).map((x: Json) => x.Ref);
      for (const statement of r.Properties.PolicyDocument.Statement) {
        for (const role of roles) out.push({ owner: id, role, statement });
      }
    }
    if (r.Type === 'AWS::IAM::Role') {
      for (const policy of r.Properties.Policies ?? []) {
        for (const statement of policy.PolicyDocument.Statement) out.push({ owner: id, role: id, statement });
      }
    }
  }
  return out;
}

export function asList<T>(x: T | T[] | undefined): T[] {
  return x === undefined ? [] : Array.isArray(x) ? x : [x];
}

// ---- Resolving intrinsics -------------------------------------------------------------------------

export const FAKE = { account: '123456789012', region: 'us-east-1', partition: 'aws', azs: ['us-east-1a', 'us-east-1b', 'us-east-1c'] };

function hex(seed: string, n: number): string {
  let h = 2166136261;
  let out = '';
  while (out.length < n) {
    for (const c of seed + out.length) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0;
    out += h.toString(16).padStart(8, '0');
  }
  return out.slice(0, n);
}

/**
 * Fake physical values shaped as CloudFormation makes them. `stackPrefix` stands for the stack
 * name in generated names: a long one gives a pessimistic size.
 */
export function resolver(template: Json, stackPrefix = 'Tasuki') {
  const { account, region, partition } = FAKE;
  const generated = (id: string, max = 255) => `${stackPrefix}-${id}-${hex(id, 12).toUpperCase()}`.slice(0, max);
  const ref = (id: string): Json => {
    switch (id) {
      case 'AWS::AccountId':
        return account;
      case 'AWS::Region':
        return region;
      case 'AWS::Partition':
        return partition;
      case 'AWS::URLSuffix':
        return 'amazonaws.com';
      case 'AWS::StackName':
        return stackPrefix;
    }
    const r = template.Resources[id];
    if (!r) throw new Error(`Ref to unknown ${id}`);
    switch (r.Type) {
      case 'AWS::EC2::Subnet':
        return `subnet-${hex(id, 17)}`;
      case 'AWS::ECS::TaskDefinition':
        return `arn:${partition}:ecs:${region}:${account}:task-definition/${r.Properties.Family}:1`;
      case 'AWS::ECS::CapacityProvider':
      case 'AWS::ECS::Cluster':
      case 'AWS::DynamoDB::Table':
      case 'AWS::Logs::LogGroup':
        return r.Properties?.LogGroupName ?? generated(id);
      default:
        return generated(id);
    }
  };
  const getAtt = (id: string, attribute: string): Json => {
    const r = template.Resources[id];
    if (!r) throw new Error(`GetAtt of unknown ${id}`);
    switch (`${r.Type}.${attribute}`) {
      case 'AWS::KMS::Key.Arn':
        return `arn:${partition}:kms:${region}:${account}:key/${hex(id, 8)}-${hex(id + 1, 4)}-${hex(id + 2, 4)}-${hex(id + 3, 4)}-${hex(id + 4, 12)}`;
      case 'AWS::EC2::SecurityGroup.GroupId':
        return `sg-${hex(id, 17)}`;
      case 'AWS::ECS::Cluster.Arn':
        return `arn:${partition}:ecs:${region}:${account}:cluster/${ref(id)}`;
      case 'AWS::Lambda::Function.Arn':
        return `arn:${partition}:lambda:${region}:${account}:function:${generated(id, 64)}`;
      case 'AWS::DynamoDB::Table.Arn':
        return `arn:${partition}:dynamodb:${region}:${account}:table/${ref(id)}`;
      case 'AWS::IAM::Role.Arn':
        return `arn:${partition}:iam::${account}:role/${generated(id, 64)}`;
      case 'AWS::Lambda::Url.FunctionUrl':
        return `https://${hex(id, 32)}.lambda-url.${region}.on.aws/`;
      default:
        throw new Error(`no fake for ${r.Type}.${attribute}`);
    }
  };
  const resolve = (value: Json): Json => {
    if (value === null || typeof value !== 'object') return value;
    if (Array.isArray(value)) return value.map(resolve);
    const keys = Object.keys(value);
    if (keys.length === 1) {
      const [k] = keys;
      const v = value[k];
      switch (k) {
        case 'Ref':
          return ref(v);
        case 'Fn::GetAtt':
          return getAtt(v[0], v[1]);
        case 'Fn::Join':
          return (resolve(v[1]) as Json[]).join(v[0]);
        case 'Fn::Select':
          return resolve(v[1])[Number(v[0])];
        case 'Fn::GetAZs':
          return FAKE.azs;
        case 'Fn::Sub':
          if (typeof v === 'string') return v.replace(/\$\{([^}]+)\}/g, (_: string, name: string) => ref(name));
          throw new Error('Fn::Sub with variables is not faked');
      }
    }
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, resolve(v)]));
  };
  return { resolve, ref, getAtt };
}
