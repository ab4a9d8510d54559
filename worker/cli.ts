// tender-worker: the data mover's command line. The pipeline's worker runs the
// same functions through worker/agent.ts; this CLI is for people (restore,
// verify, prune, ls) and for the benchmark.

import { parseArgs } from 'node:util';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { BlockSource } from '../shared/ports/block-source.js';
import type { JobProgress } from '../shared/ports/cloud.js';
import { ConfigError, CorruptObjectError, TenderError, ValidationError, toError } from '../shared/core/errors.js';
import { openStoreFromUrl } from './store-from-url.js';
import { addKey, initRepository, openOrInitRepository, openRepository, type Repository } from './repository.js';
import type { RepositorySecret } from './crypto.js';
import { createAwsKmsWrapper, createKeyVaultWrapper } from './key-wrappers.js';
import { backupVm } from './backup.js';
import { restoreDisk } from './restore.js';
import { forgetRestorePoints, listRestorePoints, type DamagedObject } from './restore-points.js';
import { verifyRepository } from './verify.js';
import { pruneRepository, DEFAULT_SAFETY_MARGIN_MS } from './prune.js';
import { createImageSink, openImageSource } from './sources/image-file.js';

export interface CliIo {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
  isTTY: boolean;
  env: NodeJS.ProcessEnv;
  cwd: string;
}

const HELP = `tender-worker — Tender's data mover: an encrypted, deduplicating block repository

Usage:
  tender-worker init     --repo URL
  tender-worker backup   --repo URL --vm ID --disk ID=IMAGE [--disk …] [--parent ID=PARENT_IMAGE]
                         [--changed ID=changed-blocks.json] [--name NAME] [--policy NAME] [--tag K=V] [--json]
  tender-worker restore  --repo URL --restore-point ID --disk ID --target PATH [--overwrite] [--sync] [--json]
  tender-worker ls       --repo URL [--vm ID] [--json]
  tender-worker verify   --repo URL [--read-data | --read-data-subset PERCENT%] [--json]
  tender-worker forget   --repo URL RESTORE_POINT_ID…
  tender-worker prune    --repo URL [--dry-run] [--safety-margin-hours H] [--repack-below SHARE]
                         [--max-repack-mib N] [--json]
  tender-worker key add  --repo URL (--new-passphrase-file FILE | --new-kms-key-id KEY | --new-key-vault-key-id URL)

Repository URL: file:/abs/path, file:relative/path, s3://bucket/prefix, azblob://account/container/prefix
  (or TENDER_REPOSITORY). The repository opens with a passphrase (--passphrase-file FILE or
  TENDER_PASSPHRASE) or with the cloud key that wraps its master key (--kms-key-id KEY for AWS KMS,
  --key-vault-key-id URL for Azure Key Vault). backup creates the repository on first use.

Incremental: --parent names the snapshot the previous restore point of that disk was read from;
  only blocks changed since it are read (from the images' block digest maps, or from
  --changed, a JSON file {"blockSize": 524288, "changed": [block indices]}).

Restore writes IMAGE.partial and renames it to the target when complete; --sync also flushes it
  to the device first (slower; what you want before pulling the power). A block device as the
  target (with --overwrite) is written in place, every block including zeros, and always flushed
  before the restore reports done; it must be at least the disk's size.

Prune deletes, in two runs at least the safety margin apart (default 24 h), packs no restore point
  needs. A pack restore points need less than SHARE of (default 0.5; 0 never repacks) is repacked:
  the blocks they need are copied into new packs and the old pack is freed like an unneeded one.
  --max-repack-mib N copies at most N MiB of blocks in one prune, the sparsest packs first; the
  others wait for the next prune (the pipelines prune after retention this way).

Exit codes: 0 done, 1 failed (the message says why and what to do), 2 bad arguments. ls lists
  what it can read and exits 1 when a restore point cannot be read (named on stderr); forget
  exits 1 when an ID names no restore point (the others are forgotten).
`;

class UsageError extends ValidationError {}

function pairs(values: string[] | undefined, flag: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const v of values ?? []) {
    const at = v.indexOf('=');
    if (at <= 0) throw new UsageError(`${flag} expects ID=VALUE, got "${v}"`);
    out.set(v.slice(0, at), v.slice(at + 1));
  }
  return out;
}

function fmtBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 2 : 0)} ${units[i]}`;
}

function progressPrinter(io: CliIo, label: string): { onProgress: (p: JobProgress) => void; done: () => void } {
  if (!io.isTTY) return { onProgress: () => undefined, done: () => undefined };
  let shown = false;
  return {
    onProgress: (p) => {
      const eta = p.bytesPerSecond > 0 ? Math.max(0, (p.bytesTotal - p.bytesDone) / p.bytesPerSecond) : 0;
      const mm = Math.floor(eta / 60);
      const ss = String(Math.round(eta % 60)).padStart(2, '0');
      io.stderr(`\r${label} ${p.diskId ?? ''}  ${fmtBytes(p.bytesDone)} / ${fmtBytes(p.bytesTotal)}  ${(p.bytesPerSecond / 1e6).toFixed(0)} MB/s  ETA ${mm}:${ss}   `);
      shown = true;
    },
    done: () => {
      if (shown) io.stderr('\n');
    },
  };
}

async function secretFrom(values: Record<string, unknown>, io: CliIo, prefix = ''): Promise<RepositorySecret> {
  const kms = values[`${prefix}kms-key-id`] as string | undefined;
  if (kms) return createAwsKmsWrapper({ keyId: kms });
  const vault = values[`${prefix}key-vault-key-id`] as string | undefined;
  if (vault) {
    const { DefaultAzureCredential } = await import('@azure/identity');
    return createKeyVaultWrapper({ keyId: vault, credential: new DefaultAzureCredential() });
  }
  if (prefix) {
    const file = values[`${prefix}passphrase-file`] as string | undefined;
    if (!file) throw new UsageError('key add needs --new-passphrase-file FILE, --new-kms-key-id KEY or --new-key-vault-key-id URL');
    return passphrase({ 'passphrase-file': file }, io);
  }
  return passphrase(values, io);
}

async function passphrase(values: Record<string, unknown>, io: CliIo): Promise<string> {
  const file = values['passphrase-file'] as string | undefined;
  if (file) {
    try {
      return (await readFile(resolve(io.cwd, file), 'utf8')).replace(/\r?\n$/, '');
    } catch (e: any) {
      throw new ConfigError(`cannot read the passphrase file ${file} (${e?.code ?? e?.message})`);
    }
  }
  const env = io.env.TENDER_PASSPHRASE;
  if (!env) throw new ConfigError('no passphrase: pass --passphrase-file FILE or set TENDER_PASSPHRASE');
  return env;
}

async function changedFromFile(path: string, blockSize: number): Promise<number[]> {
  let raw: any;
  try {
    raw = JSON.parse(await readFile(path, 'utf8'));
  } catch (e: any) {
    throw new UsageError(`cannot read changed blocks from ${path}: ${e?.message}`);
  }
  if (!Array.isArray(raw?.changed) || raw.changed.some((x: unknown) => !Number.isInteger(x) || (x as number) < 0)) {
    throw new UsageError(`${path} must hold {"blockSize": N, "changed": [block indices]}`);
  }
  if (raw.blockSize !== undefined && raw.blockSize !== blockSize) throw new UsageError(`${path} lists ${raw.blockSize}-byte blocks; the repository uses ${blockSize}`);
  return raw.changed as number[];
}

const COMMANDS = ['init', 'backup', 'restore', 'ls', 'verify', 'key', 'forget', 'prune'];

export async function runWorkerCli(argv: string[], io: CliIo): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    io.stdout(HELP);
    return command ? 0 : 2;
  }
  // Before anything opens a store: `tender-worker --version` or a typo must not read as "no repository".
  if (!COMMANDS.includes(command)) {
    io.stderr(`tender-worker: unknown command "${command}" — the commands are ${COMMANDS.join(', ')}\n\n${HELP}`);
    return 2;
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      allowPositionals: command === 'forget' || command === 'key',
      options: {
        repo: { type: 'string' },
        'passphrase-file': { type: 'string' },
        'kms-key-id': { type: 'string' },
        'key-vault-key-id': { type: 'string' },
        'new-passphrase-file': { type: 'string' },
        'new-kms-key-id': { type: 'string' },
        'new-key-vault-key-id': { type: 'string' },
        json: { type: 'boolean' },
        vm: { type: 'string' },
        name: { type: 'string' },
        policy: { type: 'string' },
        disk: { type: 'string', multiple: true },
        parent: { type: 'string', multiple: true },
        changed: { type: 'string', multiple: true },
        tag: { type: 'string', multiple: true },
        'restore-point': { type: 'string' },
        target: { type: 'string' },
        overwrite: { type: 'boolean' },
        sync: { type: 'boolean' },
        'read-data': { type: 'boolean' },
        'read-data-subset': { type: 'string' },
        'dry-run': { type: 'boolean' },
        'safety-margin-hours': { type: 'string' },
        'repack-below': { type: 'string' },
        'max-repack-mib': { type: 'string' },
        threads: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    io.stderr(`tender-worker: ${(e as Error).message}\n\n${HELP}`);
    return 2;
  }
  const v = parsed.values as Record<string, any>;
  if (v.help) {
    io.stdout(HELP);
    return 0;
  }
  const json = !!v.json;
  const out = (obj: unknown, text: string) => io.stdout(json ? `${JSON.stringify(obj, null, 2)}\n` : text);
  let repo: Repository | undefined;
  try {
    const url = (v.repo as string | undefined) ?? io.env.TENDER_REPOSITORY;
    if (!url) throw new UsageError('no repository: pass --repo URL (file:…, s3://…, azblob://…) or set TENDER_REPOSITORY');
    const store = await openStoreFromUrl(url, { cwd: io.cwd });
    const pass = await secretFrom(v, io);
    const threads = v.threads ? Number(v.threads) : undefined;
    switch (command) {
      case 'init': {
        repo = await initRepository(store, pass, { threads });
        out({ repository: store.location, id: repo.config.id }, `created repository ${repo.config.id} at ${store.location}\n`);
        return 0;
      }
      case 'backup': {
        if (!v.vm) throw new UsageError('backup needs --vm ID');
        const disks = pairs(v.disk, '--disk');
        if (disks.size === 0) throw new UsageError('backup needs at least one --disk ID=IMAGE');
        const parents = pairs(v.parent, '--parent');
        const changed = pairs(v.changed, '--changed');
        for (const id of [...parents.keys(), ...changed.keys()]) if (!disks.has(id)) throw new UsageError(`--parent/--changed name disk "${id}", which no --disk gives`);
        for (const id of changed.keys()) if (!parents.has(id)) throw new UsageError(`--changed ${id}=… needs --parent ${id}=… (the snapshot the changes are relative to)`);
        repo = await openOrInitRepository(store, pass, { threads, incremental: parents.size > 0 });
        const sources: BlockSource[] = [];
        try {
          const reqDisks = [];
          for (const [diskId, path] of disks) {
            const image = resolve(io.cwd, path);
            const src = await openImageSource(image, { blockSize: repo.config.blockSize });
            sources.push(src);
            const changedFile = changed.get(diskId);
            const source: BlockSource = changedFile
              ? { ...src, changedBlocks: async () => ({ blocks: await changedFromFile(resolve(io.cwd, changedFile), src.blockSize), incremental: true }) }
              : src;
            const parent = parents.get(diskId);
            reqDisks.push({ diskId, source, snapshotRef: image, ...(parent ? { parentSnapshotRef: resolve(io.cwd, parent) } : {}) });
          }
          const progress = progressPrinter(io, 'backup');
          const tags = Object.fromEntries(pairs(v.tag, '--tag'));
          const result = await backupVm(repo, {
            runId: `cli-${Date.now()}`,
            policy: v.policy ?? 'manual',
            vm: { vmId: v.vm, name: v.name ?? v.vm, tags: {} },
            tags,
            snapshotSetId: `cli-${Date.now()}`,
            disks: reqDisks,
            onProgress: progress.onProgress,
          });
          progress.done();
          const lines = result.disks.map(
            (d) =>
              `  ${d.diskId}: read ${fmtBytes(d.bytesRead)} (${d.blocksRead} blocks${d.incremental ? ', changed only' : ''}), new ${d.blocksNew} blocks, stored ${fmtBytes(d.bytesStored)}${d.reason ? `\n    note: ${d.reason}` : ''}`,
          );
          out(result, `restore point ${result.restorePointId} in ${result.seconds.toFixed(1)} s\n${lines.join('\n')}\n`);
        } finally {
          for (const s of sources) await s.close();
        }
        return 0;
      }
      case 'restore': {
        const rp = v['restore-point'];
        if (!rp || !v.disk?.[0] || !v.target) throw new UsageError('restore needs --restore-point ID --disk ID --target PATH');
        // The codec threads, which decode every block, boot while the key unwraps.
        repo = await openRepository(store, pass, { threads, startCodecs: true });
        const manifest = await repo.readManifest(rp);
        const disk = manifest.disks.find((d) => d.diskId === v.disk[0]);
        if (!disk) throw new UsageError(`restore point ${rp} has no disk "${v.disk[0]}" — it has: ${manifest.disks.map((d) => d.diskId).join(', ')}`);
        const sink = await createImageSink(resolve(io.cwd, v.target), disk.sizeBytes, { blockSize: disk.blockSize, overwrite: !!v.overwrite, sync: !!v.sync });
        const progress = progressPrinter(io, 'restore');
        const t = Date.now();
        const res = await restoreDisk(repo, rp, disk.diskId, sink, progress.onProgress);
        progress.done();
        out({ ...res, seconds: (Date.now() - t) / 1000 }, `restored ${disk.diskId} of ${rp} to ${res.target} (${fmtBytes(res.sizeBytes)}, ${fmtBytes(res.bytesWritten)} of data) in ${((Date.now() - t) / 1000).toFixed(1)} s\n`);
        return 0;
      }
      case 'ls': {
        repo = await openRepository(store, pass, { threads });
        const damaged: DamagedObject[] = [];
        const points = await listRestorePoints(repo, v.vm ? { vmId: v.vm } : {}, damaged);
        const text = points.length
          ? points.map((p) => `${p.id}  ${p.time}  vm=${p.vmId}  policy=${p.policy}  disks=${p.disks.map((d) => `${d.diskId}(${fmtBytes(d.sizeBytes)}${d.incremental ? ', incremental' : ''})`).join(',')}`).join('\n') + '\n'
          : 'no restore points\n';
        out(points, text);
        // The others are listed; the damaged ones are named, and the exit code says something is wrong.
        for (const d of damaged) io.stderr(`tender-worker: ${d.object} cannot be read: ${d.message} — run \`tender-worker verify\`; \`tender-worker forget ${d.object.slice('snapshots/'.length)}\` removes it\n`);
        return damaged.length ? 1 : 0;
      }
      case 'verify': {
        let readData: boolean | number = !!v['read-data'];
        if (v['read-data-subset']) {
          const m = /^(\d+(?:\.\d+)?)%$/.exec(v['read-data-subset']);
          if (!m || Number(m[1]) <= 0 || Number(m[1]) > 100) throw new UsageError('--read-data-subset takes a percentage, e.g. 10%');
          readData = Number(m[1]) / 100;
        }
        // Reading data decodes on the codec threads: they boot while the key unwraps.
        repo = await openRepository(store, pass, { threads, startCodecs: !!readData });
        const report = await verifyRepository(repo, { readData });
        const text = `${report.ok ? 'ok' : 'PROBLEMS FOUND'}: ${report.restorePoints} restore points, ${report.packs} packs, ${report.blobs} blocks${readData ? `; read ${report.packsRead} packs, checked ${report.blobsChecked} blocks` : ''}${report.unindexedPacks ? `; ${report.unindexedPacks} pack(s) not indexed yet (a backup running or interrupted: the next backup adopts them)` : ''}${report.unfinishedPrunePacks ? `; ${report.unfinishedPrunePacks} pack(s) deleted by a prune that stopped before it replaced the index (run prune again to finish)` : ''}\n${report.problems.map((p) => `  ${p.object}: ${p.message}`).join('\n')}${report.problems.length ? '\n' : ''}`;
        out(report, text);
        return report.ok ? 0 : 1;
      }
      case 'key': {
        if (parsed.positionals[0] !== 'add') throw new UsageError('usage: tender-worker key add --repo URL (--new-passphrase-file FILE | --new-kms-key-id KEY | --new-key-vault-key-id URL)');
        repo = await openRepository(store, pass, { threads });
        const added = await addKey(repo, await secretFrom(v, io, 'new-'));
        out({ added }, `added ${added}: the repository now also opens with that key\n`);
        return 0;
      }
      case 'forget': {
        if (parsed.positionals.length === 0) throw new UsageError('forget needs the IDs of the restore points to delete');
        repo = await openRepository(store, pass, { threads });
        const forgotten = await forgetRestorePoints(repo, parsed.positionals);
        const unknown = parsed.positionals.filter((id) => !forgotten.includes(id));
        out({ forgotten, unknown }, `forgot ${forgotten.length} restore point(s)${forgotten.length ? '; run prune to free their space' : ''}\n`);
        // A mistyped id must not look like success.
        for (const id of unknown) io.stderr(`tender-worker: no restore point "${id}" in ${repo.location} — list them with \`tender-worker ls\`\n`);
        return unknown.length ? 1 : 0;
      }
      case 'prune': {
        repo = await openRepository(store, pass, { threads });
        const hours = v['safety-margin-hours'] !== undefined ? Number(v['safety-margin-hours']) : undefined;
        if (hours !== undefined && !(hours >= 0)) throw new UsageError('--safety-margin-hours takes a number of hours ≥ 0');
        const repackBelow = v['repack-below'] !== undefined ? Number(v['repack-below']) : undefined;
        if (repackBelow !== undefined && !(repackBelow >= 0 && repackBelow <= 1)) throw new UsageError('--repack-below takes a share of a pack from 0 (never repack) to 1, such as 0.5');
        const maxMib = v['max-repack-mib'] !== undefined ? Number(v['max-repack-mib']) : undefined;
        if (maxMib !== undefined && !(Number.isInteger(maxMib) && maxMib >= 0)) throw new UsageError('--max-repack-mib takes a whole number of MiB ≥ 0, such as 2048 (0 repacks nothing)');
        const report = await pruneRepository(repo, {
          dryRun: !!v['dry-run'],
          safetyMarginMs: hours === undefined ? DEFAULT_SAFETY_MARGIN_MS : hours * 3600_000,
          ...(repackBelow !== undefined ? { repackBelow } : {}),
          ...(maxMib !== undefined ? { maxRepackBytes: maxMib * 1024 * 1024 } : {}),
        });
        const repacked = report.packsRepacked ? ` (${report.packsRepacked} of them repacked: ${fmtBytes(report.bytesRepacked)} of blocks still needed copied into new packs)` : '';
        const notRepacked = report.packsNotRepacked ? `; ${report.packsNotRepacked} pack(s) left as they are: a block in them does not authenticate — run \`tender-worker verify --read-data\`` : '';
        const later = report.packsLeftForLater ? `; ${report.packsLeftForLater} sparse pack(s) left for the next prune (--max-repack-mib)` : '';
        out(report, `${report.dryRun ? '(dry run) ' : ''}deleted ${report.packsDeleted} packs (${fmtBytes(report.bytesFreed)}), marked ${report.packsMarked} for deletion at a later prune${repacked}, kept ${report.packsKept}${notRepacked}${later}\n`);
        return 0;
      }
      default:
        // COMMANDS, checked above, names only commands handled here.
        throw new Error(`tender-worker: command "${command}" is listed but not handled`);
    }
  } catch (e) {
    const err = toError(e);
    if (err instanceof UsageError) {
      io.stderr(`tender-worker: ${err.message}\n`);
      return 2;
    }
    const name = err instanceof TenderError ? err.name : 'Error';
    if (json) io.stdout(`${JSON.stringify({ error: { name, message: err.message } })}\n`);
    io.stderr(`tender-worker ${command}: ${err instanceof CorruptObjectError ? 'corrupt object ' : ''}${err.message}\n`);
    return 1;
  } finally {
    await repo?.close();
  }
}

export async function main(): Promise<void> {
  const code = await runWorkerCli(process.argv.slice(2), {
    stdout: (s) => process.stdout.write(s),
    stderr: (s) => process.stderr.write(s),
    isTTY: !!process.stderr.isTTY,
    env: process.env,
    cwd: process.cwd(),
  });
  process.exitCode = code;
}
