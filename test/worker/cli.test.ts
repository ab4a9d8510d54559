// tender-worker as a person uses it: exit codes, --json, the errors they read,
// and a real kill -9 in the middle of a backup.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { runWorkerCli, type CliIo } from '../../worker/cli.js';

const root = new URL('../..', import.meta.url).pathname;

function io(dir: string, env: Record<string, string> = {}, isTTY = false): CliIo & { out: string; err: string } {
  const o = {
    out: '',
    err: '',
    stdout: (s: string) => {
      o.out += s;
    },
    stderr: (s: string) => {
      o.err += s;
    },
    isTTY,
    env: { TENDER_PASSPHRASE: 'cli test passphrase', ...env },
    cwd: dir,
  };
  return o;
}

/** 6 MiB: text, random and zero regions, so every path of the backup runs. */
function image(): Buffer {
  const b = Buffer.alloc(6 * 1024 * 1024);
  b.fill('some file content, compressible. ', 0, 2 * 1024 * 1024);
  randomBytes(2 * 1024 * 1024).copy(b, 3 * 1024 * 1024);
  return b;
}

test('backup, ls, restore and verify with --json, and the restored image is identical', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tender-cli-'));
  try {
    const img = image();
    await writeFile(join(dir, 'disk.img'), img);

    const b = io(dir);
    assert.equal(await runWorkerCli(['backup', '--repo', 'file:repo', '--vm', 'vm-1', '--disk', 'root=disk.img', '--json'], b), 0, b.err);
    const result = JSON.parse(b.out);
    assert.equal(result.disks[0].diskId, 'root');
    assert.equal(result.disks[0].bytesRead, img.length);

    const l = io(dir);
    assert.equal(await runWorkerCli(['ls', '--repo', 'file:repo', '--json'], l), 0);
    const points = JSON.parse(l.out);
    assert.equal(points.length, 1);
    assert.equal(points[0].id, result.restorePointId);

    const r = io(dir);
    assert.equal(await runWorkerCli(['restore', '--repo', 'file:repo', '--restore-point', result.restorePointId, '--disk', 'root', '--target', 'back.img'], r), 0, r.err);
    assert.equal(createHash('sha256').update(await readFile(join(dir, 'back.img'))).digest('hex'), createHash('sha256').update(img).digest('hex'));

    const v = io(dir);
    assert.equal(await runWorkerCli(['verify', '--repo', 'file:repo', '--read-data', '--json'], v), 0);
    assert.equal(JSON.parse(v.out).ok, true);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('errors a user can hit say what is wrong and exit non-zero', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tender-cli-'));
  try {
    await writeFile(join(dir, 'disk.img'), image());
    assert.equal(await runWorkerCli(['backup', '--repo', 'file:repo', '--vm', 'v', '--disk', 'root=disk.img'], io(dir)), 0);

    const wrong = io(dir, { TENDER_PASSPHRASE: 'not the passphrase' });
    assert.equal(await runWorkerCli(['ls', '--repo', 'file:repo'], wrong), 1);
    assert.match(wrong.err, /passphrase does not open the repository/);

    const missing = io(dir);
    assert.equal(await runWorkerCli(['ls', '--repo', 'file:nothing-here'], missing), 1);
    assert.match(missing.err, /no Tender repository at/);

    const unreadable = io(dir);
    assert.equal(await runWorkerCli(['backup', '--repo', 'file:repo', '--vm', 'v', '--disk', 'root=nope.img'], unreadable), 1);
    assert.match(unreadable.err, /disk image .*nope\.img does not exist/);

    const usage = io(dir);
    assert.equal(await runWorkerCli(['backup', '--repo', 'file:repo', '--disk', 'root=disk.img'], usage), 2);
    assert.match(usage.err, /backup needs --vm ID/);

    const share = io(dir);
    assert.equal(await runWorkerCli(['prune', '--repo', 'file:repo', '--repack-below', '50%'], share), 2);
    assert.match(share.err, /--repack-below takes a share of a pack from 0 \(never repack\) to 1, such as 0\.5/);
    const dry = io(dir);
    assert.equal(await runWorkerCli(['prune', '--repo', 'file:repo', '--repack-below', '0.3', '--dry-run', '--json'], dry), 0);
    assert.equal(JSON.parse(dry.out).packsRepacked, 0, 'a young repository has nothing to repack');

    // A typo or a flag in the command's place is named as such, even with no repository set.
    const typo = io(dir, { TENDER_REPOSITORY: '' });
    assert.equal(await runWorkerCli(['--version'], typo), 2);
    assert.match(typo.err, /unknown command "--version" — the commands are init, backup, restore, ls, verify, key, forget, prune/);
    assert.doesNotMatch(typo.err, /no repository/);

    const noPass = io(dir, { TENDER_PASSPHRASE: '' });
    assert.equal(await runWorkerCli(['ls', '--repo', 'file:repo'], noPass), 1);
    assert.match(noPass.err, /no passphrase: pass --passphrase-file FILE or set TENDER_PASSPHRASE/);

    const corrupt = io(dir);
    const packDir = join(dir, 'repo', 'data');
    const shard = (await readdir(packDir))[0]!;
    const pack = (await readdir(join(packDir, shard)))[0]!;
    const bytes = await readFile(join(packDir, shard, pack));
    bytes[50] ^= 0xff;
    await writeFile(join(packDir, shard, pack), bytes);
    assert.equal(await runWorkerCli(['verify', '--repo', 'file:repo', '--read-data'], corrupt), 1);
    assert.match(corrupt.out, new RegExp(`PROBLEMS FOUND[\\s\\S]*data/${shard}/${pack}`));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('on a terminal, backup shows a progress line with bytes, MB/s and ETA', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tender-cli-'));
  try {
    // Large enough that the 250 ms progress tick fires at least once.
    const big = Buffer.alloc(96 * 1024 * 1024);
    for (let off = 0; off < big.length; off += 1024 * 1024) randomBytes(256 * 1024).copy(big, off);
    await writeFile(join(dir, 'disk.img'), big);
    const t = io(dir, {}, true);
    assert.equal(await runWorkerCli(['backup', '--repo', 'file:repo', '--vm', 'v', '--disk', 'root=disk.img'], t), 0, t.err);
    assert.match(t.err, /\rbackup root\s+[\d.]+ \w+ \/ 96\.00 MiB\s+\d+ MB\/s\s+ETA \d+:\d\d/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('kill -9 during a backup leaves a repository that verifies, and the next run reuses the uploaded packs', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tender-cli-'));
  try {
    const big = Buffer.alloc(160 * 1024 * 1024);
    for (let off = 0; off < big.length; off += 1024 * 1024) randomBytes(512 * 1024).copy(big, off);
    await writeFile(join(dir, 'disk.img'), big);
    const env = { ...process.env, TENDER_PASSPHRASE: 'cli test passphrase' };

    const child = spawn(process.execPath, [join(root, 'bin', 'tender-worker.mjs'), 'backup', '--repo', 'file:repo', '--vm', 'v', '--disk', 'root=disk.img', '--threads', '1'], { cwd: dir, env, stdio: 'ignore' });
    const exited = new Promise((r) => child.on('exit', r));
    // Kill once a few packs are uploaded but (with one codec thread) well before the end.
    const deadline = Date.now() + 60_000;
    let packs = 0;
    while (Date.now() < deadline) {
      packs = await readdir(join(dir, 'repo', 'data')).then(
        async (shards) => (await Promise.all(shards.map((s) => readdir(join(dir, 'repo', 'data', s))))).flat().filter((n) => !n.startsWith('.')).length,
        () => 0,
      );
      if (packs >= 2) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGKILL');
    await exited;
    assert.ok(packs >= 2, 'the backup uploaded packs before it was killed');

    const v = io(dir);
    assert.equal(await runWorkerCli(['verify', '--repo', 'file:repo', '--read-data', '--json'], v), 0, v.out + v.err);
    const report = JSON.parse(v.out);
    assert.equal(report.restorePoints, 0);

    const again = io(dir);
    assert.equal(await runWorkerCli(['backup', '--repo', 'file:repo', '--vm', 'v', '--disk', 'root=disk.img', '--json'], again), 0, again.err);
    const result = JSON.parse(again.out);
    assert.ok(result.disks[0].blocksNew < 160, `reused what the killed run uploaded (${result.disks[0].blocksNew} of 160 blocks stored again)`);
    const after = io(dir);
    assert.equal(await runWorkerCli(['verify', '--repo', 'file:repo', '--read-data', '--json'], after), 0);
    assert.equal(JSON.parse(after.out).restorePoints, 1);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('ls names a restore point it cannot read and exits 1, still listing the rest; forget of an unknown id exits 1', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tender-cli-'));
  try {
    await writeFile(join(dir, 'disk.img'), image());
    const ids: string[] = [];
    for (let k = 0; k < 2; k++) {
      const b = io(dir);
      assert.equal(await runWorkerCli(['backup', '--repo', 'file:repo', '--vm', 'vm-1', '--disk', 'root=disk.img', '--json'], b), 0, b.err);
      ids.push(JSON.parse(b.out).restorePointId);
    }
    const manifest = join(dir, 'repo', 'snapshots', ids[0]!);
    const bytes = await readFile(manifest);
    bytes[40] ^= 0x01;
    await writeFile(manifest, bytes);

    const l = io(dir);
    assert.equal(await runWorkerCli(['ls', '--repo', 'file:repo', '--json'], l), 1);
    assert.deepEqual(JSON.parse(l.out).map((p: { id: string }) => p.id), [ids[1]]);
    assert.match(l.err, new RegExp(`snapshots/${ids[0]} cannot be read: .*tender-worker forget ${ids[0]}`));

    const f = io(dir);
    assert.equal(await runWorkerCli(['forget', '--repo', 'file:repo', ids[0]!, 'not-a-point', '--json'], f), 1);
    assert.deepEqual(JSON.parse(f.out), { forgotten: [ids[0]], unknown: ['not-a-point'] });
    assert.match(f.err, /no restore point "not-a-point"/);
    const again = io(dir);
    assert.equal(await runWorkerCli(['ls', '--repo', 'file:repo'], again), 0, again.err);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('restore onto a block device writes the disk in place (zeros too), needs --overwrite, and refuses a device too small', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tender-cli-'));
  const { spawnSync } = await import('node:child_process');
  const attach = (file: string) => spawnSync('losetup', ['-f', '--show', file], { encoding: 'utf8' });
  try {
    const img = image();
    await writeFile(join(dir, 'disk.img'), img);
    // The device holds old data everywhere, so zero blocks of the disk must be written too.
    await writeFile(join(dir, 'device.img'), Buffer.alloc(img.length + 1024 * 1024, 0xee));
    await writeFile(join(dir, 'small.img'), Buffer.alloc(img.length - 4096, 0xee));
    const dev = attach(join(dir, 'device.img'));
    if (dev.status !== 0) {
      t.skip(`no loop device here (losetup: ${(dev.stderr || dev.error?.message || '').trim()})`);
      return;
    }
    const device = dev.stdout.trim();
    const small = attach(join(dir, 'small.img')).stdout.trim();
    let exact = '';
    try {
      const b = io(dir);
      assert.equal(await runWorkerCli(['backup', '--repo', 'file:repo', '--vm', 'vm-1', '--disk', 'root=disk.img', '--json'], b), 0, b.err);
      const rp = JSON.parse(b.out).restorePointId;
      const refused = io(dir);
      assert.equal(await runWorkerCli(['restore', '--repo', 'file:repo', '--restore-point', rp, '--disk', 'root', '--target', device], refused), 1);
      assert.match(refused.err, /is a block device — pass --overwrite/);
      const tooSmall = io(dir);
      assert.equal(await runWorkerCli(['restore', '--repo', 'file:repo', '--restore-point', rp, '--disk', 'root', '--target', small, '--overwrite'], tooSmall), 1);
      assert.match(tooSmall.err, /smaller than the disk/);

      const r = io(dir);
      assert.equal(await runWorkerCli(['restore', '--repo', 'file:repo', '--restore-point', rp, '--disk', 'root', '--target', device, '--overwrite', '--sync'], r), 0, r.err);
      const { statSync } = await import('node:fs');
      assert.ok(statSync(device).isBlockDevice(), 'the device node is still a device node');
      const written = await readFile(join(dir, 'device.img'));
      assert.equal(createHash('sha256').update(written.subarray(0, img.length)).digest('hex'), createHash('sha256').update(img).digest('hex'), 'the disk, zeros included, is on the device');
      assert.equal(written[img.length], 0xee, 'past the disk the device is untouched');
      assert.deepEqual((await readdir(dirname(device))).filter((f) => f.endsWith('.partial')), []);

      // A disk whose size is not a multiple of 4 KiB onto a device of exactly its size: the short
      // last block must not be padded past the device's end.
      const odd = Buffer.concat([img, randomBytes(512)]);
      await writeFile(join(dir, 'odd.img'), odd);
      await writeFile(join(dir, 'exact.img'), Buffer.alloc(odd.length, 0xee));
      exact = attach(join(dir, 'exact.img')).stdout.trim();
      const ob = io(dir);
      assert.equal(await runWorkerCli(['backup', '--repo', 'file:repo', '--vm', 'vm-2', '--disk', 'root=odd.img', '--json'], ob), 0, ob.err);
      const oddRp = JSON.parse(ob.out).restorePointId;
      const or = io(dir);
      assert.equal(await runWorkerCli(['restore', '--repo', 'file:repo', '--restore-point', oddRp, '--disk', 'root', '--target', exact, '--overwrite', '--sync'], or), 0, or.err);
      assert.ok((await readFile(join(dir, 'exact.img'))).equals(odd), 'the whole disk, its short last block too');
    } finally {
      spawnSync('losetup', ['-d', device]);
      if (small) spawnSync('losetup', ['-d', small]);
      if (exact) spawnSync('losetup', ['-d', exact]);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
