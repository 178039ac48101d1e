// The lifecycle table (docs/contracts.md): a job item and its event items under one key, and an index
// of the jobs not yet finished by state and deadline (`gsi_state` is only set until a terminal state).

import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';

/** The index of unfinished jobs by state and deadline, which the rescue sweep queries. */
export const STATE_DEADLINE_INDEX = 'by-state-deadline';

export function lifecycleTable(stack: Stack): dynamodb.Table {
  // Encryption: AWS-managed key (aws/dynamodb). The table holds job metadata and Step Functions task
  // tokens, never a credential (JIT configs travel only as KMS ciphertext and are not stored); a
  // task token is only usable by a principal allowed states:SendTask*. The AWS-managed key gives
  // KMS-backed encryption with every use in CloudTrail, with no key policy to maintain and no
  // per-request KMS cost of a customer-managed key.
  const table = new dynamodb.Table(stack, 'Jobs', {
    partitionKey: { name: 'pk', type: dynamodb.AttributeType.STRING },
    sortKey: { name: 'sk', type: dynamodb.AttributeType.STRING },
    billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
    encryption: dynamodb.TableEncryption.AWS_MANAGED,
    pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
    timeToLiveAttribute: 'expires_at',
    deletionProtection: true,
    removalPolicy: RemovalPolicy.RETAIN,
  });
  table.addGlobalSecondaryIndex({
    indexName: STATE_DEADLINE_INDEX,
    partitionKey: { name: 'gsi_state', type: dynamodb.AttributeType.STRING },
    sortKey: { name: 'deadline', type: dynamodb.AttributeType.NUMBER },
    projectionType: dynamodb.ProjectionType.ALL,
  });
  return table;
}
