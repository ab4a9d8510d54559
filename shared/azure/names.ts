// Names of what Tender makes in Azure, derived from (run, VM) or (deployment,
// region) alone: a re-invoked activity computes the same names and finds what
// the first invocation made, which is what makes every create idempotent
// without a lookup table. Hashes keep them inside Azure's length and charset
// limits (VM names ≤ 64, storage accounts 3–24 lowercase alphanumerics,
// containers and queues 3–63 lowercase with single dashes).

import { createHash } from 'node:crypto';

function h(parts: string[], len: number): string {
  return createHash('sha256').update(parts.join('\n')).digest('hex').slice(0, len);
}

export interface WorkerNames {
  /** The worker VM (also its computer name). */
  vm: string;
  nic: string;
  osDisk: string;
  publicIp: string;
  /** The managed Run Command that installs the bundle. */
  runCommand: string;
  /** Per-worker container holding its copy of the bundle, with its own stored access policy. */
  bundleContainer: string;
  /** Queue the job goes to the worker through. */
  jobQueue: string;
  /** Queue progress and the result come back through. */
  reportQueue: string;
  /** Identifier of the stored access policies of this worker's SAS. */
  policyId: string;
}

export function workerNames(runId: string, vmId: string): WorkerNames {
  const k = h([runId, vmId], 16);
  const vm = `tender-w-${k}`;
  return {
    vm,
    nic: `${vm}-nic`,
    osDisk: `${vm}-os`,
    publicIp: `${vm}-pip`,
    runCommand: 'tender-install',
    bundleContainer: `tender-b-${k}`,
    jobQueue: `tender-j-${k}`,
    reportQueue: `tender-r-${k}`,
    policyId: `tender-${k}`,
  };
}

/** The worker id Tender hands around is the VM name: with the resource group it names everything else. */
export function workerIdOf(runId: string, vmId: string): string {
  return workerNames(runId, vmId).vm;
}

/** A VM's ARM id is long: the set id keeps the run readable and the VM as a short hash. */
export function snapshotSetIdOf(runId: string, vmId: string): string {
  return `ss-${runId}-${h([vmId], 10)}`;
}

/** Snapshot names ≤ 80 characters, one per disk of the set (by its position on the VM). */
export function snapshotNameOf(setId: string, diskIndex: number): string {
  return `tender-s-${h([setId], 20)}-${diskIndex}`;
}

/** The regional storage account a deployment creates when none carries its tag. Globally unique by construction. */
export function regionalAccountNameOf(subscriptionId: string, applianceId: string, region: string): string {
  return `tnd${h([subscriptionId, applianceId, region], 19)}`;
}

export function diskAccessNameOf(applianceId: string, region: string): string {
  return `tender-da-${applianceId}-${region}`.slice(0, 80);
}

export function jobIdSafe(jobId: string): string {
  return jobId.replace(/[^A-Za-z0-9_.-]/g, '-');
}

/** Parts of an ARM resource id. */
export function parseResourceId(id: string): { subscriptionId?: string; resourceGroup?: string; provider?: string; type?: string; name: string } {
  const parts = id.split('/').filter(Boolean);
  const at = (k: string) => {
    const i = parts.findIndex((p) => p.toLowerCase() === k.toLowerCase());
    return i >= 0 ? parts[i + 1] : undefined;
  };
  const pi = parts.findIndex((p) => p.toLowerCase() === 'providers');
  return {
    subscriptionId: at('subscriptions'),
    resourceGroup: at('resourceGroups'),
    provider: pi >= 0 ? parts[pi + 1] : undefined,
    type: pi >= 0 ? parts[pi + 2] : undefined,
    name: parts[parts.length - 1] ?? id,
  };
}
