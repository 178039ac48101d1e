// What each Lambda may do: the NEEDS table, and the IAM statements built from it and nothing else.

import { Validations } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import { type Credentials, jobContextConditions } from './credentials';
import type { Bin } from './lambdas';
import { type Runners, clusterScopedArn, nagClusterScopedArn } from './runners';
import { STATE_DEADLINE_INDEX } from './table';

/** Which Lambdas touch what. */
export interface Needs {
  /** DynamoDB actions on the table (TransactWriteItems of Puts needs `PutItem`). */
  table?: string[];
  /**
   * Queries the `by-state-deadline` index (unfinished jobs past their deadline). A Query on an index
   * is authorized on the index's ARN, `<table ARN>/index/<name>`, not the table's
   * (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/iam-policy-specific-table-indexes.html).
   */
  overdueIndex?: boolean;
  /** `states:` actions on the state machine. */
  states?: string[];
  /** Reads its executions' status (states:DescribeExecution). */
  describeExecutions?: boolean;
  /** Reads the GitHub App's private key / the webhook secret. */
  appKey?: boolean;
  webhookSecret?: boolean;
  /**
   * Seals JIT configs (contract D): kms:GenerateDataKey with the job encryption context, and
   * kms:CreateGrant of Decrypt to the runner task role, constrained to that job's context.
   */
  seal?: boolean;
  /** Revokes a job's KMS grant once its task is done (kms:RevokeGrant). */
  revokeGrant?: boolean;
  runTask?: boolean;
  stopTask?: boolean;
  /**
   * Lists and describes the cluster's tasks (the rescue sweep finds runner tasks nothing else will
   * stop). ListTasks is authorized on `container-instance/<cluster>/*`, DescribeTasks on
   * `task/<cluster>/*`, both with the `ecs:cluster` condition
   * (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelasticcontainerservice.html).
   */
  listTasks?: boolean;
  /**
   * Describes a runner task (DescribeTasks on `task/<cluster>/*`, with the `ecs:cluster`
   * condition): Finalize reads a task's stop code when GitHub's `completed` came before ECS's
   * stop event, to tell a Spot interruption of a `spot=rerun` job.
   */
  describeTasks?: boolean;
}

const CALLBACK = ['states:SendTaskSuccess', 'states:SendTaskFailure'];
const TRANSITION = ['dynamodb:GetItem', 'dynamodb:PutItem'];

export const NEEDS: Record<Bin, Needs> = {
  // create (TransactWriteItems: Put × 2), signal (UpdateItem ALL_NEW, GetItem)
  webhook: { table: [...TRANSITION, 'dynamodb:UpdateItem'], states: ['states:StartExecution', ...CALLBACK], webhookSecret: true },
  validate: { table: TRANSITION },
  'resolve-labels': { table: TRANSITION },
  'issue-token': { table: TRANSITION, appKey: true, seal: true },
  'run-task': { runTask: true },
  // transition, arm (UpdateItem), deliver
  'wait-for-registration': { table: [...TRANSITION, 'dynamodb:UpdateItem'], states: CALLBACK },
  confirm: { table: [...TRANSITION, 'dynamodb:UpdateItem'], states: CALLBACK },
  // get, disarm (UpdateItem), transition; stop task, delete runner
  cleanup: { table: [...TRANSITION, 'dynamodb:UpdateItem'], appKey: true, stopTask: true, revokeGrant: true },
  // … and the timeline (Query) when candidates ran out
  // … and a task's stop code (a Spot interruption GitHub reported before ECS did)
  finalize: {
    table: [...TRANSITION, 'dynamodb:UpdateItem', 'dynamodb:Query'],
    appKey: true,
    stopTask: true,
    revokeGrant: true,
    describeTasks: true,
  },
  // signal, deliver
  'ecs-events': { table: ['dynamodb:GetItem', 'dynamodb:UpdateItem'], states: CALLBACK },
  // overdue jobs (Query on the index); start a recorded job's execution; signal, deliver; the
  // `rescued` row (transition); ask GitHub where the job is and redeliver lost `queued` deliveries
  // (App key); a job whose execution ended unfinished: its status, stop its task
  rescue: {
    table: [...TRANSITION, 'dynamodb:UpdateItem'],
    overdueIndex: true,
    states: ['states:StartExecution', ...CALLBACK],
    describeExecutions: true,
    appKey: true,
    stopTask: true,
    listTasks: true,
  },
};

/** What the statements name. */
export interface Grantables {
  readonly table: dynamodb.ITable;
  /** Formatted, not referenced: the state machine is made after the Lambdas (state-machine.ts). */
  readonly stateMachineArn: string;
  readonly stateMachineName: string;
  readonly executionsArn: string;
  readonly credentials: Credentials;
  readonly runners: Runners;
  /** Every runner task definition, Fargate and docker. */
  readonly taskDefinitions: Record<string, ecs.TaskDefinition>;
}

/** A Lambda's inline policy: its own log group, and what its needs say. */
export function lambdaStatements(needs: Needs, logGroup: logs.ILogGroup, on: Grantables): iam.PolicyStatement[] {
  const statements: iam.PolicyStatement[] = [
    new iam.PolicyStatement({
      sid: 'OwnLogs',
      actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
      resources: [logGroup.logGroupArn],
    }),
  ];
  if (needs.table) {
    statements.push(new iam.PolicyStatement({ sid: 'Lifecycle', actions: needs.table, resources: [on.table.tableArn] }));
  }
  if (needs.overdueIndex) {
    statements.push(
      new iam.PolicyStatement({
        sid: 'OverdueJobs',
        actions: ['dynamodb:Query'],
        resources: [`${on.table.tableArn}/index/${STATE_DEADLINE_INDEX}`],
      }),
    );
  }
  if (needs.states) {
    statements.push(new iam.PolicyStatement({ sid: 'Execution', actions: needs.states, resources: [on.stateMachineArn] }));
  }
  if (needs.describeExecutions) {
    statements.push(
      new iam.PolicyStatement({ sid: 'ExecutionStatus', actions: ['states:DescribeExecution'], resources: [on.executionsArn] }),
    );
  }
  const secrets = [...(needs.appKey ? [on.credentials.appKey] : []), ...(needs.webhookSecret ? [on.credentials.webhookSecret] : [])];
  if (secrets.length > 0) {
    statements.push(
      new iam.PolicyStatement({
        sid: 'GitHubSecrets',
        actions: ['secretsmanager:GetSecretValue'],
        resources: secrets.map((s) => s.iamResource),
      }),
    );
  }
  if (needs.seal) {
    statements.push(
      // The data key of the envelope (AES-256-GCM) is made for the job's encryption context only.
      new iam.PolicyStatement({
        sid: 'SealJobCredential',
        actions: ['kms:GenerateDataKey'],
        resources: [on.credentials.runnerKey.keyArn],
        conditions: jobContextConditions(),
      }),
      // The per-job grant: only to the runner task role, only Decrypt, only under an
      // EncryptionContextEquals constraint (the job's id; the request sets the value)
      // (https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html#conditions-kms-grantee-principal,
      // …#conditions-kms-grant-operations, …#conditions-kms-grant-constraint-type).
      new iam.PolicyStatement({
        sid: 'GrantJobCredential',
        actions: ['kms:CreateGrant'],
        resources: [on.credentials.runnerKey.keyArn],
        conditions: {
          StringEquals: {
            'kms:GranteePrincipal': on.runners.taskRole.roleArn,
            'kms:GrantConstraintType': 'EncryptionContextEquals',
          },
          'ForAllValues:StringEquals': { 'kms:GrantOperations': ['Decrypt'] },
        },
      }),
    );
  }
  if (needs.runTask) {
    statements.push(
      new iam.PolicyStatement({
        sid: 'RunRunnerTask',
        actions: ['ecs:RunTask'],
        resources: Object.values(on.taskDefinitions).map((td) => td.taskDefinitionArn),
        conditions: { ArnEquals: { 'ecs:cluster': on.runners.cluster.clusterArn } },
      }),
      // RunTask's tags (per-job cost allocation) need TagResource, only as part of RunTask.
      new iam.PolicyStatement({
        sid: 'TagRunnerTask',
        actions: ['ecs:TagResource'],
        resources: [clusterScopedArn(on.runners.cluster, 'task')],
        conditions: { StringEquals: { 'ecs:CreateAction': 'RunTask' } },
      }),
      new iam.PolicyStatement({
        sid: 'PassRunnerRoles',
        actions: ['iam:PassRole'],
        resources: [on.runners.taskRole, on.runners.executionRole].map((r) => r.roleArn),
        conditions: { StringEquals: { 'iam:PassedToService': 'ecs-tasks.amazonaws.com' } },
      }),
    );
  }
  if (needs.stopTask) {
    statements.push(
      new iam.PolicyStatement({
        sid: 'StopRunnerTask',
        actions: ['ecs:StopTask'],
        resources: [clusterScopedArn(on.runners.cluster, 'task')],
        conditions: { ArnEquals: { 'ecs:cluster': on.runners.cluster.clusterArn } },
      }),
    );
  }
  const onCluster = { ArnEquals: { 'ecs:cluster': on.runners.cluster.clusterArn } };
  if (needs.listTasks) {
    statements.push(
      new iam.PolicyStatement({
        sid: 'ListRunnerTasks',
        actions: ['ecs:ListTasks'],
        resources: [clusterScopedArn(on.runners.cluster, 'container-instance')],
        conditions: onCluster,
      }),
    );
  }
  if (needs.listTasks || needs.describeTasks) {
    statements.push(
      new iam.PolicyStatement({
        sid: 'DescribeRunnerTasks',
        actions: ['ecs:DescribeTasks'],
        resources: [clusterScopedArn(on.runners.cluster, 'task')],
        conditions: onCluster,
      }),
    );
  }
  if (needs.revokeGrant) {
    statements.push(
      new iam.PolicyStatement({
        sid: 'RevokeJobCredential',
        actions: ['kms:RevokeGrant'],
        resources: [on.credentials.runnerKey.keyArn],
      }),
    );
  }
  return statements;
}

/** cdk-nag's IAM5 finding on the state machine's `execution:<name>:*`, for a role that reads them. */
export function acknowledgeExecutions(role: iam.IRole, needs: Needs, stateMachineName: string): void {
  if (needs.describeExecutions) {
    Validations.of(role).acknowledge({
      id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:${stateMachineName}:*]`,
      reason:
        'Execution names (<job id>-<run attempt>) are not known in advance: states:DescribeExecution on ' +
        "this state machine's executions only.",
    });
  }
}

/** cdk-nag's IAM5 finding on the cluster's `task/<cluster>/*`, for a role that starts or stops tasks. */
export function acknowledgeClusterTasks(role: iam.IRole, needs: Needs, cluster: ecs.Cluster): void {
  if (needs.runTask || needs.stopTask || needs.listTasks || needs.describeTasks) {
    Validations.of(role).acknowledge({
      id: `AwsSolutions-IAM5[Resource::${nagClusterScopedArn(cluster, 'task')}]`,
      reason:
        'Task ids are not known in advance: ' +
        (needs.runTask ? 'ecs:TagResource, only as part of RunTask (ecs:CreateAction condition)' : 'ecs:StopTask/DescribeTasks') +
        " on this cluster's tasks (arn:…:task/<cluster>/*).",
    });
  }
  if (needs.listTasks) {
    Validations.of(role).acknowledge({
      id: `AwsSolutions-IAM5[Resource::${nagClusterScopedArn(cluster, 'container-instance')}]`,
      reason: "ecs:ListTasks is authorized on the cluster's container instances (arn:…:container-instance/<cluster>/*), with the ecs:cluster condition.",
    });
  }
}
