// The runner task's usage item (issue 11): tasuki-boot is told where to store it (TASUKI_TABLE,
// TASUKI_RETENTION_DAYS) in every runner task definition, and the runner task role may put that
// item and nothing else in the lifecycle table.

import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { INFRA_DIR } from '../lib/app';
import { RUNNER_CONTAINER, USAGE_ITEM_ATTRIBUTES } from '../lib/runners';
import { type Json, type Synth, asList, exampleConfig, iamStatements, resourcesOfType, synth } from './helpers';

/** `ITEM_ATTRIBUTES` of functions/core/src/domain/usage.rs, the list the boot's item is tested against. */
function rustItemAttributes(): string[] {
  const source = fs.readFileSync(path.join(INFRA_DIR, '..', 'functions/core/src/domain/usage.rs'), 'utf8');
  const list = /pub const ITEM_ATTRIBUTES: \[&str; \d+\] = \[([^\]]*)\]/.exec(source);
  assert.ok(list, 'ITEM_ATTRIBUTES in domain/usage.rs');
  return [...list[1].matchAll(/"([a-z_]+)"/g)].map((m) => m[1]);
}

function runnerContainers(t: Json): Json[] {
  return resourcesOfType(t, 'AWS::ECS::TaskDefinition').flatMap(([, r]) =>
    r.Properties.ContainerDefinitions.filter((c: Json) => c.Name === RUNNER_CONTAINER),
  );
}

describe('the usage item', () => {
  let s: Synth;
  let t: Json;
  const logicalId = (construct: Json): string => s.stack.getLogicalId(construct.node.defaultChild);

  before(() => {
    s = synth();
    t = s.template;
  });

  it('every runner container, Fargate and docker, knows the table and the retention', () => {
    const containers = runnerContainers(t);
    assert.equal(containers.length, 4, 'x64, arm64 and their docker variants');
    for (const c of containers) {
      const env = Object.fromEntries(c.Environment.map((e: Json) => [e.Name, e.Value]));
      assert.deepEqual(env.TASUKI_TABLE, { Ref: logicalId(s.stack.table) });
      assert.equal(env.TASUKI_RETENTION_DAYS, String(exampleConfig().retention_days));
    }
  });

  it('the runner task role may put an item of the usage attributes under a USAGE# key, and nothing else in DynamoDB', () => {
    const role = logicalId(s.stack.node.findChild('RunnerTaskRole'));
    const statements = iamStatements(t).filter((x) => x.role === role);
    const dynamo = statements.filter((x) => asList<string>(x.statement.Action).some((a) => a.startsWith('dynamodb:')));
    assert.equal(dynamo.length, 1, JSON.stringify(statements));
    const { statement } = dynamo[0];
    assert.equal(statement.Effect, 'Allow');
    assert.deepEqual(asList(statement.Action), ['dynamodb:PutItem']);
    assert.deepEqual(asList(statement.Resource), [{ 'Fn::GetAtt': [logicalId(s.stack.table), 'Arn'] }]);
    assert.deepEqual(statement.Condition, {
      'ForAllValues:StringEquals': { 'dynamodb:Attributes': USAGE_ITEM_ATTRIBUTES },
      'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['USAGE#*'] },
      StringEqualsIfExists: { 'dynamodb:ReturnValues': 'NONE' },
    });
    // No index, no stream, no wildcard.
    assert.ok(!JSON.stringify(statement.Resource).includes('*'));
  });

  it('the attributes IAM allows are exactly those of the item tasuki-boot writes', () => {
    assert.deepEqual([...USAGE_ITEM_ATTRIBUTES].sort(), rustItemAttributes().sort());
    assert.equal(new Set(USAGE_ITEM_ATTRIBUTES).size, USAGE_ITEM_ATTRIBUTES.length);
  });

  it('the retention follows retention_days', () => {
    const config = exampleConfig();
    config.retention_days = 30;
    for (const c of runnerContainers(synth({ config, stackName: 'TasukiShortRetention' }).template)) {
      assert.deepEqual(c.Environment.find((e: Json) => e.Name === 'TASUKI_RETENTION_DAYS'), { Name: 'TASUKI_RETENTION_DAYS', Value: '30' });
    }
  });
});
