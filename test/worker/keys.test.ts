// Opening a repository with a passphrase, an AWS KMS key or an Azure Key Vault
// key, and adding one to another.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { mockClient } from 'aws-sdk-client-mock';
import { DecryptCommand, EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { addKey, initRepository, openRepository } from '../../worker/repository.js';
import { createAwsKmsWrapper, createKeyVaultWrapper } from '../../worker/key-wrappers.js';
import { passphraseFromKeyRef } from '../../worker/keys.js';
import { createMemoryStore } from '../support/memory-store.js';
import { AccessDeniedError, ConfigError, WrongPassphraseError } from '../../shared/core/errors.js';

const FAST = { scrypt: { N: 1024, r: 8, p: 1 }, threads: 1 };
const KEY_ARN = 'arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';

/** A KMS stand-in that really encrypts (AES-GCM under a per-key secret) and checks the encryption context. */
function fakeKms() {
  const kms = mockClient(KMSClient);
  const secrets = new Map<string, Buffer>([[KEY_ARN, randomBytes(32)]]);
  kms.on(EncryptCommand).callsFake((input) => {
    const k = secrets.get(input.KeyId);
    if (!k) throw Object.assign(new Error('Key not found'), { name: 'NotFoundException' });
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', k, iv);
    c.setAAD(Buffer.from(JSON.stringify(input.EncryptionContext)));
    const body = Buffer.concat([c.update(input.Plaintext), c.final()]);
    return { CiphertextBlob: Buffer.concat([iv, body, c.getAuthTag()]), KeyId: input.KeyId };
  });
  kms.on(DecryptCommand).callsFake((input) => {
    const k = secrets.get(input.KeyId);
    if (!k) throw Object.assign(new Error('Key not found'), { name: 'NotFoundException' });
    const b = Buffer.from(input.CiphertextBlob);
    try {
      const d = createDecipheriv('aes-256-gcm', k, b.subarray(0, 12));
      d.setAAD(Buffer.from(JSON.stringify(input.EncryptionContext)));
      d.setAuthTag(b.subarray(b.length - 16));
      return { Plaintext: Buffer.concat([d.update(b.subarray(12, b.length - 16)), d.final()]) };
    } catch {
      throw Object.assign(new Error('invalid ciphertext'), { name: 'InvalidCiphertextException' });
    }
  });
  return kms;
}

test('a repository made with a KMS key opens with that key, not with a passphrase, and can be given a passphrase too', async () => {
  const kms = fakeKms();
  const client = new KMSClient({ region: 'eu-west-1' });
  const store = createMemoryStore();
  const repo = await initRepository(store, createAwsKmsWrapper({ keyId: KEY_ARN, client }), FAST);
  const keyRecord = JSON.parse(store.objects.get([...store.objects.keys()].find((k) => k.startsWith('keys/'))!)!.data.toString());
  assert.equal(keyRecord.kind, 'wrapped');
  assert.equal(keyRecord.provider, 'aws-kms');
  assert.equal(kms.commandCalls(EncryptCommand)[0]!.args[0].input.EncryptionContext!['tender:purpose'], 'repository-master-key');

  const reopened = await openRepository(store, createAwsKmsWrapper({ keyId: KEY_ARN, client }), FAST);
  assert.equal(reopened.config.id, repo.config.id);
  await assert.rejects(openRepository(store, 'some passphrase', FAST), WrongPassphraseError);

  await addKey(repo, 'the recovery passphrase', FAST);
  const byPassphrase = await openRepository(store, 'the recovery passphrase', FAST);
  assert.deepEqual(byPassphrase.key.encryption, repo.key.encryption);
  await Promise.all([repo.close(), reopened.close(), byPassphrase.close()]);
  kms.restore();
});

test('KMS errors say which permission is missing and are never mistaken for a wrong key', async () => {
  const kms = mockClient(KMSClient);
  kms.on(EncryptCommand).rejects(Object.assign(new Error('User is not authorized'), { name: 'AccessDeniedException', $metadata: { httpStatusCode: 400 } }));
  const wrapper = createAwsKmsWrapper({ keyId: KEY_ARN, client: new KMSClient({ region: 'eu-west-1' }) });
  await assert.rejects(initRepository(createMemoryStore(), wrapper, FAST), (e: Error) => e instanceof AccessDeniedError && /kms:Encrypt/.test(e.message) && e.message.includes(KEY_ARN));
  kms.restore();
});

test('a Key Vault key wraps through wrapkey/unwrapkey with the version it used, and a 403 names the permission', async () => {
  const vaultKey = randomBytes(32);
  const calls: string[] = [];
  const fakeFetch = (async (url: string, init: RequestInit) => {
    calls.push(String(url));
    const body = JSON.parse(String(init.body));
    assert.equal(body.alg, 'RSA-OAEP-256');
    assert.match(String((init.headers as Record<string, string>).authorization), /^Bearer /);
    if (String(url).includes('/keys/denied')) return new Response('forbidden', { status: 403 });
    // Stand-in for RSA-OAEP: XOR with the vault's secret (only round-tripping matters here).
    const x = (b: Buffer) => Buffer.from(b.map((v, i) => v ^ vaultKey[i % 32]!));
    const kid = 'https://acme.vault.azure.net/keys/tender-repo/v1';
    return Response.json({ kid, value: x(Buffer.from(body.value, 'base64url')).toString('base64url') });
  }) as unknown as typeof fetch;
  const credential = { getToken: async () => ({ token: 'token' }) };

  const store = createMemoryStore();
  const wrapper = createKeyVaultWrapper({ keyId: 'https://acme.vault.azure.net/keys/tender-repo', credential, fetch: fakeFetch });
  const repo = await initRepository(store, wrapper, FAST);
  const reopened = await openRepository(store, wrapper, FAST);
  assert.equal(reopened.config.id, repo.config.id);
  assert.ok(calls.some((u) => u.startsWith('https://acme.vault.azure.net/keys/tender-repo/v1/unwrapkey')), 'unwrap uses the key version that wrapped');

  // A key record planted by someone with write access to the repository, pointing elsewhere:
  // the worker's token is never sent there.
  calls.length = 0;
  const evil = { kind: 'wrapped', provider: 'azure-keyvault', keyId: 'https://acme.vault.azure.net/keys/tender-repo', wrapped: 'https://attacker.example/keys/tender-repo/v1 AAAA', created: '2026-01-01T00:00:00Z' };
  const onlyEvil = createMemoryStore();
  for (const [k, o] of store.objects) if (!k.startsWith('keys/')) onlyEvil.objects.set(k, o);
  onlyEvil.objects.set('keys/evil', { data: Buffer.from(JSON.stringify(evil)), modified: new Date() });
  await assert.rejects(openRepository(onlyEvil, wrapper, FAST), WrongPassphraseError);
  assert.deepEqual(calls.filter((u) => u.includes('attacker')), []);

  const denied = createKeyVaultWrapper({ keyId: 'https://acme.vault.azure.net/keys/denied', credential, fetch: fakeFetch });
  await assert.rejects(initRepository(createMemoryStore(), denied, FAST), (e: Error) => e instanceof AccessDeniedError && /keys\/wrapKey/.test(e.message));
  assert.throws(() => createKeyVaultWrapper({ keyId: 'not-a-url', credential }), ConfigError);
  await Promise.all([repo.close(), reopened.close()]);
});

test('passphrase sources name the variable or file to fix', async () => {
  await assert.rejects(passphraseFromKeyRef({ passphraseEnv: 'TENDER_TEST_UNSET_VAR' }, {}), /TENDER_TEST_UNSET_VAR, which is not set/);
  await assert.rejects(passphraseFromKeyRef({ passphraseFile: '/nonexistent/tender-pass' }), /cannot read the repository passphrase file \/nonexistent\/tender-pass/);
  assert.equal(await passphraseFromKeyRef({ passphraseEnv: 'P' }, { P: 'from the environment' }), 'from the environment');
});
