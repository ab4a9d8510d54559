// The Run Command's install script itself, run by bash with curl against a
// bundle in Azurite behind its stored-policy SAS (systemctl stubbed, paths in
// a temporary folder): it checks the digest before unpacking anything, and
// its exit codes say refused / unreachable / mismatch.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlobServiceClient, StorageSharedKeyCredential } from '@azure/storage-blob';
import { startAzurite, type Azurite } from '../support/azurite.js';
import { systemClock } from '../../shared/core/clock.js';
import { EXIT, INSTALLED_MARKER, installScript } from '../../shared/azure/install-script.js';
import { dropContainerPolicies, grantBlobReadSas } from '../../shared/azure/sas.js';

let az: Azurite;
let dir: string;
let bundle: Buffer;
let url: string;
let container: ReturnType<BlobServiceClient['getContainerClient']>;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

before(async () => {
  az = await startAzurite();
  dir = mkdtempSync(join(tmpdir(), 'tender-install-'));
  // A bundle like the real one: agent.cjs at the top of a gzipped tar.
  mkdirSync(join(dir, 'src'));
  writeFileSync(join(dir, 'src', 'agent.cjs'), 'console.log("agent")\n');
  execFileSync('tar', ['-czf', join(dir, 'bundle.tgz'), '-C', join(dir, 'src'), '.']);
  bundle = readFileSync(join(dir, 'bundle.tgz'));
  // systemctl: "not active", every other call logged and successful.
  mkdirSync(join(dir, 'bin'));
  writeFileSync(join(dir, 'bin', 'systemctl'), `#!/bin/sh\necho "$@" >> "${join(dir, 'systemctl.log')}"\n[ "$1" = is-active ] && exit 3\nexit 0\n`);
  chmodSync(join(dir, 'bin', 'systemctl'), 0o755);
  const cred = new StorageSharedKeyCredential(az.account, az.accountKey);
  container = new BlobServiceClient(az.blobUrl, cred).getContainerClient('tender-b-script');
  await container.create();
  await container.getBlockBlobClient('tender-worker.tgz').uploadData(bundle);
  url = (await grantBlobReadSas({ container, blobName: 'tender-worker.tgz', policyId: 'p1', signer: cred, ttlSeconds: 600, protocol: 'https,http', clock: systemClock })).url;
});
after(async () => {
  await az?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function runScript(name: string, env: Record<string, string>) {
  const target = join(dir, name);
  mkdirSync(join(target, 'units'), { recursive: true });
  const res = spawnSync('bash', ['-c', installScript({ httpsOnly: false })], {
    env: {
      PATH: `${join(dir, 'bin')}:${process.env.PATH}`,
      TENDER_DIR: join(target, 'opt'),
      TENDER_UNIT_DIR: join(target, 'units'),
      TENDER_WORKER_ID: 'tender-w-1',
      TENDER_JOB_QUEUE_URL: 'http://q/jobs?sv=1&si=p&sig=JOBSECRET',
      TENDER_REPORT_QUEUE_URL: 'http://q/reports?sv=1&si=p&sig=REPORTSECRET',
      ...env,
    },
    encoding: 'utf8',
  });
  return { ...res, opt: join(target, 'opt'), units: join(target, 'units') };
}

test('install script: the right digest unpacks the bundle, writes the agent\'s settings readable by root only, and starts the unit', () => {
  // Act
  const r = runScript('ok', { BUNDLE_URL: url, BUNDLE_SHA256: sha(bundle) });
  // Assess
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`${INSTALLED_MARKER} ${sha(bundle)}`));
  assert.ok(existsSync(join(r.opt, 'app', 'agent.cjs')));
  const envFile = join(r.opt, 'agent.env');
  assert.equal(statSync(envFile).mode & 0o777, 0o600);
  assert.match(readFileSync(envFile, 'utf8'), /TENDER_JOB_QUEUE_URL=http:\/\/q\/jobs\?sv=1&si=p&sig=JOBSECRET/);
  assert.match(readFileSync(join(r.units, 'tender-agent.service'), 'utf8'), /ExecStart=.* .*\/app\/agent\.cjs/);
  assert.match(readFileSync(join(dir, 'systemctl.log'), 'utf8'), /enable tender-agent\nrestart tender-agent/);
  assert.doesNotMatch(r.stdout + r.stderr, /SECRET|sig=/, 'no SAS in what the Run Command returns');
});

test('install script: a digest mismatch exits 42 and nothing is unpacked or started', () => {
  const r = runScript('mismatch', { BUNDLE_URL: url, BUNDLE_SHA256: 'f'.repeat(64) });
  assert.equal(r.status, EXIT.integrity);
  assert.match(r.stderr, /not unpacked, not run/);
  assert.equal(existsSync(join(r.opt, 'app')), false);
  assert.equal(existsSync(join(r.units, 'tender-agent.service')), false);
});

test('install script: an unreachable account exits 44; a revoked SAS exits 43 (refused)', async () => {
  const unreachable = runScript('unreachable', { BUNDLE_URL: 'http://127.0.0.1:1/devstoreaccount1/x/b.tgz?sig=x', BUNDLE_SHA256: sha(bundle) });
  assert.equal(unreachable.status, EXIT.unreachable);
  await dropContainerPolicies(container);
  const refused = runScript('refused', { BUNDLE_URL: url, BUNDLE_SHA256: sha(bundle) });
  assert.equal(refused.status, EXIT.refused, refused.stderr);
  assert.match(refused.stderr, /refused \(HTTP 403\)/);
});

test('install script: https-only unless told otherwise', () => {
  assert.match(installScript({ httpsOnly: true }), /curl -sS --proto '=https' --tlsv1\.2 /);
  assert.doesNotMatch(installScript({ httpsOnly: false }), /--proto/);
  const s = installScript({ httpsOnly: true });
  assert.ok(s.indexOf('sha256sum') < s.indexOf('tar -xzf'), 'the digest is checked before anything is unpacked');
});
