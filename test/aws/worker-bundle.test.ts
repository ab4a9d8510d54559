// The AWS worker bundle: one reproducible .tar.gz with the agent and the native
// addons (zstd, keyed BLAKE3) next to it, and the manifest (sha256) the install command checks.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildAwsWorkerBundle } from '../../shared/aws/build-worker-bundle.js';

test('bundle: agent + zstd-napi and BLAKE3 runtimes in a tar.gz whose sha256 is in the manifest; rebuilding gives the same bytes; the agent starts and asks for its queues', async () => {
  const out = mkdtempSync(join(tmpdir(), 'tender-bundle-'));
  try {
    // Act
    const a = await buildAwsWorkerBundle({ outDir: out });
    const b = await buildAwsWorkerBundle({ outDir: out });
    // Assess
    assert.equal(a.sha256, b.sha256, 'reproducible');
    assert.equal(createHash('sha256').update(readFileSync(a.path)).digest('hex'), a.sha256);
    const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
    assert.equal(manifest.sha256, a.sha256);
    assert.equal(manifest.key, `worker/tender-worker-${a.sha256.slice(0, 16)}.tar.gz`);
    const files = execFileSync('tar', ['-tzf', a.path], { encoding: 'utf8' }).split('\n');
    for (const f of ['./tender-aws-worker.cjs', './node_modules/zstd-napi/build/Release/binding.node', './node_modules/zstd-napi/binding.js', './node_modules/zstd-napi/package.json', './node_modules/@napi-rs/blake-hash/index.js']) assert.ok(files.includes(f), f);
    assert.ok(files.some((f) => /^\.\/node_modules\/@napi-rs\/blake-hash-[a-z0-9-]+\/blake\.[a-z0-9-]+\.node$/.test(f)), 'the prebuilt BLAKE3 binary for this platform');
    assert.match(manifest.blakeHash, /^\d+\.\d+\.\d+$/);
    // Unpacked away from the project (no node_modules to fall back on): it loads and says what it needs.
    const run = mkdtempSync(join(tmpdir(), 'tender-worker-'));
    execFileSync('tar', ['-xzf', a.path, '-C', run]);
    const res = spawnSync(process.execPath, [join(run, 'tender-aws-worker.cjs')], { encoding: 'utf8', env: { PATH: process.env.PATH! } });
    assert.equal(res.status, 2);
    assert.match(res.stderr, /TENDER_JOB_QUEUE_URL/);
    const zstd = spawnSync(process.execPath, ['-e', 'const z=require("./node_modules/zstd-napi/binding");const c=Buffer.alloc(z.compressBound(2));const n=z.compress(c,Buffer.from("ok"),3);const d=Buffer.alloc(2);z.decompress(d,c.subarray(0,n));process.stdout.write(d.toString())'], { cwd: run, encoding: 'utf8' });
    assert.equal(zstd.stdout, 'ok');
    // BLAKE3's official keyed-hash vector for the empty input, from the unpacked files alone.
    const blake = spawnSync(process.execPath, ['-e', 'const {Blake3Hasher}=require("./node_modules/@napi-rs/blake-hash");process.stdout.write(Blake3Hasher.newKeyed(Buffer.from("whats the Elvish word for friend")).digestBuffer().toString("hex"))'], { cwd: run, encoding: 'utf8', env: { PATH: process.env.PATH! } });
    assert.equal(blake.stdout, '92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26', blake.stderr);
    // …and the codec threads find it as they do: resolved from the bundle's own location.
    const found = spawnSync(process.execPath, ['-e', 'process.stdout.write(require("node:module").createRequire(require("node:path").resolve("tender-aws-worker.cjs")).resolve("@napi-rs/blake-hash"))'], { cwd: run, encoding: 'utf8', env: { PATH: process.env.PATH! } });
    assert.equal(found.stdout, join(run, 'node_modules', '@napi-rs', 'blake-hash', 'index.js'), found.stderr);
    assert.ok(files.includes('./node_modules/@napi-rs/blake-hash/LICENSE'), 'its licence travels with it');
    rmSync(run, { recursive: true, force: true });
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('bundle: the zstd binding must load on the worker AMI — the newest glibc symbol it needs is read from the binary, not the build machine', async () => {
  const { glibcNeeded, WORKER_AMI_GLIBC } = await import('../../shared/aws/build-worker-bundle.js');
  const elf = (...versions: string[]) => Buffer.from(`\x7fELF...${versions.map((v) => `GLIBC_${v}\0`).join('junk')}...`, 'latin1');
  assert.equal(glibcNeeded(elf('2.2.5', '2.14', '2.34', '2.3.4')), '2.34');
  assert.equal(glibcNeeded(elf('2.2.5', '2.38')), '2.38');
  assert.equal(glibcNeeded(Buffer.from('no versions here')), undefined);
  // The binding npm ci built here loads on Amazon Linux 2023.
  const needed = glibcNeeded(readFileSync(join(new URL('../..', import.meta.url).pathname, 'node_modules/zstd-napi/build/Release/binding.node')));
  assert.ok(needed && Number(needed.split('.')[1]) <= Number(WORKER_AMI_GLIBC.split('.')[1]), `needs glibc ${needed}`);
});
