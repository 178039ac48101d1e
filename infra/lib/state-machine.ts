// The runner-job state machine (one execution per queued job), from the ASL the local stack runs too.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { ArnFormat, Aws, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { BINS, type Bin, REPO_ROOT, substitutionVariable } from './lambdas';

/** The ASL the local stack runs too: the single source of the lifecycle graph. */
export const ASL_PATH = path.join(REPO_ROOT, 'statemachines', 'runner-job.asl.json');

/**
 * ASL substitution variables that are not Lambda ARNs (contract C): every Task's `Resource` is
 * `arn:${Partition}:states:::lambda:invoke`, so the state machine works in aws-cn and aws-us-gov too.
 */
export const ASL_NON_LAMBDA_SUBSTITUTIONS: Record<string, string> = { Partition: Aws.PARTITION };

/** The state machine's name and ARN. */
export interface StateMachineAddress {
  readonly name: string;
  readonly arn: string;
  /** Its executions' ARNs (`DescribeExecution` is authorized on the execution, not the machine). */
  readonly executionsArn: string;
}

/**
 * The state machine's ARN, known before it exists: step Lambdas need it in their config and IAM, and
 * the state machine needs their ARNs. A fixed name and a formatted ARN (no reference to the resource)
 * avoid the cycle.
 */
export function stateMachineAddress(stack: Stack): StateMachineAddress {
  const name = `${stack.stackName}-runner-job`;
  const arn = stack.formatArn({
    service: 'states',
    resource: 'stateMachine',
    resourceName: name,
    arnFormat: ArnFormat.COLON_RESOURCE_NAME,
  });
  const executionsArn = stack.formatArn({
    service: 'states',
    resource: 'execution',
    resourceName: `${name}:*`,
    arnFormat: ArnFormat.COLON_RESOURCE_NAME,
  });
  return { name, arn, executionsArn };
}

export function runnerJobStateMachine(
  stack: Stack,
  address: StateMachineAddress,
  fns: Record<Bin, lambda.IFunction>,
  retention: logs.RetentionDays,
): sfn.StateMachine {
  const substitutions = aslSubstitutions(fns);
  const stepFunctionArns = Object.entries(substitutions)
    .filter(([variable]) => !(variable in ASL_NON_LAMBDA_SUBSTITUTIONS))
    .map(([, arn]) => arn);
  const logGroup = new logs.LogGroup(stack, 'StateMachineLogs', {
    // The vendedlogs prefix keeps the account's CloudWatch Logs resource policy small.
    logGroupName: `/aws/vendedlogs/states/${address.name}`,
    retention,
    removalPolicy: RemovalPolicy.DESTROY,
  });
  const stateMachine = new sfn.StateMachine(stack, 'RunnerJob', {
    stateMachineName: address.name,
    stateMachineType: sfn.StateMachineType.STANDARD,
    definitionBody: sfn.DefinitionBody.fromFile(ASL_PATH),
    definitionSubstitutions: substitutions,
    // Execution data (job payloads, task tokens) stays out of the logs.
    logs: { destination: logGroup, level: sfn.LogLevel.ALL, includeExecutionData: false },
    tracingEnabled: true,
  });
  stateMachine.addToRolePolicy(
    new iam.PolicyStatement({
      sid: 'InvokeSteps',
      actions: ['lambda:InvokeFunction'],
      resources: stepFunctionArns,
    }),
  );
  Validations.of(stateMachine).acknowledge({
    id: 'AwsSolutions-IAM5[Resource::*]',
    reason:
      'CloudWatch Logs delivery and X-Ray actions support no resource-level permissions (CDK grants them on "*"); ' +
      "lambda:InvokeFunction is on the step functions' unqualified ARNs only.",
  });
  return stateMachine;
}

/**
 * Every `${XxxFunctionArn}` of the ASL, filled with its step Lambda's ARN, and `${Partition}` with the
 * stack's partition (contract C); an unknown variable fails synth.
 */
export function aslSubstitutions(fns: Record<Bin, lambda.IFunction>, aslPath = ASL_PATH): Record<string, string> {
  const asl = fs.readFileSync(aslPath, 'utf8');
  const wanted = [...new Set([...asl.matchAll(/\$\{(\w+)\}/g)].map((m) => m[1]))];
  const byVariable = new Map(BINS.map((bin) => [substitutionVariable(bin), bin] as const));
  const substitutions: Record<string, string> = {};
  for (const variable of wanted) {
    if (variable in ASL_NON_LAMBDA_SUBSTITUTIONS) {
      substitutions[variable] = ASL_NON_LAMBDA_SUBSTITUTIONS[variable];
      continue;
    }
    const bin = byVariable.get(variable);
    if (!bin) {
      const known = [...Object.keys(ASL_NON_LAMBDA_SUBSTITUTIONS), ...byVariable.keys()];
      throw new Error(`${aslPath}: \${${variable}} names no Lambda bin and no known variable (known: ${known.join(', ')})`);
    }
    substitutions[variable] = fns[bin].functionArn;
  }
  return substitutions;
}
