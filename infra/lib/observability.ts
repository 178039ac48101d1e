// Observability: dead-letter queues for everything delivered asynchronously, CloudWatch alarms on
// what says a job is stuck or lost (told to an SNS topic), and one dashboard.
//
// Metrics come from two places: AWS's own (Lambda, Step Functions, SQS, the Function URL) and the
// Lambdas' Embedded Metric Format lines in the `Tasuki` namespace (functions/core/src/metrics.rs).
// Every Tasuki datum is published with its one dimension and with none (`"Dimensions": [["Reason"],
// []]`): alarms cannot use SEARCH nor sum over a dimension, so they watch the dimension-less series;
// the dashboard splits by the dimension with SEARCH.

import { ArnFormat, Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import type { DeployConfig } from './config';
import { BINS, type Bin, type CommonFunctionProps, NOT_STEPS, pascal } from './lambdas';

/** The namespace of the Lambdas' EMF metrics (`tasuki_core::metrics::NAMESPACE`). */
export const NAMESPACE = 'Tasuki';

/** The Lambdas EventBridge invokes: asynchronously, so Lambda retries them and then dead-letters. */
export const ASYNC_BINS = ['ecs-events', 'rescue'] as const satisfies readonly Bin[];
export type AsyncBin = (typeof ASYNC_BINS)[number];

/** Where undeliverable events and failed asynchronous invocations end up. */
export interface DeadLetters {
  /** Per EventBridge rule target: events EventBridge could not deliver to the Lambda. */
  readonly rules: { readonly taskStopped: sqs.Queue; readonly rescueSweep: sqs.Queue };
  /** Per asynchronously invoked Lambda: events whose invocation still failed after Lambda's retries. */
  readonly invocations: Record<AsyncBin, sqs.Queue>;
}

/** Every dead-letter queue, by a name for alarms and widgets. */
export function allDeadLetterQueues(dl: DeadLetters): [string, sqs.Queue][] {
  return [
    ['TaskStopped rule', dl.rules.taskStopped],
    ['RescueSweep rule', dl.rules.rescueSweep],
    ...ASYNC_BINS.map((bin) => [`${bin} invocations`, dl.invocations[bin]] as [string, sqs.Queue]),
  ];
}

/**
 * An SQS dead-letter queue: SQS-managed encryption (no KMS key for EventBridge or Lambda to be
 * allowed to use), TLS only, 14 days (SQS's longest retention) to look at what landed there.
 */
function deadLetterQueue(stack: Stack, id: string): sqs.Queue {
  return new sqs.Queue(stack, id, {
    encryption: sqs.QueueEncryption.SQS_MANAGED,
    enforceSSL: true,
    retentionPeriod: Duration.days(14),
    removalPolicy: RemovalPolicy.DESTROY,
  });
}

export function deadLetterQueues(stack: Stack): DeadLetters {
  const rules = {
    taskStopped: deadLetterQueue(stack, 'TaskStoppedRuleDlq'),
    rescueSweep: deadLetterQueue(stack, 'RescueSweepRuleDlq'),
  };
  for (const queue of Object.values(rules)) {
    Validations.of(queue).acknowledge({
      id: 'AwsSolutions-SQS3',
      reason:
        'This queue IS a dead-letter queue: of an EventBridge rule target (its DeadLetterConfig). cdk-nag recognizes a DLQ ' +
        "only in an SQS redrive policy or a Lambda function's DeadLetterConfig.",
    });
  }
  const invocations = Object.fromEntries(
    ASYNC_BINS.map((bin) => [bin, deadLetterQueue(stack, `${pascal(bin)}InvokeDlq`)]),
  ) as Record<AsyncBin, sqs.Queue>;
  return { rules, invocations };
}

/**
 * How Lambda handles a failed asynchronous invocation of each EventBridge-invoked function, and its
 * DLQ (the function's DeadLetterConfig: the message body is the event itself, with the error in the
 * message attributes, so it can be replayed as it is). CDK grants the function's role
 * `sqs:SendMessage` on that queue only.
 */
export function asyncInvokeProps(dl: DeadLetters): Record<AsyncBin, Partial<CommonFunctionProps>> {
  return {
    // A task stop is worth retrying (Lambda's default, 2) for as long as EventBridge keeps trying it.
    'ecs-events': { deadLetterQueue: dl.invocations['ecs-events'], retryAttempts: 2, maxEventAge: Duration.hours(1) },
    // The next sweep is a minute away and does the same work: no retry, which would only overlap it.
    rescue: { deadLetterQueue: dl.invocations.rescue, retryAttempts: 0, maxEventAge: Duration.minutes(1) },
  };
}

export interface ObservabilityProps {
  readonly alarms: DeployConfig['alarms'];
  readonly functions: Record<Bin, lambda.IFunction>;
  readonly stateMachine: sfn.IStateMachine;
  readonly deadLetters: DeadLetters;
}

export interface Observability {
  readonly topic: sns.Topic;
  readonly alarms: cloudwatch.Alarm[];
  readonly dashboard: cloudwatch.Dashboard;
  /** The dashboard's name (the stack's), as text: the console URL needs no reference to it. */
  readonly dashboardName: string;
}

const FIVE_MINUTES = Duration.minutes(5);

/** A metric of the Lambdas' EMF namespace. */
export function tasukiMetric(metricName: string, statistic: string, dimensionsMap?: Record<string, string>): cloudwatch.Metric {
  return new cloudwatch.Metric({ namespace: NAMESPACE, metricName, statistic, period: FIVE_MINUTES, dimensionsMap });
}

/** Every series of `metricName` split by `dimension` (dashboards only: alarms take no SEARCH). */
function byDimension(metricName: string, dimension: string, statistic: string, label?: string): cloudwatch.MathExpression {
  return new cloudwatch.MathExpression({
    expression: `SEARCH('{${NAMESPACE},${dimension}} MetricName="${metricName}"', '${statistic}', ${FIVE_MINUTES.toSeconds()})`,
    usingMetrics: {},
    label: label ?? '',
    period: FIVE_MINUTES,
  });
}

/** The AWS/Lambda metric of one function. */
function lambdaMetric(fn: lambda.IFunction, metricName: string, statistic = 'Sum', label?: string): cloudwatch.Metric {
  return new cloudwatch.Metric({
    namespace: 'AWS/Lambda',
    metricName,
    statistic,
    period: FIVE_MINUTES,
    dimensionsMap: { FunctionName: fn.functionName },
    label,
  });
}

export function observability(stack: Stack, props: ObservabilityProps): Observability {
  const { alarms: settings, functions, stateMachine, deadLetters } = props;
  const prefix = stack.stackName;

  // ---- The topic ----------------------------------------------------------------------------------
  // Encrypted with a key of our own: CloudWatch must be allowed to use the key to publish, which
  // the AWS managed key (aws/sns) cannot allow.
  const key = new kms.Key(stack, 'AlarmTopicKey', {
    description: 'tasuki: encrypts the alarm topic',
    enableKeyRotation: true,
    // It protects alarm notifications in transit only: nothing stored is lost with it.
    removalPolicy: RemovalPolicy.DESTROY,
  });
  const cloudwatchPrincipal = new iam.ServicePrincipal('cloudwatch.amazonaws.com');
  key.addToResourcePolicy(
    new iam.PolicyStatement({
      sid: 'CloudWatchAlarmsPublishToTheTopic',
      principals: [cloudwatchPrincipal],
      actions: ['kms:Decrypt', 'kms:GenerateDataKey'],
      resources: ['*'],
    }),
  );
  const topic = new sns.Topic(stack, 'AlarmTopic', {
    displayName: `tasuki alarms (${prefix})`,
    masterKey: key,
    enforceSSL: true,
  });
  topic.addToResourcePolicy(
    new iam.PolicyStatement({
      sid: 'ThisAccountsAlarmsPublish',
      principals: [cloudwatchPrincipal],
      actions: ['sns:Publish'],
      resources: [topic.topicArn],
      conditions: {
        ArnLike: { 'aws:SourceArn': stack.formatArn({ service: 'cloudwatch', resource: 'alarm', resourceName: '*', arnFormat: ArnFormat.COLON_RESOURCE_NAME }) },
        StringEquals: { 'aws:SourceAccount': stack.account },
      },
    }),
  );
  if (settings.email) {
    topic.addSubscription(new subscriptions.EmailSubscription(settings.email));
  }
  const action = new cwActions.SnsAction(topic);
  const made: cloudwatch.Alarm[] = [];
  const alarm = (id: string, alarmProps: cloudwatch.AlarmProps): cloudwatch.Alarm => {
    const a = new cloudwatch.Alarm(stack, id, { ...alarmProps, alarmName: `${prefix}-${alarmProps.alarmName}` });
    a.addAlarmAction(action);
    a.addOkAction(action);
    made.push(a);
    return a;
  };
  const above = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD;

  // ---- Jobs waiting -------------------------------------------------------------------------------
  const oldestQueued = tasukiMetric('OldestQueuedSeconds', 'Maximum');
  alarm('OldestQueuedAlarm', {
    alarmName: 'job-waiting-too-long',
    alarmDescription: `A job has waited more than ${settings.queued_minutes} min for a runner (alarms.queued_minutes).`,
    metric: oldestQueued,
    threshold: settings.queued_minutes * 60,
    comparisonOperator: above,
    evaluationPeriods: 1,
    // The rescue sweep reports this every minute (0 when nothing waits): no datapoint for 5 minutes
    // means the sweep is not running, and then nobody watches the queue either.
    treatMissingData: cloudwatch.TreatMissingData.BREACHING,
  });

  // ---- Executions that failed, timed out or were stopped; jobs that ended failed/timed-out ----------
  // No executions, no datapoints: missing data is "nothing went wrong".
  const executionMetrics: [string, cloudwatch.Metric][] = [
    ['ExecutionsFailed', stateMachine.metricFailed({ period: FIVE_MINUTES, statistic: 'Sum' })],
    ['ExecutionsTimedOut', stateMachine.metricTimedOut({ period: FIVE_MINUTES, statistic: 'Sum' })],
    ['ExecutionsAborted', stateMachine.metricAborted({ period: FIVE_MINUTES, statistic: 'Sum' })],
  ];
  for (const [name, metric] of executionMetrics) {
    alarm(`${name}Alarm`, {
      alarmName: `state-machine-${name.replace('Executions', '').toLowerCase()}`,
      alarmDescription: `An execution of the runner-job state machine ended ${name.replace('Executions', '').toLowerCase()}: a job's lifecycle ended badly (its record says why).`,
      metric,
      threshold: 0,
      comparisonOperator: above,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
  }
  for (const state of ['failed', 'timed-out']) {
    alarm(`JobsFinished${pascal(state)}Alarm`, {
      alarmName: `jobs-${state}`,
      alarmDescription: `A job ended ${state} (tasuki jobs show <job-id> gives the reason).`,
      metric: tasukiMetric('JobsFinished', 'Sum', { State: state }),
      threshold: 0,
      comparisonOperator: above,
      evaluationPeriods: 1,
      // Emitted only when a job finishes in that state: no datapoint is no such job.
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
  }

  // ---- Capacity fallbacks, as a share of the jobs finished ----------------------------------------
  const fallbackRate = new cloudwatch.MathExpression({
    expression: 'IF(finished > 0, FILL(fallbacks, 0) / finished, 0)',
    usingMetrics: {
      fallbacks: tasukiMetric('Fallbacks', 'Sum'),
      finished: tasukiMetric('JobsFinished', 'Sum'),
    },
    period: Duration.minutes(15),
    label: 'Fallbacks / JobsFinished',
  });
  alarm('FallbackRateAlarm', {
    alarmName: 'capacity-fallback-rate',
    alarmDescription:
      `Launch attempts fell back to the next candidate (capacity, quota, registration timeout…) more than ` +
      `${settings.fallback_rate} times per job finished over 15 min (alarms.fallback_rate).`,
    metric: fallbackRate,
    threshold: settings.fallback_rate,
    comparisonOperator: above,
    evaluationPeriods: 1,
    // No job finished in the window: the rate is undefined, not high. Jobs that cannot launch at
    // all show up as waiting (job-waiting-too-long).
    treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
  });

  // ---- Lambda errors and throttles ----------------------------------------------------------------
  for (const bin of BINS) {
    const fn = functions[bin];
    const id = pascal(bin);
    if (NOT_STEPS.includes(bin)) {
      // The webhook, ecs-events and rescue never fail on purpose: any error is one too many.
      alarm(`${id}ErrorsAlarm`, {
        alarmName: `${bin}-errors`,
        alarmDescription: `The ${bin} Lambda failed (its log group says why).`,
        metric: lambdaMetric(fn, 'Errors'),
        threshold: 0,
        comparisonOperator: above,
        evaluationPeriods: 1,
        // No invocation, no datapoint: no error.
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
    } else {
      // A step Lambda fails on purpose with a typed error the state machine catches or retries by
      // name (JobRefused, CapacityUnavailable, Throttled, …): a few errors are the lifecycle at
      // work. Most of its invocations failing for 15 minutes is something broken (IAM, a bad deploy,
      // GitHub or AWS down).
      alarm(`${id}ErrorsAlarm`, {
        alarmName: `${bin}-errors`,
        alarmDescription: `More than half of the ${bin} Lambda's invocations failed over 15 min (its log group says why).`,
        metric: new cloudwatch.MathExpression({
          expression: 'IF(invocations > 0, FILL(errors, 0) / invocations, 0)',
          usingMetrics: { errors: lambdaMetric(fn, 'Errors'), invocations: lambdaMetric(fn, 'Invocations') },
          period: Duration.minutes(15),
          label: `${bin} errors / invocations`,
        }),
        threshold: 0.5,
        comparisonOperator: above,
        evaluationPeriods: 1,
        // No invocation, no rate: nothing failed.
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
    }
    alarm(`${id}ThrottlesAlarm`, {
      alarmName: `${bin}-throttles`,
      alarmDescription: `The ${bin} Lambda was throttled: the account's (or its reserved) concurrency is exhausted.`,
      metric: lambdaMetric(fn, 'Throttles'),
      threshold: 0,
      comparisonOperator: above,
      evaluationPeriods: 1,
      // No invocation, no datapoint: no throttle.
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
  }

  // ---- The webhook's Function URL answered 5xx ------------------------------------------------------
  const url5xx = lambdaMetric(functions.webhook, 'Url5xxCount');
  alarm('Webhook5xxAlarm', {
    alarmName: 'webhook-5xx',
    alarmDescription:
      "The webhook's Function URL answered 5xx: GitHub does not redeliver by itself (the rescue sweep redelivers lost queued deliveries).",
    metric: url5xx,
    threshold: 0,
    comparisonOperator: above,
    evaluationPeriods: 1,
    // No request, no datapoint: nothing failed.
    treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
  });

  // ---- Dead-letter queues ---------------------------------------------------------------------------
  for (const [name, queue] of allDeadLetterQueues(deadLetters)) {
    alarm(`${pascal(name.replace(/ /g, '-'))}DlqAlarm`, {
      alarmName: `dlq-${name.replace(/ /g, '-').toLowerCase()}`,
      alarmDescription: `The ${name} dead-letter queue holds messages: events tasuki did not act on (infra/README.md: Dead-letter queues).`,
      metric: queue.metricApproximateNumberOfMessagesVisible({ period: FIVE_MINUTES, statistic: 'Maximum' }),
      threshold: 0,
      comparisonOperator: above,
      evaluationPeriods: 1,
      // SQS stops reporting a queue that has been empty and idle for hours: missing is empty.
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
  }

  const dashboard = tasukiDashboard(stack, {
    ...props,
    oldestQueued,
    fallbackRate,
    executionMetrics,
    url5xx,
    alarms: made,
    queuedThresholdSeconds: settings.queued_minutes * 60,
    fallbackRateThreshold: settings.fallback_rate,
  });
  return { topic, alarms: made, dashboard, dashboardName: stack.stackName };
}

interface DashboardInputs extends Omit<ObservabilityProps, 'alarms'> {
  readonly oldestQueued: cloudwatch.Metric;
  readonly fallbackRate: cloudwatch.MathExpression;
  readonly executionMetrics: [string, cloudwatch.Metric][];
  readonly url5xx: cloudwatch.Metric;
  readonly alarms: cloudwatch.Alarm[];
  readonly queuedThresholdSeconds: number;
  readonly fallbackRateThreshold: number;
}

function tasukiDashboard(stack: Stack, d: DashboardInputs): cloudwatch.Dashboard {
  const graph = (title: string, left: cloudwatch.IMetric[], extra: Partial<cloudwatch.GraphWidgetProps> = {}) =>
    new cloudwatch.GraphWidget({ title, left, width: 8, height: 6, period: FIVE_MINUTES, ...extra });
  const percentiles = (metricName: string) =>
    ['p50', 'p90', 'Maximum'].map((statistic) => tasukiMetric(metricName, statistic).with({ label: `${statistic} (all)` }));
  const fns = BINS.map((bin) => [bin, d.functions[bin]] as const);

  const dashboard = new cloudwatch.Dashboard(stack, 'Dashboard', {
    dashboardName: stack.stackName,
    defaultInterval: Duration.hours(24),
  });
  dashboard.addWidgets(
    new cloudwatch.TextWidget({
      markdown:
        '# tasuki\nJobs (namespace `Tasuki`, from the Lambdas\' EMF lines), the state machine, the Lambdas, the dead-letter queues and every alarm. ' +
        'A job\'s own story: `tasuki jobs show <job-id>`.',
      width: 24,
      height: 2,
    }),
  );
  dashboard.addWidgets(
    graph('Queued → running (s)', [...percentiles('QueuedToRunningSeconds'), byDimension('QueuedToRunningSeconds', 'Capacity', 'p90', 'p90')]),
    graph('Launch → registered (s), p90 by capacity', [
      byDimension('LaunchToRegisteredSeconds', 'Capacity', 'p90'),
      tasukiMetric('LaunchToRegisteredSeconds', 'Maximum').with({ label: 'Maximum (all)' }),
    ]),
    graph('Oldest job waiting (s)', [d.oldestQueued], {
      leftAnnotations: [{ value: d.queuedThresholdSeconds, label: 'alarm (alarms.queued_minutes)' }],
    }),
  );
  dashboard.addWidgets(
    graph('Jobs finished by state', [byDimension('JobsFinished', 'State', 'Sum')], { stacked: true }),
    graph('Fallbacks by reason', [byDimension('Fallbacks', 'Reason', 'Sum')], { stacked: true }),
    graph('Fallbacks per job finished (15 min)', [d.fallbackRate], {
      period: Duration.minutes(15),
      leftAnnotations: [{ value: d.fallbackRateThreshold, label: 'alarm (alarms.fallback_rate)' }],
    }),
  );
  dashboard.addWidgets(
    graph('Attempts per job', [tasukiMetric('AttemptsPerJob', 'Average'), tasukiMetric('AttemptsPerJob', 'Maximum')]),
    graph('Rescue actions by action', [byDimension('RescueActions', 'Action', 'Sum')], { stacked: true }),
    graph('GitHub rate limit remaining (minimum)', [tasukiMetric('GitHubRateLimitRemaining', 'Minimum')]),
  );
  dashboard.addWidgets(
    graph('Estimated cost (USD)', [tasukiMetric('JobCostUSD', 'Sum')]),
    graph('Runner seconds', [tasukiMetric('RunnerSeconds', 'Sum')]),
    graph('State machine executions', [
      d.stateMachine.metricStarted({ period: FIVE_MINUTES, statistic: 'Sum' }),
      d.stateMachine.metricSucceeded({ period: FIVE_MINUTES, statistic: 'Sum' }),
      ...d.executionMetrics.map(([, metric]) => metric),
    ]),
  );
  dashboard.addWidgets(
    graph('Lambda errors', fns.map(([bin, fn]) => lambdaMetric(fn, 'Errors', 'Sum', bin))),
    graph('Lambda throttles', fns.map(([bin, fn]) => lambdaMetric(fn, 'Throttles', 'Sum', bin))),
    graph('Lambda duration p90 (ms)', fns.map(([bin, fn]) => lambdaMetric(fn, 'Duration', 'p90', bin))),
  );
  dashboard.addWidgets(
    graph('Webhook (Function URL)', [
      lambdaMetric(d.functions.webhook, 'UrlRequestCount', 'Sum', 'requests'),
      lambdaMetric(d.functions.webhook, 'Url4xxCount', 'Sum', '4xx'),
      d.url5xx.with({ label: '5xx' }),
    ]),
    graph(
      'Dead-letter queues (messages visible)',
      allDeadLetterQueues(d.deadLetters).map(([name, queue]) =>
        queue.metricApproximateNumberOfMessagesVisible({ period: FIVE_MINUTES, statistic: 'Maximum', label: name }),
      ),
    ),
    new cloudwatch.AlarmStatusWidget({ title: 'Alarms', alarms: d.alarms, width: 8, height: 6 }),
  );
  return dashboard;
}
