// The repository passphrase on AWS, from the policy's KeyRef: an SSM
// SecureString parameter (its ARN in passphraseSecretArn, encrypted with
// kmsKeyId), a Secrets Manager secret (read through SSM's
// /aws/reference/secretsmanager/ bridge, so no second SDK is needed), or an
// environment variable — or, with kmsKeyId alone, no passphrase at all: the
// repository's master key is wrapped by that KMS key (worker/key-wrappers.ts).
// Used by the worker and by the retention step; the passphrase never leaves
// the process that resolves it.

import { GetParameterCommand, type SSMClient } from '@aws-sdk/client-ssm';
import type { KeyRef } from '../core/config.js';
import { ConfigError } from '../core/errors.js';
import { awsCall } from './aws-errors.js';
import type { RepositorySecret } from '../../worker/crypto.js';
import { createAwsKmsWrapper } from '../../worker/key-wrappers.js';

/** What opens the repository on AWS: the KMS key itself (kmsKeyId alone), or a passphrase. */
export async function resolveAwsRepositorySecret(ref: KeyRef, opts: { ssm: () => SSMClient; env?: NodeJS.ProcessEnv }): Promise<RepositorySecret> {
  if ('kmsKeyId' in ref && !ref.passphraseSecretArn) return createAwsKmsWrapper({ keyId: ref.kmsKeyId });
  return resolveAwsPassphrase(ref, opts);
}

/** The SSM parameter name that yields the secret behind an ARN. */
export function parameterNameOf(arn: string): string {
  const ssm = /^arn:aws[a-z-]*:ssm:[^:]*:\d*:parameter(\/.*)$/.exec(arn);
  if (ssm) return ssm[1]!;
  const sm = /^arn:aws[a-z-]*:secretsmanager:[^:]*:\d*:secret:(.+)$/.exec(arn);
  if (sm) return `/aws/reference/secretsmanager/${sm[1]}`;
  if (arn.startsWith('/')) return arn;
  throw new ConfigError(`repository.key.passphraseSecretArn "${arn}" is neither an SSM parameter ARN (arn:aws:ssm:…:parameter/…) nor a Secrets Manager secret ARN (arn:aws:secretsmanager:…:secret:…)`);
}

export async function resolveAwsPassphrase(ref: KeyRef, opts: { ssm: () => SSMClient; env?: NodeJS.ProcessEnv }): Promise<string> {
  const env = opts.env ?? process.env;
  if ('passphraseEnv' in ref) {
    const v = env[ref.passphraseEnv];
    if (!v) throw new ConfigError(`the repository passphrase is read from ${ref.passphraseEnv}, which is not set here — on AWS use repository.key { kmsKeyId, passphraseSecretArn }`);
    return v;
  }
  if ('kmsKeyId' in ref) {
    if (!ref.passphraseSecretArn) {
      throw new ConfigError(`repository.key { kmsKeyId: ${ref.kmsKeyId} } has no passphraseSecretArn: the KMS key itself wraps the repository key (resolveAwsRepositorySecret), there is no passphrase to read`);
    }
    const name = parameterNameOf(ref.passphraseSecretArn);
    const res = await awsCall(
      `ssm:GetParameter ${name}`,
      () => opts.ssm().send(new GetParameterCommand({ Name: name, WithDecryption: true })),
      `grant ssm:GetParameter on ${ref.passphraseSecretArn}${name.startsWith('/aws/reference/') ? ' and secretsmanager:GetSecretValue on the secret' : ''}, and kms:Decrypt on ${ref.kmsKeyId}`,
    );
    const v = res.Parameter?.Value;
    if (!v) throw new ConfigError(`${ref.passphraseSecretArn} is empty: store the repository passphrase in it`);
    return v;
  }
  if ('passphraseFile' in ref) throw new ConfigError(`repository.key.passphraseFile (${ref.passphraseFile}) names a file on one machine; on AWS use { kmsKeyId, passphraseSecretArn }`);
  throw new ConfigError('an Azure Key Vault key cannot open a repository from AWS: use { kmsKeyId, passphraseSecretArn }');
}
