// `tender restore-points` and `tender restore` on an operator's machine open an aws policy's
// repository the way its pipeline does: with the passphrase kept in SSM (kmsKeyId +
// passphraseSecretArn), not by asking the KMS key to unwrap a key record it never wrapped.

import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { mockClient } from 'aws-sdk-client-mock';
import { GetParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import { KMSClient } from '@aws-sdk/client-kms';
import { main } from '../../cli/tender.js';
import { runWorkerCli } from '../../worker/cli.js';

const ssm = mockClient(SSMClient);
const kms = mockClient(KMSClient);
afterEach(() => {
  ssm.reset();
  kms.reset();
});

const PASS = 'the passphrase kept in ssm';
const PARAM = 'arn:aws:ssm:eu-west-1:111122223333:parameter/tender/web';

function io(dir: string, env: Record<string, string> = {}) {
  const o = { out: '', err: '', cwd: dir, env, isTTY: false, stdout: (s: string) => void (o.out += s), stderr: (s: string) => void (o.err += s) };
  return o;
}

test('tender restore-points and restore read an aws policy\'s passphrase from SSM and restore the disk bit for bit', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tender-opcli-'));
  try {
    // A restore point written as a worker writes it: passphrase-wrapped key, 3 MiB disk.
    const img = Buffer.alloc(3 * 1024 * 1024);
    img.fill('a file on the disk ', 0, 1024 * 1024);
    randomBytes(1024 * 1024).copy(img, 2 * 1024 * 1024);
    await writeFile(join(dir, 'disk.img'), img);
    const w = io(dir, { TENDER_PASSPHRASE: PASS });
    assert.equal(await runWorkerCli(['backup', '--repo', 'file:repo', '--vm', 'i-0abc', '--disk', 'root=disk.img', '--policy', 'web', '--json'], w), 0, w.err);
    const point = JSON.parse(w.out).restorePointId as string;

    await writeFile(
      join(dir, 'tender.config.yaml'),
      `policies:\n  - name: web\n    provider: aws\n    vms: { tags: { backup: web } }\n    repository: { url: "file:repo", key: { kmsKeyId: "arn:aws:kms:eu-west-1:111122223333:key/k", passphraseSecretArn: "${PARAM}" } }\n`,
    );
    ssm.on(GetParameterCommand, { Name: '/tender/web', WithDecryption: true }).resolves({ Parameter: { Value: PASS } });

    const l = io(dir);
    assert.equal(await main(['restore-points', '--policy', 'web', '--json'], l), 0, l.err);
    assert.deepEqual((JSON.parse(l.out) as Array<{ id: string }>).map((p) => p.id), [point]);

    const r = io(dir);
    assert.equal(await main(['restore', '--policy', 'web', '--restore-point', point, '--disk', 'root', '--to', 'back.img', '--json'], r), 0, r.err);
    const sha = createHash('sha256').update(img).digest('hex');
    assert.equal(JSON.parse(r.out).sha256, sha);
    assert.equal(createHash('sha256').update(await readFile(join(dir, 'back.img'))).digest('hex'), sha);
    // The parameter was read in its own region, and KMS was never asked to unwrap anything.
    assert.equal(await ssm.commandCalls(GetParameterCommand)[0]!.thisValue.config.region(), 'eu-west-1');
    assert.equal(kms.calls().length, 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a passphrase kept in SSM or Key Vault is never mistaken for a key the cloud unwraps', async () => {
  const { repositorySecretFromKeyRef } = await import('../../worker/keys.js');
  await assert.rejects(repositorySecretFromKeyRef({ kmsKeyId: 'k', passphraseSecretArn: PARAM }), (e: Error) => e.name === 'ConfigError' && /provider to aws/.test(e.message));
  await assert.rejects(repositorySecretFromKeyRef({ keyVaultKeyId: 'https://v.vault.azure.net/keys/k', passphraseSecretId: 'https://v.vault.azure.net/secrets/p' }), (e: Error) => e.name === 'ConfigError' && /provider to azure/.test(e.message));
  assert.equal(kms.calls().length, 0);
});
