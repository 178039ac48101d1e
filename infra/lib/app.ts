// The CDK app: one stack from one validated config file, checked by cdk-nag (AwsSolutions).
// `bin/tasuki.ts` (the `cdk` entry point) and the tests build the app the same way.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { loadDeployConfig } from './config';
import { placeholderFunctions, rustFunctions } from './lambdas';
import { TasukiStack } from './stack';

export const INFRA_DIR = path.resolve(__dirname, '..');

export interface TasukiAppOptions {
  /** The deployment file. */
  readonly configPath: string;
  /** @default 'Tasuki' */
  readonly stackName?: string;
  /** `rust` builds the Lambdas with cargo-lambda; `placeholder` packages a stub (tests, offline synth). */
  readonly lambdaCode?: 'rust' | 'placeholder';
  readonly webhookReservedConcurrency?: number;
  /** Cloud assembly directory (tests use a temporary one). */
  readonly outdir?: string;
  /** Extra context (the `cdk` CLI passes its own through the environment). */
  readonly context?: Record<string, unknown>;
}

/** The feature flags of cdk.json, so that an app built outside the CLI (tests) behaves the same. */
function cdkJsonContext(): Record<string, unknown> {
  const cdkJson = JSON.parse(fs.readFileSync(path.join(INFRA_DIR, 'cdk.json'), 'utf8'));
  return cdkJson.context ?? {};
}

export function buildApp(options: TasukiAppOptions): { app: App; stack: TasukiStack } {
  const config = loadDeployConfig(options.configPath);
  const app = new App({ outdir: options.outdir, context: { ...cdkJsonContext(), ...options.context } });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  const stack = new TasukiStack(app, options.stackName ?? 'Tasuki', {
    config,
    functions: options.lambdaCode === 'placeholder' ? placeholderFunctions() : rustFunctions(),
    webhookReservedConcurrency: options.webhookReservedConcurrency,
  });
  return { app, stack };
}
