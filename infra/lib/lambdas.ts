// The Lambda binaries (`functions/lambdas/src/bin/*.rs`) and how their code is made.

import * as path from 'node:path';
import { Duration } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { RustFunction } from 'cargo-lambda-cdk';
import { Construct } from 'constructs';

/** Every bin of the `tasuki-lambdas` package, in docs/contracts.md order. */
export const BINS = [
  'webhook',
  'validate',
  'resolve-labels',
  'issue-token',
  'run-task',
  'wait-for-registration',
  'confirm',
  'cleanup',
  'finalize',
  'ecs-events',
  'rescue',
] as const;
export type Bin = (typeof BINS)[number];

/** The bins the state machine does not invoke: the webhook's Function URL and the EventBridge targets. */
export const NOT_STEPS: readonly Bin[] = ['webhook', 'ecs-events', 'rescue'];

/** `resolve-labels` → `ResolveLabels`. */
export function pascal(bin: string): string {
  return bin
    .split('-')
    .map((w) => w.charAt(0).toUpperCase() + w.slice(1))
    .join('');
}

/** The ASL substitution variable a step bin fills: `resolve-labels` → `ResolveLabelsFunctionArn`. */
export function substitutionVariable(bin: string): string {
  return `${pascal(bin)}FunctionArn`;
}

/** How long each handler may take (the webhook answers GitHub, which gives up after 10 s). */
export const TIMEOUTS: Record<Bin, Duration> = {
  webhook: Duration.seconds(10),
  validate: Duration.seconds(30),
  'resolve-labels': Duration.seconds(30),
  'issue-token': Duration.seconds(60),
  'run-task': Duration.seconds(30),
  'wait-for-registration': Duration.seconds(30),
  confirm: Duration.seconds(30),
  cleanup: Duration.seconds(60),
  finalize: Duration.seconds(60),
  'ecs-events': Duration.seconds(30),
  // One sweep: at most SWEEP_LIMIT (50) overdue jobs, a GitHub call and a few writes each.
  rescue: Duration.seconds(60),
};

/** Everything a Lambda gets besides its code. */
export type CommonFunctionProps = Omit<lambda.FunctionProps, 'code' | 'handler' | 'runtime'>;

/** Makes the function for one bin. */
export type FunctionFactory = (scope: Construct, id: string, bin: Bin, props: CommonFunctionProps) => lambda.Function;

/** The repository root (holds the Cargo workspace). */
export const REPO_ROOT = path.resolve(__dirname, '..', '..');

/**
 * Real deploys: `cargo lambda build --release --arm64 --bin <bin>` at synth time (cargo-lambda-cdk),
 * from the workspace manifest. Needs cargo-lambda (or Docker) and the arm64 target.
 */
export function rustFunctions(manifestPath = path.join(REPO_ROOT, 'Cargo.toml')): FunctionFactory {
  return (scope, id, bin, props) =>
    new RustFunction(scope, id, {
      ...props,
      manifestPath,
      binaryName: bin,
      runtime: 'provided.al2023',
    });
}

/**
 * Tests and `cdk synth -c lambdaCode=placeholder`: the same functions with a tiny placeholder
 * `bootstrap` that refuses to run, so synthesizing never compiles Rust.
 */
export const PLACEHOLDER_CODE_DIR = path.join(__dirname, 'placeholder-lambda');

export function placeholderFunctions(): FunctionFactory {
  const code = lambda.Code.fromAsset(PLACEHOLDER_CODE_DIR);
  return (scope, id, _bin, props) =>
    new lambda.Function(scope, id, {
      ...props,
      code,
      handler: 'bootstrap',
      runtime: lambda.Runtime.PROVIDED_AL2023,
    });
}
