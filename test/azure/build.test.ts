// The Azure build: scripts/build-azure.mjs makes a deployable folder whose
// index.js is CommonJS with @azure/functions-core left to the host, which
// loads and registers every function; and a worker bundle with its digest,
// whose agent starts (and says what it is missing outside a worker).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));

test('build: dist/azure holds a CommonJS Functions app, host.json, a package.json naming it, and the worker bundle with its digest', () => {
  // Prepare
  const dir = mkdtempSync(join(tmpdir(), 'tender-azure-build-'));
  try {
    const cfg = join(dir, 'tender.config.yaml');
    writeFileSync(
      cfg,
      'applianceId: prod\npolicies:\n  - name: gold\n    provider: azure\n    vms: { tags: { backup: gold } }\n    repository: { url: "azblob://tenderrepo/backups", key: { keyVaultKeyId: "https://kv.vault.azure.net/keys/k", passphraseSecretId: "https://kv.vault.azure.net/secrets/p" } }\n',
    );
    // Act
    execFileSync(process.execPath, [join(root, 'scripts', 'build-azure.mjs'), '--out', join(dir, 'a'), '--config', cfg], { stdio: 'pipe' });
    // Assess: the app
    const index = readFileSync(join(dir, 'a', 'index.js'), 'utf8');
    assert.match(index, /require\("@azure\/functions-core"\)/, '@azure/functions-core stays external');
    assert.doesNotMatch(index, /^import |^export /m, 'CommonJS, no ESM syntax');
    assert.deepEqual(JSON.parse(readFileSync(join(dir, 'a', 'host.json'), 'utf8')), JSON.parse(readFileSync(join(root, 'host.json'), 'utf8')));
    assert.equal(JSON.parse(readFileSync(join(dir, 'a', 'package.json'), 'utf8')).main, 'index.js');
    const load = spawnSync(process.execPath, ['-e', 'require("./index.js")'], {
      cwd: join(dir, 'a'),
      env: { PATH: process.env.PATH, TENDER_AZURE_SUBSCRIPTION_ID: '3f2504e0-4f89-41d3-9a0c-0305e82c3301', TENDER_AZURE_RESOURCE_GROUP: 'rg-tender' },
      encoding: 'utf8',
    });
    assert.equal(load.status, 0, load.stderr);
    for (const fn of ['tenderBackup', 'tenderBackupVm', 'snapshot', 'cleanup', 'tender-schedule-gold', 'tender-start']) {
      assert.match(load.stderr + load.stdout, new RegExp(`register function "${fn}"`), `${fn} is registered`);
    }
    // Assess: the worker bundle
    const tgz = readFileSync(join(dir, 'a', 'worker', 'tender-worker.tgz'));
    const digest = createHash('sha256').update(tgz).digest('hex');
    assert.equal(readFileSync(join(dir, 'a', 'worker', 'tender-worker.tgz.sha256'), 'utf8').split(' ')[0], digest);
    const x = join(dir, 'x');
    mkdirSync(x);
    execFileSync('tar', ['-xzf', join(dir, 'a', 'worker', 'tender-worker.tgz'), '-C', x]);
    const agent = spawnSync(process.execPath, ['agent.cjs'], { cwd: x, env: { PATH: process.env.PATH }, encoding: 'utf8' });
    assert.equal(agent.status, 1);
    assert.match(agent.stderr, /TENDER_WORKER_ID is not set — the install command writes it/);
    // The codec threads' native addons travel with the worker (the app, which only prunes, has zstd alone).
    const blake = spawnSync(process.execPath, ['-e', 'const {Blake3Hasher}=require("./node_modules/@napi-rs/blake-hash");process.stdout.write(Blake3Hasher.newKeyed(Buffer.from("whats the Elvish word for friend")).digestBuffer().toString("hex"))'], { cwd: x, env: { PATH: process.env.PATH }, encoding: 'utf8' });
    assert.equal(blake.stdout, '92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26', blake.stderr);
    assert.ok(existsSync(join(dir, 'a', 'node_modules', 'zstd-napi', 'build', 'Release', 'binding.node')));
    assert.ok(!existsSync(join(dir, 'a', 'node_modules', '@napi-rs')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
