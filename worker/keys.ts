// Where the repository passphrase comes from. Policies name a source
// (KeyRef), never the passphrase itself, so no secret travels in a step's
// input, a job or a log line.

import { readFile } from 'node:fs/promises';
import type { KeyRef } from '../shared/core/config.js';
import { ConfigError } from '../shared/core/errors.js';
import type { RepositorySecret } from './crypto.js';
import { createAwsKmsWrapper, createKeyVaultWrapper } from './key-wrappers.js';

/**
 * What opens the repository for this key source: a passphrase (from the
 * environment or a file), or the cloud key that wraps the master key
 * (kmsKeyId: AWS KMS; keyVaultKeyId: Azure Key Vault, with the worker's managed identity).
 */
export async function repositorySecretFromKeyRef(ref: KeyRef, env: NodeJS.ProcessEnv = process.env): Promise<RepositorySecret> {
  // A passphrase kept in SSM / Secrets Manager or Key Vault is the cloud side's to read
  // (shared/aws/repository-key.ts, shared/azure/key-vault.ts): opening with the key alone would fail.
  if ('kmsKeyId' in ref && ref.passphraseSecretArn) throw new ConfigError(`repository.key keeps the passphrase in ${ref.passphraseSecretArn}: only an aws policy's repository reads it — set the policy's provider to aws`);
  if ('keyVaultKeyId' in ref && ref.passphraseSecretId) throw new ConfigError(`repository.key keeps the passphrase in Key Vault secret ${ref.passphraseSecretId}: only an azure policy's repository reads it — set the policy's provider to azure`);
  if ('kmsKeyId' in ref) return createAwsKmsWrapper({ keyId: ref.kmsKeyId });
  if ('keyVaultKeyId' in ref) {
    const { DefaultAzureCredential } = await import('@azure/identity');
    return createKeyVaultWrapper({ keyId: ref.keyVaultKeyId, credential: new DefaultAzureCredential() });
  }
  return passphraseFromKeyRef(ref, env);
}

export async function passphraseFromKeyRef(ref: KeyRef, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  if ('passphraseEnv' in ref) {
    const v = env[ref.passphraseEnv];
    if (!v) throw new ConfigError(`the repository passphrase is read from the environment variable ${ref.passphraseEnv}, which is not set — set it, or point repository.key.passphraseFile at a file`);
    return v;
  }
  if ('passphraseFile' in ref) {
    let text: string;
    try {
      text = await readFile(ref.passphraseFile, 'utf8');
    } catch (e: any) {
      throw new ConfigError(`cannot read the repository passphrase file ${ref.passphraseFile} (${e?.code ?? e?.message}) — create it (one line) or fix repository.key.passphraseFile`, { cause: e });
    }
    const v = text.replace(/\r?\n$/, '');
    if (!v) throw new ConfigError(`the repository passphrase file ${ref.passphraseFile} is empty`);
    return v;
  }
  throw new ConfigError('this repository key source is a cloud key (kmsKeyId / keyVaultKeyId), not a passphrase — open the repository with repositorySecretFromKeyRef');
}
