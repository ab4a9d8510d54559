// `npm start`: the whole pipeline on this machine, with no cloud account.
// Makes (once) three demo VMs whose disks are ext4 images, backs them up
// (full), changes files on one VM, backs up again (incremental: fewer bytes
// read), lists the restore points, restores one disk and checks it against
// the snapshot it was taken from.

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { loadConfig } from '../shared/local/load-config.js';
import { runLocalBackup, type LocalRunOptions, type RunSummary } from '../shared/local/runner.js';
import { formatBytes } from '../shared/local/progress-view.js';
import { PROJECT_ROOT } from '../shared/local/worker-bundle.js';
import { main as tender, pruneLine } from './tender.js';
import { sha256OfFile } from '../worker/restore.js';

const run = promisify(execFile);

export interface DemoVm {
  id: string;
  name: string;
  disks: Array<{ id: string; sizeMiB: number; files: number }>;
}

export const DEMO_VMS: DemoVm[] = [
  { id: 'vm-web-1', name: 'web-1', disks: [{ id: 'root', sizeMiB: 64, files: 40 }] },
  { id: 'vm-db-1', name: 'db-1', disks: [{ id: 'root', sizeMiB: 64, files: 30 }, { id: 'data', sizeMiB: 96, files: 60 }] },
  { id: 'vm-app-1', name: 'app-1', disks: [{ id: 'root', sizeMiB: 48, files: 30 }] },
];

/** The VM and disk whose files change between the two runs, and the disk restored at the end. */
export const CHANGED = { vmId: 'vm-db-1', diskId: 'data' };

export interface DemoOptions {
  /** Where the demo lives (default <project>/.tender/demo, apart from a user's own .tender state). */
  dir: string;
  out: (s: string) => void;
  isTTY?: boolean;
  columns?: number;
  /** Smaller disks for tests. */
  vms?: DemoVm[];
  run?: Partial<LocalRunOptions>;
}

export interface DemoResult {
  first: RunSummary;
  second: RunSummary;
  restoredSha256: string;
  snapshotSha256: string;
  seconds: number;
}

const WORDS = 'backup snapshot worker repository restore block volume region subnet policy retention daily weekly monthly encrypt compress dedup pack index manifest'.split(' ');

/** Text that compresses like real files do, with some random bytes so not everything dedups. */
function makeFile(i: number, bytes: number): Buffer {
  const lines: string[] = [];
  let n = 0;
  while (n < bytes * 0.8) {
    const line = Array.from({ length: 12 }, () => WORDS[Math.floor(Math.random() * WORDS.length)]).join(' ') + ` #${i}-${n}\n`;
    lines.push(line);
    n += line.length;
  }
  return Buffer.concat([Buffer.from(lines.join('')), randomBytes(Math.floor(bytes * 0.2))]);
}

async function mkfs(image: string, filesDir: string, sizeMiB: number, label: string): Promise<void> {
  await rm(image, { force: true });
  await run('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', label.slice(0, 16), '-d', filesDir, image, `${sizeMiB}M`]);
}

export async function ensureDemo(opts: { dir: string; vms: DemoVm[]; out: (s: string) => void }): Promise<string> {
  const configPath = join(opts.dir, 'tender.config.yaml');
  const marker = join(opts.dir, 'vms', 'created');
  if (existsSync(configPath) && existsSync(marker)) {
    opts.out(`Using the demo VMs made earlier under ${opts.dir}/vms (delete ${opts.dir} to start over).\n`);
    return configPath;
  }
  opts.out(`Creating ${opts.vms.length} demo VMs under ${opts.dir}/vms: ext4 disk images built with mke2fs -d from generated files…\n`);
  for (const vm of opts.vms) {
    for (const d of vm.disks) {
      const files = join(opts.dir, 'vms', vm.id, `files-${d.id}`);
      await rm(files, { recursive: true, force: true });
      await mkdir(join(files, 'notes'), { recursive: true });
      await mkdir(join(files, 'data'), { recursive: true });
      for (let i = 0; i < d.files; i++) await writeFile(join(files, 'data', `file-${i}.dat`), makeFile(i, 16 * 1024 + Math.floor(Math.random() * 64 * 1024)));
      await writeFile(join(files, 'notes', 'changelog.txt'), `${vm.name} ${d.id}: created ${new Date().toISOString()}\n`);
      await mkfs(join(opts.dir, 'vms', vm.id, `${d.id}.img`), files, d.sizeMiB, `${vm.name}-${d.id}`);
      opts.out(`  ${vm.name.padEnd(6)} disk ${d.id.padEnd(4)} ${String(d.sizeMiB).padStart(3)} MiB ext4, ${d.files} files\n`);
    }
  }
  const passphrase = join(opts.dir, 'passphrase');
  await writeFile(passphrase, randomBytes(24).toString('base64url') + '\n', { mode: 0o600 });
  await chmod(passphrase, 0o600);
  const yaml = `# Made by npm start: the demo of the local embedded default.
version: 1
applianceId: tender-demo
local:
  workDir: .
  vms:
${opts.vms
  .map(
    (vm) => `    - id: ${vm.id}
      name: ${vm.name}
      tags: { tender-demo: "yes" }
      disks:
${vm.disks.map((d) => `        - { id: ${d.id}, path: vms/${vm.id}/${d.id}.img }`).join('\n')}`,
  )
  .join('\n')}
policies:
  - name: demo
    provider: local
    vms:
      tags: { tender-demo: "yes" }
    schedule: "0 2 * * *"
    maxConcurrency: 3
    retention: { last: 10, daily: 7, weekly: 4, monthly: 12, yearly: 1 }
    repository:
      url: file:repository
      key: { passphraseFile: passphrase }
    worker:
      tags:
        Name: "tender-worker-%policyName%"
        tender:appliance-id: "%applianceId%"
        tender:policy-id: "%policyId%"
`;
  await writeFile(configPath, yaml);
  await writeFile(marker, new Date().toISOString() + '\n');
  return configPath;
}

/** Changes files on one disk in place with debugfs: a few blocks change, the rest stay as they were. */
async function changeFiles(image: string, filesDir: string, out: (s: string) => void): Promise<void> {
  const stamp = new Date().toISOString();
  const report = join(filesDir, 'notes', 'report.txt');
  await writeFile(report, makeFile(9999, 256 * 1024));
  const changelog = join(filesDir, 'notes', 'changelog.txt');
  await writeFile(changelog, (await readFile(changelog, 'utf8')) + `changed by npm start ${stamp}\n`);
  const cmds = join(filesDir, '..', 'debugfs.cmds');
  await writeFile(cmds, [`rm /notes/report.txt`, `write ${report} /notes/report.txt`, `rm /notes/changelog.txt`, `write ${changelog} /notes/changelog.txt`, ''].join('\n'));
  // debugfs reports "File not found" for the first rm on a fresh image: not an error.
  await run('debugfs', ['-w', '-f', cmds, image]);
  out(`  wrote notes/report.txt (256 KiB) and appended to notes/changelog.txt with debugfs\n`);
}

function totals(s: RunSummary) {
  return {
    read: s.vms.reduce((n, v) => n + (v.bytesRead ?? 0), 0),
    stored: s.vms.reduce((n, v) => n + (v.bytesStored ?? 0), 0),
  };
}

export async function runDemo(opts: DemoOptions): Promise<DemoResult> {
  const started = Date.now();
  const out = opts.out;
  const vms = opts.vms ?? DEMO_VMS;
  await mkdir(opts.dir, { recursive: true });
  const configPath = await ensureDemo({ dir: opts.dir, vms, out });
  // Each demo starts from an empty repository so the first run is a full one.
  for (const d of ['repository', 'snapshots', 'catalog', 'workers']) await rm(join(opts.dir, d), { recursive: true, force: true });
  const loaded = await loadConfig(configPath);
  const io = { write: (s: string) => out(s), isTTY: opts.isTTY, columns: opts.columns };

  out(`\n1/5 Backing up the demo policy (full): snapshot → worker process → backup → revoke → remove worker → retention\n`);
  const first = await runLocalBackup({ loaded, policyName: 'demo', out: io, ...opts.run });
  if (!first.ok) throw new Error(`the first demo run failed: ${first.vms.filter((v) => v.outcome === 'failed').map((v) => `${v.vmName} at ${v.step}: ${v.error?.message}`).join('; ')}`);

  const vm = vms.find((v) => v.id === CHANGED.vmId)!;
  out(`\n2/5 Changing files on ${vm.name} (disk ${CHANGED.diskId})\n`);
  await changeFiles(join(opts.dir, 'vms', vm.id, `${CHANGED.diskId}.img`), join(opts.dir, 'vms', vm.id, `files-${CHANGED.diskId}`), out);

  out(`\n3/5 Backing up again (incremental: only blocks changed since the last snapshot are read)\n`);
  const second = await runLocalBackup({ loaded, policyName: 'demo', out: io, ...opts.run });
  if (!second.ok) throw new Error(`the second demo run failed: ${second.vms.filter((v) => v.outcome === 'failed').map((v) => `${v.vmName} at ${v.step}: ${v.error?.message}`).join('; ')}`);
  const t1 = totals(first);
  const t2 = totals(second);
  out(`  read ${formatBytes(t1.read)} in the full run, ${formatBytes(t2.read)} in the incremental one; stored ${formatBytes(t1.stored)}, then ${formatBytes(t2.stored)}\n`);
  // After retention, each run prunes the repository (what a scheduled run does too).
  if ('error' in second.retention) throw new Error(`the second demo run's retention failed: ${second.retention.error.name}: ${second.retention.error.message}`);
  if (second.retention.maintenance) out(`  ${pruneLine(second.retention.maintenance)}`);

  out(`\n4/5 Restore points in ${loaded.config.policies[0]!.repository.url}\n`);
  await tender(['restore-points', '--config', configPath], { stdout: out, stderr: out, cwd: opts.dir, env: process.env });

  const rp = second.vms.find((v) => v.vmId === CHANGED.vmId)!;
  const target = join(opts.dir, 'restored', `${vm.name}-${CHANGED.diskId}.img`);
  await rm(target, { force: true });
  await mkdir(join(opts.dir, 'restored'), { recursive: true });
  out(`\n5/5 Restoring disk ${CHANGED.diskId} of ${vm.name} from ${rp.restorePointId} to ${target}\n`);
  const code = await tender(['restore', '--config', configPath, '--policy', 'demo', '--restore-point', rp.restorePointId!, '--disk', CHANGED.diskId, '--to', target], {
    stdout: out,
    stderr: out,
    cwd: opts.dir,
    env: process.env,
  });
  if (code !== 0) throw new Error('the demo restore failed (see above)');
  const snapshotImage = join(opts.dir, 'snapshots', rp.snapshotSetId!, `${CHANGED.diskId}.img`);
  const [restoredSha256, snapshotSha256] = await Promise.all([sha256OfFile(target), sha256OfFile(snapshotImage)]);
  const same = restoredSha256 === snapshotSha256;
  out(`  snapshot ${snapshotSha256}\n  restored ${restoredSha256}\n  ${same ? 'identical: the restored disk is the snapshot, bit for bit' : 'DIFFERENT: the restore does not match its snapshot'}\n`);
  let fsck = true;
  try {
    await run('e2fsck', ['-fn', target]);
    out(`  e2fsck: the restored ext4 filesystem is clean\n`);
  } catch (e) {
    fsck = false;
    out(`  e2fsck reported problems: ${(e as Error).message.split('\n')[0]}\n`);
  }
  const seconds = (Date.now() - started) / 1000;
  out(`\nDone in ${seconds.toFixed(1)} s. Config: ${configPath}. Try: node bin/tender.mjs ls --config ${configPath}\n`);
  if (!same) throw new Error('restored disk does not match its snapshot');
  if (!fsck) throw new Error('e2fsck -fn found problems in the restored filesystem');
  return { first, second, restoredSha256, snapshotSha256, seconds };
}

export const START_HELP = `Usage: npm start [-- --help]

Runs the whole backup pipeline on this machine, with no cloud account: the same state machine
(statemachines/backup.asl.json) in-process, disks as raw ext4 images, the worker a child process,
the repository a local folder. It makes three demo VMs (once), backs them up (full), changes files
on one and backs up again (incremental), lists the restore points, restores one disk and checks it
against its snapshot (sha256 and e2fsck -fn).

  TENDER_DEMO_DIR   where the demo lives (default: .tender/demo in the project)

Exit code 0 when the restored disk is the snapshot, bit for bit; 1 otherwise.
`;

const isMain = process.argv[1] && resolve(process.argv[1]) === resolve(new URL(import.meta.url).pathname);
if (isMain && (process.argv.includes('--help') || process.argv.includes('-h'))) {
  process.stdout.write(START_HELP);
} else if (isMain) {
  runDemo({
    dir: process.env.TENDER_DEMO_DIR ? resolve(process.env.TENDER_DEMO_DIR) : join(PROJECT_ROOT, '.tender', 'demo'),
    out: (s) => process.stdout.write(s),
    isTTY: process.stdout.isTTY,
    columns: process.stdout.columns,
  }).catch((e) => {
    process.stderr.write(`npm start failed: ${(e as Error).message}\n`);
    process.exitCode = 1;
  });
}
