// Cloud key services that wrap the repository master key: AWS KMS and Azure
// Key Vault. The master key never leaves the worker in the clear; the key
// service only ever sees it to wrap or unwrap it, under the worker's identity.

import type { KMSClient } from '@aws-sdk/client-kms';
import { AccessDeniedError, ConfigError, TransientError } from '../shared/core/errors.js';
import type { KeyWrapper } from './crypto.js';

/** Binds every KMS ciphertext to its purpose: a blob lifted from elsewhere does not decrypt here. */
const KMS_CONTEXT = { 'tender:purpose': 'repository-master-key' };

function kmsError(e: any, keyId: string, action: string): Error {
  const name = e?.name ?? '';
  if (name === 'AccessDeniedException') return new AccessDeniedError(`the worker's role may not use KMS key ${keyId} (kms:${action}) — grant it in the key policy or the worker role`, { cause: e });
  if (name === 'NotFoundException') return new ConfigError(`KMS key ${keyId} does not exist in this account and region — check repository.key.kmsKeyId`, { cause: e });
  if (name === 'DisabledException' || name === 'KMSInvalidStateException') return new ConfigError(`KMS key ${keyId} is disabled or pending deletion — enable it to open the repository`, { cause: e });
  if (name === 'ThrottlingException' || name === 'KMSInternalException' || (e?.$metadata?.httpStatusCode ?? 0) >= 500) return new TransientError(`KMS ${action} on ${keyId} failed transiently: ${e?.message}`, { cause: e });
  return e instanceof Error ? e : new Error(String(e));
}

// The KMS client is loaded on first use: a passphrase repository never pays for the SDK.
const kms = () => import('@aws-sdk/client-kms');

export function createAwsKmsWrapper(opts: { keyId: string; client?: KMSClient }): KeyWrapper {
  let client: KMSClient | undefined = opts.client;
  const getClient = async () => (client ??= new (await kms()).KMSClient({}));
  return {
    provider: 'aws-kms',
    keyId: opts.keyId,
    async wrap(master) {
      try {
        const { EncryptCommand } = await kms();
        const out = await (await getClient()).send(new EncryptCommand({ KeyId: opts.keyId, Plaintext: master, EncryptionContext: KMS_CONTEXT }));
        if (!out.CiphertextBlob) throw new TransientError(`KMS Encrypt with ${opts.keyId} returned no ciphertext`);
        return Buffer.from(out.CiphertextBlob).toString('base64');
      } catch (e) {
        throw kmsError(e, opts.keyId, 'Encrypt');
      }
    },
    async unwrap(wrapped) {
      try {
        const { DecryptCommand } = await kms();
        const out = await (await getClient()).send(new DecryptCommand({ KeyId: opts.keyId, CiphertextBlob: Buffer.from(wrapped, 'base64'), EncryptionContext: KMS_CONTEXT }));
        return out.Plaintext ? Buffer.from(out.Plaintext) : undefined;
      } catch (e: any) {
        if (e?.name === 'InvalidCiphertextException' || e?.name === 'IncorrectKeyException') return undefined;
        throw kmsError(e, opts.keyId, 'Decrypt');
      }
    },
  };
}

/** True when `kid` is https://<same vault>/keys/<same name>/<version>. */
export function isVersionOf(kid: string, keyId: string): boolean {
  let a: URL, b: URL;
  try {
    a = new URL(kid);
    b = new URL(keyId);
  } catch {
    return false;
  }
  const name = b.pathname.split('/')[2];
  const m = /^\/keys\/([^/]+)\/([^/]+)$/.exec(a.pathname);
  return a.protocol === 'https:' && a.origin === b.origin && !a.search && !!m && m[1] === name;
}

export interface TokenSource {
  getToken(scope: string): Promise<{ token: string } | null>;
}

/**
 * Azure Key Vault wrapKey / unwrapKey (RSA-OAEP-256) over its REST API. The
 * record keeps the key version that wrapped it, so rotating the key in the
 * vault does not lock the repository.
 */
export function createKeyVaultWrapper(opts: { keyId: string; credential: TokenSource; fetch?: typeof fetch; apiVersion?: string }): KeyWrapper {
  const doFetch = opts.fetch ?? fetch;
  const api = opts.apiVersion ?? '7.4';
  if (!/^https:\/\/[^/]+\/keys\/[^/]+(\/[^/]+)?$/.test(opts.keyId)) {
    throw new ConfigError(`repository.key.keyVaultKeyId must be a key URL like https://myvault.vault.azure.net/keys/tender-repo (got ${opts.keyId})`);
  }
  async function call(url: string, op: 'wrapkey' | 'unwrapkey', value: string): Promise<{ kid: string; value: string } | undefined> {
    const token = await opts.credential.getToken('https://vault.azure.net/.default');
    if (!token) throw new AccessDeniedError('no Azure credential for Key Vault: give the worker a managed identity with the key\'s wrap/unwrap permissions');
    let res: Response;
    try {
      res = await doFetch(`${url}/${op}?api-version=${api}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ alg: 'RSA-OAEP-256', value }),
      });
    } catch (e) {
      throw new TransientError(`Key Vault ${op} on ${url} could not be reached: ${(e as Error).message}`, { cause: e });
    }
    if (res.status === 401 || res.status === 403) throw new AccessDeniedError(`the worker's identity may not ${op === 'wrapkey' ? 'wrap' : 'unwrap'} with ${url} — grant it keys/${op === 'wrapkey' ? 'wrapKey' : 'unwrapKey'} on the vault`);
    if (res.status === 429 || res.status >= 500) throw new TransientError(`Key Vault ${op} on ${url} answered ${res.status}`);
    if (op === 'unwrapkey' && res.status === 400) return undefined;
    if (!res.ok) throw new ConfigError(`Key Vault ${op} on ${url} answered ${res.status}: ${(await res.text()).slice(0, 200)}`);
    return (await res.json()) as { kid: string; value: string };
  }
  return {
    provider: 'azure-keyvault',
    keyId: opts.keyId,
    async wrap(master) {
      const out = await call(opts.keyId, 'wrapkey', master.toString('base64url'));
      if (!out) throw new ConfigError(`Key Vault refused to wrap with ${opts.keyId}`);
      return `${out.kid} ${out.value}`;
    },
    async unwrap(wrapped) {
      const [kid, value] = wrapped.split(' ');
      if (!kid || !value) return undefined;
      // The record is plain text in the repository: only ever send the worker's token to a
      // version of the configured key, never to a URL someone with write access planted.
      if (!isVersionOf(kid, opts.keyId)) return undefined;
      const out = await call(kid, 'unwrapkey', value);
      return out ? Buffer.from(out.value, 'base64url') : undefined;
    },
  };
}
