// Observability (lib/observability.ts): the alarm topic, every alarm with its metric, threshold and
// action, the dead-letter queues of everything delivered asynchronously, and the dashboard.

import * as assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { ConfigError, validateDeployConfig } from '../lib/config';
import { BINS, NOT_STEPS } from '../lib/lambdas';
import { ASYNC_BINS } from '../lib/observability';
import { type Json, type Synth, exampleConfig, resourcesOfType, synth } from './helpers';

let s: Synth;
let t: Json;
let template: Template;

before(() => {
  s = synth();
  t = s.template;
  template = Template.fromJSON(t);
});

const logicalId = (construct: Json): string => s.stack.getLogicalId(construct.node.defaultChild);
const topicRef = () => ({ Ref: logicalId(s.stack.observability.topic) });
const fnRef = (bin: string) => ({ Ref: logicalId(s.stack.functions[bin as keyof typeof s.stack.functions]) });
const alarmNamed = (template: Json, name: string): Json => {
  const found = resourcesOfType(template, 'AWS::CloudWatch::Alarm').filter(([, r]) => r.Properties.AlarmName === `Tasuki-${name}`);
  assert.equal(found.length, 1, `one alarm named Tasuki-${name}`);
  return found[0][1].Properties;
};

function problems(alarms: Json): string[] {
  const config = { ...exampleConfig(), alarms };
  try {
    validateDeployConfig(config);
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e.problems;
  }
  assert.fail('expected the config to be refused');
}

describe('tasuki.config.json: alarms', () => {
  it('is optional: 10 minutes waiting, a quarter of the jobs falling back, no email', () => {
    const config = validateDeployConfig(exampleConfig());
    assert.deepEqual(config.alarms, { queued_minutes: 10, fallback_rate: 0.25 });
    const some = validateDeployConfig({ ...exampleConfig(), alarms: { email: 'ops@example.com' } });
    assert.deepEqual(some.alarms, { email: 'ops@example.com', queued_minutes: 10, fallback_rate: 0.25 });
  });

  it('names the bad field, as DeployConfig::validate does', () => {
    assert.deepEqual(problems({ email: 'ops' }), ['/alarms/email must match pattern "^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$"']);
    assert.deepEqual(problems({ email: 'ops@example..com' }), ['/alarms/email `ops@example..com` is not an email address (name@example.com)']);
    assert.deepEqual(problems({ queued_minutes: 0 }), ['/alarms/queued_minutes must be >= 1']);
    assert.deepEqual(problems({ fallback_rate: 0 }), ['/alarms/fallback_rate must be > 0']);
    assert.deepEqual(problems({ fallback_rate: 1.5 }), ['/alarms/fallback_rate must be <= 1']);
    assert.deepEqual(problems({ queued_minute: 5 }), ['/alarms/queued_minute is not a known field']);
  });
});

describe('Outputs', () => {
  it("the alarm topic's ARN and the dashboard's console URL", () => {
    assert.deepEqual(t.Outputs.AlarmTopicArn.Value, topicRef());
    const url = JSON.stringify(t.Outputs.DashboardUrl.Value);
    assert.ok(url.includes('.console.aws.amazon.com/cloudwatch/home?region='), url);
    assert.ok(url.includes('#dashboards/dashboard/Tasuki'), url);
  });
});

describe('Alarm topic', () => {
  it('is encrypted with a rotating key that CloudWatch may use, and takes TLS only', () => {
    const topic = t.Resources[logicalId(s.stack.observability.topic)];
    const keyId = topic.Properties.KmsMasterKeyId['Fn::GetAtt'][0];
    const key = t.Resources[keyId];
    assert.equal(key.Type, 'AWS::KMS::Key');
    assert.equal(key.Properties.EnableKeyRotation, true);
    assert.ok(
      key.Properties.KeyPolicy.Statement.some(
        (st: Json) =>
          st.Principal?.Service === 'cloudwatch.amazonaws.com' &&
          JSON.stringify(st.Action) === JSON.stringify(['kms:Decrypt', 'kms:GenerateDataKey']),
      ),
      'CloudWatch may encrypt what it publishes',
    );
    template.hasResourceProperties('AWS::SNS::TopicPolicy', {
      Topics: [topicRef()],
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({ Effect: 'Deny', Action: 'sns:Publish', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
          Match.objectLike({
            Effect: 'Allow',
            Action: 'sns:Publish',
            Principal: { Service: 'cloudwatch.amazonaws.com' },
            Condition: Match.objectLike({ StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } } }),
          }),
        ]),
      },
    });
  });

  it('has no subscription unless alarms.email is set; then one email subscription', () => {
    template.resourceCountIs('AWS::SNS::Subscription', 0);
    const withEmail = synth({ config: { ...exampleConfig(), alarms: { email: 'ops@example.com' } } });
    const subscriptions = resourcesOfType(withEmail.template, 'AWS::SNS::Subscription').map(([, r]) => r.Properties);
    assert.deepEqual(subscriptions, [
      { Protocol: 'email', Endpoint: 'ops@example.com', TopicArn: { Ref: withEmail.stack.getLogicalId(withEmail.stack.observability.topic.node.defaultChild as never) } },
    ]);
  });
});

describe('Alarms', () => {
  it('every alarm tells the topic when it fires and when it clears, and says what missing data means', () => {
    const alarms = resourcesOfType(t, 'AWS::CloudWatch::Alarm');
    // 1 waiting + 3 executions + 2 job states + 1 fallback rate + 2 per Lambda + webhook 5xx + 4 DLQs
    assert.equal(alarms.length, 1 + 3 + 2 + 1 + 2 * BINS.length + 1 + 4);
    for (const [id, alarm] of alarms) {
      assert.deepEqual(alarm.Properties.AlarmActions, [topicRef()], id);
      assert.deepEqual(alarm.Properties.OKActions, [topicRef()], id);
      assert.ok(['breaching', 'notBreaching'].includes(alarm.Properties.TreatMissingData), id);
      assert.match(alarm.Properties.AlarmName, /^Tasuki-/, id);
    }
  });

  it('a job waiting longer than alarms.queued_minutes: OldestQueuedSeconds (Tasuki, no dimension), Maximum over 5 min', () => {
    const p = alarmNamed(t, 'job-waiting-too-long');
    assert.deepEqual(
      [p.Namespace, p.MetricName, p.Dimensions, p.Statistic, p.Period, p.Threshold, p.ComparisonOperator, p.TreatMissingData],
      ['Tasuki', 'OldestQueuedSeconds', undefined, 'Maximum', 300, 600, 'GreaterThanThreshold', 'breaching'],
    );
    const custom = synth({ config: { ...exampleConfig(), alarms: { queued_minutes: 3, fallback_rate: 0.5 } } });
    assert.equal(alarmNamed(custom.template, 'job-waiting-too-long').Threshold, 180);
    assert.equal(alarmNamed(custom.template, 'capacity-fallback-rate').Threshold, 0.5);
  });

  it('executions failed, timed out or aborted: AWS/States of this state machine, Sum > 0', () => {
    const arn = { Ref: logicalId(s.stack.stateMachine) };
    for (const [name, metric] of [
      ['failed', 'ExecutionsFailed'],
      ['timedout', 'ExecutionsTimedOut'],
      ['aborted', 'ExecutionsAborted'],
    ]) {
      const p = alarmNamed(t, `state-machine-${name}`);
      assert.deepEqual(
        [p.Namespace, p.MetricName, p.Dimensions, p.Statistic, p.Threshold, p.ComparisonOperator],
        ['AWS/States', metric, [{ Name: 'StateMachineArn', Value: arn }], 'Sum', 0, 'GreaterThanThreshold'],
      );
    }
  });

  it('jobs that ended failed or timed-out: JobsFinished by State, Sum > 0', () => {
    for (const state of ['failed', 'timed-out']) {
      const p = alarmNamed(t, `jobs-${state}`);
      assert.deepEqual(
        [p.Namespace, p.MetricName, p.Dimensions, p.Statistic, p.Threshold],
        ['Tasuki', 'JobsFinished', [{ Name: 'State', Value: state }], 'Sum', 0],
      );
    }
  });

  it('capacity fallbacks above alarms.fallback_rate: Fallbacks / JobsFinished, both dimension-less (alarms take no SEARCH), over 15 min', () => {
    const p = alarmNamed(t, 'capacity-fallback-rate');
    assert.equal(p.Threshold, 0.25);
    assert.equal(p.ComparisonOperator, 'GreaterThanThreshold');
    const [expression, ...inputs] = p.Metrics;
    assert.equal(expression.Expression, 'IF(finished > 0, FILL(fallbacks, 0) / finished, 0)');
    assert.equal(expression.ReturnData, true);
    assert.deepEqual(
      inputs.map((m: Json) => [m.Id, m.MetricStat.Metric, m.MetricStat.Stat, m.MetricStat.Period, m.ReturnData]),
      [
        ['fallbacks', { Namespace: 'Tasuki', MetricName: 'Fallbacks' }, 'Sum', 900, false],
        ['finished', { Namespace: 'Tasuki', MetricName: 'JobsFinished' }, 'Sum', 900, false],
      ],
    );
    assert.ok(!JSON.stringify(p).includes('SEARCH'));
  });

  for (const bin of BINS) {
    it(`${bin}: Lambda errors and throttles (AWS/Lambda, its FunctionName)`, () => {
      const dims = [{ Name: 'FunctionName', Value: fnRef(bin) }];
      const throttles = alarmNamed(t, `${bin}-throttles`);
      assert.deepEqual(
        [throttles.Namespace, throttles.MetricName, throttles.Dimensions, throttles.Statistic, throttles.Threshold],
        ['AWS/Lambda', 'Throttles', dims, 'Sum', 0],
      );
      const errors = alarmNamed(t, `${bin}-errors`);
      if (NOT_STEPS.includes(bin)) {
        // Never fails on purpose: any error.
        assert.deepEqual([errors.Namespace, errors.MetricName, errors.Dimensions, errors.Statistic, errors.Threshold], ['AWS/Lambda', 'Errors', dims, 'Sum', 0]);
      } else {
        // Fails on purpose with typed errors the state machine catches: most invocations failing.
        const [expression, ...inputs] = errors.Metrics;
        assert.equal(expression.Expression, 'IF(invocations > 0, FILL(errors, 0) / invocations, 0)');
        assert.deepEqual(
          inputs.map((m: Json) => [m.Id, m.MetricStat.Metric.Namespace, m.MetricStat.Metric.MetricName, m.MetricStat.Metric.Dimensions]),
          [
            ['errors', 'AWS/Lambda', 'Errors', dims],
            ['invocations', 'AWS/Lambda', 'Invocations', dims],
          ],
        );
        assert.equal(errors.Threshold, 0.5);
      }
    });
  }

  it("webhook 5xx: the Function URL's Url5xxCount (AWS/Lambda), Sum > 0", () => {
    assert.equal(resourcesOfType(t, 'AWS::Lambda::Url').length, 1, 'the webhook is a Function URL, not API Gateway');
    const p = alarmNamed(t, 'webhook-5xx');
    assert.deepEqual(
      [p.Namespace, p.MetricName, p.Dimensions, p.Statistic, p.Threshold],
      ['AWS/Lambda', 'Url5xxCount', [{ Name: 'FunctionName', Value: fnRef('webhook') }], 'Sum', 0],
    );
  });

  it('every dead-letter queue: ApproximateNumberOfMessagesVisible > 0', () => {
    const queues = resourcesOfType(t, 'AWS::SQS::Queue').map(([id]) => id);
    const watched = resourcesOfType(t, 'AWS::CloudWatch::Alarm')
      .map(([, r]) => r.Properties)
      .filter((p) => p.Namespace === 'AWS/SQS');
    assert.equal(watched.length, queues.length);
    for (const p of watched) {
      assert.equal(p.MetricName, 'ApproximateNumberOfMessagesVisible');
      assert.equal(p.Threshold, 0);
      assert.equal(p.ComparisonOperator, 'GreaterThanThreshold');
    }
    assert.deepEqual(
      watched.map((p) => p.Dimensions[0].Value['Fn::GetAtt']).sort(),
      queues.map((id) => [id, 'QueueName']).sort(),
    );
  });
});

describe('Dead-letter queues', () => {
  it('each is encrypted, TLS only, keeps messages 14 days', () => {
    const queues = resourcesOfType(t, 'AWS::SQS::Queue');
    assert.equal(queues.length, 4);
    for (const [id, q] of queues) {
      assert.equal(q.Properties.SqsManagedSseEnabled, true, id);
      assert.equal(q.Properties.MessageRetentionPeriod, 14 * 24 * 3600, id);
      template.hasResourceProperties('AWS::SQS::QueuePolicy', {
        Queues: [{ Ref: id }],
        PolicyDocument: {
          Statement: Match.arrayWith([Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } })]),
        },
      });
    }
  });

  it('every EventBridge rule target has its own DLQ, which only that rule may send to', () => {
    const rules = resourcesOfType(t, 'AWS::Events::Rule');
    assert.equal(rules.length, 2);
    const dlqs = new Set<string>();
    for (const [ruleId, rule] of rules) {
      for (const target of rule.Properties.Targets) {
        const queueId = target.DeadLetterConfig?.Arn?.['Fn::GetAtt']?.[0];
        assert.ok(queueId && t.Resources[queueId].Type === 'AWS::SQS::Queue', `${ruleId}: a DLQ`);
        assert.ok(target.RetryPolicy, `${ruleId}: a retry policy`);
        dlqs.add(queueId);
        template.hasResourceProperties('AWS::SQS::QueuePolicy', {
          Queues: [{ Ref: queueId }],
          PolicyDocument: {
            Statement: Match.arrayWith([
              Match.objectLike({
                Effect: 'Allow',
                Action: 'sqs:SendMessage',
                Principal: { Service: 'events.amazonaws.com' },
                Condition: { ArnEquals: { 'aws:SourceArn': { 'Fn::GetAtt': [ruleId, 'Arn'] } } },
              }),
            ]),
          },
        });
      }
    }
    assert.equal(dlqs.size, 2, 'one queue per target');
  });

  it('every asynchronously invoked Lambda (the EventBridge targets) dead-letters failed invocations, with bounded retries', () => {
    const targets = resourcesOfType(t, 'AWS::Events::Rule').flatMap(([, r]) => r.Properties.Targets.map((x: Json) => x.Arn['Fn::GetAtt'][0]));
    const asyncIds = ASYNC_BINS.map((bin) => fnRef(bin).Ref);
    assert.deepEqual([...targets].sort(), [...asyncIds].sort(), 'the EventBridge targets are exactly ASYNC_BINS');
    // Nothing else invokes a Lambda asynchronously: every other permission is the webhook's Function URL's
    // (synchronous), and the state machine's steps are synchronous `lambda:invoke` Tasks.
    for (const [, perm] of resourcesOfType(t, 'AWS::Lambda::Permission')) {
      const p = perm.Properties;
      const target = p.FunctionName['Fn::GetAtt']?.[0];
      if (p.Principal === 'events.amazonaws.com') assert.ok(asyncIds.includes(target));
      else {
        assert.equal(target, fnRef('webhook').Ref);
        assert.ok(p.Action === 'lambda:InvokeFunctionUrl' || p.InvokedViaFunctionUrl === true, JSON.stringify(p));
      }
    }
    const expected: Record<string, [number, number]> = { 'ecs-events': [2, 3600], rescue: [0, 60] };
    for (const bin of ASYNC_BINS) {
      const id = fnRef(bin).Ref;
      const queueId = t.Resources[id].Properties.DeadLetterConfig.TargetArn['Fn::GetAtt'][0];
      assert.equal(t.Resources[queueId].Type, 'AWS::SQS::Queue', bin);
      template.hasResourceProperties('AWS::Lambda::EventInvokeConfig', {
        FunctionName: { Ref: id },
        MaximumRetryAttempts: expected[bin][0],
        MaximumEventAgeInSeconds: expected[bin][1],
      });
      // Its role may send there (Lambda sends dead letters as the function).
      const role = t.Resources[id].Properties.Role['Fn::GetAtt'][0];
      template.hasResourceProperties('AWS::IAM::Policy', {
        Roles: [{ Ref: role }],
        PolicyDocument: { Statement: [{ Effect: 'Allow', Action: 'sqs:SendMessage', Resource: { 'Fn::GetAtt': [queueId, 'Arn'] } }] },
      });
    }
    for (const bin of BINS.filter((b) => !(ASYNC_BINS as readonly string[]).includes(b))) {
      assert.equal(t.Resources[fnRef(bin).Ref].Properties.DeadLetterConfig, undefined, bin);
    }
  });
});

/** The dashboard body with every intrinsic replaced by a marker (`«Ref:Id»`, `«GetAtt:Id.Attr»`). */
function dashboardBody(template: Json): Json {
  const [[, dashboard]] = resourcesOfType(template, 'AWS::CloudWatch::Dashboard');
  const flat = (v: Json): string => {
    if (typeof v === 'string') return v;
    if (v['Fn::Join']) return v['Fn::Join'][1].map(flat).join(v['Fn::Join'][0]);
    if (v.Ref) return `«Ref:${v.Ref}»`;
    if (v['Fn::GetAtt']) return `«GetAtt:${v['Fn::GetAtt'].join('.')}»`;
    throw new Error(`unexpected ${JSON.stringify(v)}`);
  };
  return JSON.parse(flat(dashboard.Properties.DashboardBody));
}

describe('Dashboard', () => {
  let widgets: Json[];
  let metricsOf: (title: string) => Json[];
  before(() => {
    widgets = dashboardBody(t).widgets;
    metricsOf = (title) => {
      const w = widgets.find((x) => x.properties.title === title);
      assert.ok(w, `a widget "${title}"`);
      return w.properties.metrics;
    };
  });

  it('shows every metric the Lambdas emit in the Tasuki namespace', () => {
    const text = JSON.stringify(widgets);
    for (const name of [
      'QueuedToRunningSeconds',
      'LaunchToRegisteredSeconds',
      'AttemptsPerJob',
      'Fallbacks',
      'JobsFinished',
      'RescueActions',
      'GitHubRateLimitRemaining',
      'JobCostUSD',
      'RunnerSeconds',
      'OldestQueuedSeconds',
    ]) {
      assert.ok(text.includes(`"Tasuki","${name}"`) || text.includes(`MetricName=\\"${name}\\"`), name);
    }
  });

  it('splits by dimension with SEARCH, and keeps the dimension-less series', () => {
    const searches = (title: string) => metricsOf(title).flatMap((m: Json[]) => m.filter((x) => x?.expression).map((x) => x.expression));
    assert.deepEqual(searches('Queued → running (s)'), [`SEARCH('{Tasuki,Capacity} MetricName="QueuedToRunningSeconds"', 'p90', 300)`]);
    assert.deepEqual(
      metricsOf('Queued → running (s)').filter((m: Json[]) => m[0] === 'Tasuki').map((m: Json[]) => m[2].stat),
      ['p50', 'p90', 'Maximum'],
    );
    assert.deepEqual(searches('Launch → registered (s), p90 by capacity'), [`SEARCH('{Tasuki,Capacity} MetricName="LaunchToRegisteredSeconds"', 'p90', 300)`]);
    assert.deepEqual(searches('Fallbacks by reason'), [`SEARCH('{Tasuki,Reason} MetricName="Fallbacks"', 'Sum', 300)`]);
    assert.deepEqual(searches('Jobs finished by state'), [`SEARCH('{Tasuki,State} MetricName="JobsFinished"', 'Sum', 300)`]);
    assert.deepEqual(searches('Rescue actions by action'), [`SEARCH('{Tasuki,Action} MetricName="RescueActions"', 'Sum', 300)`]);
    assert.deepEqual(metricsOf('GitHub rate limit remaining (minimum)'), [['Tasuki', 'GitHubRateLimitRemaining', { stat: 'Minimum' }]]);
    assert.deepEqual(metricsOf('Estimated cost (USD)'), [['Tasuki', 'JobCostUSD', { stat: 'Sum' }]]);
  });

  it('the state machine, every Lambda, the webhook URL, every DLQ and every alarm', () => {
    const sm = `«Ref:${logicalId(s.stack.stateMachine)}»`;
    assert.deepEqual(
      metricsOf('State machine executions').map((m: Json[]) => [m[0], m[1], m[3]]),
      ['ExecutionsStarted', 'ExecutionsSucceeded', 'ExecutionsFailed', 'ExecutionsTimedOut', 'ExecutionsAborted'].map((n) => ['AWS/States', n, sm]),
    );
    for (const [title, metric] of [
      ['Lambda errors', 'Errors'],
      ['Lambda throttles', 'Throttles'],
      ['Lambda duration p90 (ms)', 'Duration'],
    ]) {
      assert.deepEqual(
        metricsOf(title).map((m: Json[]) => [m[1], m[3], m[4].label]),
        BINS.map((bin) => [metric, `«Ref:${fnRef(bin).Ref}»`, bin]),
        title,
      );
    }
    assert.ok(metricsOf('Webhook (Function URL)').some((m: Json[]) => m[1] === 'Url5xxCount'));
    assert.equal(metricsOf('Dead-letter queues (messages visible)').length, 4);
    const alarmWidget = widgets.find((w) => w.type === 'alarm');
    assert.equal(alarmWidget.properties.alarms.length, resourcesOfType(t, 'AWS::CloudWatch::Alarm').length);
  });
});
