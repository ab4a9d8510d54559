// The repository passphrase on Azure: policies name a Key Vault secret
// (repository.key.passphraseSecretId), and whoever opens the repository (the
// worker, or the Function applying retention) reads it with its own managed
// identity. The passphrase is never in a job, a queue message or a log.
// Key Vault's REST API is called directly: one GET does not justify another SDK.

import type { TokenCredential } from '@azure/identity';
import type { KeyRef } from '../core/config.js';
import { AccessDeniedError, ConfigError, NotFoundError, TransientError } from '../core/errors.js';
import { passphraseFromKeyRef } from '../../worker/keys.js';
import type { RepositorySecret } from '../../worker/crypto.js';
import { createKeyVaultWrapper } from '../../worker/key-wrappers.js';

const API_VERSION = '7.4';

/**
 * What opens the repository on Azure: the Key Vault key itself when no passphrase
 * secret is named (it wraps the repository's master key), otherwise the passphrase.
 */
export async function repositorySecretFromAzureKeyRef(
  ref: KeyRef,
  opts: { credential?: TokenCredential; fetch?: typeof fetch; env?: NodeJS.ProcessEnv } = {},
): Promise<RepositorySecret> {
  if ('keyVaultKeyId' in ref && !ref.passphraseSecretId) {
    const credential = opts.credential ?? new (await import('@azure/identity')).DefaultAzureCredential();
    return createKeyVaultWrapper({ keyId: ref.keyVaultKeyId, credential, ...(opts.fetch ? { fetch: opts.fetch } : {}) });
  }
  return passphraseFromAzureKeyRef(ref, opts);
}

export async function passphraseFromAzureKeyRef(
  ref: KeyRef,
  opts: { credential?: TokenCredential; fetch?: typeof fetch; env?: NodeJS.ProcessEnv } = {},
): Promise<string> {
  if (!('keyVaultKeyId' in ref)) return passphraseFromKeyRef(ref, opts.env);
  const secretId = ref.passphraseSecretId;
  if (!secretId) {
    throw new ConfigError(
      `repository.key names Key Vault key ${ref.keyVaultKeyId} and no passphraseSecretId: that key wraps the repository key itself (repositorySecretFromAzureKeyRef), there is no passphrase to read`,
    );
  }
  const url = new URL(secretId);
  if (!/\.vault\.(azure\.net|azure\.cn|usgovcloudapi\.net)$/i.test(url.hostname)) {
    throw new ConfigError(`repository.key.passphraseSecretId ${url.origin}${url.pathname} is not a Key Vault secret id`);
  }
  const credential = opts.credential ?? new (await import('@azure/identity')).DefaultAzureCredential();
  const token = await credential.getToken(`https://${url.hostname.split('.').slice(-3).join('.')}/.default`).catch((e: Error) => {
    throw new AccessDeniedError(`no token for Key Vault (${e.message}) — the identity reading the repository needs a managed identity`, { cause: e });
  });
  if (!token) throw new AccessDeniedError('no token for Key Vault — the identity reading the repository needs a managed identity');
  url.searchParams.set('api-version', API_VERSION);
  const res = await (opts.fetch ?? fetch)(url.toString(), { headers: { authorization: `Bearer ${token.token}` } });
  if (res.status === 401 || res.status === 403) {
    throw new AccessDeniedError(`reading the passphrase secret ${url.pathname} was denied (HTTP ${res.status}) — grant the worker's identity "Key Vault Secrets User" on the vault`);
  }
  if (res.status === 404) throw new NotFoundError(`the passphrase secret ${url.pathname} does not exist in ${url.hostname} — fix repository.key.passphraseSecretId`);
  if (res.status === 429 || res.status >= 500) throw new TransientError(`Key Vault answered ${res.status} for ${url.pathname}; it is retried`);
  if (!res.ok) throw new ConfigError(`Key Vault answered ${res.status} for ${url.pathname}`);
  const body = (await res.json()) as { value?: string };
  if (!body.value) throw new ConfigError(`the passphrase secret ${url.pathname} is empty`);
  return body.value;
}
