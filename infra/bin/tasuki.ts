#!/usr/bin/env node
// `npx cdk synth|deploy` entry point.
//   config file:  -c config=<path>, or TASUKI_CONFIG_PATH, or tasuki.config.json next to cdk.json
//   stack name:   -c stackName=<name> (default Tasuki)
//   Lambda code:  -c lambdaCode=placeholder to synthesize without compiling Rust (never deploy that)
//   webhook guard: -c webhookReservedConcurrency=<n> (default 0: none; a new account with a Lambda
//                  concurrency quota of 10 cannot reserve any — raise the quota first)

import * as path from 'node:path';
import { App } from 'aws-cdk-lib';
import { ConfigError } from '../lib/config';
import { INFRA_DIR, buildApp } from '../lib/app';

function main(): void {
  const cli = new App({ autoSynth: false }); // only reads the CLI's -c context
  const context = (key: string): string | undefined => cli.node.tryGetContext(key);
  const configPath = path.resolve(context('config') ?? process.env.TASUKI_CONFIG_PATH ?? path.join(INFRA_DIR, 'tasuki.config.json'));
  const lambdaCode = context('lambdaCode') ?? 'rust';
  if (lambdaCode !== 'rust' && lambdaCode !== 'placeholder') {
    throw new ConfigError('-c lambdaCode', [`must be rust or placeholder, not ${lambdaCode}`]);
  }
  const concurrency = context('webhookReservedConcurrency');
  if (concurrency !== undefined && !/^\d+$/.test(String(concurrency))) {
    throw new ConfigError('-c webhookReservedConcurrency', [`must be a whole number (0 reserves none), not ${concurrency}`]);
  }
  const { app } = buildApp({
    configPath,
    stackName: context('stackName'),
    lambdaCode,
    webhookReservedConcurrency: concurrency === undefined ? undefined : Number(concurrency),
  });
  app.synth();
}

try {
  main();
} catch (e) {
  if (e instanceof ConfigError) {
    console.error(e.message);
    process.exit(1);
  }
  throw e;
}
