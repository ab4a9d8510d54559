// `tender`: run a backup policy, list restore points, restore a disk, check a
// private network. Exit codes: 0 done, 1 the run or command failed (the
// message says why and what to do), 2 bad arguments or configuration.

import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { ConfigError, TenderError, ValidationError, toError } from '../shared/core/errors.js';
import { findPolicy, type Policy } from '../shared/core/config.js';
import { createJsonLogger, silentLogger } from '../shared/core/logger.js';
import { loadConfig, type LoadedConfig } from '../shared/local/load-config.js';
import { runLocalBackup } from '../shared/local/runner.js';
import type { ApplyRetentionOutput } from '../functions/apply-retention/schema.js';
import { formatBytes } from '../shared/local/progress-view.js';
import { openStoreFromUrl } from '../worker/store-from-url.js';
import { openRepository } from '../worker/repository.js';
import { repositorySecretFromKeyRef } from '../worker/keys.js';
import type { RepositorySecret } from '../worker/crypto.js';
import { listRestorePoints, type DamagedObject, type RestorePointSummary } from '../worker/restore-points.js';
import { restoreDisk, sha256OfFile } from '../worker/restore.js';
import { createImageSink } from '../worker/sources/image-file.js';

export interface TenderIo {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
  cwd: string;
  env: NodeJS.ProcessEnv;
  isTTY?: boolean;
  columns?: number;
}

const CONFIG_HELP = '  --config PATH     tender.config.yaml to read (default: ./tender.config.yaml, or TENDER_CONFIG)';

const HELP: Record<string, string> = {
  main: `tender — serverless backup for cloud VMs, into a repository you own

Usage:
  tender backup --policy NAME [--local] [--config PATH]     run a policy now
  tender restore-points [--policy NAME] [--vm ID]            list restore points (alias: ls)
  tender restore --policy NAME --restore-point ID --disk ID --to PATH
                                                             restore one disk to an image file
  tender check-network aws|azure …                           what private-mode workers would miss

  tender COMMAND --help                                      more about a command

Exit codes: 0 done, 1 failed (the message says why and what to do), 2 bad arguments or config.
`,
  backup: `Usage: tender backup --policy NAME [--local] [--config PATH] [--run-id ID] [--json]

Runs one backup of every VM the policy selects: snapshot, worker, backup into the
repository, revoke access, remove the worker, then retention. A VM that fails is
cleaned up and reported; the others carry on.

  --policy NAME     the policy in tender.config.yaml
  --local           run the state machine on this machine (aws-local-stepfunctions)
                    with the local adapters; provider: local policies always run so
${CONFIG_HELP}
  --run-id ID       name the run (default: made from the time)
  --json            print the run's summary as JSON instead of a table
  --state-machine-arn ARN
                    provider: aws without --local starts the deployed state machine
                    (default: TENDER_STATE_MACHINE_ARN, or tender-<TENDER_STAGE>-backup
                    in AWS_REGION) and prints the execution
                    provider: azure without --local calls the Function app's manual start
                    (POST <TENDER_AZURE_FUNCTION_URL>/api/backup/NAME with TENDER_AZURE_FUNCTION_KEY)

Exit code 1 when any VM failed.
`,
  'restore-points': `Usage: tender restore-points [--policy NAME] [--vm ID] [--config PATH] [--json]
       tender ls …

Lists the restore points in each policy's repository (or the named policy's), oldest first.
A restore point that cannot be read is named on stderr and the exit code is 1; the others are
still listed.
${CONFIG_HELP}
`,
  restore: `Usage: tender restore --policy NAME --restore-point ID --disk ID --to PATH [--overwrite] [--config PATH]

Restores one disk of a restore point from the policy's repository into a raw image
file at PATH, and prints its sha256.
${CONFIG_HELP}
`,
};

function configPath(values: { config?: string }, io: TenderIo): string {
  return resolve(io.cwd, values.config ?? io.env.TENDER_CONFIG ?? 'tender.config.yaml');
}

async function openPolicyRepository(policy: Policy, env: NodeJS.ProcessEnv) {
  const store = await openStoreFromUrl(policy.repository.url);
  return openRepository(store, await policyRepositorySecret(policy, env), { threads: 2 });
}

/**
 * What opens a policy's repository here, read the way its pipeline reads it: on AWS a passphrase
 * in SSM / Secrets Manager (kmsKeyId + passphraseSecretArn) or the KMS key alone; on Azure a Key
 * Vault secret (keyVaultKeyId + passphraseSecretId) or the Key Vault key alone.
 */
async function policyRepositorySecret(policy: Policy, env: NodeJS.ProcessEnv): Promise<RepositorySecret> {
  const ref = policy.repository.key;
  if (policy.provider === 'aws') {
    const [{ resolveAwsRepositorySecret }, { SSMClient }] = await Promise.all([import('../shared/aws/repository-key.js'), import('@aws-sdk/client-ssm')]);
    // The parameter's own region (from its ARN), else the SDK's (AWS_REGION, the profile).
    const region = 'passphraseSecretArn' in ref ? /^arn:[^:]+:(?:ssm|secretsmanager):([^:]+):/.exec(ref.passphraseSecretArn ?? '')?.[1] : undefined;
    let ssm: InstanceType<typeof SSMClient> | undefined;
    return resolveAwsRepositorySecret(ref, { ssm: () => (ssm ??= new SSMClient(region ? { region } : {})), env });
  }
  if (policy.provider === 'azure') {
    const { repositorySecretFromAzureKeyRef } = await import('../shared/azure/key-vault.js');
    return repositorySecretFromAzureKeyRef(ref, { env });
  }
  return repositorySecretFromKeyRef(ref, env);
}

async function backupCommand(argv: string[], io: TenderIo): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { policy: { type: 'string' }, local: { type: 'boolean' }, config: { type: 'string' }, 'run-id': { type: 'string' }, json: { type: 'boolean' }, 'state-machine-arn': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) return io.stdout(HELP.backup!), 0;
  if (!values.policy) throw new ValidationError('--policy NAME is required: which policy of tender.config.yaml to run');
  const loaded = await loadConfig(configPath(values, io));
  const policy = findPolicy(loaded.config, values.policy);
  if (policy.provider === 'aws' && !values.local) {
    const { startBackupFromCli } = await import('../shared/aws/start-execution.js');
    return startBackupFromCli({ policyName: policy.name, runId: values['run-id'], stateMachineArn: values['state-machine-arn'], json: values.json, env: io.env, stdout: io.stdout });
  }
  if (policy.provider === 'azure' && !values.local) {
    const { startAzureRunFromCli } = await import('../shared/azure/start-run.js');
    return startAzureRunFromCli({ policyName: policy.name, runId: values['run-id'], json: values.json, env: io.env, stdout: io.stdout });
  }
  const logger = io.env.TENDER_LOG_LEVEL && io.env.TENDER_LOG_LEVEL !== 'silent' ? createJsonLogger({ write: (l) => io.stderr(l + '\n') }) : silentLogger;
  if (!values.json) io.stdout(`Backing up policy "${policy.name}" (${policy.vms.ids?.length ? `VMs ${policy.vms.ids.join(', ')}` : `VMs tagged ${JSON.stringify(policy.vms.tags)}`}) into ${policy.repository.url}\n`);
  const summary = await runLocalBackup({
    loaded,
    policyName: policy.name,
    runId: values['run-id'],
    out: values.json ? { write: () => true } : { write: (s: string) => io.stdout(s), isTTY: io.isTTY, columns: io.columns },
    logger,
  });
  if (values.json) io.stdout(JSON.stringify(summary, null, 2) + '\n');
  else {
    const ret = summary.retention;
    if ('error' in ret) io.stdout(`Retention failed: ${ret.error.name}: ${ret.error.message}\n`);
    else {
      io.stdout(`Retention: kept ${ret.kept.length} restore point(s), removed ${ret.removed.length}${ret.snapshotSetsDeleted.length ? `, deleted ${ret.snapshotSetsDeleted.length} old snapshot set(s)` : ''}\n`);
      if (ret.maintenance) io.stdout(pruneLine(ret.maintenance));
    }
    const failed = summary.vms.filter((v) => v.outcome === 'failed');
    io.stdout(failed.length === 0 ? `Run ${summary.runId}: all ${summary.vms.length} VM(s) backed up.\n` : `Run ${summary.runId}: ${failed.length} of ${summary.vms.length} VM(s) failed (cleaned up).\n`);
  }
  return summary.ok ? 0 : 1;
}

/** The run's prune, as `tender backup` prints it. */
export function pruneLine(m: NonNullable<ApplyRetentionOutput['maintenance']>): string {
  if (m.status === 'skipped') return `Prune skipped: ${m.reason}\n`;
  const parts = [`freed ${formatBytes(m.bytesFreed)} (${m.packsDeleted} pack(s))`];
  if (m.packsMarked) parts.push(`marked ${m.packsMarked} pack(s), freed by a run at least 24 h from now`);
  if (m.packsRepacked) parts.push(`repacked ${m.packsRepacked} (${formatBytes(m.bytesRepacked)} of blocks still needed copied)`);
  if (m.packsLeftForLater) parts.push(`${m.packsLeftForLater} sparse pack(s) left for the next run (maintenance.maxRepackMiB)`);
  if (m.packsNotRepacked) parts.push(`${m.packsNotRepacked} pack(s) not repacked: a block in them does not authenticate — run \`tender-worker verify --read-data\``);
  return `Prune: ${parts.join('; ')}\n`;
}

export function restorePointsTable(points: RestorePointSummary[]): string {
  const rows = [['RESTORE POINT', 'VM', 'POLICY', 'TIME', 'DISKS', 'SIZE', 'PARENT']];
  for (const p of points) {
    rows.push([p.id, `${p.vmName} (${p.vmId})`, p.policy, p.time, p.disks.map((d) => d.diskId).join(','), formatBytes(p.disks.reduce((n, d) => n + d.sizeBytes, 0)), p.parentId ?? '-']);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => '  ' + r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}

async function restorePointsCommand(argv: string[], io: TenderIo): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { policy: { type: 'string' }, vm: { type: 'string' }, config: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) return io.stdout(HELP['restore-points']!), 0;
  const loaded = await loadConfig(configPath(values, io));
  const policies = values.policy ? [findPolicy(loaded.config, values.policy)] : loaded.config.policies;
  const all: RestorePointSummary[] = [];
  const damaged: DamagedObject[] = [];
  const seen = new Set<string>();
  for (const p of policies) {
    // Policies often share a repository: list each once.
    if (seen.has(p.repository.url)) continue;
    seen.add(p.repository.url);
    let repo;
    try {
      repo = await openPolicyRepository(p, io.env);
    } catch (e) {
      if (toError(e).name === 'NotFoundError') continue;
      throw e;
    }
    try {
      all.push(...(await listRestorePoints(repo, { vmId: values.vm, policy: values.policy }, damaged)));
    } finally {
      await repo.close();
    }
  }
  all.sort((a, b) => a.time.localeCompare(b.time));
  if (values.json) io.stdout(JSON.stringify(all, null, 2) + '\n');
  else if (all.length === 0 && damaged.length === 0) io.stdout('No restore points yet — run `tender backup --policy NAME --local`.\n');
  else io.stdout(restorePointsTable(all));
  // The readable ones are listed; a damaged one is named and makes the exit code 1.
  for (const d of damaged) io.stderr(`tender: restore point ${d.object} cannot be read: ${d.message} — check the repository with \`tender-worker verify\`\n`);
  return damaged.length ? 1 : 0;
}

async function restoreCommand(argv: string[], io: TenderIo): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      policy: { type: 'string' },
      'restore-point': { type: 'string' },
      disk: { type: 'string' },
      to: { type: 'string' },
      overwrite: { type: 'boolean' },
      config: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return io.stdout(HELP.restore!), 0;
  for (const k of ['policy', 'restore-point', 'disk', 'to'] as const) if (!values[k]) throw new ValidationError(`--${k} is required (see tender restore --help)`);
  const loaded: LoadedConfig = await loadConfig(configPath(values, io));
  const policy = findPolicy(loaded.config, values.policy!);
  const repo = await openPolicyRepository(policy, io.env);
  try {
    const manifest = await repo.readManifest(values['restore-point']!);
    const disk = manifest.disks.find((d) => d.diskId === values.disk);
    if (!disk) throw new ValidationError(`restore point ${manifest.id} has no disk "${values.disk}" — it has: ${manifest.disks.map((d) => d.diskId).join(', ')}`);
    const target = resolve(io.cwd, values.to!);
    const sink = await createImageSink(target, disk.sizeBytes, { blockSize: disk.blockSize, overwrite: values.overwrite });
    const res = await restoreDisk(repo, manifest.id, disk.diskId, sink);
    const sha256 = await sha256OfFile(target);
    if (values.json) io.stdout(JSON.stringify({ restorePointId: manifest.id, diskId: disk.diskId, target, bytesWritten: res.bytesWritten, sha256 }, null, 2) + '\n');
    else io.stdout(`Restored disk ${disk.diskId} of ${manifest.id} to ${target} (${formatBytes(disk.sizeBytes)}, ${formatBytes(res.bytesWritten)} of data)\nsha256 ${sha256}\n`);
    return 0;
  } finally {
    await repo.close();
  }
}

export async function main(argv: string[], io: TenderIo): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'backup':
        return await backupCommand(rest, io);
      case 'restore-points':
      case 'ls':
        return await restorePointsCommand(rest, io);
      case 'restore':
        return await restoreCommand(rest, io);
      case 'check-network': {
        const { checkNetworkCommand } = await import('./check-network.js');
        return await checkNetworkCommand(rest, { stdout: io.stdout, stderr: io.stderr, cwd: io.cwd, env: io.env });
      }
      case undefined:
      case '--help':
      case '-h':
      case 'help':
        io.stdout(HELP.main!);
        return command === undefined ? 2 : 0;
      default:
        io.stderr(`tender: unknown command "${command}"\n\n${HELP.main}`);
        return 2;
    }
  } catch (e) {
    const err = toError(e);
    const usage = err instanceof ConfigError || err instanceof ValidationError || (err as any).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || (err as any).code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE';
    io.stderr(`tender: ${err instanceof TenderError ? `${err.name}: ` : ''}${err.message}\n`);
    return usage ? 2 : 1;
  }
}

/** Runs the command line of this process (bin/tender.mjs, `npm run tender`). */
export async function runProcess(): Promise<void> {
  process.exitCode = await main(process.argv.slice(2), {
    stdout: (s) => process.stdout.write(s),
    stderr: (s) => process.stderr.write(s),
    cwd: process.cwd(),
    env: process.env,
    isTTY: process.stdout.isTTY,
    columns: process.stdout.columns,
  });
}

const isMain = process.argv[1] && resolve(process.argv[1]) === resolve(new URL(import.meta.url).pathname);
if (isMain) await runProcess();
