// The `npm start` flow on small images, and the local pipeline with failures
// that happen for real (a bundle that fails its digest check) or are injected
// mid-backup: each must leave no worker process, no live URL, and a failure
// recorded with its step.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runDemo, ensureDemo, type DemoVm } from '../../cli/start.js';
import { loadConfig } from '../../shared/local/load-config.js';
import { runLocalBackup } from '../../shared/local/runner.js';
import { createLocalCloud } from '../../shared/local/local-cloud.js';
import { WorkerFailedError } from '../../shared/core/errors.js';
import { STEP } from '../../shared/core/pipeline.js';
import { alive } from '../../shared/local/workers.js';

const SMALL: DemoVm[] = [
  { id: 'vm-web-1', name: 'web-1', disks: [{ id: 'root', sizeMiB: 8, files: 5 }] },
  { id: 'vm-db-1', name: 'db-1', disks: [{ id: 'root', sizeMiB: 8, files: 5 }, { id: 'data', sizeMiB: 12, files: 8 }] },
  { id: 'vm-app-1', name: 'app-1', disks: [{ id: 'root', sizeMiB: 8, files: 5 }] },
];


test('npm start flow: full run, incremental run reading fewer bytes, restore matching its snapshot', { timeout: 120_000 }, async () => {
  // Prepare
  const dir = await mkdtemp(join(tmpdir(), 'tender-demo-'));
  const lines: string[] = [];
  try {
    // Act
    const r = await runDemo({ dir, out: (s) => lines.push(s), vms: SMALL, run: { waitMs: 50 } });
    // Assess
    const text = lines.join('');
    assert.equal(r.first.ok && r.second.ok, true);
    assert.equal(r.first.vms.length, 3);
    const read = (s: typeof r.first) => s.vms.reduce((n, v) => n + (v.bytesRead ?? 0), 0);
    assert.ok(read(r.second) < read(r.first), `incremental read ${read(r.second)} < full read ${read(r.first)}`);
    assert.ok(r.first.vms.every((v) => v.incremental === false));
    assert.ok(r.second.vms.every((v) => v.incremental === true), 'second run is incremental for every VM');
    const db = r.second.vms.find((v) => v.vmId === 'vm-db-1')!;
    assert.ok((db.bytesRead ?? 0) > 0, 'the changed VM had blocks to read');
    assert.equal(r.restoredSha256, r.snapshotSha256);
    // Each run pruned the repository after retention, through the real port (nothing is old enough to go yet).
    for (const s of [r.first, r.second]) assert.ok(!('error' in s.retention) && s.retention.maintenance?.status === 'pruned' && s.retention.maintenance.packsDeleted === 0, JSON.stringify(s.retention));
    assert.match(text, /Prune: freed 0 B \(0 pack\(s\)\)/);
    assert.match(text, /identical: the restored disk is the snapshot/);
    assert.match(text, /e2fsck: the restored ext4 filesystem is clean/);
    assert.match(text, /1\/5 .*\n[\s\S]*5\/5 /, 'says what it does at each stage');
    assert.match(text, /RESTORE POINT/);
    assert.deepEqual(await readdir(join(dir, 'workers')), [], 'no worker folder left');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

async function failureSetup() {
  const dir = await mkdtemp(join(tmpdir(), 'tender-fail-'));
  const configPath = await ensureDemo({ dir, vms: SMALL.slice(0, 2), out: () => undefined });
  const loaded = await loadConfig(configPath);
  return { dir, loaded, done: () => rm(dir, { recursive: true, force: true }) };
}

test('local pipeline: a bundle failing its sha256 check is refused; cleanup leaves no worker, no live URL, and records the step', { timeout: 60_000 }, async () => {
  const { dir, loaded, done } = await failureSetup();
  const cloud = await createLocalCloud({ workDir: loaded.workDir, vms: loaded.config.local!.vms, workers: { expectedSha256: () => '0'.repeat(64) } });
  const urls: string[] = [];
  const sign = cloud.server.signUrl;
  cloud.server.signUrl = (...a) => {
    const u = sign(...a);
    urls.push(u);
    return u;
  };
  try {
    // Act
    const s = await runLocalBackup({ loaded, policyName: 'demo', cloud, waitMs: 20, retryMs: 10 });
    // Assess
    assert.equal(s.ok, false);
    for (const v of s.vms) {
      assert.equal(v.outcome, 'failed');
      assert.equal(v.step, STEP.installWorker);
      assert.equal(v.error?.name, 'BundleIntegrityError');
      assert.ok(v.cleanup?.snapshotSetDeleted, 'snapshot set deleted');
    }
    assert.equal(urls.length, 2);
    for (const u of urls) assert.equal((await fetch(u)).status, 403, 'bundle URL revoked');
    for (const w of cloud.localWorkers.started()) {
      assert.equal(w.running, false);
      assert.equal(alive(w.pid!), false);
      assert.equal(existsSync(cloud.localWorkers.folderOf(w.workerId)), false);
    }
    const runs = await cloud.catalog.listRuns({ policy: 'demo' });
    assert.deepEqual(runs.map((r) => [r.outcome, r.step, r.error?.name]), [
      ['failed', 'installWorker', 'BundleIntegrityError'],
      ['failed', 'installWorker', 'BundleIntegrityError'],
    ]);
    assert.deepEqual(await readdir(join(dir, 'snapshots')), []);
  } finally {
    await cloud.close();
    await done();
  }
});

test('local pipeline: a failure while the worker backs up kills the worker and revokes its bundle URL and job credential', { timeout: 60_000 }, async () => {
  const { loaded, done } = await failureSetup();
  const cloud = await createLocalCloud({ workDir: loaded.workDir, vms: loaded.config.local!.vms });
  const urls: string[] = [];
  const sign = cloud.server.signUrl;
  cloud.server.signUrl = (...a) => {
    const u = sign(...a);
    urls.push(u);
    return u;
  };
  const jobs: Array<{ url: string; token: string }> = [];
  const offer = cloud.server.offerJob;
  cloud.server.offerJob = (...a) => {
    const j = offer(...a);
    jobs.push(j);
    return j;
  };
  try {
    const s = await runLocalBackup({
      loaded,
      policyName: 'demo',
      cloud,
      waitMs: 20,
      retryMs: 10,
      inject: [{ step: STEP.checkBackup, vmId: 'vm-db-1', error: () => new WorkerFailedError('injected: the worker stopped reporting') }],
    });
    const db = s.vms.find((v) => v.vmId === 'vm-db-1')!;
    assert.equal(db.outcome, 'failed');
    assert.equal(db.step, 'checkBackup');
    assert.match(db.error!.message, /injected/);
    assert.equal(s.vms.find((v) => v.vmId === 'vm-web-1')!.outcome, 'succeeded');
    for (const u of urls) assert.equal((await fetch(u)).status, 403);
    for (const j of jobs) assert.equal((await fetch(j.url, { headers: { authorization: `Bearer ${j.token}` } })).status, 403);
    for (const w of cloud.localWorkers.started()) assert.equal(alive(w.pid!), false, `${w.workerId} stopped`);
    const rec = (await cloud.catalog.listRuns({ vmId: 'vm-db-1' }))[0]!;
    assert.equal(rec.step, 'checkBackup');
  } finally {
    await cloud.close();
    await done();
  }
});
