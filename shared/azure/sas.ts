// Revocable SAS for the worker: service SAS bound to a stored access policy
// on the worker's own container or queue, never ad-hoc SAS. Deleting the
// policy revokes every SAS made from it; an ad-hoc SAS would stay valid until
// it expired. Azure applies a policy change within about 30 s (field notes),
// so revocation is only reported once a probe with the old SAS is refused.

import {
  BlobSASPermissions,
  SASProtocol,
  generateBlobSASQueryParameters,
  type ContainerClient,
  type StorageSharedKeyCredential,
} from '@azure/storage-blob';
import { QueueSASPermissions, generateQueueSASQueryParameters, type QueueClient } from '@azure/storage-queue';
import type { Clock } from '../core/clock.js';
import { TransientError } from '../core/errors.js';
import { normaliseArmError } from './arm-errors.js';

export type SasProtocolSetting = 'https' | 'https,http';

const protocolOf = (p: SasProtocolSetting) => (p === 'https' ? SASProtocol.Https : SASProtocol.HttpsAndHttp);

/** Clock skew allowance: a SAS valid from "now" is refused by a server a few seconds behind. */
const SKEW_MS = 5 * 60_000;

export interface PolicyGrant {
  url: string;
  expiresOn: Date;
}

/**
 * Read-only SAS to one blob, through the container's stored access policy
 * `policyId` (which this sets, replacing the container's policies: the
 * container is the worker's own).
 */
export async function grantBlobReadSas(opts: {
  container: ContainerClient;
  blobName: string;
  policyId: string;
  signer: StorageSharedKeyCredential;
  ttlSeconds: number;
  protocol: SasProtocolSetting;
  clock: Clock;
}): Promise<PolicyGrant> {
  const now = opts.clock.now();
  const expiresOn = new Date(now.getTime() + opts.ttlSeconds * 1000);
  try {
    await opts.container.setAccessPolicy(undefined, [
      { id: opts.policyId, accessPolicy: { permissions: BlobSASPermissions.parse('r').toString(), startsOn: new Date(now.getTime() - SKEW_MS), expiresOn } },
    ]);
  } catch (e) {
    throw normaliseArmError(e, `setting the access policy of container ${opts.container.containerName}`);
  }
  return { url: blobPolicySasUrl(opts.container, opts.blobName, opts.policyId, opts.signer, opts.protocol), expiresOn };
}

/**
 * The SAS URL of a blob under a stored access policy. Signing is
 * deterministic, so revocation rebuilds the very URL the worker had and
 * probes with it: no signature is ever stored.
 */
export function blobPolicySasUrl(container: ContainerClient, blobName: string, policyId: string, signer: StorageSharedKeyCredential, protocol: SasProtocolSetting): string {
  const sas = generateBlobSASQueryParameters({ containerName: container.containerName, blobName, identifier: policyId, protocol: protocolOf(protocol) }, signer).toString();
  return `${container.getBlobClient(blobName).url}?${sas}`;
}

/** The SAS URL of a queue under a stored access policy (deterministic, as blobPolicySasUrl). */
export function queuePolicySasUrl(queue: QueueClient, policyId: string, signer: StorageSharedKeyCredential, protocol: SasProtocolSetting): string {
  const sas = generateQueueSASQueryParameters({ queueName: queue.name, identifier: policyId, protocol: protocolOf(protocol) }, signer).toString();
  return `${queue.url}?${sas}`;
}

/**
 * SAS to a queue through its stored access policy `policyId`: `p` to take
 * messages, `a` to add them, `r` to peek — which is also what lets revocation
 * probe the SAS without taking or adding a message.
 */
export async function grantQueueSas(opts: {
  queue: QueueClient;
  permissions: 'rp' | 'ra';
  policyId: string;
  signer: StorageSharedKeyCredential;
  ttlSeconds: number;
  protocol: SasProtocolSetting;
  clock: Clock;
}): Promise<PolicyGrant> {
  const now = opts.clock.now();
  const expiresOn = new Date(now.getTime() + opts.ttlSeconds * 1000);
  try {
    await opts.queue.setAccessPolicy([
      { id: opts.policyId, accessPolicy: { permissions: QueueSASPermissions.parse(opts.permissions).toString(), startsOn: new Date(now.getTime() - SKEW_MS), expiresOn } },
    ]);
  } catch (e) {
    throw normaliseArmError(e, `setting the access policy of queue ${opts.queue.name}`);
  }
  return { url: queuePolicySasUrl(opts.queue, opts.policyId, opts.signer, opts.protocol), expiresOn };
}

export async function dropContainerPolicies(container: ContainerClient): Promise<void> {
  await container.setAccessPolicy(undefined, []);
}

export async function dropQueuePolicies(queue: QueueClient): Promise<void> {
  await queue.setAccessPolicy([]);
}

/** What a probe with a revoked SAS gets: 403 (policy gone) or 404 (container / queue gone). */
export function isRefused(status: number): boolean {
  return status === 403 || status === 404;
}

/**
 * Probes `url` (a SAS URL whose policy was just removed) until the service
 * refuses it, for up to `waitSeconds`. Throws TransientError if it still
 * answers: the caller's retry runs the revocation again.
 */
export async function waitUntilRefused(opts: {
  url: string;
  what: string;
  clock: Clock;
  fetch?: typeof fetch;
  waitSeconds?: number;
  intervalMs?: number;
}): Promise<void> {
  const doFetch = opts.fetch ?? fetch;
  const deadline = opts.clock.now().getTime() + (opts.waitSeconds ?? 45) * 1000;
  let last = 0;
  for (;;) {
    try {
      const res = await doFetch(opts.url, { method: 'GET' });
      await res.arrayBuffer().catch(() => undefined);
      last = res.status;
      if (isRefused(res.status)) return;
    } catch {
      // Unreachable from here is not proof of revocation: keep probing.
      last = 0;
    }
    if (opts.clock.now().getTime() >= deadline) {
      throw new TransientError(`${opts.what} is still accepted (HTTP ${last || 'no answer'}) after its access policy was removed — Azure can take up to 30 s; revocation is retried`);
    }
    await opts.clock.sleep(opts.intervalMs ?? 2000);
  }
}
