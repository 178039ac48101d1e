// How news reaches tasuki: GitHub's webhooks through a public Function URL, runner task stops from
// ECS through EventBridge, and the clock: an EventBridge schedule runs the rescue sweep.

import { Duration, Stack } from 'aws-cdk-lib';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sqs from 'aws-cdk-lib/aws-sqs';

/** Public (no IAM auth): GitHub cannot sign AWS requests, so the handler checks every request's HMAC. */
export function webhookUrl(webhook: lambda.Function): lambda.FunctionUrl {
  return webhook.addFunctionUrl({ authType: lambda.FunctionUrlAuthType.NONE });
}

/**
 * Every runner task that stopped, to `ecs-events`, so a waiting execution learns why. An event
 * EventBridge still cannot deliver after its retries goes to `deadLetterQueue` (CDK allows this rule,
 * and only it, to send there in the queue's policy).
 */
export function taskStoppedRule(
  stack: Stack,
  cluster: ecs.ICluster,
  ecsEvents: lambda.IFunction,
  deadLetterQueue?: sqs.IQueue,
): events.Rule {
  return new events.Rule(stack, 'TaskStopped', {
    description: 'tasuki: runner tasks that stopped, so a waiting execution learns why',
    eventPattern: {
      source: ['aws.ecs'],
      detailType: ['ECS Task State Change'],
      detail: { clusterArn: [cluster.clusterArn], lastStatus: ['STOPPED'] },
    },
    targets: [
      new targets.LambdaFunction(ecsEvents, {
        retryAttempts: 8,
        maxEventAge: Duration.hours(1),
        deadLetterQueue,
      }),
    ],
  });
}

/**
 * The rescue sweep, every minute: the finest rate an EventBridge schedule has. Only jobs already past
 * their deadline (their state's limit plus `timeouts.rescue_grace_seconds`) are acted on, so a lost
 * webhook costs at most a minute more than the grace; a sweep with nothing overdue is one index
 * Query per unfinished state. EventBridge does not retry a delivery: the next sweep is a minute away
 * (two sweeps may overlap: each of the sweep's writes is idempotent or conditional).
 */
export function rescueSchedule(stack: Stack, rescue: lambda.IFunction, deadLetterQueue?: sqs.IQueue): events.Rule {
  return new events.Rule(stack, 'RescueSweep', {
    description: 'tasuki: every minute, the rescue sweep checks jobs past their deadline against GitHub',
    schedule: events.Schedule.rate(Duration.minutes(1)),
    targets: [new targets.LambdaFunction(rescue, { retryAttempts: 0, maxEventAge: Duration.minutes(1), deadLetterQueue })],
  });
}
