// Other configs: an imported VPC, no EC2 capacity, a private ECR image, GitHub Enterprise Server;
// cdk-nag wired into the app; `cdk synth` refusing a bad file with the field named.

import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import { RustFunction } from 'cargo-lambda-cdk';
import { INFRA_DIR, buildApp } from '../lib/app';
import { FAKE, type Json, type Synth, exampleConfig, iamStatements, resolver, resourcesOfType, synth, tempDir } from './helpers';

describe('an imported VPC, Fargate only, a private ECR image, GitHub Enterprise Server', () => {
  let s: Synth;
  let t: Json;
  let runtime: Json;
  const image = '111122223333.dkr.ecr.eu-west-1.amazonaws.com/ci/tasuki-runner:2.336.0';
  const hookArn = 'arn:aws:secretsmanager:eu-west-1:111122223333:secret:ci/tasuki-hook-AbC123';

  before(() => {
    const config = exampleConfig();
    config.network = {
      vpc: {
        import: {
          vpc_id: 'vpc-0123456789abcdef0',
          subnets: { 'eu-west-1b': 'subnet-0bbbbbbbbbbbbbbbb', 'eu-west-1a': 'subnet-0aaaaaaaaaaaaaaaa' },
          s3_gateway_endpoint: true,
        },
      },
      security_group_allowlist: ['sg-0123456789abcdef1'],
    };
    config.runner.stop_grace_seconds = 60;
    config.github.webhook_secret_name = hookArn;
    delete config.ec2;
    config.capacity_order = ['fargate-spot', 'fargate'];
    config.runner.image = image;
    config.github.api_url = 'https://ghe.example.com/api/v3';
    s = synth({ config, stackName: 'TasukiGhe', webhookReservedConcurrency: 0 });
    t = s.template;
    const [, webhook] = resourcesOfType(t, 'AWS::Lambda::Function').find(([, r]) => r.Properties.Description === 'tasuki webhook')!;
    runtime = JSON.parse(resolver(t).resolve(webhook.Properties.Environment.Variables.TASUKI_CONFIG));
  });

  it('synthesizes with no finding (cdk-nag, CloudFormation validation, construct warnings)', () => {
    const report = JSON.parse(fs.readFileSync(path.join(s.outdir, 'validation-report.json'), 'utf8'));
    assert.deepEqual(report.pluginReports, []);
  });

  it('creates no VPC and hands the given subnets (by AZ) to run-task', () => {
    assert.equal(resourcesOfType(t, 'AWS::EC2::VPC').length, 0);
    assert.equal(resourcesOfType(t, 'AWS::EC2::Subnet').length, 0);
    assert.deepEqual(runtime.network.subnets, { 'eu-west-1a': 'subnet-0aaaaaaaaaaaaaaaa', 'eu-west-1b': 'subnet-0bbbbbbbbbbbbbbbb' });
    assert.deepEqual(runtime.network.security_group_allowlist, ['sg-0123456789abcdef1']);
    const [, sg] = resourcesOfType(t, 'AWS::EC2::SecurityGroup')[0];
    assert.equal(sg.Properties.VpcId, 'vpc-0123456789abcdef0');
  });

  it('without ec2 there is no EC2 capacity and no dind task definition (docker jobs are refused)', () => {
    assert.equal(resourcesOfType(t, 'AWS::AutoScaling::AutoScalingGroup').length, 0);
    assert.equal(resourcesOfType(t, 'AWS::ECS::CapacityProvider').length, 0);
    assert.deepEqual(Object.keys(runtime.ecs.task_definitions).sort(), ['arm64', 'x64']);
    assert.deepEqual(runtime.ecs.ec2_capacity_providers, {});
    assert.deepEqual(runtime.capacity_order, ['fargate-spot', 'fargate']);
    const privileged = resourcesOfType(t, 'AWS::ECS::TaskDefinition').flatMap(([, r]) =>
      r.Properties.ContainerDefinitions.filter((c: Json) => c.Privileged),
    );
    assert.deepEqual(privileged, []);
  });

  it('GitHub Enterprise Server: the API URL reaches the Lambdas', () => {
    assert.equal(runtime.github.api_url, 'https://ghe.example.com/api/v3');
    assert.equal(runtime.state_machine_arn, `arn:aws:states:${FAKE.region}:${FAKE.account}:stateMachine:TasukiGhe-runner-job`);
  });

  it('a private ECR image: the execution role may pull exactly that repository', () => {
    const [, td] = resourcesOfType(t, 'AWS::ECS::TaskDefinition')[0];
    assert.equal(resolver(t).resolve(td.Properties.ContainerDefinitions[0].Image), image);
    const execRole = td.Properties.ExecutionRoleArn['Fn::GetAtt'][0];
    const statements = iamStatements(t).filter((x) => x.role === execRole).map((x) => x.statement);
    const pull = statements.find((st) => [st.Action].flat().includes('ecr:BatchGetImage'));
    assert.ok(pull);
    assert.equal(resolver(t).resolve(pull.Resource), 'arn:aws:ecr:eu-west-1:111122223333:repository/ci/tasuki-runner');
    const token = statements.find((st) => [st.Action].flat().includes('ecr:GetAuthorizationToken'));
    assert.deepEqual([token.Action].flat(), ['ecr:GetAuthorizationToken'], 'the only action on "*"');
    assert.equal(token.Resource, '*');
  });

  it('a secret given by its complete ARN: the Lambdas get that ARN, IAM grants exactly it', () => {
    assert.equal(runtime.github.webhook_secret_id, hookArn);
    assert.equal(runtime.github.private_key_secret_id, 'tasuki/github-app-private-key');
    const reads = iamStatements(t)
      .filter((x) => [x.statement.Action].flat().includes('secretsmanager:GetSecretValue'))
      .map((x) => resolver(t).resolve(x.statement.Resource));
    assert.ok(reads.some((r) => JSON.stringify(r) === JSON.stringify(hookArn) || JSON.stringify(r) === JSON.stringify([hookArn])), JSON.stringify(reads));
    assert.ok(!JSON.stringify(reads).includes(`${hookArn}-??????`));
  });

  it('runner.stop_grace_seconds reaches tasuki-boot as TASUKI_STOP_GRACE_SECONDS', () => {
    for (const [, td] of resourcesOfType(t, 'AWS::ECS::TaskDefinition')) {
      const [runner] = td.Properties.ContainerDefinitions;
      assert.deepEqual(runner.Environment.find((e: Json) => e.Name === 'TASUKI_STOP_GRACE_SECONDS'), { Name: 'TASUKI_STOP_GRACE_SECONDS', Value: '60' });
      assert.equal(runner.StopTimeout, 120);
    }
  });

  it('creates no VPC endpoint in a VPC it does not own', () => {
    assert.equal(resourcesOfType(t, 'AWS::EC2::VPCEndpoint').length, 0);
  });

  it('webhookReservedConcurrency 0 reserves none', () => {
    const [, webhook] = resourcesOfType(t, 'AWS::Lambda::Function').find(([, r]) => r.Properties.Description === 'tasuki webhook')!;
    assert.equal(webhook.Properties.ReservedConcurrentExecutions, undefined);
  });
});

/** The warnings of a synth, as the validation report lists them (annotationsInValidationReport in cdk.json). */
function warnings(s: Synth): string[] {
  const report = JSON.parse(fs.readFileSync(path.join(s.outdir, 'validation-report.json'), 'utf8'));
  return report.pluginReports.flatMap((p: Json) => p.violations ?? []).map((v: Json) => `${v.ruleName}: ${v.description}`);
}

describe('item 7: an imported VPC is checked for the NAT toll on image pulls', () => {
  const imported = (extra: Json = {}) => {
    const config = exampleConfig();
    config.network = {
      vpc: { import: { vpc_id: 'vpc-0123456789abcdef0', subnets: { 'eu-west-1a': 'subnet-0aaaaaaaaaaaaaaaa' }, ...extra } },
      security_group_allowlist: [],
    };
    delete config.ec2;
    config.capacity_order = ['fargate-spot', 'fargate'];
    return config;
  };

  it('without s3_gateway_endpoint: synth warns, naming the NAT data processing cost and the fix', () => {
    const found = warnings(synth({ config: imported() }));
    const toll = found.filter((w) => w.includes('tasuki:natToll'));
    assert.equal(toll.length, 1, JSON.stringify(found));
    assert.match(toll[0], /\$0\.045\/GB/);
    assert.match(toll[0], /S3 gateway endpoint/);
    assert.match(toll[0], /ECR in this region/);
    assert.match(toll[0], /"s3_gateway_endpoint": true/);
  });

  it('with s3_gateway_endpoint: true, no warning', () => {
    assert.deepEqual(warnings(synth({ config: imported({ s3_gateway_endpoint: true }) })), []);
  });
});

describe('defect 6: more than two AZs in a created VPC', () => {
  it('max_azs above 2 without availability_zones fails synth with a clear message', () => {
    const config = exampleConfig();
    config.network.vpc = { create: { max_azs: 3 } };
    assert.throws(
      () => synth({ config }),
      (e: Error) =>
        /\/network\/vpc\/create\/availability_zones is required for max_azs 3: the stack is environment-agnostic, so CDK sees only 2 zones/.test(e.message),
    );
  });

  it('availability_zones given are the VPC\'s zones, a subnet and a NAT gateway in each', () => {
    const zones = ['eu-west-1a', 'eu-west-1b', 'eu-west-1c'];
    const config = exampleConfig();
    config.network.vpc = { create: { max_azs: 3, availability_zones: zones } };
    const s = synth({ config });
    const t = s.template;
    const privateSubnets = resourcesOfType(t, 'AWS::EC2::Subnet').filter(([, r]) =>
      r.Properties.Tags.some((tag: Json) => tag.Key === 'aws-cdk:subnet-type' && tag.Value === 'Private'),
    );
    assert.deepEqual(privateSubnets.map(([, r]) => r.Properties.AvailabilityZone).sort(), zones);
    assert.equal(resourcesOfType(t, 'AWS::EC2::NatGateway').length, 3);
    const [, webhook] = resourcesOfType(t, 'AWS::Lambda::Function').find(([, r]) => r.Properties.Description === 'tasuki webhook')!;
    const runtime = JSON.parse(resolver(t).resolve(webhook.Properties.Environment.Variables.TASUKI_CONFIG));
    assert.deepEqual(Object.keys(runtime.network.subnets).sort(), zones);
  });

  it('availability_zones must name max_azs zones', () => {
    const config = exampleConfig();
    config.network.vpc = { create: { max_azs: 2, availability_zones: ['eu-west-1a'] } };
    assert.throws(() => synth({ config }), /\/network\/vpc\/create\/availability_zones names 1 zones, but max_azs is 2/);
  });
});

describe('cdk-nag (AwsSolutions)', () => {
  it('the example synthesizes with no unacknowledged finding, and every acknowledgement has a reason', () => {
    const s = synth();
    const report = JSON.parse(fs.readFileSync(path.join(s.outdir, 'validation-report.json'), 'utf8'));
    assert.deepEqual(report.pluginReports.flatMap((p: Json) => p.violations ?? []), []);
    // Acknowledgements are construct metadata: { "<rule id>": "<reason>" }.
    const acknowledged: [string, string][] = [];
    const nodes: Json[] = [s.stack];
    while (nodes.length > 0) {
      const node = nodes.pop();
      for (const entry of node.node.metadata) {
        if (entry.type === 'aws:cdk:acknowledged-rules') acknowledged.push(...(Object.entries(entry.data) as [string, string][]));
      }
      nodes.push(...node.node.children);
    }
    const ours = acknowledged.filter(([id]) => id.includes('AwsSolutions'));
    assert.ok(ours.length >= 8, JSON.stringify(acknowledged));
    for (const [id, reason] of ours) {
      assert.ok(reason.length > 40, `${id}: acknowledged without a real reason (${reason})`);
    }
  });

  it('is wired into the app: an unacknowledged finding fails synth', () => {
    const outdir = tempDir('nag');
    const { app, stack } = buildApp({ configPath: path.join(INFRA_DIR, 'tasuki.config.example.json'), lambdaCode: 'placeholder', outdir });
    new dynamodb.Table(stack, 'NoPitr', { partitionKey: { name: 'pk', type: dynamodb.AttributeType.STRING } });
    assert.throws(() => app.synth(), /Validation failed/);
    const report = fs.readFileSync(path.join(outdir, 'validation-report.json'), 'utf8');
    assert.match(report, /AwsSolutions-DDB3/);
  });
});

describe('Lambda code for deploys', () => {
  it('is cargo-lambda-cdk RustFunction per bin of the workspace (bundling skipped here: no Rust build)', () => {
    const outdir = tempDir('rust');
    const { app, stack } = buildApp({
      configPath: path.join(INFRA_DIR, 'tasuki.config.example.json'),
      lambdaCode: 'rust',
      outdir,
      context: { 'aws:cdk:bundling-stacks': [] },
    });
    app.synth();
    for (const [bin, fn] of Object.entries(stack.functions)) {
      assert.ok(fn instanceof RustFunction, bin);
      assert.equal(fn.architecture.name, 'arm64', bin);
      assert.equal(fn.runtime.name, 'provided.al2023', bin);
    }
  });
});

describe('bin/tasuki.ts (what `cdk synth` runs)', () => {
  function run(context: Record<string, string>, env: Record<string, string> = {}) {
    const outdir = tempDir('bin');
    const result = spawnSync(process.execPath, ['--import', 'tsx', path.join(INFRA_DIR, 'bin', 'tasuki.ts')], {
      cwd: INFRA_DIR,
      env: { ...process.env, ...env, CDK_OUTDIR: outdir, CDK_CONTEXT_JSON: JSON.stringify(context) },
      encoding: 'utf8',
    });
    return { ...result, outdir };
  }

  it('a bad config fails synth with the field named, and no stack trace', () => {
    const dir = tempDir('bad');
    const bad = exampleConfig();
    bad.timeouts.registration_seconds = 0;
    bad.capacity_order = ['fargate', 'quantum'];
    const file = path.join(dir, 'tasuki.config.json');
    fs.writeFileSync(file, JSON.stringify(bad));
    const r = run({ config: file, lambdaCode: 'placeholder' });
    assert.equal(r.status, 1, r.stderr);
    assert.equal(
      r.stderr.trim(),
      [
        'tasuki.config.json: /capacity_order/1 must be one of "fargate-spot", "fargate", "ec2"',
        'tasuki.config.json: /timeouts/registration_seconds must be >= 1',
      ].join('\n'),
    );
  });

  it('-c webhookReservedConcurrency must be a whole number', () => {
    const r = run({ lambdaCode: 'placeholder', config: path.join(INFRA_DIR, 'tasuki.config.example.json'), webhookReservedConcurrency: 'lots' });
    assert.equal(r.status, 1);
    assert.equal(r.stderr.trim(), '-c webhookReservedConcurrency: must be a whole number (0 reserves none), not lots');
  });

  it('reads the config path from TASUKI_CONFIG_PATH and synthesizes', () => {
    const r = run({ lambdaCode: 'placeholder', stackName: 'TasukiEnv' }, { TASUKI_CONFIG_PATH: path.join(INFRA_DIR, 'tasuki.config.example.json') });
    assert.equal(r.status, 0, r.stderr);
    const manifest = JSON.parse(fs.readFileSync(path.join(r.outdir, 'manifest.json'), 'utf8'));
    assert.equal(manifest.artifacts.TasukiEnv?.type, 'aws:cloudformation:stack', 'the cloud assembly lists the stack');
  });

  it('without a config file, says which file it wanted', () => {
    const r = run({ lambdaCode: 'placeholder', config: '/nonexistent/tasuki.config.json' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /tasuki\.config\.json: cannot read \/nonexistent\/tasuki\.config\.json .*copy tasuki\.config\.example\.json/);
  });
});
