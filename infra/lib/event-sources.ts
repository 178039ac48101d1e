// How news reaches tasuki: GitHub's webhooks through a public Function URL, and runner task stops
// from ECS through EventBridge.

import { Duration, Stack } from 'aws-cdk-lib';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as lambda from 'aws-cdk-lib/aws-lambda';

/** Public (no IAM auth): GitHub cannot sign AWS requests, so the handler checks every request's HMAC. */
export function webhookUrl(webhook: lambda.Function): lambda.FunctionUrl {
  return webhook.addFunctionUrl({ authType: lambda.FunctionUrlAuthType.NONE });
}

/** Every runner task that stopped, to `ecs-events`, so a waiting execution learns why. */
export function taskStoppedRule(stack: Stack, cluster: ecs.ICluster, ecsEvents: lambda.IFunction): events.Rule {
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
      }),
    ],
  });
}
