// The whole of tasuki as one stack: webhook Function URL → Step Functions (one execution per queued
// job) → step Lambdas → ECS tasks on Fargate / Fargate Spot / EC2 Spot, with the lifecycle in
// DynamoDB, runner credentials sealed with KMS, ECS task stops routed back through EventBridge and a
// scheduled rescue sweep for jobs a lost webhook left behind.
//
// Each part (the modules imported below) makes its resources with this stack as their scope, not in a
// construct of its own: CloudFormation logical IDs come from construct paths, so a construct level
// would rename every resource and make `cdk deploy` replace existing ones, the table among them.

import { ArnFormat, CfnOutput, Stack, StackProps } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { type DeployConfig, LOG_RETENTION_DAYS } from './config';
import { credentials } from './credentials';
import { ec2Runners } from './ec2-capacity';
import { rescueSchedule, taskStoppedRule, webhookUrl } from './event-sources';
import { lambdaFunctions } from './functions';
import type { Bin, FunctionFactory } from './lambdas';
import { network } from './network';
import { type Observability, asyncInvokeProps, deadLetterQueues, observability } from './observability';
import { RUNNER_CONTAINER, runnerTasks } from './runners';
import { runnerJobStateMachine, stateMachineAddress } from './state-machine';
import { lifecycleTable } from './table';

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

export class TasukiStack extends Stack {
  readonly table: dynamodb.Table;
  readonly runnerKey: kms.Key;
  readonly cluster: ecs.Cluster;
  readonly stateMachine: sfn.StateMachine;
  readonly stateMachineArn: string;
  readonly functions: Record<Bin, lambda.Function>;
  readonly webhookUrl: lambda.FunctionUrl;
  /** Alarm topic, alarms and dashboard (observability.ts). */
  readonly observability: Observability;
  /** The runtime config every Lambda reads from `TASUKI_CONFIG` (tokens resolve at deploy). */
  readonly runtimeConfig: Record<string, unknown>;

  constructor(scope: Construct, id: string, props: TasukiStackProps) {
    super(scope, id, {
      description: 'tasuki: ephemeral GitHub Actions runners on ECS (Fargate, Fargate Spot, EC2 Spot)',
      ...props,
    });
    const config = props.config;
    const retention = logRetention(config.log_retention_days);

    this.table = lifecycleTable(this);
    const creds = credentials(this, config);
    this.runnerKey = creds.runnerKey;
    const net = network(this, config, retention);
    const runners = runnerTasks(this, config, net.vpc, retention, this.table);
    this.cluster = runners.cluster;
    const ec2 = config.ec2 ? ec2Runners(this, config.ec2, net, runners) : undefined;
    const taskDefinitions = { ...runners.taskDefinitions, ...ec2?.taskDefinitions };
    // The Lambdas need the state machine's ARN and it needs theirs: it is formatted, not referenced.
    const stateMachine = stateMachineAddress(this);
    this.stateMachineArn = stateMachine.arn;

    // ---- Runtime config (tasuki_core::domain::config::Config) -------------------------------------
    this.runtimeConfig = {
      table_name: this.table.tableName,
      state_machine_arn: this.stateMachineArn,
      github: {
        api_url: config.github.api_url,
        app_id: config.github.app_id,
        private_key_secret_id: creds.appKey.secretId,
        webhook_secret_id: creds.webhookSecret.secretId,
      },
      access: config.access,
      runner: {
        group_id: config.runner.group_id,
        kms_key_id: this.runnerKey.keyArn,
        task_role_arn: runners.taskRole.roleArn,
        extra_labels: config.runner.extra_labels,
      },
      sizes: config.sizes,
      capacity_order: config.capacity_order,
      network: {
        subnets: Object.fromEntries(net.subnets.map((s) => [s.availabilityZone, s.subnetId])),
        security_groups: [net.runnerSecurityGroup.securityGroupId],
        security_group_allowlist: config.network.security_group_allowlist,
      },
      ecs: {
        cluster: this.cluster.clusterName,
        container_name: RUNNER_CONTAINER,
        // Full ARNs with revision: exactly what run-task's IAM allows.
        task_definitions: Object.fromEntries(Object.entries(taskDefinitions).map(([k, td]) => [k, td.taskDefinitionArn])),
        ec2_capacity_providers: Object.fromEntries(
          Object.entries(ec2?.capacityProviders ?? {}).map(([arch, cp]) => [arch, cp.capacityProviderName]),
        ),
      },
      timeouts: config.timeouts,
      retention_days: config.retention_days,
    };
    const configJson = this.toJsonString(this.runtimeConfig);
    const deadLetters = deadLetterQueues(this);

    this.functions = lambdaFunctions(this, {
      functions: props.functions,
      configJson,
      retention,
      grants: {
        table: this.table,
        stateMachineArn: this.stateMachineArn,
        stateMachineName: stateMachine.name,
        executionsArn: stateMachine.executionsArn,
        credentials: creds,
        runners,
        taskDefinitions,
      },
      webhookReservedConcurrency: props.webhookReservedConcurrency,
      asyncInvoke: asyncInvokeProps(deadLetters),
    });
    this.webhookUrl = webhookUrl(this.functions.webhook);
    this.stateMachine = runnerJobStateMachine(this, stateMachine, this.functions, retention);
    taskStoppedRule(this, this.cluster, this.functions['ecs-events'], deadLetters.rules.taskStopped);
    rescueSchedule(this, this.functions.rescue, deadLetters.rules.rescueSweep);
    this.observability = observability(this, {
      alarms: config.alarms,
      functions: this.functions,
      stateMachine: this.stateMachine,
      deadLetters,
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
          resourceName: `${stateMachine.name}:<job_id>-<run_attempt>`,
          arnFormat: ArnFormat.COLON_RESOURCE_NAME,
        })}`,
    });
    new CfnOutput(this, 'TableName', { description: 'TASUKI_TABLE for `tasuki jobs ls|show`', value: this.table.tableName });
    new CfnOutput(this, 'ClusterName', { value: this.cluster.clusterName });
    new CfnOutput(this, 'RunnerLogGroup', { value: runners.logGroup.logGroupName });
    new CfnOutput(this, 'AlarmTopicArn', {
      description: 'Where every alarm is told (subscribe more than alarms.email here)',
      value: this.observability.topic.topicArn,
    });
    new CfnOutput(this, 'DashboardUrl', {
      value: `https://${this.region}.console.aws.amazon.com/cloudwatch/home?region=${this.region}#dashboards/dashboard/${this.observability.dashboardName}`,
    });
  }
}

function logRetention(days: number): logs.RetentionDays {
  if (!LOG_RETENTION_DAYS.includes(days)) {
    // validateDeployConfig reports this with the field named; this guards direct use of the stack.
    throw new Error(`log_retention_days ${days} is not one of CloudWatch's retention periods`);
  }
  return days as logs.RetentionDays;
}
