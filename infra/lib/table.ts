// The lifecycle table (docs/contracts.md): a job item and its event items under one key, an index
// of the jobs not yet finished by state and deadline (`gsi_state` is only set until a terminal state),
// and an index of every job by the day it was received, for `tasuki jobs ls`.

import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';

/** The index of unfinished jobs by state and deadline, which the rescue sweep queries. */
export const STATE_DEADLINE_INDEX = 'by-state-deadline';

/**
 * Every job by the UTC day it was received (`gsi_list` = `LIST#YYYY-MM-DD`), newest `created_at`
 * first: what `tasuki jobs ls` queries (functions/core/src/domain/listing.rs).
 *
 * Why a day partition: "the jobs of the last 2 hours / 3 days", with or without a state or a
 * repository, must be a Query, never a Scan of every event row. A window touches one partition per
 * day, read newest first until the limit is reached; state and repository narrow each page as
 * filters. By state would miss finished jobs' recency (and gsi_state leaves terminal jobs); by
 * repository would need a query per repository for the common "everything recent" question. A
 * day holds every write of that day's jobs (a few per transition), far under a partition's
 * 1 000 writes/s, and only job items carry `gsi_list` (events, usage and re-run marks stay out).
 */
export const RECEIVED_DAY_INDEX = 'by-received-day';

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
  table.addGlobalSecondaryIndex({
    indexName: RECEIVED_DAY_INDEX,
    partitionKey: { name: 'gsi_list', type: dynamodb.AttributeType.STRING },
    sortKey: { name: 'created_at', type: dynamodb.AttributeType.STRING },
    // The listing shows whole job records: ALL saves a GetItem per listed job.
    projectionType: dynamodb.ProjectionType.ALL,
  });
  return table;
}
