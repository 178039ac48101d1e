// The runner tasks: the ECS cluster, their log group, task and execution roles, image, and one Fargate
// task definition per arch. The `docker` variant on EC2 is in ec2-capacity.ts and docker-task.ts.

import { ArnFormat, Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import type { DeployConfig } from './config';
import { pascal } from './lambdas';

/** The runner container's name; `run-task` overrides its environment (docs/contracts.md). */
export const RUNNER_CONTAINER = 'runner';

/** Seconds a running job gets after SIGTERM when the file does not say (contract D; Fargate stops at 120 s). */
export const DEFAULT_STOP_GRACE_SECONDS = 100;
/** Fargate's maximum `stopTimeout`: the runner container is SIGKILLed this long after SIGTERM. */
export const RUNNER_STOP_TIMEOUT_SECONDS = 120;

/**
 * Every attribute of the usage item `tasuki-boot` writes at exit (`USAGE#<job id>` / `USAGE#<attempt>`,
 * docs/contracts.md; `tasuki_core::domain::usage::ITEM_ATTRIBUTES`): the runner task role may put
 * items with these attributes and no other.
 */
export const USAGE_ITEM_ATTRIBUTES = [
  'pk',
  'sk',
  'attempt',
  'seconds',
  'samples',
  'cpu_avg_vcpu',
  'cpu_peak_vcpu',
  'memory_avg_mib',
  'memory_peak_mib',
  'cpu_limit_vcpu',
  'memory_limit_mib',
  'expires_at',
];

export interface Runners {
  readonly cluster: ecs.Cluster;
  readonly logGroup: logs.LogGroup;
  readonly taskRole: iam.Role;
  readonly executionRole: iam.Role;
  readonly image: ecs.ContainerImage;
  /** The runner container's task-definition environment, in every variant. */
  readonly environment: Record<string, string>;
  /** By arch (`x64`, `arm64`): the Fargate task definitions. */
  readonly taskDefinitions: Record<string, ecs.TaskDefinition>;
}

export function runnerTasks(
  stack: Stack,
  config: DeployConfig,
  vpc: ec2.IVpc,
  retention: logs.RetentionDays,
  table: dynamodb.ITable,
): Runners {
  const cluster = new ecs.Cluster(stack, 'Cluster', {
    vpc,
    enableFargateCapacityProviders: true,
    containerInsightsV2: ecs.ContainerInsights.ENABLED,
  });
  const logGroup = new logs.LogGroup(stack, 'RunnerLogs', {
    retention,
    removalPolicy: RemovalPolicy.DESTROY,
  });
  // The runner task role has no kms:Decrypt of its own (contract D): `issue-token` grants Decrypt to
  // this role per job, constrained to that job's encryption context, and `cleanup`/`finalize`
  // revoke the grant. A task can open its own job's data key and no other, and only while the job lives.
  const taskRole = new iam.Role(stack, 'RunnerTaskRole', {
    assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
    description: "tasuki runner task: puts its own usage item; a per-job KMS grant opens that job's credential",
  });
  allowUsageItem(taskRole, table);
  const executionRole = new iam.Role(stack, 'RunnerExecutionRole', {
    assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
    description: 'tasuki runner tasks: pull the image, write logs',
  });
  const image = containerImage(stack, config.runner.image, executionRole);

  // Task-definition environment of the runner container (contract D): tasuki-boot calls KMS and must
  // know the region without instance metadata; it gives a running job this long after SIGTERM before
  // stopping the runner (below stopTimeout, so the runner still gets to deregister).
  // At exit it stores the task's CPU and memory use in the lifecycle table (TASUKI_TABLE), kept as
  // long as the job's own items (retention_days).
  const environment = {
    AWS_REGION: stack.region,
    TASUKI_STOP_GRACE_SECONDS: String(config.runner.stop_grace_seconds ?? DEFAULT_STOP_GRACE_SECONDS),
    TASUKI_TABLE: table.tableName,
    TASUKI_RETENTION_DAYS: String(config.retention_days),
  };
  const taskDefinitions: Record<string, ecs.TaskDefinition> = {};
  for (const arch of ['x64', 'arm64'] as const) {
    // One task definition per arch; the size (cpu/memory) is set per task by `run-task` through
    // RunTask's task-level overrides, so sizes and aliases need no task definition each. The values
    // here are the smallest size, used only if a task were started without overrides.
    const td = new ecs.FargateTaskDefinition(stack, `RunnerTask${pascal(arch)}`, {
      family: `${stack.stackName}-runner-${arch}`,
      cpu: 1024,
      memoryLimitMiB: 2048,
      runtimePlatform: {
        cpuArchitecture: arch === 'x64' ? ecs.CpuArchitecture.X86_64 : ecs.CpuArchitecture.ARM64,
        operatingSystemFamily: ecs.OperatingSystemFamily.LINUX,
      },
      taskRole,
      executionRole,
    });
    td.addContainer(RUNNER_CONTAINER, {
      containerName: RUNNER_CONTAINER,
      image,
      essential: true,
      // Fargate Spot gives 2 minutes after SIGTERM; let the runner finish its step or deregister.
      stopTimeout: Duration.seconds(RUNNER_STOP_TIMEOUT_SECONDS),
      environment,
      logging: ecs.LogDrivers.awsLogs({ logGroup, streamPrefix: arch }),
    });
    Validations.of(td).acknowledge({
      id: 'AwsSolutions-ECS2',
      reason:
        'The only environment values are AWS_REGION, TASUKI_STOP_GRACE_SECONDS, TASUKI_TABLE (a table name) and TASUKI_RETENTION_DAYS: no secret. The job credential comes sealed (KMS envelope) in RunTask overrides.',
    });
    taskDefinitions[arch] = td;
  }
  return { cluster, logGroup, taskRole, executionRole, image, environment, taskDefinitions };
}

/**
 * `dynamodb:PutItem` on the lifecycle table for the usage item only, as narrowly as IAM can say it:
 * - `dynamodb:Attributes` (ForAllValues): the item may carry the usage item's attributes and no
 *   other, so no job item (state, version, task token, …) or event item can be written whole;
 * - `dynamodb:LeadingKeys` (ForAllValues:StringLike `USAGE#*`): only in the usage items' own
 *   partitions (`USAGE#<job id>`), never a job's (`JOB#`) or a `RERUN#` mark: no job or event item
 *   can be touched, whatever the item. (No condition key reads the sort key; the partition is what
 *   confines it.) `tasuki-boot` writes with `attribute_not_exists(pk)`, which IAM cannot demand: a
 *   holder of these credentials could overwrite usage figures, nothing else;
 * - `dynamodb:ReturnValues` NONE: a put returns no earlier item.
 * Who holds these credentials: only `tasuki-boot`. It removes the container-credential and task
 * metadata variables from the runner's environment (NOT_FOR_THE_RUNNER, runner-image/boot/src/plan.rs),
 * so a job's AWS SDK does not find them; a job that sets out to (root through the runner image's
 * sudo) can still reach them: the same limit as the job's KMS grant (runner-image/README.md).
 */
function allowUsageItem(taskRole: iam.Role, table: dynamodb.ITable): void {
  taskRole.addToPolicy(
    new iam.PolicyStatement({
      sid: 'PutUsageItemOnly',
      actions: ['dynamodb:PutItem'],
      resources: [table.tableArn],
      conditions: {
        'ForAllValues:StringEquals': { 'dynamodb:Attributes': USAGE_ITEM_ATTRIBUTES },
        'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['USAGE#*'] },
        StringEqualsIfExists: { 'dynamodb:ReturnValues': 'NONE' },
      },
    }),
  );
}

/** A registry image by name; an ECR image through its repository, so the execution role may pull it. */
export function containerImage(scope: Construct, image: string, executionRole: iam.IRole): ecs.ContainerImage {
  const m = /^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?\/([^:@]+)(?::([^@]+))?(?:@(sha256:[0-9a-f]+))?$/.exec(image);
  if (!m) return ecs.ContainerImage.fromRegistry(image);
  const [, account, region, name, tag, digest] = m;
  Validations.of(executionRole).acknowledge({
    id: 'AwsSolutions-IAM5[Resource::*]',
    reason: 'Pulling a private ECR image needs ecr:GetAuthorizationToken, which supports no resource-level permission; the pull itself is granted on the one repository.',
  });
  const repository = ecr.Repository.fromRepositoryAttributes(scope, 'RunnerImageRepository', {
    repositoryName: name,
    repositoryArn: Stack.of(scope).formatArn({ service: 'ecr', account, region, resource: 'repository', resourceName: name }),
  });
  return ecs.ContainerImage.fromEcrRepository(repository, digest ?? tag ?? 'latest');
}

/** `arn:…:ecs:<region>:<account>:<resource>/<cluster>/*`: the cluster's tasks or container instances (ids not known in advance). */
export function clusterScopedArn(cluster: ecs.ICluster, resource: 'task' | 'container-instance'): string {
  return Stack.of(cluster).formatArn({
    service: 'ecs',
    resource,
    resourceName: `${cluster.clusterName}/*`,
    arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
  });
}

/** How cdk-nag names `clusterScopedArn(cluster, resource)` in a finding id. */
export function nagClusterScopedArn(cluster: ecs.Cluster, resource: 'task' | 'container-instance'): string {
  const id = Stack.of(cluster).getLogicalId(cluster.node.defaultChild as ecs.CfnCluster);
  return `arn:<AWS::Partition>:ecs:<AWS::Region>:<AWS::AccountId>:${resource}/<${id}>/*`;
}
