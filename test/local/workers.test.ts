import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { alive, createLocalWorkers } from '../../shared/local/workers.js';
import { startLoopbackServer } from '../../shared/local/loopback-server.js';
import { systemClock } from '../../shared/core/clock.js';
import { silentLogger } from '../../shared/core/logger.js';
import { BundleIntegrityError } from '../../shared/core/errors.js';
import type { Vm, WorkerJob } from '../../shared/ports/cloud.js';

// A stand-in worker bundle: fetches its job and reports a result, as worker/agent.ts does.
const FAKE_AGENT = `
exports.runJob = async ({ jobUrl, token }) => {
  const h = { authorization: 'Bearer ' + token, 'content-type': 'application/json' };
  const job = await (await fetch(jobUrl, { headers: h })).json();
  await fetch(jobUrl + '/result', { method: 'POST', headers: h, body: JSON.stringify({ state: 'succeeded', result: { restorePointId: 'rp-' + job.vm.vmId, disks: [], seconds: 0 } }) });
};
`;

const vm: Vm = { vmId: 'vm-a', name: 'a', region: 'local', disks: [{ diskId: 'd', sizeBytes: 1 }], tags: {} };
const profile = { name: 'small', instanceType: 'process-small' };


async function until(fn: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`gave up waiting for ${what}`);
}

async function setup(opts: { wrongSha?: boolean } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'tender-workers-'));
  const bundlePath = join(dir, 'fake-agent.cjs');
  await writeFile(bundlePath, FAKE_AGENT);
  const sha256 = createHash('sha256').update(FAKE_AGENT).digest('hex');
  const server = await startLoopbackServer({ clock: systemClock });
  const urls: string[] = [];
  const sign = server.signUrl;
  server.signUrl = (...a) => {
    const u = sign(...a);
    urls.push(u);
    return u;
  };
  const workers = createLocalWorkers({
    workDir: dir,
    server,
    clock: systemClock,
    logger: silentLogger,
    bundle: async () => ({ path: bundlePath, sha256, bytes: FAKE_AGENT.length }),
    ...(opts.wrongSha ? { expectedSha256: () => 'f'.repeat(64) } : {}),
  });
  return {
    dir,
    server,
    workers,
    urls,
    done: async () => {
      await workers.close();
      await server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

test('workers: a worker is a child process with its own folder; it installs the bundle, runs the job, and deallocate removes both', async () => {
  const { workers, urls, done } = await setup();
  try {
    // Prepare
    const ref = await workers.deployWorker({ runId: 'r1', vm, profile, privateNetwork: true, tags: { a: 'b' } });
    assert.deepEqual(await workers.deployWorker({ runId: 'r1', vm, profile, privateNetwork: true, tags: {} }), ref, 'idempotent per run and VM');
    const pid = workers.pidOf(ref.workerId)!;
    const folder = workers.folderOf(ref.workerId);
    await until(async () => (await workers.getWorkerState(ref)) === 'ready', 'ready');
    assert.ok(alive(pid));
    assert.ok(existsSync(join(folder, 'worker.json')));
    // Act
    const { bundleSha256 } = await workers.installWorker({ runId: 'r1', vmId: 'vm-a', worker: ref });
    assert.equal(await readFile(join(folder, 'bundle.cjs'), 'utf8'), FAKE_AGENT, 'downloaded into its own folder');
    assert.equal(bundleSha256, createHash('sha256').update(FAKE_AGENT).digest('hex'));
    const job = { jobId: 'j1', runId: 'r1', policy: 'p', vm: { vmId: 'vm-a', name: 'a', tags: {} }, snapshotSetId: 's', disks: [], repository: { url: 'file:/x', key: { passphraseEnv: 'X' } }, tags: {} } satisfies WorkerJob;
    await workers.startJob(ref, job);
    await until(async () => (await workers.getJobStatus(ref, 'j1')).state === 'succeeded', 'job result');
    const { revoked } = await workers.revokeAccess({ runId: 'r1', vmId: 'vm-a' });
    await workers.deallocateWorker({ runId: 'r1', vmId: 'vm-a', worker: ref });
    // Assess
    assert.equal(revoked.length, 2, 'bundle URL and job credential');
    assert.equal((await fetch(urls[0]!)).status, 403, 'bundle URL answers 403 after revoke');
    assert.equal(alive(pid), false, 'process stopped');
    assert.equal(existsSync(folder), false, 'folder removed');
    assert.equal(await workers.getWorkerState(ref), 'gone');
    await workers.deallocateWorker({ runId: 'r1', vmId: 'vm-a' });
  } finally {
    await done();
  }
});

test('workers: a bundle whose sha256 does not match is refused, never written or run', async () => {
  const { workers, done } = await setup({ wrongSha: true });
  try {
    const ref = await workers.deployWorker({ runId: 'r1', vm, profile, privateNetwork: true, tags: {} });
    await until(async () => (await workers.getWorkerState(ref)) === 'ready', 'ready');
    await assert.rejects(workers.installWorker({ runId: 'r1', vmId: 'vm-a', worker: ref }), (e: Error) => e instanceof BundleIntegrityError && /sha256/.test(e.message));
    assert.equal(existsSync(join(workers.folderOf(ref.workerId), 'bundle.cjs')), false);
    await assert.rejects(
      workers.startJob(ref, { jobId: 'j', runId: 'r1', policy: 'p', vm: { vmId: 'vm-a', name: 'a', tags: {} }, snapshotSetId: 's', disks: [], repository: { url: 'file:/x', key: { passphraseEnv: 'X' } }, tags: {} }),
      /no worker software installed/,
    );
  } finally {
    await done();
  }
});

test('workers: a worker whose process dies fails its job instead of hanging', async () => {
  const { workers, done } = await setup();
  try {
    const ref = await workers.deployWorker({ runId: 'r1', vm, profile, privateNetwork: true, tags: {} });
    await until(async () => (await workers.getWorkerState(ref)) === 'ready', 'ready');
    process.kill(workers.pidOf(ref.workerId)!, 'SIGKILL');
    await until(async () => (await workers.getWorkerState(ref)) === 'failed', 'failed state');
  } finally {
    await done();
  }
});
