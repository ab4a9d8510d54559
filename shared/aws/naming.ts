// Names and tags Tender gives what it makes on AWS. Everything a run makes is
// derived from (runId, vmId), so a re-invoked step finds what an earlier
// attempt made instead of making a second one, and cleanup finds it by tags.

import { createHash } from 'node:crypto';

export const TAG = {
  appliance: 'tender:appliance',
  policy: 'tender:policy',
  run: 'tender:run',
  vm: 'tender:vm',
  /** The snapshot set a snapshot belongs to (one per VM per run). */
  set: 'tender:set',
  /** The VM's disk (volume id) a snapshot was taken of. */
  disk: 'tender:disk',
  /** "worker" on worker instances: IAM conditions on terminate/SendCommand match it. */
  role: 'tender:role',
  /** The ARN of the worker instance allowed to read a snapshot (the EBS direct grant). */
  reader: 'tender:reader',
  /** The sha256 of the bundle a worker runs, set once the install succeeded. */
  installed: 'tender:installed',
} as const;

export const WORKER_ROLE_VALUE = 'worker';

export function safeId(s: string): string {
  return s.replace(/[^A-Za-z0-9_.-]/g, '-');
}

export function snapshotSetIdOf(runId: string, vmId: string): string {
  return safeId(`ss-${runId}-${vmId}`);
}

export function hashOf(...parts: string[]): string {
  return createHash('sha256').update(parts.join('\0')).digest('hex');
}

/** EC2 ClientToken (≤ 64 ASCII characters): the same (run, VM) always yields the same token. */
export function clientTokenOf(runId: string, vmId: string, purpose = 'worker'): string {
  return hashOf('tender', purpose, runId, vmId).slice(0, 64);
}

/** SQS queue names (≤ 80 characters of A-Za-z0-9_-) of a (run, VM) under the deployment's prefix. */
export function queueNamesOf(prefix: string, runId: string, vmId: string): { job: string; status: string } {
  const base = `${prefix.replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 56)}-${hashOf(runId, vmId).slice(0, 16)}`;
  return { job: `${base}-job`, status: `${base}-status` };
}

/** Per (run, VM) keys in the config bucket. */
export function runKeys(runId: string, vmId: string) {
  const base = `runs/${safeId(runId)}/${safeId(vmId)}/`;
  return {
    base,
    /** Staged objects (the worker bundle) live here and nowhere else: revoke deletes the prefix. */
    staging: `staging/${safeId(runId)}/${safeId(vmId)}/`,
    job: `${base}job.json`,
    grants: `${base}grants.json`,
  };
}

export type AwsTag = { Key: string; Value: string };

export function toAwsTags(tags: Record<string, string>): AwsTag[] {
  return Object.entries(tags).map(([Key, Value]) => ({ Key, Value }));
}

export function fromAwsTags(tags: Array<{ Key?: string; Value?: string }> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const t of tags ?? []) if (t.Key !== undefined) out[t.Key] = t.Value ?? '';
  return out;
}
