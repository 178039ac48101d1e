// The lifecycle table's index of jobs by the day they were received (issue 11): what `tasuki jobs ls`
// queries, one day partition at a time, so that listing recent jobs is never a scan. The attribute
// names are the Rust adapter's, read from its source, so the two cannot drift apart.

import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { INFRA_DIR } from '../lib/app';
import { RECEIVED_DAY_INDEX } from '../lib/table';
import { type Json, resourcesOfType, synth } from './helpers';

const ADAPTER = path.join(INFRA_DIR, '..', 'functions/core/src/adapters/dynamodb.rs');

describe('the by-received-day index', () => {
  let table: Json;

  before(() => {
    const tables = resourcesOfType(synth().template, 'AWS::DynamoDB::Table');
    assert.equal(tables.length, 1);
    table = tables[0][1].Properties;
  });

  it('is keyed by the day partition and created_at, both strings, and projects whole job items', () => {
    const index = table.GlobalSecondaryIndexes.find((i: Json) => i.IndexName === RECEIVED_DAY_INDEX);
    assert.deepEqual(index, {
      IndexName: 'by-received-day',
      KeySchema: [
        { AttributeName: 'gsi_list', KeyType: 'HASH' },
        { AttributeName: 'created_at', KeyType: 'RANGE' },
      ],
      Projection: { ProjectionType: 'ALL' },
    });
    const types = Object.fromEntries(table.AttributeDefinitions.map((a: Json) => [a.AttributeName, a.AttributeType]));
    assert.equal(types.gsi_list, 'S');
    assert.equal(types.created_at, 'S', 'RFC 3339 text sorts as time does');
  });

  it('is the index and attribute the Rust store writes and queries', () => {
    const source = fs.readFileSync(ADAPTER, 'utf8');
    assert.match(source, /pub const RECEIVED_DAY_INDEX: &str = "by-received-day";/);
    assert.match(source, /gsi_list: Option<String>,/);
    assert.match(source, /"gsi_list = :day AND created_at BETWEEN :lowest AND :highest"/);
  });
});
