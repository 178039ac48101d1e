// The whole of tasuki as one stack: webhook Function URL → Step Functions (one execution per queued
// job) → step Lambdas → ECS tasks on Fargate / Fargate Spot / EC2 Spot, with the lifecycle in
// DynamoDB, runner credentials sealed with KMS and ECS task stops routed back through EventBridge.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { Annotations, ArnFormat, Aws, CfnOutput, Duration, RemovalPolicy, Stack, StackProps, Validations } from 'aws-cdk-lib';
import * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { type Arch, type DeployConfig, LOG_RETENTION_DAYS } from './config';
import { BINS, Bin, FunctionFactory, REPO_ROOT, TIMEOUTS, pascal, substitutionVariable } from './lambdas';

/** The ASL the local stack runs too: the single source of the lifecycle graph. */
export const ASL_PATH = path.join(REPO_ROOT, 'statemachines', 'runner-job.asl.json');

/** The runner container's name; `run-task` overrides its environment (docs/contracts.md). */
export const RUNNER_CONTAINER = 'runner';

/** The encryption context key every sealed JIT config carries (`{"tasuki:job-id": "<job_id>"}`). */
export const JOB_CONTEXT_KEY = 'tasuki:job-id';

/**
 * The runner's home in the official image (`ghcr.io/actions/actions-runner`): `run.sh`, `bin/`,
 * `externals/`, the work directory `_work/`. In the docker variant this whole tree is one task volume
 * shared with the dockerd sidecar at the same path (see `dindTaskDefinition`).
 */
export const RUNNER_HOME = '/home/runner';
/** Where the runner works (`<RUNNER_HOME>/_work`): job containers get it bind-mounted by the daemon. */
export const RUNNER_WORK_DIR = `${RUNNER_HOME}/_work`;
/** The runner's node & co.; the daemon mounts it into job containers (`container:`) for JavaScript actions. */
export const RUNNER_EXTERNALS_DIR = `${RUNNER_HOME}/externals`;

/** The Docker daemon of `docker` jobs, from ECR Public's mirror of Docker's official image (no Docker Hub pull limits). */
export const DIND_IMAGE = 'public.ecr.aws/docker/library/docker:28-dind';
/** How the runner container reaches the daemon: loopback TCP in the task's own network namespace. */
export const DOCKER_HOST = 'tcp://127.0.0.1:2375';
/** Where the daemon also listens, in its own container: what job containers get bind-mounted. */
export const DOCKER_SOCKET = '/var/run/docker.sock';

/** Seconds a running job gets after SIGTERM when the file does not say (contract D; Fargate stops at 120 s). */
export const DEFAULT_STOP_GRACE_SECONDS = 100;
/** Fargate's maximum `stopTimeout`: the runner container is SIGKILLed this long after SIGTERM. */
export const RUNNER_STOP_TIMEOUT_SECONDS = 120;

/**
 * ASL substitution variables that are not Lambda ARNs (contract C): every Task's `Resource` is
 * `arn:${Partition}:states:::lambda:invoke`, so the state machine works in aws-cn and aws-us-gov too.
 */
/** The synth warning for an imported VPC not said to have an S3 gateway endpoint. */
export const NAT_TOLL_WARNING = 'tasuki:natToll';
export const NAT_TOLL_MESSAGE =
  'network.vpc.import: without an S3 gateway endpoint in this VPC, every runner image pull goes through the NAT gateway, ' +
  'which charges data processing (about $0.045/GB in us-east-1, https://aws.amazon.com/vpc/pricing/): about $0.02 per job for the ' +
  '~0.5 GB compressed official runner image. Add an S3 gateway endpoint (free) to the route tables of the runner subnets, keep the ' +
  'image in ECR in this region (ECR serves layers from S3), and set "s3_gateway_endpoint": true.';

export const ASL_NON_LAMBDA_SUBSTITUTIONS: Record<string, string> = { Partition: Aws.PARTITION };

export interface TasukiStackProps extends StackProps {
  /** The validated deployment file. */
  readonly config: DeployConfig;
  /** Makes each Lambda: `rustFunctions()` for deploys, `placeholderFunctions()` for tests. */
  readonly functions: FunctionFactory;
  /**
   * Reserved concurrency of the webhook: a public URL's guard against floods (every request is
   * HMAC-checked, but still costs an invocation). 0 reserves none. A new account's whole Lambda
   * concurrency quota can be 10, and Lambda refuses a reservation that leaves fewer than 100
   * unreserved (https://docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html), so any
   * reservation would fail the first deploy there: opt in once the quota is raised.
   * @default 0 (none)
   */
  readonly webhookReservedConcurrency?: number;
}

/** Which Lambdas touch what; the IAM below is built from this table and nothing else. */
interface Needs {
  /** DynamoDB actions on the table (TransactWriteItems of Puts needs `PutItem`). */
  table?: string[];
  /** `states:` actions on the state machine. */
  states?: string[];
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
  finalize: { table: [...TRANSITION, 'dynamodb:UpdateItem', 'dynamodb:Query'], appKey: true, stopTask: true, revokeGrant: true },
  // signal, deliver
  'ecs-events': { table: ['dynamodb:GetItem', 'dynamodb:UpdateItem'], states: CALLBACK },
};

export class TasukiStack extends Stack {
  readonly table: dynamodb.Table;
  readonly runnerKey: kms.Key;
  readonly cluster: ecs.Cluster;
  readonly stateMachine: sfn.StateMachine;
  readonly stateMachineArn: string;
  readonly functions: Record<Bin, lambda.Function>;
  readonly webhookUrl: lambda.FunctionUrl;
  /** The runtime config every Lambda reads from `TASUKI_CONFIG` (tokens resolve at deploy). */
  readonly runtimeConfig: Record<string, unknown>;

  constructor(scope: Construct, id: string, props: TasukiStackProps) {
    super(scope, id, {
      description: 'tasuki: ephemeral GitHub Actions runners on ECS (Fargate, Fargate Spot, EC2 Spot)',
      ...props,
    });
    const config = props.config;
    const retention = logRetention(config.log_retention_days);

    // ---- Lifecycle table (docs/contracts.md) ------------------------------------------------------
    // Encryption: AWS-managed key (aws/dynamodb). The table holds job metadata and Step Functions task
    // tokens, never a credential (JIT configs travel only as KMS ciphertext and are not stored); a
    // task token is only usable by a principal allowed states:SendTask*. The AWS-managed key gives
    // KMS-backed encryption with every use in CloudTrail, with no key policy to maintain and no
    // per-request KMS cost of a customer-managed key.
    this.table = new dynamodb.Table(this, 'Jobs', {
      partitionKey: { name: 'pk', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'sk', type: dynamodb.AttributeType.STRING },
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      encryption: dynamodb.TableEncryption.AWS_MANAGED,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      timeToLiveAttribute: 'expires_at',
      deletionProtection: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    this.table.addGlobalSecondaryIndex({
      indexName: 'by-state-deadline',
      partitionKey: { name: 'gsi_state', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'deadline', type: dynamodb.AttributeType.NUMBER },
      projectionType: dynamodb.ProjectionType.ALL,
    });

    // ---- Runner credentials: KMS ------------------------------------------------------------------
    this.runnerKey = new kms.Key(this, 'RunnerKey', {
      description: 'tasuki: seals each runner JIT config (encryption context tasuki:job-id)',
      enableKeyRotation: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });

    // ---- GitHub App secrets: created by the user, referenced by name ------------------------------
    // The Lambdas get the NAME (contract A: `*_secret_id`), which GetSecretValue resolves to the
    // secret whatever its random suffix. Never the partial ARN CDK formats from a name
    // (`…:secret:tasuki/webhook-secret`): Secrets Manager reads an ARN whose name ends in a hyphen and
    // six characters (`-secret`) as a complete ARN with that suffix, and answers
    // ResourceNotFoundException (GetSecretValue's SecretId: https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_GetSecretValue.html).
    // IAM, which matches ARNs, gets `<partial ARN>-??????` below.
    // A complete ARN (validateDeployConfig refuses a partial one) is passed on and granted as it is.
    const appKey = secretReference(this, 'GitHubAppPrivateKey', config.github.private_key_secret_name);
    const webhookSecret = secretReference(this, 'WebhookSecret', config.github.webhook_secret_name);

    // ---- Network ----------------------------------------------------------------------------------
    const { vpc, subnets } = this.network(config);
    const runnerSecurityGroup = new ec2.SecurityGroup(this, 'RunnerSecurityGroup', {
      vpc,
      description: 'tasuki runner tasks: no inbound; outbound to GitHub, registries and whatever jobs fetch',
      allowAllOutbound: true,
    });

    // ---- ECS --------------------------------------------------------------------------------------
    this.cluster = new ecs.Cluster(this, 'Cluster', {
      vpc,
      enableFargateCapacityProviders: true,
      containerInsightsV2: ecs.ContainerInsights.ENABLED,
    });
    const runnerLogs = new logs.LogGroup(this, 'RunnerLogs', {
      retention,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    // The runner task role has no kms:Decrypt of its own (contract D): `issue-token` grants Decrypt to
    // this role per job, constrained to that job's encryption context, and `cleanup`/`finalize`
    // revoke the grant. A task can open its own job's data key and no other, and only while the job lives.
    const taskRole = new iam.Role(this, 'RunnerTaskRole', {
      assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
      description: "tasuki runner task: no standing permission; a per-job KMS grant opens that job's credential",
    });
    const executionRole = new iam.Role(this, 'RunnerExecutionRole', {
      assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
      description: 'tasuki runner tasks: pull the image, write logs',
    });
    const runnerImage = containerImage(this, config.runner.image, executionRole);

    // Task-definition environment of the runner container (contract D): tasuki-boot calls KMS and must
    // know the region without instance metadata; it gives a running job this long after SIGTERM before
    // stopping the runner (below stopTimeout, so the runner still gets to deregister).
    const runnerEnvironment = {
      AWS_REGION: this.region,
      TASUKI_STOP_GRACE_SECONDS: String(config.runner.stop_grace_seconds ?? DEFAULT_STOP_GRACE_SECONDS),
    };
    const taskDefinitions: Record<string, ecs.TaskDefinition> = {};
    for (const arch of ['x64', 'arm64'] as const) {
      // One task definition per arch; the size (cpu/memory) is set per task by `run-task` through
      // RunTask's task-level overrides, so sizes and aliases need no task definition each. The values
      // here are the smallest size, used only if a task were started without overrides.
      const td = new ecs.FargateTaskDefinition(this, `RunnerTask${pascal(arch)}`, {
        family: `${this.stackName}-runner-${arch}`,
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
        image: runnerImage,
        essential: true,
        // Fargate Spot gives 2 minutes after SIGTERM; let the runner finish its step or deregister.
        stopTimeout: Duration.seconds(RUNNER_STOP_TIMEOUT_SECONDS),
        environment: runnerEnvironment,
        logging: ecs.LogDrivers.awsLogs({ logGroup: runnerLogs, streamPrefix: arch }),
      });
      Validations.of(td).acknowledge({
        id: 'AwsSolutions-ECS2',
        reason:
          'The only environment values are AWS_REGION and TASUKI_STOP_GRACE_SECONDS: no secret. The job credential comes sealed (KMS envelope) in RunTask overrides.',
      });
      taskDefinitions[arch] = td;
    }

    // EC2 Spot capacity for `docker` jobs: privileged dind only here (Fargate cannot run privileged).
    const ec2Providers: Partial<Record<Arch, ecs.AsgCapacityProvider>> = {};
    if (config.ec2) {
      const instanceSecurityGroup = new ec2.SecurityGroup(this, 'Ec2InstanceSecurityGroup', {
        vpc,
        description: 'tasuki EC2 container instances: no inbound',
        allowAllOutbound: true,
      });
      for (const arch of ['x64', 'arm64'] as const) {
        const types = config.ec2.instance_types[arch];
        if (!types || types.length === 0) continue;
        ec2Providers[arch] = this.ec2Capacity(arch, types, config.ec2.max_instances, vpc, subnets, instanceSecurityGroup);
        taskDefinitions[`${arch}_docker`] = this.dindTaskDefinition(arch, runnerImage, runnerLogs, taskRole, executionRole, runnerEnvironment);
      }
    }
    const passRoles = [taskRole, executionRole];

    // ---- The state machine's ARN, known before it exists ------------------------------------------
    // Step Lambdas need it in their config and IAM, and the state machine needs their ARNs: a fixed
    // name and a formatted ARN (no reference to the resource) avoid the cycle.
    const stateMachineName = `${this.stackName}-runner-job`;
    this.stateMachineArn = this.formatArn({
      service: 'states',
      resource: 'stateMachine',
      resourceName: stateMachineName,
      arnFormat: ArnFormat.COLON_RESOURCE_NAME,
    });

    // ---- Runtime config (tasuki_core::domain::config::Config) -------------------------------------
    this.runtimeConfig = {
      table_name: this.table.tableName,
      state_machine_arn: this.stateMachineArn,
      github: {
        api_url: config.github.api_url,
        app_id: config.github.app_id,
        private_key_secret_id: appKey.secretId,
        webhook_secret_id: webhookSecret.secretId,
      },
      access: config.access,
      runner: {
        group_id: config.runner.group_id,
        kms_key_id: this.runnerKey.keyArn,
        task_role_arn: taskRole.roleArn,
        extra_labels: config.runner.extra_labels,
      },
      sizes: config.sizes,
      capacity_order: config.capacity_order,
      network: {
        subnets: Object.fromEntries(subnets.map((s) => [s.availabilityZone, s.subnetId])),
        security_groups: [runnerSecurityGroup.securityGroupId],
        security_group_allowlist: config.network.security_group_allowlist,
      },
      ecs: {
        cluster: this.cluster.clusterName,
        container_name: RUNNER_CONTAINER,
        // Full ARNs with revision: exactly what run-task's IAM allows.
        task_definitions: Object.fromEntries(Object.entries(taskDefinitions).map(([k, td]) => [k, td.taskDefinitionArn])),
        ec2_capacity_providers: Object.fromEntries(
          Object.entries(ec2Providers).map(([arch, cp]) => [arch, cp.capacityProviderName]),
        ),
      },
      timeouts: config.timeouts,
      retention_days: config.retention_days,
    };
    const configJson = this.toJsonString(this.runtimeConfig);

    // ---- Lambdas ----------------------------------------------------------------------------------
    const fns: Partial<Record<Bin, lambda.Function>> = {};
    for (const bin of BINS) {
      const needs = NEEDS[bin];
      const id = pascal(bin);
      const logGroup = new logs.LogGroup(this, `${id}Logs`, { retention, removalPolicy: RemovalPolicy.DESTROY });
      const statements: iam.PolicyStatement[] = [
        new iam.PolicyStatement({
          sid: 'OwnLogs',
          actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
          resources: [logGroup.logGroupArn],
        }),
      ];
      if (needs.table) {
        statements.push(new iam.PolicyStatement({ sid: 'Lifecycle', actions: needs.table, resources: [this.table.tableArn] }));
      }
      if (needs.states) {
        statements.push(new iam.PolicyStatement({ sid: 'Execution', actions: needs.states, resources: [this.stateMachineArn] }));
      }
      const secrets = [...(needs.appKey ? [appKey] : []), ...(needs.webhookSecret ? [webhookSecret] : [])];
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
            resources: [this.runnerKey.keyArn],
            conditions: jobContextConditions(),
          }),
          // The per-job grant: only to the runner task role, only Decrypt, only under an
          // EncryptionContextEquals constraint (the job's id; the request sets the value)
          // (https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html#conditions-kms-grantee-principal,
          // …#conditions-kms-grant-operations, …#conditions-kms-grant-constraint-type).
          new iam.PolicyStatement({
            sid: 'GrantJobCredential',
            actions: ['kms:CreateGrant'],
            resources: [this.runnerKey.keyArn],
            conditions: {
              StringEquals: {
                'kms:GranteePrincipal': taskRole.roleArn,
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
            resources: Object.values(taskDefinitions).map((td) => td.taskDefinitionArn),
            conditions: { ArnEquals: { 'ecs:cluster': this.cluster.clusterArn } },
          }),
          // RunTask's tags (per-job cost allocation) need TagResource, only as part of RunTask.
          new iam.PolicyStatement({
            sid: 'TagRunnerTask',
            actions: ['ecs:TagResource'],
            resources: [this.clusterTasksArn()],
            conditions: { StringEquals: { 'ecs:CreateAction': 'RunTask' } },
          }),
          new iam.PolicyStatement({
            sid: 'PassRunnerRoles',
            actions: ['iam:PassRole'],
            resources: passRoles.map((r) => r.roleArn),
            conditions: { StringEquals: { 'iam:PassedToService': 'ecs-tasks.amazonaws.com' } },
          }),
        );
      }
      if (needs.stopTask) {
        statements.push(
          new iam.PolicyStatement({
            sid: 'StopRunnerTask',
            actions: ['ecs:StopTask'],
            resources: [this.clusterTasksArn()],
            conditions: { ArnEquals: { 'ecs:cluster': this.cluster.clusterArn } },
          }),
        );
      }
      if (needs.revokeGrant) {
        statements.push(
          new iam.PolicyStatement({
            sid: 'RevokeJobCredential',
            actions: ['kms:RevokeGrant'],
            resources: [this.runnerKey.keyArn],
          }),
        );
      }
      const role = new iam.Role(this, `${id}Role`, {
        assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
        description: `tasuki ${bin} Lambda`,
        inlinePolicies: { tasuki: new iam.PolicyDocument({ statements }) },
      });
      fns[bin] = props.functions(this, `${id}Function`, bin, {
        description: `tasuki ${bin}`,
        architecture: lambda.Architecture.ARM_64,
        memorySize: 128,
        timeout: TIMEOUTS[bin],
        role,
        logGroup,
        environment: { TASUKI_CONFIG: configJson },
        reservedConcurrentExecutions:
          bin === 'webhook' && (props.webhookReservedConcurrency ?? 0) > 0 ? props.webhookReservedConcurrency : undefined,
      });
      if (needs.runTask || needs.stopTask) {
        Validations.of(role).acknowledge({
          id: `AwsSolutions-IAM5[Resource::${this.nagArn('task')}]`,
          reason:
            'Task ids are not known in advance: ' +
            (needs.runTask ? 'ecs:TagResource, only as part of RunTask (ecs:CreateAction condition)' : 'ecs:StopTask') +
            " on this cluster's tasks (arn:…:task/<cluster>/*).",
        });
      }
    }
    this.functions = fns as Record<Bin, lambda.Function>;

    // ---- Webhook: public Function URL, HMAC checked in the handler ---------------------------------
    this.webhookUrl = this.functions.webhook.addFunctionUrl({ authType: lambda.FunctionUrlAuthType.NONE });

    // ---- State machine ----------------------------------------------------------------------------
    const substitutions = aslSubstitutions(this.functions);
    const stepFunctionArns = Object.entries(substitutions)
      .filter(([variable]) => !(variable in ASL_NON_LAMBDA_SUBSTITUTIONS))
      .map(([, arn]) => arn);
    const stateMachineLogs = new logs.LogGroup(this, 'StateMachineLogs', {
      // The vendedlogs prefix keeps the account's CloudWatch Logs resource policy small.
      logGroupName: `/aws/vendedlogs/states/${stateMachineName}`,
      retention,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.stateMachine = new sfn.StateMachine(this, 'RunnerJob', {
      stateMachineName,
      stateMachineType: sfn.StateMachineType.STANDARD,
      definitionBody: sfn.DefinitionBody.fromFile(ASL_PATH),
      definitionSubstitutions: substitutions,
      // Execution data (job payloads, task tokens) stays out of the logs.
      logs: { destination: stateMachineLogs, level: sfn.LogLevel.ALL, includeExecutionData: false },
      tracingEnabled: true,
    });
    this.stateMachine.addToRolePolicy(
      new iam.PolicyStatement({
        sid: 'InvokeSteps',
        actions: ['lambda:InvokeFunction'],
        resources: stepFunctionArns,
      }),
    );

    // ---- ECS task stops → ecs-events --------------------------------------------------------------
    new events.Rule(this, 'TaskStopped', {
      description: 'tasuki: runner tasks that stopped, so a waiting execution learns why',
      eventPattern: {
        source: ['aws.ecs'],
        detailType: ['ECS Task State Change'],
        detail: { clusterArn: [this.cluster.clusterArn], lastStatus: ['STOPPED'] },
      },
      targets: [
        new targets.LambdaFunction(this.functions['ecs-events'], {
          retryAttempts: 8,
          maxEventAge: Duration.hours(1),
        }),
      ],
    });

    // ---- Outputs ----------------------------------------------------------------------------------
    new CfnOutput(this, 'WebhookUrl', {
      description: "The GitHub App's webhook URL",
      value: this.webhookUrl.url,
    });
    new CfnOutput(this, 'StateMachineArn', { value: this.stateMachineArn });
    new CfnOutput(this, 'ExecutionConsoleUrlPattern', {
      description: "A job's execution in the console: replace <job_id>-<run_attempt>",
      value:
        `https://${this.region}.console.aws.amazon.com/states/home?region=${this.region}` +
        `#/v2/executions/details/${this.formatArn({
          service: 'states',
          resource: 'execution',
          resourceName: `${stateMachineName}:<job_id>-<run_attempt>`,
          arnFormat: ArnFormat.COLON_RESOURCE_NAME,
        })}`,
    });
    new CfnOutput(this, 'TableName', { description: 'TASUKI_TABLE for `tasuki jobs ls|show`', value: this.table.tableName });
    new CfnOutput(this, 'ClusterName', { value: this.cluster.clusterName });
    new CfnOutput(this, 'RunnerLogGroup', { value: runnerLogs.logGroupName });

    Validations.of(this.stateMachine).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason:
        'CloudWatch Logs delivery and X-Ray actions support no resource-level permissions (CDK grants them on "*"); ' +
        "lambda:InvokeFunction is on the step functions' unqualified ARNs only.",
    });
  }

  /** How cdk-nag names `arn:…:ecs:…:<resource>/<cluster>/*` in a finding id. */
  private nagArn(resource: string): string {
    const cluster = this.getLogicalId(this.cluster.node.defaultChild as ecs.CfnCluster);
    return `arn:<AWS::Partition>:ecs:<AWS::Region>:<AWS::AccountId>:${resource}/<${cluster}>/*`;
  }

  /** `arn:…:ecs:<region>:<account>:task/<cluster>/*`: the cluster's tasks (their ids are not known in advance). */
  private clusterTasksArn(): string {
    return this.formatArn({
      service: 'ecs',
      resource: 'task',
      resourceName: `${this.cluster.clusterName}/*`,
      arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
    });
  }

  private network(config: DeployConfig): { vpc: ec2.IVpc; subnets: ec2.ISubnet[] } {
    const choice = config.network.vpc;
    if ('create' in choice) {
      // An environment-agnostic stack sees two AZs (`Fn::GetAZs` picked by index), so above two the
      // zones must be named; validateDeployConfig refuses max_azs > 2 without them. CDK takes
      // `availabilityZones` or `maxAzs`, not both.
      const zones = choice.create.availability_zones ?? [];
      const azCount = zones.length > 0 ? zones.length : choice.create.max_azs;
      if (zones.length === 0 && azCount > 2) {
        throw new Error(`network.vpc.create.max_azs ${azCount} needs network.vpc.create.availability_zones (an environment-agnostic stack sees only 2 zones)`);
      }
      const vpc = new ec2.Vpc(this, 'Vpc', {
        ...(zones.length > 0 ? { availabilityZones: zones } : { maxAzs: azCount }),
        // A NAT gateway per AZ: a candidate in another AZ is the fallback when one AZ has no capacity
        // or fails, so each AZ keeps its own way out.
        natGateways: azCount,
        subnetConfiguration: [
          { name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 },
          { name: 'runners', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 20 },
        ],
        // No NAT toll per job: ECR serves image layers from S3, so with an S3 gateway endpoint (free)
        // a pull from ECR in this region pays NAT data processing only for the small manifest and
        // token calls (https://docs.aws.amazon.com/AmazonECR/latest/userguide/vpc-endpoints.html,
        // "Create the Amazon S3 gateway endpoint"). ECR's own interface endpoints (ecr.api, ecr.dkr)
        // are left out on purpose: they are billed per AZ-hour (about $0.01 each, so ~$29/month for
        // two endpoints in two AZs, https://aws.amazon.com/privatelink/pricing/) to save the NAT
        // processing of a few KB of API calls per pull — the gigabytes come from S3.
        gatewayEndpoints: {
          S3: { service: ec2.GatewayVpcEndpointAwsService.S3, subnets: [{ subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS }] },
        },
      });
      const flowLogs = new logs.LogGroup(this, 'VpcFlowLogs', {
        retention: logRetention(config.log_retention_days),
        removalPolicy: RemovalPolicy.DESTROY,
      });
      vpc.addFlowLog('FlowLog', {
        destination: ec2.FlowLogDestination.toCloudWatchLogs(flowLogs),
        trafficType: ec2.FlowLogTrafficType.REJECT,
      });
      return { vpc, subnets: vpc.privateSubnets };
    }
    const entries = Object.entries(choice.import.subnets).sort(([a], [b]) => a.localeCompare(b));
    const vpc = ec2.Vpc.fromVpcAttributes(this, 'Vpc', {
      vpcId: choice.import.vpc_id,
      availabilityZones: entries.map(([az]) => az),
      privateSubnetIds: entries.map(([, id]) => id),
    });
    const subnets = entries.map(([az, subnetId], i) =>
      ec2.Subnet.fromSubnetAttributes(this, `Subnet${i}`, { subnetId, availabilityZone: az }),
    );
    Validations.of(this).acknowledge({
      id: 'annotation::@aws-cdk/aws-ec2:noSubnetRouteTableId',
      reason: "Imported subnets: tasuki never reads their route tables (it only launches tasks and instances in them).",
    });
    if (!choice.import.s3_gateway_endpoint) {
      Annotations.of(this).addWarningV2(NAT_TOLL_WARNING, NAT_TOLL_MESSAGE);
    }
    return { vpc, subnets };
  }

  /**
   * An EC2 Spot Auto Scaling group and its capacity provider for one arch. The ECS agent's IAM is
   * written here rather than by `Cluster.addAsgCapacityProvider`, whose policy grants logs and
   * ECR on `*`: tasks log and pull through their execution role.
   */
  private ec2Capacity(
    arch: Arch,
    instanceTypes: string[],
    maxInstances: number,
    vpc: ec2.IVpc,
    subnets: ec2.ISubnet[],
    securityGroup: ec2.ISecurityGroup,
  ): ecs.AsgCapacityProvider {
    const id = `Ec2${pascal(arch)}`;
    const instanceRole = new iam.Role(this, `${id}InstanceRole`, {
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      description: `tasuki ${arch} ECS container instances: the ECS agent only`,
    });
    const containerInstances = this.formatArn({
      service: 'ecs',
      resource: 'container-instance',
      resourceName: `${this.cluster.clusterName}/*`,
      arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
    });
    const onCluster = { ArnEquals: { 'ecs:cluster': this.cluster.clusterArn } };
    instanceRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'AgentRegisters',
        actions: [
          'ecs:RegisterContainerInstance',
          'ecs:DeregisterContainerInstance',
          'ecs:SubmitContainerStateChange',
          'ecs:SubmitTaskStateChange',
          'ecs:SubmitAttachmentStateChanges',
        ],
        resources: [this.cluster.clusterArn],
      }),
    );
    instanceRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'AgentPolls',
        actions: ['ecs:Poll', 'ecs:StartTelemetrySession', 'ecs:PutSystemLogEvents', 'ecs:UpdateContainerInstancesState'],
        resources: [containerInstances],
        conditions: onCluster,
      }),
    );
    instanceRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'AgentDiscovers',
        // DiscoverPollEndpoint has no resource type: it can only be granted on "*".
        actions: ['ecs:DiscoverPollEndpoint'],
        resources: ['*'],
      }),
    );
    Validations.of(instanceRole).acknowledge(
      {
        id: `AwsSolutions-IAM5[Resource::${this.nagArn('container-instance')}]`,
        reason:
          'The ECS agent polls as container instances whose ids are not known in advance: scoped to this ' +
          "cluster's container instances by ARN and the ecs:cluster condition.",
      },
      {
        id: 'AwsSolutions-IAM5[Resource::*]',
        reason: 'ecs:DiscoverPollEndpoint (the only action on "*") supports no resource-level permission.',
      },
    );
    const userData = ec2.UserData.forLinux();
    userData.addCommands(
      // Tasks (awsvpc) cannot reach the instance metadata service, so not the instance role either.
      'echo ECS_AWSVPC_BLOCK_IMDS=true >> /etc/ecs/ecs.config',
      'echo ECS_ENABLE_SPOT_INSTANCE_DRAINING=true >> /etc/ecs/ecs.config',
      'echo ECS_ENABLE_TASK_IAM_ROLE=true >> /etc/ecs/ecs.config',
    );
    const launchTemplate = new ec2.LaunchTemplate(this, `${id}LaunchTemplate`, {
      machineImage: ecs.EcsOptimizedImage.amazonLinux2023(arch === 'x64' ? ecs.AmiHardwareType.STANDARD : ecs.AmiHardwareType.ARM),
      // The role's policies are managed here; the immutable view stops CDK's defaults being added.
      role: instanceRole.withoutPolicyUpdates(),
      securityGroup,
      userData,
      requireImdsv2: true,
      httpPutResponseHopLimit: 1,
      blockDevices: [
        {
          deviceName: '/dev/xvda',
          volume: ec2.BlockDeviceVolume.ebs(100, { encrypted: true, volumeType: ec2.EbsDeviceVolumeType.GP3 }),
        },
      ],
    });
    const asg = new autoscaling.AutoScalingGroup(this, `${id}Instances`, {
      vpc,
      vpcSubnets: { subnets },
      minCapacity: 0,
      maxCapacity: maxInstances,
      mixedInstancesPolicy: {
        launchTemplate,
        launchTemplateOverrides: instanceTypes.map((t) => ({ instanceType: new ec2.InstanceType(t) })),
        instancesDistribution: {
          onDemandBaseCapacity: 0,
          onDemandPercentageAboveBaseCapacity: 0,
          spotAllocationStrategy: autoscaling.SpotAllocationStrategy.PRICE_CAPACITY_OPTIMIZED,
        },
      },
      capacityRebalance: true,
    });
    Validations.of(asg).acknowledge(
      {
        id: 'AwsSolutions-AS3',
        reason:
          'The ECS capacity provider scales this group; job-level outcomes (a task that could not be placed, a ' +
          'Spot interruption) are recorded per job in the lifecycle table, not as ASG notifications.',
      },
      {
        // cdk-nag cannot follow the mixed instances policy to the launch template (the rule errors).
      id: 'AwsSolutions-EC26',
        reason: "The launch template's only block device is an encrypted gp3 volume (asserted by infra/test).",
      },
    );
    const provider = new ecs.AsgCapacityProvider(this, `${id}CapacityProvider`, {
      autoScalingGroup: asg,
      enableManagedScaling: true,
      enableManagedTerminationProtection: true,
      targetCapacityPercent: 100,
      machineImageType: ecs.MachineImageType.AMAZON_LINUX_2,
    });
    this.cluster.addAsgCapacityProvider(provider);
    return provider;
  }

  /**
   * The task definition of `docker` jobs on EC2: the runner container unprivileged, and a `dockerd`
   * sidecar — the only privileged container — that the runner reaches over loopback TCP (awsvpc: the
   * task's containers share one network namespace).
   *
   * The daemon resolves every bind mount the runner asks for in ITS OWN filesystem, so it must see the
   * runner's files at the paths the runner names:
   * - Job containers (`container:`) get `<root>/_work`, `<root>/externals` (node for JavaScript
   *   actions), `_temp`, `_actions`, `_tool` bind-mounted by host path (actions/runner
   *   src/Runner.Worker/ContainerOperationProvider.cs, StartContainerAsync), and
   *   `/var/run/docker.sock:/var/run/docker.sock` (src/Runner.Worker/Container/ContainerInfo.cs for job
   *   containers, src/Runner.Worker/Handlers/ContainerActionHandler.cs for container actions).
   * - A JIT runner older than GitHub's current release updates itself before taking a job (JIT runners
   *   cannot --disableupdate). The updater (src/Misc/layoutbin/update.sh.template) runs
   *   `mv <root>/bin <root>/bin.<old>`, `mv <root>/externals <root>/externals.<old>`, then symlinks
   *   `bin` and `externals` to the new `bin.<new>`/`externals.<new>` in the same root. Renaming a
   *   mount point fails (EBUSY), which is what a volume mounted at `externals` was: the update failed
   *   and the runner retried until the registration timeout. After an update `externals` is a symlink
   *   into the root, which the daemon must resolve to the new directory.
   * So the WHOLE runner root, /home/runner, is one task volume mounted read-write at /home/runner in
   * both containers: nothing under it is a mount point, the update renames within one filesystem, and
   * every path (symlinks included) means the same file in the runner and in the daemon.
   * actions-runner-controller's dind mode (charts/gha-runner-scale-set/templates/_helpers.tpl) shares
   * `_work` and a copy of `externals` (an init container copies it into an emptyDir) — a copy the
   * daemon keeps seeing at the old version after a self-update; sharing the root avoids that.
   *
   * The volume starts empty; Docker fills an empty named volume from the image of a container that
   * mounts it over existing content ("Populate a volume using a container",
   * https://docs.docker.com/engine/storage/volumes/), with the directory's owner and mode: the
   * runner's image has /home/runner (uid 1001), the dind image has no /home/runner, so whichever starts
   * first, the volume becomes the runner's home.
   *
   * The Docker socket: dockerd listens on `unix:///var/run/docker.sock` inside its own container as
   * well as on loopback TCP, so the `/var/run/docker.sock` bind mount of job containers and container
   * actions is the daemon's socket — as in actions-runner-controller's dind container
   * (`dockerd --host=unix:///var/run/docker.sock`). The runner itself keeps `DOCKER_HOST` on TCP and
   * needs no socket of its own.
   */
  private dindTaskDefinition(
    arch: Arch,
    image: ecs.ContainerImage,
    logGroup: logs.ILogGroup,
    taskRole: iam.IRole,
    executionRole: iam.IRole,
    runnerEnvironment: Record<string, string>,
  ): ecs.TaskDefinition {
    const td = new ecs.TaskDefinition(this, `RunnerTask${pascal(arch)}Docker`, {
      family: `${this.stackName}-runner-${arch}-docker`,
      compatibility: ecs.Compatibility.EC2,
      networkMode: ecs.NetworkMode.AWS_VPC,
      // Sized per task by RunTask overrides, as on Fargate.
      cpu: '1024',
      memoryMiB: '2048',
      taskRole,
      executionRole,
      placementConstraints: [
        ecs.PlacementConstraint.memberOf(`attribute:ecs.cpu-architecture == ${arch === 'x64' ? 'x86_64' : 'arm64'}`),
      ],
      volumes: [
        { name: 'runner-home', dockerVolumeConfiguration: { scope: ecs.Scope.TASK, driver: 'local' } },
        { name: 'docker', dockerVolumeConfiguration: { scope: ecs.Scope.TASK, driver: 'local' } },
      ],
    });
    const dockerd = td.addContainer('dockerd', {
      containerName: 'dockerd',
      image: ecs.ContainerImage.fromRegistry(DIND_IMAGE),
      privileged: true,
      essential: true,
      memoryReservationMiB: 256,
      // Plain TCP on loopback only (the task's ENI never exposes the daemon), and the Unix socket that
      // job containers get bind-mounted.
      command: ['dockerd', `--host=${DOCKER_HOST}`, `--host=unix://${DOCKER_SOCKET}`, '--tls=false'],
      environment: { DOCKER_TLS_CERTDIR: '' },
      healthCheck: {
        command: ['CMD', 'docker', '--host', DOCKER_HOST, 'info'],
        interval: Duration.seconds(5),
        retries: 12,
        startPeriod: Duration.seconds(5),
        timeout: Duration.seconds(5),
      },
      logging: ecs.LogDrivers.awsLogs({ logGroup, streamPrefix: `${arch}-dockerd` }),
    });
    dockerd.addMountPoints(
      { containerPath: '/var/lib/docker', sourceVolume: 'docker', readOnly: false },
      { containerPath: RUNNER_HOME, sourceVolume: 'runner-home', readOnly: false },
    );
    const runner = td.addContainer(RUNNER_CONTAINER, {
      containerName: RUNNER_CONTAINER,
      image,
      essential: true,
      memoryReservationMiB: 512,
      stopTimeout: Duration.seconds(RUNNER_STOP_TIMEOUT_SECONDS),
      environment: { DOCKER_HOST, ...runnerEnvironment },
      logging: ecs.LogDrivers.awsLogs({ logGroup, streamPrefix: `${arch}-docker` }),
    });
    runner.addMountPoints({ containerPath: RUNNER_HOME, sourceVolume: 'runner-home', readOnly: false });
    runner.addContainerDependencies({ container: dockerd, condition: ecs.ContainerDependencyCondition.HEALTHY });
    Validations.of(td).acknowledge({
      id: 'AwsSolutions-ECS2',
      reason:
        'The only environment values are DOCKER_HOST (loopback address), AWS_REGION, TASUKI_STOP_GRACE_SECONDS and an empty DOCKER_TLS_CERTDIR: no secrets.',
    });
    return td;
  }
}

/** kms:GenerateDataKey only with an encryption context whose only key is `tasuki:job-id`. */
function jobContextConditions(): Record<string, Record<string, unknown>> {
  return {
    'ForAllValues:StringEquals': { 'kms:EncryptionContextKeys': [JOB_CONTEXT_KEY] },
    Null: { 'kms:EncryptionContextKeys': 'false' },
  };
}

/**
 * Every `${XxxFunctionArn}` of the ASL, filled with its step Lambda's ARN, and `${Partition}` with the
 * stack's partition (contract C); an unknown variable fails synth.
 */
export function aslSubstitutions(fns: Record<Bin, lambda.IFunction>, aslPath = ASL_PATH): Record<string, string> {
  const asl = fs.readFileSync(aslPath, 'utf8');
  const wanted = [...new Set([...asl.matchAll(/\$\{(\w+)\}/g)].map((m) => m[1]))];
  const byVariable = new Map(BINS.map((bin) => [substitutionVariable(bin), bin] as const));
  const substitutions: Record<string, string> = {};
  for (const variable of wanted) {
    if (variable in ASL_NON_LAMBDA_SUBSTITUTIONS) {
      substitutions[variable] = ASL_NON_LAMBDA_SUBSTITUTIONS[variable];
      continue;
    }
    const bin = byVariable.get(variable);
    if (!bin) {
      const known = [...Object.keys(ASL_NON_LAMBDA_SUBSTITUTIONS), ...byVariable.keys()];
      throw new Error(`${aslPath}: \${${variable}} names no Lambda bin and no known variable (known: ${known.join(', ')})`);
    }
    substitutions[variable] = fns[bin].functionArn;
  }
  return substitutions;
}

/** A Secrets Manager secret the user made: what the Lambdas pass as `SecretId`, and what IAM grants. */
interface SecretReference {
  /** The name as given, or the complete ARN as given (contract A). */
  readonly secretId: string;
  /** A name knows no random suffix: `<partial ARN>-??????` matches that secret (and only it). */
  readonly iamResource: string;
}

function secretReference(scope: Construct, id: string, nameOrArn: string): SecretReference {
  if (nameOrArn.startsWith('arn:')) {
    const secret = secretsmanager.Secret.fromSecretCompleteArn(scope, id, nameOrArn);
    return { secretId: nameOrArn, iamResource: secret.secretArn };
  }
  const secret = secretsmanager.Secret.fromSecretNameV2(scope, id, nameOrArn);
  return { secretId: nameOrArn, iamResource: `${secret.secretArn}-??????` };
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

function logRetention(days: number): logs.RetentionDays {
  if (!LOG_RETENTION_DAYS.includes(days)) {
    // validateDeployConfig reports this with the field named; this guards direct use of the stack.
    throw new Error(`log_retention_days ${days} is not one of CloudWatch's retention periods`);
  }
  return days as logs.RetentionDays;
}
