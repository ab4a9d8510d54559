import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLoopbackServer } from '../../shared/local/loopback-server.js';
import { fixedClock } from '../../shared/core/clock.js';
import type { WorkerJob } from '../../shared/ports/cloud.js';

async function setup() {
  const dir = await mkdtemp(join(tmpdir(), 'tender-loop-'));
  const file = join(dir, 'bundle.cjs');
  await writeFile(file, 'module.exports = {}');
  const clock = fixedClock('2024-01-01T00:00:00Z');
  const server = await startLoopbackServer({ clock });
  server.stageFile('bundle.cjs', file);
  return { dir, clock, server, done: async () => (await server.close(), await rm(dir, { recursive: true, force: true })) };
}

const job: WorkerJob = {
  jobId: 'job-1',
  runId: 'r1',
  policy: 'p',
  vm: { vmId: 'vm-a', name: 'a', tags: {} },
  snapshotSetId: 's',
  disks: [],
  repository: { url: 'file:/x', key: { passphraseEnv: 'X' } },
  tags: {},
};

test('loopback: the signed URL serves the bundle, on 127.0.0.1 only', async () => {
  const { server, done } = await setup();
  try {
    const url = server.signUrl('bundle.cjs', { runId: 'r1', vmId: 'vm-a' }, 60);
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/files\/bundle\.cjs\?g=.+&exp=\d+&sig=[0-9a-f]{64}$/);
    const res = await fetch(url);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'module.exports = {}');
  } finally {
    await done();
  }
});

test('loopback: the URL answers 403 once expired', async () => {
  const { server, clock, done } = await setup();
  try {
    const url = server.signUrl('bundle.cjs', { runId: 'r1', vmId: 'vm-a' }, 60);
    clock.advance(61_000);
    const res = await fetch(url);
    assert.equal(res.status, 403);
    assert.match(await res.text(), /expired/);
  } finally {
    await done();
  }
});

test('loopback: a URL with a changed signature, name or expiry answers 403', async () => {
  const { server, done } = await setup();
  try {
    const url = server.signUrl('bundle.cjs', { runId: 'r1', vmId: 'vm-a' }, 60);
    const u = new URL(url);
    const later = new URL(url);
    later.searchParams.set('exp', String(Number(u.searchParams.get('exp')) + 3600));
    const badSig = url.replace(/sig=([0-9a-f])/, (_, c) => `sig=${c === '0' ? '1' : '0'}`);
    for (const bad of [later.href, badSig, url.replace('/files/bundle.cjs', '/files/other.cjs')]) assert.equal((await fetch(bad)).status, 403, bad);
  } finally {
    await done();
  }
});

test('loopback: after revoke, the bundle URL and the job credential answer 403', async () => {
  const { server, done } = await setup();
  try {
    // Prepare
    const url = server.signUrl('bundle.cjs', { runId: 'r1', vmId: 'vm-a' }, 600);
    const other = server.signUrl('bundle.cjs', { runId: 'r1', vmId: 'vm-b' }, 600);
    const { url: jobUrl, token } = server.offerJob(job, { runId: 'r1', vmId: 'vm-a' }, 600);
    const auth = { authorization: `Bearer ${token}` };
    assert.equal((await fetch(url)).status, 200);
    assert.equal((await fetch(jobUrl, { headers: auth })).status, 200);
    // Act
    const revoked = server.revoke({ runId: 'r1', vmId: 'vm-a' });
    // Assess
    assert.equal(revoked.length, 2);
    assert.equal((await fetch(url)).status, 403);
    assert.equal((await fetch(jobUrl, { headers: auth })).status, 403);
    assert.equal((await fetch(`${jobUrl}/progress`, { method: 'POST', headers: auth, body: '{}' })).status, 403);
    assert.equal((await fetch(other)).status, 200, "another VM's grant is untouched");
    assert.deepEqual(server.revoke({ runId: 'r1', vmId: 'vm-a' }), [], 'idempotent');
  } finally {
    await done();
  }
});

test('loopback: the job needs its bearer credential; progress and result reach the status', async () => {
  const { server, done } = await setup();
  try {
    const { url, token } = server.offerJob(job, { runId: 'r1', vmId: 'vm-a' }, 600);
    assert.equal((await fetch(url)).status, 403);
    assert.equal((await fetch(url, { headers: { authorization: 'Bearer nope' } })).status, 403);
    const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    assert.equal(((await (await fetch(url, { headers: auth })).json()) as WorkerJob).jobId, 'job-1');
    await fetch(`${url}/progress`, { method: 'POST', headers: auth, body: JSON.stringify({ bytesDone: 5, bytesTotal: 10, bytesPerSecond: 1 }) });
    assert.deepEqual((server.jobStatus('job-1').status as any).progress, { bytesDone: 5, bytesTotal: 10, bytesPerSecond: 1 });
    await fetch(`${url}/result`, { method: 'POST', headers: auth, body: JSON.stringify({ state: 'failed', error: { name: 'X', message: 'y' } }) });
    assert.equal(server.jobStatus('job-1').status.state, 'failed');
  } finally {
    await done();
  }
});

test('loopback: the first result is final — a late "failed" never overwrites a success', async () => {
  const { server, done } = await setup();
  try {
    const { url, token } = server.offerJob(job, { runId: 'r1', vmId: 'vm-a' }, 600);
    const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    await fetch(url, { headers: auth });
    const result = { restorePointId: 'rp-1', disks: [], seconds: 1 };
    assert.equal((await fetch(`${url}/result`, { method: 'POST', headers: auth, body: JSON.stringify({ state: 'succeeded', result }) })).status, 204);
    await fetch(`${url}/result`, { method: 'POST', headers: auth, body: JSON.stringify({ state: 'failed', error: { name: 'Error', message: 'late' } }) });
    const status = server.jobStatus('job-1').status;
    assert.equal(status.state, 'succeeded');
    assert.equal((status as any).result.restorePointId, 'rp-1');
  } finally {
    await done();
  }
});
