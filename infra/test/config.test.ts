// tasuki.config.json: validated against the schema generated from the Rust type, errors naming the field.

import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { describe, it } from 'node:test';
import { ConfigError, SCHEMA_PATH, loadDeployConfig, sizeProblem, validateDeployConfig } from '../lib/config';
import { EXAMPLE_CONFIG, type Json, exampleConfig, tempDir } from './helpers';

function problems(edit: (config: Json) => void): string[] {
  const config = exampleConfig();
  edit(config);
  try {
    validateDeployConfig(config);
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    assert.match(e.message, /^tasuki\.config\.json: /);
    return e.problems;
  }
  assert.fail('expected the config to be refused');
}

describe('tasuki.config.json', () => {
  it('the example is valid and the schema is the checked-in one from Rust', () => {
    const config = loadDeployConfig(EXAMPLE_CONFIG);
    assert.equal(config.github.app_id, 424242);
    const schema = JSON.parse(fs.readFileSync(SCHEMA_PATH, 'utf8'));
    assert.equal(schema.title, 'tasuki deployment config');
  });

  it("fills in the schema's defaults", () => {
    const minimal = exampleConfig();
    delete minimal.capacity_order;
    delete minimal.retention_days;
    delete minimal.log_retention_days;
    delete minimal.github.api_url;
    delete minimal.runner.group_id;
    delete minimal.ec2;
    const config = validateDeployConfig(minimal);
    assert.deepEqual(config.capacity_order, ['fargate-spot', 'fargate']);
    assert.equal(config.retention_days, 90);
    assert.equal(config.log_retention_days, 30);
    assert.equal(config.github.api_url, 'https://api.github.com');
    assert.equal(config.runner.group_id, 1);
  });

  it('names the bad field: out of range', () => {
    assert.deepEqual(
      problems((c) => (c.timeouts.registration_seconds = 0)),
      ['/timeouts/registration_seconds must be >= 1'],
    );
  });

  it('names the bad field: unknown capacity, with the allowed ones', () => {
    assert.deepEqual(
      problems((c) => (c.capacity_order = ['fargate', 'lambda'])),
      ['/capacity_order/1 must be one of "fargate-spot", "fargate", "ec2"'],
    );
  });

  it('names every bad field at once', () => {
    assert.deepEqual(
      problems((c) => {
        c.timeouts.registration = 5;
        c.github.api_url = 'http://ghe.internal';
        delete c.runner.image;
      }).sort(),
      ['/github/api_url must match pattern "^https://"', '/runner/image is required', '/timeouts/registration is not a known field'],
    );
  });

  it('names the field inside the VPC choice the file meant', () => {
    assert.deepEqual(
      problems((c) => (c.network.vpc = { create: { max_azs: 9 } })),
      ['/network/vpc/create/max_azs must be <= 6'],
    );
    assert.deepEqual(
      problems((c) => (c.network.vpc = { import: { vpc_id: 'vpc-0123456789abcdef0', subnets: { 'us-east-1a': 'sg-1' } } })),
      ['/network/vpc/import/subnets/us-east-1a is not a subnet id'],
    );
    assert.deepEqual(
      problems((c) => (c.network.vpc = { import: { vpc_id: 'vpc-0123456789abcdef0' } })),
      ['/network/vpc/import/subnets is required'],
    );
  });

  it('checks what the schema cannot say, as DeployConfig::validate does', () => {
    assert.deepEqual(
      problems((c) => (c.sizes.aliases.small = '2cpu-64gb')),
      ['/sizes/aliases/small 2 vCPU with 64 GB is not a combination Fargate can serve (2 vCPU: 4-16 GB)'],
    );
    assert.deepEqual(problems((c) => (c.sizes.default = 'huge')), ['/sizes/default is neither an alias nor a size']);
    assert.deepEqual(
      problems((c) => (c.sizes.fallback = { large: ['small', 'huge'] })),
      [
        '/sizes/fallback/large `small` (2cpu-4gb) is not larger than `large` (8cpu-16gb): a fallback only grows',
        '/sizes/fallback/large `huge` is not an alias of /sizes/aliases',
      ],
    );
    const growing = exampleConfig();
    (growing.sizes as Json).fallback = { small: ['medium', 'large'] };
    assert.doesNotThrow(() => validateDeployConfig(growing));
    assert.deepEqual(
      problems((c) => delete c.ec2),
      ['/ec2 is required: capacity_order lists ec2, but no ec2 capacity is configured'],
    );
    assert.deepEqual(
      problems((c) => (c.timeouts.registration_seconds = 30000)),
      ['/timeouts/registration_seconds must be shorter than /timeouts/job_seconds'],
    );
    assert.deepEqual(problems((c) => (c.capacity_order = ['fargate', 'fargate'])), ['/capacity_order lists a capacity twice']);
    assert.deepEqual(problems((c) => (c.access = { orgs: [], repositories: [] })), [
      '/access serves nothing: list orgs or repositories ("*" for any)',
    ]);
    assert.deepEqual(problems((c) => (c.access.repositories = ['nope'])), ['/access/repositories/0 `nope` is not `owner/name`']);
    assert.match(problems((c) => (c.log_retention_days = 10))[0], /^\/log_retention_days must be one of CloudWatch Logs' retention periods: 1, 3, 5, 7, 14, 30/);
  });

  it('defect 1: a secret is its name or its complete ARN, never a partial ARN', () => {
    assert.deepEqual(problems((c) => (c.github.webhook_secret_name = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:tasuki/hook')), [
      "/github/webhook_secret_name `arn:aws:secretsmanager:us-east-1:123456789012:secret:tasuki/hook` is not a complete secret ARN (arn:…:secretsmanager:<region>:<account>:secret:<name>-XXXXXX): give the secret's name, or its complete ARN",
    ]);
    const complete = exampleConfig();
    complete.github.private_key_secret_name = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:tasuki/key-a1B2c3';
    assert.equal(validateDeployConfig(complete).github.private_key_secret_name, complete.github.private_key_secret_name);
  });

  it('runner.stop_grace_seconds: default 100, at most 110 (Fargate stops a container 120 s after SIGTERM at most)', () => {
    assert.equal(validateDeployConfig(exampleConfig()).runner.stop_grace_seconds, 100);
    assert.deepEqual(problems((c) => (c.runner.stop_grace_seconds = 120)), ['/runner/stop_grace_seconds must be <= 110']);
  });

  it('rejects ids that are not AWS ids, from the schema generated in Rust', () => {
    assert.deepEqual(problems((c) => (c.network.security_group_allowlist = ['db'])), [
      '/network/security_group_allowlist/0 must match pattern "^sg-([0-9a-f]{8}|[0-9a-f]{17})$"',
    ]);
    assert.deepEqual(problems((c) => (c.network.vpc = { import: { vpc_id: 'vpc-0abc', subnets: { a: 'subnet-0123456789abcdef0' } } })), [
      '/network/vpc/import/vpc_id must match pattern "^vpc-([0-9a-f]{8}|[0-9a-f]{17})$"',
    ]);
  });

  it("sizes follow Fargate's table", () => {
    assert.equal(sizeProblem('2cpu-4gb'), undefined);
    assert.equal(sizeProblem('16cpu-120gb'), undefined);
    assert.match(sizeProblem('8cpu-18gb')!, /steps of 4/);
    assert.match(sizeProblem('3cpu-6gb')!, /vCPU must be 1, 2, 4, 8 or 16/);
    assert.match(sizeProblem('big')!, /is not a size/);
  });

  it('an unreadable or non-JSON file is named', () => {
    assert.throws(() => loadDeployConfig('/nonexistent/tasuki.config.json'), /tasuki\.config\.json: cannot read/);
    const bad = `${tempDir('config')}/tasuki.config.json`;
    fs.writeFileSync(bad, '{"github": ');
    assert.throws(() => loadDeployConfig(bad), /tasuki\.config\.json: not JSON/);
  });
});
