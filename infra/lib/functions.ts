// The Lambdas, one per bin: each with its own log group and its own role (permissions.ts), all with
// the same runtime config.

import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import { BINS, type Bin, type CommonFunctionProps, type FunctionFactory, TIMEOUTS, pascal } from './lambdas';
import { type Grantables, NEEDS, acknowledgeClusterTasks, acknowledgeExecutions, lambdaStatements } from './permissions';

export interface FunctionsProps {
  /** Makes each Lambda: `rustFunctions()` for deploys, `placeholderFunctions()` for tests. */
  readonly functions: FunctionFactory;
  /** `TASUKI_CONFIG` of every Lambda (tasuki_core::domain::config::Config, as JSON). */
  readonly configJson: string;
  readonly retention: logs.RetentionDays;
  readonly grants: Grantables;
  /** See `TasukiStackProps.webhookReservedConcurrency`. */
  readonly webhookReservedConcurrency?: number;
  /** Asynchronous invocation settings (retries, event age, DLQ) of the Lambdas invoked that way. */
  readonly asyncInvoke?: Partial<Record<Bin, Partial<CommonFunctionProps>>>;
}

export function lambdaFunctions(stack: Stack, props: FunctionsProps): Record<Bin, lambda.Function> {
  const fns: Partial<Record<Bin, lambda.Function>> = {};
  for (const bin of BINS) {
    const needs = NEEDS[bin];
    const id = pascal(bin);
    const logGroup = new logs.LogGroup(stack, `${id}Logs`, { retention: props.retention, removalPolicy: RemovalPolicy.DESTROY });
    const role = new iam.Role(stack, `${id}Role`, {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `tasuki ${bin} Lambda`,
      inlinePolicies: { tasuki: new iam.PolicyDocument({ statements: lambdaStatements(needs, logGroup, props.grants) }) },
    });
    fns[bin] = props.functions(stack, `${id}Function`, bin, {
      description: `tasuki ${bin}`,
      architecture: lambda.Architecture.ARM_64,
      memorySize: 128,
      timeout: TIMEOUTS[bin],
      role,
      logGroup,
      environment: { TASUKI_CONFIG: props.configJson },
      reservedConcurrentExecutions:
        bin === 'webhook' && (props.webhookReservedConcurrency ?? 0) > 0 ? props.webhookReservedConcurrency : undefined,
      ...props.asyncInvoke?.[bin],
    });
    acknowledgeClusterTasks(role, needs, props.grants.runners.cluster);
    acknowledgeExecutions(role, needs, props.grants.stateMachineName);
  }
  return fns as Record<Bin, lambda.Function>;
}
