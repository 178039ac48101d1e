// The stack synthesized offline from tasuki.config.example.json: what it creates and what each piece may do.

import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { JOB_CONTEXT_KEY } from '../lib/credentials';
import { DIND_IMAGE } from '../lib/docker-task';
import { BINS, NOT_STEPS, substitutionVariable } from '../lib/lambdas';
import { RUNNER_CONTAINER } from '../lib/runners';
import { ASL_PATH, aslSubstitutions } from '../lib/state-machine';
import { FAKE, type Json, type Synth, asList, exampleConfig, iamStatements, resolver, resourcesOfType, synth, tempDir } from './helpers';

let s: Synth;
let t: Json;
let resolve: (v: Json) => Json;

before(() => {
  s = synth();
  t = s.template;
  resolve = resolver(t).resolve;
});

const logicalId = (construct: Json): string => s.stack.getLogicalId(construct.node.defaultChild);
const getAtt = (construct: Json, attribute = 'Arn') => ({ 'Fn::GetAtt': [logicalId(construct), attribute] });
const ref = (construct: Json) => ({ Ref: logicalId(construct) });
const functionOf = (bin: string) => t.Resources[logicalId(s.stack.functions[bin as keyof typeof s.stack.functions])];

describe('Lambdas', () => {
  it('every bin is a function: arm64, 128 MB, provided.al2023, its own log group', () => {
    const fns = resourcesOfType(t, 'AWS::Lambda::Function').filter(([, r]) => r.Properties.Description?.startsWith('tasuki '));
    assert.deepEqual(fns.map(([, r]) => r.Properties.Description).sort(), BINS.map((b) => `tasuki ${b}`).sort());
    for (const bin of BINS) {
      const p = functionOf(bin).Properties;
      assert.deepEqual(p.Architectures, ['arm64'], bin);
      assert.equal(p.MemorySize, 128, bin);
      assert.equal(p.Runtime, 'provided.al2023', bin);
      assert.equal(p.Handler, 'bootstrap', bin);
      assert.equal(t.Resources[p.LoggingConfig.LogGroup.Ref].Type, 'AWS::Logs::LogGroup', bin);
      assert.equal(t.Resources[p.LoggingConfig.LogGroup.Ref].Properties.RetentionInDays, 30, bin);
    }
  });

  it('every function gets TASUKI_CONFIG: the runtime Config, built from the file and the resources', () => {
    const config = exampleConfig();
    const expected = {
      table_name: resolve(ref(s.stack.table)),
      state_machine_arn: `arn:aws:states:${FAKE.region}:${FAKE.account}:stateMachine:Tasuki-runner-job`,
      github: {
        api_url: 'https://api.github.com',
        app_id: 424242,
        private_key_secret_id: 'tasuki/github-app-private-key',
        webhook_secret_id: 'tasuki/webhook-secret',
      },
      access: config.access,
      runner: {
        group_id: 1,
        kms_key_id: resolve(getAtt(s.stack.runnerKey)),
        task_role_arn: resolve(getAtt(s.stack.node.findChild('RunnerTaskRole'))),
        extra_labels: [],
      },
      sizes: config.sizes,
      capacity_order: ['fargate-spot', 'fargate', 'ec2'],
      timeouts: { registration_seconds: 300, job_seconds: 21600, capacity_wait_seconds: 900, rescue_grace_seconds: 300 },
      retention_days: 90,
    };
    const envs = BINS.map((bin) => functionOf(bin).Properties.Environment.Variables);
    for (const [i, env] of envs.entries()) {
      assert.deepEqual(Object.keys(env), ['TASUKI_CONFIG'], BINS[i]);
      assert.deepEqual(env, envs[0], 'every Lambda reads the same config');
    }
    const runtime = JSON.parse(resolve(envs[0].TASUKI_CONFIG));
    assert.deepEqual(
      Object.keys(runtime).sort(),
      ['access', 'capacity_order', 'ecs', 'github', 'network', 'retention_days', 'runner', 'sizes', 'state_machine_arn', 'table_name', 'timeouts'],
    );
    for (const [key, value] of Object.entries(expected)) assert.deepEqual(runtime[key], value, key);

    // Network: the VPC's private subnets by AZ, the runner security group.
    const subnets = resourcesOfType(t, 'AWS::EC2::Subnet').filter(([, r]) =>
      r.Properties.Tags.some((tag: Json) => tag.Key === 'aws-cdk:subnet-type' && tag.Value === 'Private'),
    );
    assert.equal(subnets.length, 2);
    assert.deepEqual(
      runtime.network.subnets,
      Object.fromEntries(subnets.map(([id, r]) => [resolve(r.Properties.AvailabilityZone), resolve({ Ref: id })])),
    );
    assert.deepEqual(Object.keys(runtime.network.subnets), ['us-east-1a', 'us-east-1b']);
    const [sgId] = resourcesOfType(t, 'AWS::EC2::SecurityGroup').find(([, r]) => r.Properties.GroupDescription.startsWith('tasuki runner tasks'))!;
    assert.deepEqual(runtime.network.security_groups, [resolve({ 'Fn::GetAtt': [sgId, 'GroupId'] })]);
    assert.deepEqual(runtime.network.security_group_allowlist, []);

    // ECS: the cluster, container `runner`, a task definition per arch (and per arch with docker).
    assert.equal(runtime.ecs.cluster, resolve(ref(s.stack.cluster)));
    assert.equal(runtime.ecs.container_name, 'runner');
    assert.deepEqual(runtime.ecs.task_definitions, {
      x64: `arn:aws:ecs:${FAKE.region}:${FAKE.account}:task-definition/Tasuki-runner-x64:1`,
      arm64: `arn:aws:ecs:${FAKE.region}:${FAKE.account}:task-definition/Tasuki-runner-arm64:1`,
      x64_docker: `arn:aws:ecs:${FAKE.region}:${FAKE.account}:task-definition/Tasuki-runner-x64-docker:1`,
      arm64_docker: `arn:aws:ecs:${FAKE.region}:${FAKE.account}:task-definition/Tasuki-runner-arm64-docker:1`,
    });
    const providers = resourcesOfType(t, 'AWS::ECS::CapacityProvider').map(([id]) => resolve({ Ref: id }));
    assert.deepEqual(Object.keys(runtime.ecs.ec2_capacity_providers).sort(), ['arm64', 'x64']);
    assert.deepEqual(Object.values(runtime.ecs.ec2_capacity_providers).sort(), providers.sort());
  });

  it('defect 1: the Lambdas get the secrets by NAME (never a partial ARN), IAM still matches the random suffix', () => {
    // Secrets Manager reads `…:secret:tasuki/webhook-secret` (a partial ARN whose name ends in a hyphen
    // and six characters) as a complete ARN with suffix `-secret`: ResourceNotFoundException
    // (SecretId, https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_GetSecretValue.html).
    const runtime = JSON.parse(resolve(functionOf('webhook').Properties.Environment.Variables.TASUKI_CONFIG));
    const config = exampleConfig();
    assert.equal(runtime.github.webhook_secret_id, config.github.webhook_secret_name);
    assert.equal(runtime.github.private_key_secret_id, config.github.private_key_secret_name);
    assert.ok(!JSON.stringify(runtime.github).includes('arn:'), JSON.stringify(runtime.github));
    assert.equal(runtime.github.webhook_secret_arn, undefined);
    assert.equal(runtime.github.private_key_secret_arn, undefined);
  });

  it("the runtime config matches the checked-in snapshot the Rust side parses (UPDATE_SNAPSHOTS=1 rewrites it)", () => {
    const runtime = JSON.parse(resolve(functionOf('webhook').Properties.Environment.Variables.TASUKI_CONFIG));
    const snapshot = path.join(__dirname, 'runtime-config.example.json');
    const text = JSON.stringify(runtime, null, 2) + '\n';
    if (process.env.UPDATE_SNAPSHOTS === '1') fs.writeFileSync(snapshot, text);
    assert.equal(fs.readFileSync(snapshot, 'utf8'), text, `${snapshot} is stale: rerun with UPDATE_SNAPSHOTS=1`);
  });

  it('the environment stays under 4 KB even with long generated names', () => {
    const env = functionOf('webhook').Properties.Environment.Variables;
    const long = resolver(t, 'x'.repeat(80)).resolve(env);
    const bytes = Object.entries(long).reduce((n, [k, v]) => n + Buffer.byteLength(k) + Buffer.byteLength(String(v)), 0);
    const typical = Buffer.byteLength(resolve(env.TASUKI_CONFIG));
    assert.ok(bytes < 4096, `TASUKI_CONFIG would be ${bytes} bytes`);
    assert.ok(typical < 3072, `TASUKI_CONFIG is ${typical} bytes with typical names`);
  });

  it('the webhook is a public Function URL (HMAC is checked in the handler)', () => {
    const [, url] = resourcesOfType(t, 'AWS::Lambda::Url')[0];
    assert.equal(resourcesOfType(t, 'AWS::Lambda::Url').length, 1);
    assert.equal(url.Properties.AuthType, 'NONE');
    assert.deepEqual(url.Properties.TargetFunctionArn, getAtt(s.stack.functions.webhook));
    const permissions = resourcesOfType(t, 'AWS::Lambda::Permission').map(([, r]) => r.Properties);
    const publicOnes = permissions.filter((p) => p.Principal === '*');
    assert.deepEqual(publicOnes.map((p) => p.FunctionName), [getAtt(s.stack.functions.webhook), getAtt(s.stack.functions.webhook)]);
    assert.ok(publicOnes.every((p) => p.FunctionUrlAuthType === 'NONE' || p.InvokedViaFunctionUrl === true));
  });
});

describe('defect 6: a new account can deploy', () => {
  it('no Lambda reserves concurrency by default (a new account may have a quota of 10, and Lambda keeps 100 unreserved)', () => {
    // https://docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html: a reservation must
    // leave the account at least 100 unreserved; new accounts can start with a quota of 10.
    for (const bin of BINS) {
      assert.equal(functionOf(bin).Properties.ReservedConcurrentExecutions, undefined, bin);
    }
  });

  it('webhookReservedConcurrency opts the webhook (only) into a flood guard', () => {
    const guarded = synth({ webhookReservedConcurrency: 25 }).template;
    const fns = resourcesOfType(guarded, 'AWS::Lambda::Function').filter(([, r]) => r.Properties.Description?.startsWith('tasuki '));
    const reserved = fns.filter(([, r]) => r.Properties.ReservedConcurrentExecutions !== undefined);
    assert.deepEqual(reserved.map(([, r]) => [r.Properties.Description, r.Properties.ReservedConcurrentExecutions]), [['tasuki webhook', 25]]);
  });
});

describe('State machine', () => {
  it('its definition is statemachines/runner-job.asl.json, each ${XxxFunctionArn} the right function', () => {
    const [, sm] = resourcesOfType(t, 'AWS::StepFunctions::StateMachine')[0];
    const p = sm.Properties;
    const asl = JSON.parse(fs.readFileSync(ASL_PATH, 'utf8'));
    const uploaded = JSON.parse(fs.readFileSync(s.assetPath(p.DefinitionS3Location.Key.replace(/\.json$/, '')), 'utf8'));
    assert.deepEqual(uploaded, asl);
    const variables = [...new Set([...JSON.stringify(asl).matchAll(/\$\{(\w+)\}/g)].map((m) => m[1]))].sort();
    assert.deepEqual(Object.keys(p.DefinitionSubstitutions).sort(), variables);
    const steps = BINS.filter((b) => !NOT_STEPS.includes(b));
    const usesPartition = variables.includes('Partition');
    assert.deepEqual(variables, [...steps.map(substitutionVariable), ...(usesPartition ? ['Partition'] : [])].sort());
    if (usesPartition) assert.deepEqual(p.DefinitionSubstitutions.Partition, { Ref: 'AWS::Partition' });
    for (const bin of steps) {
      assert.deepEqual(p.DefinitionSubstitutions[substitutionVariable(bin)], getAtt(s.stack.functions[bin]), bin);
    }
    // After substitution (as CloudFormation does it), every Lambda task names a step function's ARN.
    const substituted = JSON.parse(
      JSON.stringify(asl).replace(/\$\{(\w+)\}/g, (_, v: string) => resolve(p.DefinitionSubstitutions[v])),
    );
    const arns = new Set(steps.map((b) => resolve(getAtt(s.stack.functions[b]))));
    const named = Object.values(substituted.States as Record<string, Json>)
      .filter((state) => state.Type === 'Task')
      .map((state) => state.Parameters.FunctionName);
    assert.ok(named.length >= steps.length);
    assert.ok(named.every((arn: string) => arns.has(arn)), 'every task invokes a step function');
    assert.deepEqual(new Set(named), arns, 'every step function is invoked');
  });

  it('has a fixed name (its ARN is built, not referenced), logs without execution data, and X-Ray', () => {
    const [, sm] = resourcesOfType(t, 'AWS::StepFunctions::StateMachine')[0];
    const p = sm.Properties;
    assert.equal(p.StateMachineName, 'Tasuki-runner-job');
    assert.equal(p.StateMachineType, 'STANDARD');
    assert.deepEqual(p.TracingConfiguration, { Enabled: true });
    assert.equal(p.LoggingConfiguration.IncludeExecutionData, false);
    assert.equal(p.LoggingConfiguration.Level, 'ALL');
    const logGroup = t.Resources[p.LoggingConfiguration.Destinations[0].CloudWatchLogsLogGroup.LogGroupArn['Fn::GetAtt'][0]];
    assert.equal(logGroup.Properties.LogGroupName, '/aws/vendedlogs/states/Tasuki-runner-job');
    assert.equal(resolve(t.Outputs.StateMachineArn.Value), `arn:aws:states:${FAKE.region}:${FAKE.account}:stateMachine:Tasuki-runner-job`);
  });

  it("outputs the console URL pattern of a job's execution", () => {
    assert.equal(
      resolve(t.Outputs.ExecutionConsoleUrlPattern.Value),
      `https://${FAKE.region}.console.aws.amazon.com/states/home?region=${FAKE.region}#/v2/executions/details/` +
        `arn:aws:states:${FAKE.region}:${FAKE.account}:execution:Tasuki-runner-job:<job_id>-<run_attempt>`,
    );
    assert.match(resolve(t.Outputs.WebhookUrl.Value), /^https:\/\/.+\.lambda-url\..+\.on\.aws\/$/);
  });

  it('defect 6: ${Partition} in the ASL becomes the stack\'s partition, and is no Lambda to invoke (contract C)', () => {
    const fake = Object.fromEntries(BINS.map((b) => [b, { functionArn: `arn:${b}` }])) as Json;
    const dir = tempDir('asl');
    const file = path.join(dir, 'partition.asl.json');
    fs.writeFileSync(
      file,
      JSON.stringify({
        StartAt: 'X',
        States: { X: { Type: 'Task', Resource: 'arn:${Partition}:states:::lambda:invoke', Parameters: { FunctionName: '${ValidateFunctionArn}' }, End: true } },
      }),
    );
    const substitutions = aslSubstitutions(fake, file);
    assert.deepEqual(Object.keys(substitutions).sort(), ['Partition', 'ValidateFunctionArn']);
    assert.deepEqual(s.stack.resolve(substitutions.Partition), { Ref: 'AWS::Partition' });
    assert.equal(substitutions.ValidateFunctionArn, 'arn:validate');
    // The state machine may invoke functions only: the partition is not a resource of its policy.
    const role = logicalId(s.stack.stateMachine.role);
    const invoke = iamStatements(t).filter((x) => x.role === role && asList(x.statement.Action).includes('lambda:InvokeFunction'));
    assert.ok(asList<Json>(invoke[0].statement.Resource).every((r) => 'Fn::GetAtt' in r), JSON.stringify(invoke[0].statement.Resource));
  });

  it('contract C: every Task of the ASL names its service integration in ${Partition}, never arn:aws literally', () => {
    const asl = JSON.parse(fs.readFileSync(ASL_PATH, 'utf8'));
    const tasks = Object.entries(asl.States as Record<string, Json>).filter(([, state]) => state.Type === 'Task');
    assert.ok(tasks.length > 0);
    for (const [name, state] of tasks) {
      assert.match(state.Resource, /^arn:\$\{Partition\}:states:::lambda:invoke(\.waitForTaskToken)?$/, name);
    }
    const [, sm] = resourcesOfType(t, 'AWS::StepFunctions::StateMachine')[0];
    assert.deepEqual(sm.Properties.DefinitionSubstitutions.Partition, { Ref: 'AWS::Partition' });
  });

  it('an ASL placeholder that names no Lambda fails synth', () => {
    const fake = Object.fromEntries(BINS.map((b) => [b, { functionArn: `arn:${b}` }])) as Json;
    const dir = tempDir('asl');
    const bad = path.join(dir, 'bad.asl.json');
    fs.writeFileSync(bad, JSON.stringify({ StartAt: 'X', States: { X: { Type: 'Task', Resource: '${BogusFunctionArn}', End: true } } }));
    assert.throws(() => aslSubstitutions(fake, bad), /\$\{BogusFunctionArn\} names no Lambda bin and no known variable \(known: Partition, /);
    const real = Object.keys(aslSubstitutions(fake)).filter((v) => v !== 'Partition');
    assert.deepEqual(real.sort(), BINS.filter((b) => !NOT_STEPS.includes(b)).map(substitutionVariable).sort());
  });
});

describe('DynamoDB', () => {
  it('is the lifecycle table of docs/contracts.md: pk/sk, GSI by-state-deadline (by-received-day: table.test.ts), TTL expires_at, PITR, encrypted, on demand', () => {
    const tables = resourcesOfType(t, 'AWS::DynamoDB::Table');
    assert.equal(tables.length, 1);
    const p = tables[0][1].Properties;
    assert.deepEqual(p.KeySchema, [
      { AttributeName: 'pk', KeyType: 'HASH' },
      { AttributeName: 'sk', KeyType: 'RANGE' },
    ]);
    assert.deepEqual(
      [...p.AttributeDefinitions].sort((a: Json, b: Json) => a.AttributeName.localeCompare(b.AttributeName)),
      [
        { AttributeName: 'created_at', AttributeType: 'S' },
        { AttributeName: 'deadline', AttributeType: 'N' },
        { AttributeName: 'gsi_list', AttributeType: 'S' },
        { AttributeName: 'gsi_state', AttributeType: 'S' },
        { AttributeName: 'pk', AttributeType: 'S' },
        { AttributeName: 'sk', AttributeType: 'S' },
      ],
    );
    const overdue = p.GlobalSecondaryIndexes.filter((i: Json) => i.IndexName === 'by-state-deadline');
    assert.deepEqual(overdue, [
      {
        IndexName: 'by-state-deadline',
        KeySchema: [
          { AttributeName: 'gsi_state', KeyType: 'HASH' },
          { AttributeName: 'deadline', KeyType: 'RANGE' },
        ],
        Projection: { ProjectionType: 'ALL' },
      },
    ]);
    assert.deepEqual(p.TimeToLiveSpecification, { AttributeName: 'expires_at', Enabled: true });
    assert.deepEqual(p.PointInTimeRecoverySpecification, { PointInTimeRecoveryEnabled: true });
    assert.deepEqual(p.SSESpecification, { SSEEnabled: true });
    assert.equal(p.BillingMode, 'PAY_PER_REQUEST');
    assert.equal(p.DeletionProtectionEnabled, true);
    assert.equal(tables[0][1].DeletionPolicy, 'Retain');
  });
});

describe('ECS', () => {
  it('the cluster has Fargate, Fargate Spot and an EC2 Spot provider per arch', () => {
    const [, assoc] = resourcesOfType(t, 'AWS::ECS::ClusterCapacityProviderAssociations')[0];
    const names = assoc.Properties.CapacityProviders;
    assert.ok(names.includes('FARGATE') && names.includes('FARGATE_SPOT'));
    const ec2 = resourcesOfType(t, 'AWS::ECS::CapacityProvider');
    assert.equal(ec2.length, 2);
    for (const [id, cp] of ec2) {
      assert.ok(names.some((n: Json) => n.Ref === id));
      assert.equal(cp.Properties.AutoScalingGroupProvider.ManagedScaling.Status, 'ENABLED');
    }
    for (const [, asg] of resourcesOfType(t, 'AWS::AutoScaling::AutoScalingGroup')) {
      const p = asg.Properties;
      assert.equal(p.MinSize, '0');
      assert.equal(p.MaxSize, '10');
      assert.equal(p.MixedInstancesPolicy.InstancesDistribution.OnDemandPercentageAboveBaseCapacity, 0, 'Spot only');
      assert.equal(p.MixedInstancesPolicy.InstancesDistribution.OnDemandBaseCapacity, 0);
    }
    const types = resourcesOfType(t, 'AWS::AutoScaling::AutoScalingGroup')
      .map(([, asg]) => asg.Properties.MixedInstancesPolicy.LaunchTemplate.Overrides.map((o: Json) => o.InstanceType))
      .flat()
      .sort();
    assert.deepEqual(types, ['m7g.xlarge', 'm7i.xlarge']);
  });

  it('container instances: encrypted volumes, IMDSv2 with hop limit 1, tasks blocked from IMDS', () => {
    const templates = resourcesOfType(t, 'AWS::EC2::LaunchTemplate');
    assert.equal(templates.length, 2);
    for (const [, lt] of templates) {
      const d = lt.Properties.LaunchTemplateData;
      assert.ok(d.BlockDeviceMappings.length > 0);
      assert.ok(d.BlockDeviceMappings.every((b: Json) => b.Ebs.Encrypted === true));
      assert.deepEqual(d.MetadataOptions, { HttpPutResponseHopLimit: 1, HttpTokens: 'required' });
      const userData = resolve(d.UserData['Fn::Base64']);
      assert.match(userData, /ECS_AWSVPC_BLOCK_IMDS=true/);
      assert.equal(userData.match(/ECS_CLUSTER=/g).length, 1);
    }
  });

  it('runner task definitions: one per arch on Fargate, `runner` container, the configured image, region and stop grace in env', () => {
    const tds = resourcesOfType(t, 'AWS::ECS::TaskDefinition');
    const fargate = tds.filter(([, r]) => (r.Properties.RequiresCompatibilities ?? []).includes('FARGATE'));
    assert.deepEqual(
      fargate.map(([, r]) => [r.Properties.Family, r.Properties.RuntimePlatform.CpuArchitecture]).sort(),
      [
        ['Tasuki-runner-arm64', 'ARM64'],
        ['Tasuki-runner-x64', 'X86_64'],
      ],
    );
    for (const [, r] of fargate) {
      const p = r.Properties;
      assert.equal(p.NetworkMode, 'awsvpc');
      assert.deepEqual(p.ContainerDefinitions.map((c: Json) => c.Name), [RUNNER_CONTAINER]);
      const [c] = p.ContainerDefinitions;
      assert.equal(c.Image, exampleConfig().runner.image);
      assert.equal(c.Privileged, undefined);
      assert.deepEqual(
        c.Environment,
        [
          { Name: 'AWS_REGION', Value: { Ref: 'AWS::Region' } },
          { Name: 'TASUKI_STOP_GRACE_SECONDS', Value: '100' },
          { Name: 'TASUKI_TABLE', Value: ref(s.stack.table) },
          { Name: 'TASUKI_RETENTION_DAYS', Value: '90' },
        ],
        'the job comes as overrides; tasuki-boot needs the region, the stop grace, and where to store its usage',
      );
      assert.equal(c.StopTimeout, 120, "Fargate's maximum: the grace period ends before it");
      assert.equal(c.LogConfiguration.LogDriver, 'awslogs');
      assert.deepEqual(p.TaskRoleArn, getAtt(s.stack.node.findChild('RunnerTaskRole')));
    }
  });

  it('docker jobs: only on EC2, dockerd the only privileged container, talking over localhost', () => {
    const tds = resourcesOfType(t, 'AWS::ECS::TaskDefinition');
    const privileged = tds.flatMap(([, r]) => r.Properties.ContainerDefinitions.filter((c: Json) => c.Privileged));
    assert.deepEqual(privileged.map((c: Json) => c.Name), ['dockerd', 'dockerd']);
    const dind = tds.filter(([, r]) => r.Properties.ContainerDefinitions.some((c: Json) => c.Name === 'dockerd'));
    assert.equal(dind.length, 2);
    for (const [, r] of dind) {
      const p = r.Properties;
      assert.deepEqual(p.RequiresCompatibilities, ['EC2']);
      assert.equal(p.NetworkMode, 'awsvpc');
      const byName = Object.fromEntries(p.ContainerDefinitions.map((c: Json) => [c.Name, c]));
      assert.deepEqual(Object.keys(byName).sort(), ['dockerd', RUNNER_CONTAINER]);
      const { dockerd, runner } = byName;
      assert.equal(dockerd.Image, DIND_IMAGE);
      assert.ok(dockerd.Command.includes('--host=tcp://127.0.0.1:2375'), 'dockerd listens on loopback only');
      assert.equal(runner.Privileged, undefined);
      assert.deepEqual(runner.Environment, [
        { Name: 'DOCKER_HOST', Value: 'tcp://127.0.0.1:2375' },
        { Name: 'AWS_REGION', Value: { Ref: 'AWS::Region' } },
        { Name: 'TASUKI_STOP_GRACE_SECONDS', Value: '100' },
        { Name: 'TASUKI_TABLE', Value: ref(s.stack.table) },
        { Name: 'TASUKI_RETENTION_DAYS', Value: '90' },
      ]);
      assert.equal(runner.StopTimeout, 120);
      assert.deepEqual(runner.DependsOn, [{ ContainerName: 'dockerd', Condition: 'HEALTHY' }]);
    }
  });

  it('defects 7 and 8: the runner root is one volume at the same path in both containers, and the daemon has /var/run/docker.sock', () => {
    // The updater renames <root>/bin and <root>/externals and symlinks new ones in the root
    // (actions/runner src/Misc/layoutbin/update.sh.template): nothing under the root may be a mount
    // point, and the daemon must resolve <root>/externals (a symlink after an update) and <root>/_work
    // to the runner's files. Job containers and container actions get `-v
    // /var/run/docker.sock:/var/run/docker.sock`, resolved by the daemon (actions/runner
    // src/Runner.Worker/Container/ContainerInfo.cs, Handlers/ContainerActionHandler.cs).
    const dind = resourcesOfType(t, 'AWS::ECS::TaskDefinition').filter(([, r]) =>
      r.Properties.ContainerDefinitions.some((c: Json) => c.Name === 'dockerd'),
    );
    assert.equal(dind.length, 2);
    for (const [, r] of dind) {
      const p = r.Properties;
      const byName = Object.fromEntries(p.ContainerDefinitions.map((c: Json) => [c.Name, c]));
      const { dockerd, runner } = byName;
      const home = (c: Json) => c.MountPoints.filter((m: Json) => m.ContainerPath === '/home/runner');
      const [runnerHome] = home(runner);
      const [daemonHome] = home(dockerd);
      assert.ok(runnerHome && daemonHome, 'both containers mount /home/runner');
      assert.equal(runnerHome.SourceVolume, daemonHome.SourceVolume, 'the same volume');
      assert.equal(runnerHome.ReadOnly, false);
      assert.equal(daemonHome.ReadOnly, false, 'job containers write the work directory through the daemon');
      for (const c of [runner, dockerd]) {
        const nested = c.MountPoints.filter((m: Json) => m.ContainerPath.startsWith('/home/runner/'));
        assert.deepEqual(nested, [], `${c.Name}: no mount point under the runner root`);
      }
      assert.deepEqual(runner.MountPoints.map((m: Json) => m.ContainerPath), ['/home/runner']);
      const volume = p.Volumes.find((v: Json) => v.Name === runnerHome.SourceVolume);
      assert.deepEqual(volume.DockerVolumeConfiguration, { Driver: 'local', Scope: 'task' });
      assert.ok(dockerd.Command.includes('--host=unix:///var/run/docker.sock'), dockerd.Command.join(' '));
      assert.ok(dockerd.Command.includes('--host=tcp://127.0.0.1:2375'), 'the runner still reaches the daemon over loopback');
      assert.ok(!dockerd.MountPoints.some((m: Json) => m.ContainerPath === '/var/run' || m.ContainerPath === '/var/run/docker.sock'),
        'the socket is created by the daemon in its own container, not hidden by a volume');
    }
  });

  it('defect 11: the runner task role has no policy but its usage item (usage.test.ts), no kms:Decrypt in particular (a per-job grant opens the credential)', () => {
    const role = logicalId(s.stack.node.findChild('RunnerTaskRole'));
    assert.deepEqual(
      iamStatements(t)
        .filter((x) => x.role === role)
        .map((x) => x.statement.Action),
      ['dynamodb:PutItem'],
    );
    const decrypts = iamStatements(t).filter((x) => asList<string>(x.statement.Action).includes('kms:Decrypt'));
    assert.deepEqual(decrypts, [], 'nobody has a standing kms:Decrypt on the runner key');
    // The key policy names only the account root (CDK's default): nothing for the task role there either.
    const [, key] = resourcesOfType(t, 'AWS::KMS::Key')[0];
    assert.ok(!JSON.stringify(key.Properties.KeyPolicy).includes(role));
  });

  it('runner security group: no inbound rules', () => {
    for (const [, sg] of resourcesOfType(t, 'AWS::EC2::SecurityGroup')) {
      assert.equal(sg.Properties.SecurityGroupIngress, undefined, sg.Properties.GroupDescription);
    }
    assert.equal(resourcesOfType(t, 'AWS::EC2::SecurityGroupIngress').length, 0);
  });
});

describe('VPC', () => {
  it('no NAT toll per job: an S3 gateway endpoint on the runner subnets (ECR serves image layers from S3)', () => {
    // https://docs.aws.amazon.com/AmazonECR/latest/userguide/vpc-endpoints.html: layers are in S3;
    // a gateway endpoint is free, NAT data processing is per GB (https://aws.amazon.com/vpc/pricing/).
    const endpoints = resourcesOfType(t, 'AWS::EC2::VPCEndpoint');
    assert.equal(endpoints.length, 1, 'no hourly-billed interface endpoints');
    const [, endpoint] = endpoints[0];
    assert.equal(endpoint.Properties.VpcEndpointType, 'Gateway');
    assert.equal(resolve(endpoint.Properties.ServiceName), `com.amazonaws.${FAKE.region}.s3`);
    const privateSubnets = resourcesOfType(t, 'AWS::EC2::Subnet').filter(([, r]) =>
      r.Properties.Tags.some((tag: Json) => tag.Key === 'aws-cdk:subnet-type' && tag.Value === 'Private'),
    );
    const privateTables = resourcesOfType(t, 'AWS::EC2::SubnetRouteTableAssociation')
      .filter(([, a]) => privateSubnets.some(([id]) => a.Properties.SubnetId.Ref === id))
      .map(([, a]) => a.Properties.RouteTableId);
    assert.equal(privateTables.length, 2);
    assert.deepEqual([...endpoint.Properties.RouteTableIds].sort(byJsonText), [...privateTables].sort(byJsonText));
  });

  it('two AZs by default, a NAT gateway each', () => {
    assert.equal(resourcesOfType(t, 'AWS::EC2::NatGateway').length, 2);
  });
});

const byJsonText = (a: Json, b: Json) => JSON.stringify(a).localeCompare(JSON.stringify(b));

describe('EventBridge, KMS', () => {
  it('two rules: ECS task stops and the rescue schedule', () => {
    const rules = resourcesOfType(t, 'AWS::Events::Rule').map(([, r]) => r.Properties);
    assert.equal(rules.length, 2);
    assert.deepEqual(rules.map((p) => (p.EventPattern ? 'pattern' : p.ScheduleExpression)).sort(), ['pattern', 'rate(1 minute)']);
  });

  it('ECS Task State Change (STOPPED) of this cluster → ecs-events', () => {
    const [[, rule]] = resourcesOfType(t, 'AWS::Events::Rule').filter(([, r]) => r.Properties.EventPattern);
    const p = rule.Properties;
    assert.deepEqual(p.EventPattern, {
      source: ['aws.ecs'],
      'detail-type': ['ECS Task State Change'],
      detail: { clusterArn: [getAtt(s.stack.cluster)], lastStatus: ['STOPPED'] },
    });
    assert.deepEqual(p.Targets.map((x: Json) => x.Arn), [getAtt(s.stack.functions['ecs-events'])]);
  });

  it('every minute → rescue (the sweep ignores the event), not retried, and only this rule may invoke it', () => {
    const [[ruleId, rule]] = resourcesOfType(t, 'AWS::Events::Rule').filter(([, r]) => r.Properties.ScheduleExpression);
    const p = rule.Properties;
    assert.equal(p.ScheduleExpression, 'rate(1 minute)');
    assert.equal(p.State, 'ENABLED');
    assert.equal(p.EventPattern, undefined);
    assert.deepEqual(
      p.Targets.map((x: Json) => [x.Arn, x.RetryPolicy, x.Input]),
      [[getAtt(s.stack.functions.rescue), { MaximumRetryAttempts: 0, MaximumEventAgeInSeconds: 60 }, undefined]],
    );
    const invokers = resourcesOfType(t, 'AWS::Lambda::Permission')
      .map(([, r]) => r.Properties)
      .filter((x) => JSON.stringify(x.FunctionName) === JSON.stringify(getAtt(s.stack.functions.rescue)));
    assert.deepEqual(invokers, [
      { Action: 'lambda:InvokeFunction', FunctionName: getAtt(s.stack.functions.rescue), Principal: 'events.amazonaws.com', SourceArn: { 'Fn::GetAtt': [ruleId, 'Arn'] } },
    ]);
    assert.equal(functionOf('rescue').Properties.Timeout, 60, 'a sweep ends before the next one starts');
  });

  it('the runner key rotates and is kept on stack deletion', () => {
    // The other key encrypts the alarm topic (observability.test.ts).
    const keys = resourcesOfType(t, 'AWS::KMS::Key').filter(([, r]) => r.Properties.Description.startsWith('tasuki: seals'));
    assert.equal(keys.length, 1);
    assert.equal(keys[0][1].Properties.EnableKeyRotation, true);
    assert.equal(keys[0][1].DeletionPolicy, 'Retain');
  });
});

// ---- IAM --------------------------------------------------------------------------------------------

/** Actions whose API has no resource-level permission: the only ones allowed on "*". */
const UNSCOPABLE = new Set([
  // Step Functions log delivery (CDK's StateMachine logging)
  'logs:CreateLogDelivery',
  'logs:GetLogDelivery',
  'logs:UpdateLogDelivery',
  'logs:DeleteLogDelivery',
  'logs:ListLogDeliveries',
  'logs:PutResourcePolicy',
  'logs:DescribeResourcePolicies',
  'logs:DescribeLogGroups',
  // X-Ray
  'xray:PutTraceSegments',
  'xray:PutTelemetryRecords',
  'xray:GetSamplingRules',
  'xray:GetSamplingTargets',
  // ECS agent on container instances
  'ecs:DiscoverPollEndpoint',
]);

describe('IAM: least privilege', () => {
  it('no statement has a wildcard action, and "*" resources only for actions that cannot be scoped', () => {
    const statements = iamStatements(t);
    assert.ok(statements.length > 20);
    for (const { owner, statement } of statements) {
      assert.equal(statement.Effect, 'Allow', owner);
      for (const action of asList<string>(statement.Action)) {
        assert.ok(!action.includes('*'), `${owner}: wildcard action ${action}`);
      }
      assert.equal(statement.NotAction, undefined, owner);
      assert.equal(statement.NotResource, undefined, owner);
      if (asList(statement.Resource).includes('*')) {
        for (const action of asList<string>(statement.Action)) {
          assert.ok(UNSCOPABLE.has(action), `${owner}: ${action} on "*" could be scoped`);
        }
      }
    }
  });

  it('no managed policies, except the AWS basic execution role of CDK\'s own custom resource (default SG lockdown)', () => {
    for (const [id, role] of resourcesOfType(t, 'AWS::IAM::Role')) {
      const managed = role.Properties.ManagedPolicyArns ?? [];
      if (id.startsWith('CustomVpcRestrictDefaultSGCustomResourceProvider')) {
        assert.deepEqual(managed, [{ 'Fn::Sub': 'arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole' }]);
      } else {
        assert.deepEqual(managed, [], id);
      }
    }
  });

  // What each Lambda may do, and on what: docs/contracts.md and the handlers' use of the ports.
  const tableArn = () => getAtt(s.stack.table);
  const smArn = () => resolve(t.Outputs.StateMachineArn.Value);
  const secret = (name: string) => `arn:aws:secretsmanager:${FAKE.region}:${FAKE.account}:secret:${name}-??????`;
  const GET_PUT = ['dynamodb:GetItem', 'dynamodb:PutItem'];
  const GET_PUT_UPDATE = [...GET_PUT, 'dynamodb:UpdateItem'];
  const CALLBACKS = ['states:SendTaskFailure', 'states:SendTaskSuccess'];
  const expected: Record<string, () => [string[], Json, Json?][]> = {
    webhook: () => [
      [GET_PUT_UPDATE, tableArn()],
      [[...CALLBACKS, 'states:StartExecution'], smArn()],
      [['secretsmanager:GetSecretValue'], [secret('tasuki/webhook-secret')]],
    ],
    validate: () => [[GET_PUT, tableArn()]],
    'resolve-labels': () => [[GET_PUT, tableArn()]],
    'issue-token': () => [
      [GET_PUT, tableArn()],
      [['secretsmanager:GetSecretValue'], [secret('tasuki/github-app-private-key')]],
      // Contract D: the envelope's data key for the job's context only; a grant of Decrypt only, to the
      // runner task role only, constrained to an exact encryption context.
      [['kms:GenerateDataKey'], getAtt(s.stack.runnerKey), { 'ForAllValues:StringEquals': { 'kms:EncryptionContextKeys': [JOB_CONTEXT_KEY] }, Null: { 'kms:EncryptionContextKeys': 'false' } }],
      [
        ['kms:CreateGrant'],
        getAtt(s.stack.runnerKey),
        {
          StringEquals: { 'kms:GranteePrincipal': getAtt(s.stack.node.findChild('RunnerTaskRole')), 'kms:GrantConstraintType': 'EncryptionContextEquals' },
          'ForAllValues:StringEquals': { 'kms:GrantOperations': ['Decrypt'] },
        },
      ],
    ],
    'run-task': () => [
      [['ecs:RunTask'], resourcesOfType(t, 'AWS::ECS::TaskDefinition').map(([id]) => ({ Ref: id })).sort(byJson), { ArnEquals: { 'ecs:cluster': getAtt(s.stack.cluster) } }],
      [['ecs:TagResource'], clusterTasks(), { StringEquals: { 'ecs:CreateAction': 'RunTask' } }],
      [
        ['iam:PassRole'],
        [getAtt(s.stack.node.findChild('RunnerExecutionRole')), getAtt(s.stack.node.findChild('RunnerTaskRole'))],
        { StringEquals: { 'iam:PassedToService': 'ecs-tasks.amazonaws.com' } },
      ],
    ],
    'wait-for-registration': () => [
      [GET_PUT_UPDATE, tableArn()],
      [CALLBACKS, smArn()],
    ],
    confirm: () => [
      [GET_PUT_UPDATE, tableArn()],
      [CALLBACKS, smArn()],
    ],
    cleanup: () => [
      [GET_PUT_UPDATE, tableArn()],
      [['secretsmanager:GetSecretValue'], [secret('tasuki/github-app-private-key')]],
      [['ecs:StopTask'], clusterTasks(), { ArnEquals: { 'ecs:cluster': getAtt(s.stack.cluster) } }],
      [['kms:RevokeGrant'], getAtt(s.stack.runnerKey)],
    ],
    finalize: () => [
      [[...GET_PUT, 'dynamodb:Query', 'dynamodb:UpdateItem'], tableArn()],
      [['secretsmanager:GetSecretValue'], [secret('tasuki/github-app-private-key')]],
      [['ecs:StopTask'], clusterTasks(), { ArnEquals: { 'ecs:cluster': getAtt(s.stack.cluster) } }],
      [['ecs:DescribeTasks'], clusterTasks(), { ArnEquals: { 'ecs:cluster': getAtt(s.stack.cluster) } }],
      [['kms:RevokeGrant'], getAtt(s.stack.runnerKey)],
    ],
    'ecs-events': () => [
      [['dynamodb:GetItem', 'dynamodb:UpdateItem'], tableArn()],
      [CALLBACKS, smArn()],
      // Its asynchronous invocations' dead-letter queue (observability.ts).
      [['sqs:SendMessage'], getAtt(s.stack.node.findChild('EcsEventsInvokeDlq'))],
    ],
    // Query on the by-state-deadline index only (never the table: no Scan, no timeline reads).
    rescue: () => [
      [GET_PUT_UPDATE, tableArn()],
      [['dynamodb:Query'], `arn:aws:dynamodb:${FAKE.region}:${FAKE.account}:table/${resolve(ref(s.stack.table))}/index/by-state-deadline`],
      [[...CALLBACKS, 'states:StartExecution'], smArn()],
      [['states:DescribeExecution'], smArn().replace(':stateMachine:', ':execution:') + ':*'],
      [['secretsmanager:GetSecretValue'], [secret('tasuki/github-app-private-key')]],
      [['ecs:StopTask'], clusterTasks(), { ArnEquals: { 'ecs:cluster': getAtt(s.stack.cluster) } }],
      [['ecs:ListTasks'], clusterTasks().replace(':task/', ':container-instance/'), { ArnEquals: { 'ecs:cluster': getAtt(s.stack.cluster) } }],
      [['ecs:DescribeTasks'], clusterTasks(), { ArnEquals: { 'ecs:cluster': getAtt(s.stack.cluster) } }],
      [['sqs:SendMessage'], getAtt(s.stack.node.findChild('RescueInvokeDlq'))],
    ],
  };
  const byJson = (a: Json, b: Json) => JSON.stringify(a).localeCompare(JSON.stringify(b));
  const clusterTasks = () => `arn:aws:ecs:${FAKE.region}:${FAKE.account}:task/${resolve(ref(s.stack.cluster))}/*`;

  for (const bin of BINS) {
    it(`${bin}: its own log group and exactly the listed grants`, () => {
      const fn = functionOf(bin);
      const role = fn.Properties.Role['Fn::GetAtt'][0];
      const statements = iamStatements(t).filter((x) => x.role === role).map((x) => x.statement);
      const [logs, ...rest] = statements;
      assert.deepEqual(logs.Action, ['logs:CreateLogStream', 'logs:PutLogEvents']);
      assert.deepEqual(logs.Resource, { 'Fn::GetAtt': [fn.Properties.LoggingConfig.LogGroup.Ref, 'Arn'] });
      // Resources compared as sorted lists; built ARNs (Fn::Join) compared resolved.
      const resources = (r: Json) =>
        asList<Json>(r)
          .map((x) => (typeof x === 'object' && 'Fn::Join' in x ? resolve(x) : x))
          .sort(byJson);
      const actual = rest.map((st) => [asList<string>(st.Action).sort(), resources(st.Resource), st.Condition]);
      const want = expected[bin]().map(([actions, resource, condition]) => [[...actions].sort(), resources(resource), condition]);
      assert.deepEqual(actual, want);
      // Only the right secrets, only where they are read.
      const secretNames = JSON.stringify(statements).match(/secret:[^"?]+/g) ?? [];
      const appKey = ['secret:tasuki/github-app-private-key-'];
      const reads = { webhook: ['secret:tasuki/webhook-secret-'], 'issue-token': appKey, cleanup: appKey, finalize: appKey, rescue: appKey } as Record<string, string[]>;
      assert.deepEqual(secretNames, reads[bin] ?? [], bin);
    });
  }

  it('the state machine may invoke exactly the step functions (unqualified ARNs), plus logs delivery and X-Ray', () => {
    const role = logicalId(s.stack.stateMachine.role);
    const statements = iamStatements(t).filter((x) => x.role === role).map((x) => x.statement);
    const invoke = statements.filter((st) => asList(st.Action).includes('lambda:InvokeFunction'));
    assert.equal(invoke.length, 1);
    assert.deepEqual(asList(invoke[0].Action), ['lambda:InvokeFunction']);
    const steps = BINS.filter((b) => !NOT_STEPS.includes(b));
    assert.deepEqual(
      [...invoke[0].Resource].sort(byJson),
      steps.map((b) => getAtt(s.stack.functions[b])).sort(byJson),
    );
    for (const st of statements.filter((x) => x !== invoke[0])) {
      assert.deepEqual(asList(st.Resource), ['*']);
      assert.ok(asList<string>(st.Action).every((a) => UNSCOPABLE.has(a)));
    }
  });

  it('container instances: the ECS agent only, on this cluster', () => {
    const roles = resourcesOfType(t, 'AWS::IAM::Role').filter(([, r]) =>
      JSON.stringify(r.Properties.AssumeRolePolicyDocument).includes('ec2.amazonaws.com'),
    );
    assert.equal(roles.length, 2);
    for (const [id] of roles) {
      const actions = iamStatements(t)
        .filter((x) => x.role === id)
        .flatMap((x) => asList<string>(x.statement.Action))
        .sort();
      assert.deepEqual(actions, [
        'ecs:DeregisterContainerInstance',
        'ecs:DiscoverPollEndpoint',
        'ecs:Poll',
        'ecs:PutSystemLogEvents',
        'ecs:RegisterContainerInstance',
        'ecs:StartTelemetrySession',
        'ecs:SubmitAttachmentStateChanges',
        'ecs:SubmitContainerStateChange',
        'ecs:SubmitTaskStateChange',
        'ecs:UpdateContainerInstancesState',
      ]);
    }
  });
});
