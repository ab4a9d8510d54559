// npm run bench:datamover [-- --size GIB] [--extra MIB] [--dir DIR] [--peers borg,restic] [--no-peers] [--rounds N]
//
// Tender's data mover against borg and restic on the same disk images, in one
// run: full backup of disk-v1, incremental of disk-v2 (with the changed-block
// list EBS would give), restore of v2 checked byte for byte. Prints one table
// (seconds, MB/s of image size, peak RSS, repository bytes) and the ratios
// against the targets. Figures, never assertions: machines are noisy, so only
// ratios taken in one run mean anything. The machines here also change speed
// by a fifth from one half-minute to the next (the same full backup took 7.6
// and 9.5 CPU seconds minutes apart), so every tool runs --rounds times
// (default 3), Tender and the peers taking turns, and each phase counts its
// fastest round: noise only ever adds time. Peak RSS is the largest of all rounds.

import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { build } from 'esbuild';

const root = resolve(import.meta.dirname, '..');
const shared = resolve(root, '..', 'shared', 'bench');

const { values } = parseArgs({
  options: {
    size: { type: 'string', default: '2' },
    extra: { type: 'string', default: '0' },
    dir: { type: 'string', default: '/tmp/tender-bench' },
    peers: { type: 'string', default: 'borg,restic' },
    'no-peers': { type: 'boolean', default: false },
    threads: { type: 'string' },
    rounds: { type: 'string', default: '3' },
  },
});
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds takes a whole number ≥ 1 (got ${values.rounds})`);
const sizeGiB = Number(values.size);
const dir = resolve(values.dir!);
const disks = join(dir, `disks-${sizeGiB}g-${values.extra}`);
const work = join(dir, 'work');

function sh(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, ...opts.env }, maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

function du(path: string): number {
  return Number(sh('du', ['-sb', path]).split('\t')[0]);
}

interface Row {
  tool: string;
  phase: string;
  seconds: number;
  /** User + system CPU seconds (Tender only: peers.sh reports wall time alone). */
  cpuSeconds?: number;
  rssMiB: number;
  repoBytes: number;
  ok: string;
}

// 1. Disk images (built once per size; make-disks.sh needs root for its loop mount).
if (!existsSync(join(disks, 'changed-blocks.json'))) {
  console.error(`building ${sizeGiB} GiB benchmark images in ${disks} …`);
  mkdirSync(disks, { recursive: true });
  process.stderr.write(sh('bash', [join(shared, 'make-disks.sh'), disks, String(sizeGiB), String(values.extra)]));
}
const v1 = join(disks, 'disk-v1.img');
const v2 = join(disks, 'disk-v2.img');
const imageBytes = statSync(v1).size;
const changed = JSON.parse(readFileSync(join(disks, 'changed-blocks.json'), 'utf8'));

// 2. The worker as one CommonJS bundle, the format the worker bundles are (the AWS worker's,
// shared/aws/build-worker-bundle.ts, and the local workers', shared/local/worker-bundle.ts): an
// ES module bundle starts 10 ms slower here (the loader wraps every built-in module it imports).
// Packages stay outside, resolved from the project's node_modules (zstd-napi is native); the S3
// and Azure stores' code, and so their SDKs, load only for s3:// and azblob:// repositories.
const bundleDir = join(root, 'dist', 'bench');
rmSync(bundleDir, { recursive: true, force: true });
await build({
  entryPoints: { 'tender-worker': join(root, 'worker', 'main.ts') },
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  outdir: bundleDir,
  outExtension: { '.js': '.cjs' },
  packages: 'external',
  // import.meta.url has no CommonJS equivalent: the bundle's own location, as in the worker bundles.
  define: { 'import.meta.url': '__tenderBundleUrl' },
  banner: { js: 'const __tenderBundleUrl = require("node:url").pathToFileURL(__filename).href;' },
  logLevel: 'warning',
});
const bundle = join(bundleDir, 'tender-worker.cjs');

// 3. Tender: full, incremental, restore. The images are read just before each round: peers.sh
// copies the image before each peer runs, so the peers read from a fresh page cache too, and nobody
// pays for a cold disk (pages left alone for minutes may have been reclaimed by the host meanwhile).
function readImages(): void {
  for (const img of [v1, v2]) {
    const fd = openSync(img, 'r');
    const buf = Buffer.allocUnsafe(8 * 1024 * 1024);
    while (readSync(fd, buf, 0, buf.length, null) > 0);
    closeSync(fd);
  }
}
const tw = join(work, 'tender');
const repo = join(tw, 'repo');
const env = { TENDER_PASSPHRASE: 'benchmark passphrase' };
// NODE_EXTRA_CA_CERTS makes Node parse that CA bundle before running any code: 25–40 ms per
// process here, where the sandbox sets it for its HTTPS proxy. A worker machine does not set
// it, a file: repository makes no TLS connection, and borg and restic never read it, so the
// worker runs without it (the output says so when it was set).
const extraCaCerts = process.env.NODE_EXTRA_CA_CERTS;
const workerEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
delete workerEnv.NODE_EXTRA_CA_CERTS;
function timed(phase: string, args: string[]): Row {
  const timeFile = join(tw, `${phase}.time`);
  const r = spawnSync('/usr/bin/time', ['-f', '%e %M %U %S', '-o', timeFile, process.execPath, bundle, ...args, ...(values.threads ? ['--threads', values.threads] : [])], {
    encoding: 'utf8',
    env: workerEnv,
    cwd: root,
  });
  const [secs, kib, user, sys] = readFileSync(timeFile, 'utf8').trim().split(/\s+/).map(Number);
  if (r.status !== 0) console.error(`tender ${phase} failed:\n${r.stdout}\n${r.stderr}`);
  return { tool: 'tender', phase, seconds: secs!, cpuSeconds: user! + sys!, rssMiB: Math.round(kib! / 1024), repoBytes: existsSync(repo) ? du(repo) : 0, ok: r.status === 0 ? 'ok' : `failed(${r.status})` };
}
function tenderRound(): Row[] {
  readImages();
  rmSync(tw, { recursive: true, force: true });
  mkdirSync(tw, { recursive: true });
  const out: Row[] = [];
  out.push(timed('full', ['backup', '--repo', `file:${repo}`, '--vm', 'bench', '--disk', `d0=${v1}`]));
  out.push(timed('incremental', ['backup', '--repo', `file:${repo}`, '--vm', 'bench', '--disk', `d0=${v2}`, '--parent', `d0=${v1}`, '--changed', `d0=${join(disks, 'changed-blocks.json')}`]));
  const points = JSON.parse(sh(process.execPath, [bundle, 'ls', '--repo', `file:${repo}`, '--json'], { env }));
  const restored = join(tw, 'restored.img');
  out.push(timed('restore', ['restore', '--repo', `file:${repo}`, '--restore-point', points.at(-1).id, '--disk', 'd0', '--target', restored]));
  const same = spawnSync('cmp', ['-s', restored, v2]).status === 0;
  out.push({ tool: 'tender', phase: 'verify', seconds: 0, rssMiB: 0, repoBytes: 0, ok: same ? 'ok' : 'MISMATCH' });
  rmSync(restored, { force: true });
  return out;
}

// 4. The peers, in the same run, taking turns with Tender.
function peerRound(): Row[] {
  const csv = sh('bash', [join(shared, 'peers.sh'), disks, join(work, 'peers'), ...values.peers!.split(',')]);
  return csv
    .trim()
    .split('\n')
    .slice(1)
    .map((line) => {
      const [tool, phase, seconds, rss, repoBytes, ok] = line.split(',');
      return { tool: tool!, phase: phase!, seconds: Number(seconds), rssMiB: Number(rss), repoBytes: Number(repoBytes), ok: ok! };
    });
}

const all: Row[] = [];
for (let round = 1; round <= rounds; round++) {
  console.error(`round ${round} of ${rounds}: tender${values['no-peers'] ? '' : `, then ${values.peers}`} …`);
  all.push(...tenderRound(), ...(values['no-peers'] ? [] : peerRound()));
}
/** Per tool and phase: the fastest round's figures, the largest RSS of any round, and ok only if every round was. */
const rows: Row[] = [];
for (const r of all) {
  const seen = rows.find((x) => x.tool === r.tool && x.phase === r.phase);
  if (!seen) rows.push({ ...r });
  else {
    const rss = Math.max(seen.rssMiB, r.rssMiB);
    const ok = seen.ok !== 'ok' ? seen.ok : r.ok;
    if (r.seconds < seen.seconds) Object.assign(seen, r);
    seen.rssMiB = rss;
    seen.ok = ok;
  }
}
const roundsOf = (tool: string, phase: string) => all.filter((r) => r.tool === tool && r.phase === phase).map((r) => r.seconds.toFixed(2));

// 5. One table, then the ratios against the targets.
const mbps = (r: Row) => (r.seconds > 0 ? (imageBytes / 1e6 / r.seconds).toFixed(0) : '-');
console.log(`\nimages: ${(imageBytes / 2 ** 30).toFixed(1)} GiB, ${changed.changed.length} of ${changed.blocks} blocks changed in v2; ${spawnSync('nproc').stdout.toString().trim()} cores\n`);
console.log(`best of ${rounds} round(s) per tool and phase; every round's seconds at the right`);
if (extraCaCerts) console.log('tender-worker ran without NODE_EXTRA_CA_CERTS (set here; Node reads that bundle at start-up, a worker machine does not set it)');
console.log('');
console.log('tool      phase         seconds   CPU s   MB/s   peak RSS MiB   repo bytes      ok   rounds');
for (const r of rows) {
  if (r.phase === 'verify') continue;
  const cpu = r.cpuSeconds === undefined ? '-' : r.cpuSeconds.toFixed(2);
  console.log(`${r.tool.padEnd(9)} ${r.phase.padEnd(12)} ${r.seconds.toFixed(2).padStart(8)} ${cpu.padStart(7)} ${mbps(r).padStart(6)} ${String(r.rssMiB).padStart(14)} ${String(r.repoBytes).padStart(12)}   ${r.ok.padEnd(4)} ${roundsOf(r.tool, r.phase).join(' ')}`);
}
for (const r of rows.filter((x) => x.phase === 'verify')) console.log(`${r.tool.padEnd(9)} restore matches disk-v2 byte for byte: ${r.ok}`);

const get = (tool: string, phase: string) => rows.find((r) => r.tool === tool && r.phase === phase);
const t = { full: get('tender', 'full')!, inc: get('tender', 'incremental')!, restore: get('tender', 'restore')! };
const lines: string[] = [];
const mark = (ok: boolean) => (ok ? 'met' : 'NOT MET');
lines.push(`tender incremental / tender full time: ${(t.inc.seconds / t.full.seconds).toFixed(2)} (target ≤ 0.15: ${mark(t.inc.seconds / t.full.seconds <= 0.15)})`);
lines.push(`tender peak RSS: ${Math.max(t.full.rssMiB, t.inc.rssMiB, t.restore.rssMiB)} MiB (target ≤ 200: ${mark(Math.max(t.full.rssMiB, t.inc.rssMiB, t.restore.rssMiB) <= 200)})`);
for (const peer of ['borg', 'restic', 'borg-blake2', 'borg2']) {
  const full = get(peer, 'full');
  if (!full) continue;
  const inc = get(peer, 'incremental')!;
  const restore = get(peer, 'restore')!;
  const fx = full.seconds / t.full.seconds;
  const ix = inc.seconds / t.inc.seconds;
  const rx = restore.seconds / t.restore.seconds;
  lines.push(`vs ${peer}: full ${fx.toFixed(2)}× faster (target ≥ 2: ${mark(fx >= 2)}), incremental ${ix.toFixed(2)}× (${peer === 'borg' ? `target ≥ 3: ${mark(ix >= 3)}` : 'no target'}), restore ${rx.toFixed(2)}× (${peer === 'borg' ? `target ≥ 1.5: ${mark(rx >= 1.5)}` : 'no target'}), repository ${(t.inc.repoBytes / inc.repoBytes).toFixed(2)}× its size${peer === 'borg' ? ` (target ≤ 1: ${mark(t.inc.repoBytes <= inc.repoBytes)})` : ''}`);
}
console.log(`\n${lines.join('\n')}`);
