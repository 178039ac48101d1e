// Credentials: the KMS key that seals each runner's JIT config, and the GitHub App's secrets, which
// the user creates and tasuki only references.

import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import type { DeployConfig } from './config';

/** The encryption context key every sealed JIT config carries (`{"tasuki:job-id": "<job_id>"}`). */
export const JOB_CONTEXT_KEY = 'tasuki:job-id';

/** A Secrets Manager secret the user made: what the Lambdas pass as `SecretId`, and what IAM grants. */
export interface SecretReference {
  /** The name as given, or the complete ARN as given (contract A). */
  readonly secretId: string;
  /** A name knows no random suffix: `<partial ARN>-??????` matches that secret (and only it). */
  readonly iamResource: string;
}

export interface Credentials {
  readonly runnerKey: kms.Key;
  readonly appKey: SecretReference;
  readonly webhookSecret: SecretReference;
}

export function credentials(stack: Stack, config: DeployConfig): Credentials {
  const runnerKey = new kms.Key(stack, 'RunnerKey', {
    description: 'tasuki: seals each runner JIT config (encryption context tasuki:job-id)',
    enableKeyRotation: true,
    removalPolicy: RemovalPolicy.RETAIN,
  });

  // The Lambdas get the NAME (contract A: `*_secret_id`), which GetSecretValue resolves to the
  // secret whatever its random suffix. Never the partial ARN CDK formats from a name
  // (`…:secret:tasuki/webhook-secret`): Secrets Manager reads an ARN whose name ends in a hyphen and
  // six characters (`-secret`) as a complete ARN with that suffix, and answers
  // ResourceNotFoundException (GetSecretValue's SecretId: https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_GetSecretValue.html).
  // IAM, which matches ARNs, gets `<partial ARN>-??????` (secretReference).
  // A complete ARN (validateDeployConfig refuses a partial one) is passed on and granted as it is.
  const appKey = secretReference(stack, 'GitHubAppPrivateKey', config.github.private_key_secret_name);
  const webhookSecret = secretReference(stack, 'WebhookSecret', config.github.webhook_secret_name);
  return { runnerKey, appKey, webhookSecret };
}

function secretReference(scope: Construct, id: string, nameOrArn: string): SecretReference {
  if (nameOrArn.startsWith('arn:')) {
    const secret = secretsmanager.Secret.fromSecretCompleteArn(scope, id, nameOrArn);
    return { secretId: nameOrArn, iamResource: secret.secretArn };
  }
  const secret = secretsmanager.Secret.fromSecretNameV2(scope, id, nameOrArn);
  return { secretId: nameOrArn, iamResource: `${secret.secretArn}-??????` };
}

/** kms:GenerateDataKey only with an encryption context whose only key is `tasuki:job-id`. */
export function jobContextConditions(): Record<string, Record<string, unknown>> {
  return {
    'ForAllValues:StringEquals': { 'kms:EncryptionContextKeys': [JOB_CONTEXT_KEY] },
    Null: { 'kms:EncryptionContextKeys': 'false' },
  };
}
