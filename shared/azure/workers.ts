// Azure workers, the queue channel to them, and revocation (seed 000,
// "Worker Deployment" and "Azure VM Backup"). One temporary Ubuntu 22.04 VM
// per protected VM and run, in the VM's region and the policy's subnet, with
// no public IP in private mode. It gets its bundle through a read-only,
// short-lived, https-only SAS that a managed Run Command downloads and checks,
// talks to the pipeline through two Azure Storage queues in its region, and
// reads the snapshots through SAS from beginGetAccess. Every SAS is recorded
// (without its signature) in a grants document before it is made, so revoke
// finds it even when the activity that made it died; revoke ends each one
// and probes until Azure refuses it.
//
// Nothing is kept in memory between calls: activities run on any instance.

import { createHash, generateKeyPairSync } from 'node:crypto';
import type { VirtualMachine } from '@azure/arm-compute';
import type { Access, DeployWorkerRequest, JobStatus, WorkerChannel, WorkerJob, WorkerRef, Workers, WorkerState } from '../ports/cloud.js';
import type { Clock } from '../core/clock.js';
import { AccessDeniedError, BundleIntegrityError, CapacityError, NetworkPreflightError, NotFoundError, TransientError, WorkerFailedError, failureCollector, toError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { AzureNetworkModel } from '../core/network/types.js';
import { preflightAzure } from '../core/network/azure-checks.js';
import { failedChecks } from '../core/network/report.js';
import { PER_VM_STAGES, STEP } from '../core/pipeline.js';
import { started, type ArmClients } from './clients.js';
import { arm, armMaybe, isNotFound, normaliseArmError } from './arm-errors.js';
import { workerNames, type WorkerNames } from './names.js';
import type { RegionalAccount, Regions } from './region.js';
import type { AzureSettings } from './settings.js';
import type { StateStore } from './state-store.js';
import type { StorageFor } from './storage.js';
import { blobPolicySasUrl, dropContainerPolicies, dropQueuePolicies, grantBlobReadSas, grantQueueSas, queuePolicySasUrl, waitUntilRefused } from './sas.js';
import { snapshotLocator } from './snapshots.js';
import { EXIT, INSTALLED_MARKER, installScript } from './install-script.js';
import { decodeMessage, encodeMessage, MAX_QUEUE_MESSAGE_BYTES, type JobMessage, type JobMessageDisk, type ReportMessage } from './worker-protocol.js';

export interface WorkerBundleFile {
  fileName: string;
  sha256: string;
  data: Uint8Array;
}

export interface AzureWorkersOptions {
  arm: ArmClients;
  settings: AzureSettings;
  regions: Regions;
  storageFor: StorageFor;
  state: StateStore;
  /** The worker bundle (a .tgz holding agent.cjs, its native modules and a node runtime). */
  bundle: () => Promise<WorkerBundleFile>;
  clock: Clock;
  logger: Logger;
  /** Probes SAS URLs after revocation (default global fetch). */
  fetch?: typeof fetch;
  /** How long revocation probes wait for Azure to apply a policy change. */
  revokeWaitSeconds?: number;
  /** Tries of endGetAccess until the snapshot no longer reports an active SAS. */
  snapshotRevokeTries?: number;
  /** enforce (default): a failing private-network check stops the deploy; warn: logs it; off. */
  preflight?: 'enforce' | 'warn' | 'off';
  /** Reads the region's network for the preflight (`tender check-network azure` runs the same checks). */
  readNetwork?: (region: string) => Promise<AzureNetworkModel>;
  /** A worker the pipeline lost track of shuts itself down after this long (default 26 h, as on AWS). */
  maxLifetimeHours?: number;
}

type GrantKind = 'bundle-sas' | 'job-queue-sas' | 'report-queue-sas' | 'snapshot-read';

interface GrantItem {
  kind: GrantKind;
  /** Container, queue or snapshot id. */
  target: string;
  /** For storage SAS: the blob the SAS names, to rebuild the probe URL (signatures are never stored). */
  blobName?: string;
  policyId?: string;
  revoked: boolean;
}

interface GrantsDoc {
  runId: string;
  vmId: string;
  region: string;
  account?: RegionalAccount;
  items: GrantItem[];
}

interface WorkerDoc {
  workerId: string;
  runId: string;
  vmId: string;
  region: string;
  account: RegionalAccount;
  privateNetwork: boolean;
  createdAt: string;
  installedSha256?: string;
}

interface JobDoc {
  jobId: string;
  workerId: string;
  runId: string;
  vmId: string;
  region: string;
  account: RegionalAccount;
  status: JobStatus;
  /** Last time anything was heard from the worker (ms since epoch). */
  heardAt: number;
  /** The job message is on the queue. */
  sent: boolean;
}

const jobBudgetSeconds = PER_VM_STAGES.find((s) => s.step === STEP.startBackup)!.poll!.timeoutSeconds;
const hashOf = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 16);
const grantsKey = (runId: string, vmId: string) => `grants/${runId.replace(/[^A-Za-z0-9_.-]/g, '-')}__${hashOf(vmId)}.json`;
const workerKey = (workerId: string) => `workers/${workerId}.json`;
const jobKey = (jobId: string) => `jobs/${jobId.replace(/[^A-Za-z0-9_.-]/g, '-')}.json`;

/** A throwaway RSA public key in OpenSSH form: Azure requires one, nobody holds the private half. */
export function throwawaySshPublicKey(): string {
  const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = publicKey.export({ format: 'jwk' }) as { n: string; e: string };
  const str = (b: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    return Buffer.concat([len, b]);
  };
  const mpint = (b64url: string) => {
    let b = Buffer.from(b64url, 'base64url');
    if (b[0]! & 0x80) b = Buffer.concat([Buffer.from([0]), b]);
    return str(b);
  };
  return `ssh-rsa ${Buffer.concat([str(Buffer.from('ssh-rsa')), mpint(jwk.e), mpint(jwk.n)]).toString('base64')} tender-worker`;
}

export type AzureWorkers = Workers & WorkerChannel & Access;

export function createAzureWorkers(opts: AzureWorkersOptions): AzureWorkers {
  const { settings, state, clock, logger } = opts;
  const rg = settings.resourceGroup;
  const compute = opts.arm.compute;
  const network = opts.arm.network;
  const tagKey = 'tender:appliance';

  async function recordGrant(runId: string, vmId: string, region: string, account: RegionalAccount | undefined, item: Omit<GrantItem, 'revoked'>): Promise<void> {
    await state.update<GrantsDoc>(grantsKey(runId, vmId), (cur) => {
      const doc: GrantsDoc = cur ?? { runId, vmId, region, ...(account ? { account } : {}), items: [] };
      if (account && !doc.account) doc.account = account;
      const existing = doc.items.find((i) => i.kind === item.kind && i.target === item.target);
      // A grant made again (re-invoked step) is live again until the next revoke.
      if (existing) Object.assign(existing, item, { revoked: false });
      else doc.items.push({ ...item, revoked: false });
      return doc;
    });
  }

  async function workerDoc(workerId: string): Promise<WorkerDoc> {
    const doc = await state.read<WorkerDoc>(workerKey(workerId));
    if (!doc) throw new WorkerFailedError(`worker ${workerId} has no record in the state container — it was deallocated or never deployed; run the backup again`);
    return doc.value;
  }

  // ---- Workers -------------------------------------------------------------

  const preflightMode = opts.preflight ?? 'enforce';
  const preflightPassed = new Map<string, number>();

  /** The private-network checks of `tender check-network azure`, before a private worker is made. */
  async function preflight(req: DeployWorkerRequest, region: string): Promise<void> {
    if (!req.privateNetwork || preflightMode === 'off' || !opts.readNetwork || !req.placement) return;
    const key = `${region}|${req.placement.subnet}|${req.placement.network ?? ''}`;
    if ((preflightPassed.get(key) ?? 0) > clock.now().getTime()) return;
    const findings = preflightAzure(await opts.readNetwork(region), req.placement, { region, deploymentId: settings.applianceId });
    const failed = findings.filter((f) => f.status === 'fail');
    if (failed.length > 0) {
      const text = failed.map((f) => `${f.check}: ${f.message}${f.fix ? ` (fix: ${f.fix})` : ''}`).join('; ');
      if (preflightMode === 'enforce') {
        throw new NetworkPreflightError(`a private worker in ${region} subnet ${req.placement.subnet} would be missing: ${failedChecks(findings).join(', ')} — ${text}. Run \`tender check-network azure\` for the full report`);
      }
      logger.warn('private-network preflight failed; deploying anyway (TENDER_NETWORK_PREFLIGHT=warn)', { region, failed: failedChecks(findings) });
      return;
    }
    preflightPassed.set(key, clock.now().getTime() + 10 * 60_000);
  }

  async function deployWorker(req: DeployWorkerRequest): Promise<WorkerRef> {
    const names = workerNames(req.runId, req.vm.vmId);
    const region = req.vm.region;
    const existing = await armMaybe(`reading worker VM ${names.vm}`, () => compute.virtualMachines.get(rg, names.vm));
    if (existing && (existing.provisioningState ?? '').toLowerCase() !== 'deleting') {
      return { workerId: names.vm, region };
    }
    const env = await opts.regions.prepare({ region, placement: req.placement, privateNetwork: req.privateNetwork });
    await preflight(req, env.region);
    const tags = { ...req.tags, [tagKey]: settings.applianceId };
    await state.write(workerKey(names.vm), {
      workerId: names.vm,
      runId: req.runId,
      vmId: req.vm.vmId,
      region: env.region,
      account: env.account,
      privateNetwork: req.privateNetwork,
      createdAt: clock.now().toISOString(),
    } satisfies WorkerDoc);

    let publicIpId: string | undefined;
    if (!req.privateNetwork) {
      const pip = await arm(`creating public IP ${names.publicIp}`, () =>
        network.publicIPAddresses.beginCreateOrUpdateAndWait(rg, names.publicIp, {
          location: env.region,
          sku: { name: 'Standard' },
          publicIPAllocationMethod: 'Static',
          tags,
        }),
      );
      publicIpId = pip.id;
    }
    const nic = await arm(`creating network interface ${names.nic}`, () =>
      network.networkInterfaces.beginCreateOrUpdateAndWait(rg, names.nic, {
        location: env.region,
        tags,
        ipConfigurations: [
          { name: 'ipconfig1', subnet: { id: env.subnetId }, privateIPAllocationMethod: 'Dynamic', primary: true, ...(publicIpId ? { publicIPAddress: { id: publicIpId } } : {}) },
        ],
      }),
    );
    const identity = settings.workerIdentity;
    const vm: VirtualMachine = {
      location: env.region,
      tags,
      hardwareProfile: { vmSize: req.profile.instanceType },
      storageProfile: {
        imageReference: settings.workerImage,
        osDisk: { name: names.osDisk, createOption: 'FromImage', deleteOption: 'Delete', managedDisk: { storageAccountType: 'StandardSSD_LRS' } },
      },
      osProfile: {
        computerName: names.vm,
        adminUsername: 'tender',
        // A safety net, not the mechanism: cleanup deletes the worker; this only stops one the
        // pipeline lost (a stopped VM runs nothing and its identity is no longer usable).
        customData: Buffer.from(`#!/bin/bash\nshutdown -h +${Math.round((opts.maxLifetimeHours ?? 26) * 60)} "Tender worker lifetime reached"\n`).toString('base64'),
        linuxConfiguration: {
          disablePasswordAuthentication: true,
          provisionVMAgent: true,
          ssh: { publicKeys: [{ path: '/home/tender/.ssh/authorized_keys', keyData: throwawaySshPublicKey() }] },
        },
      },
      networkProfile: { networkInterfaces: [{ id: nic.id, primary: true, deleteOption: 'Delete' }] },
      ...(identity ? { identity: { type: 'UserAssigned', userAssignedIdentities: { [identity.id]: {} } } } : {}),
    };
    // Started only: checkWorker polls until it runs and its VM agent is ready.
    await arm(`creating worker VM ${names.vm} (${req.profile.instanceType}) in ${env.region}`, () => started(compute.virtualMachines.createOrUpdate(rg, names.vm, vm)));
    logger.info('worker VM requested', { workerId: names.vm, region: env.region, size: req.profile.instanceType, publicIp: !!publicIpId });
    return { workerId: names.vm, region: env.region };
  }

  async function getWorkerState(ref: WorkerRef): Promise<WorkerState> {
    const vm = await armMaybe(`reading worker VM ${ref.workerId}`, () => compute.virtualMachines.get(rg, ref.workerId, { expand: 'instanceView' }));
    if (!vm) return 'gone';
    const prov = (vm.provisioningState ?? '').toLowerCase();
    if (prov === 'deleting') return 'gone';
    const statuses = vm.instanceView?.statuses ?? [];
    if (prov === 'failed') {
      const why = statuses.find((s) => /^ProvisioningState\//.test(s.code ?? '') && s.level === 'Error');
      if (/AllocationFailed|OverconstrainedAllocation|SkuNotAvailable/i.test(`${why?.code} ${why?.message}`)) {
        throw new CapacityError(`worker VM ${ref.workerId} could not be placed: ${why?.message ?? why?.code} — Azure has no capacity for this size in ${ref.region} right now; choose another size in worker.profiles`);
      }
      return 'failed';
    }
    const power = statuses.find((s) => (s.code ?? '').startsWith('PowerState/'))?.code ?? '';
    if (/deallocat|stopped/i.test(power)) return 'failed';
    const agentReady = (vm.instanceView?.vmAgent?.statuses ?? []).some((s) => /Ready/i.test(s.displayStatus ?? '') || /ProvisioningState\/succeeded/i.test(s.code ?? ''));
    // Run Command needs the VM agent: "running" alone is too early.
    return prov === 'succeeded' && power === 'PowerState/running' && agentReady ? 'ready' : 'starting';
  }

  async function installWorker(req: { runId: string; vmId: string; worker: WorkerRef }): Promise<{ bundleSha256: string }> {
    const names = workerNames(req.runId, req.vmId);
    const doc = await workerDoc(req.worker.workerId);
    if (doc.installedSha256) return { bundleSha256: doc.installedSha256 };
    const bundle = await opts.bundle();
    const st = await opts.storageFor(doc.account);
    const container = st.blob.getContainerClient(names.bundleContainer);
    const blobName = bundle.fileName;

    // Upload the bundle into the worker's own container (once: same name, same digest).
    await arm(`creating container ${names.bundleContainer}`, () => container.createIfNotExists());
    const blob = container.getBlockBlobClient(blobName);
    const props = await armMaybe(`reading ${blobName}`, () => blob.getProperties());
    if (props?.metadata?.sha256 !== bundle.sha256) {
      await arm(`uploading the worker bundle to ${doc.account.name}`, () => blob.uploadData(bundle.data, { metadata: { sha256: bundle.sha256 }, blobHTTPHeaders: { blobContentType: 'application/gzip' } }));
    }

    // The queues the job and the reports travel through.
    const jobQueue = st.queue.getQueueClient(names.jobQueue);
    const reportQueue = st.queue.getQueueClient(names.reportQueue);
    await arm(`creating queue ${names.jobQueue}`, () => jobQueue.createIfNotExists());
    await arm(`creating queue ${names.reportQueue}`, () => reportQueue.createIfNotExists());

    // Recorded before they exist: a crash between grant and record must not leave a SAS nobody revokes.
    await recordGrant(req.runId, req.vmId, doc.region, doc.account, { kind: 'bundle-sas', target: names.bundleContainer, blobName, policyId: names.policyId });
    await recordGrant(req.runId, req.vmId, doc.region, doc.account, { kind: 'job-queue-sas', target: names.jobQueue, policyId: names.policyId });
    await recordGrant(req.runId, req.vmId, doc.region, doc.account, { kind: 'report-queue-sas', target: names.reportQueue, policyId: names.policyId });
    const common = { signer: st.signer, protocol: settings.sasProtocol, clock, policyId: names.policyId };
    const bundleSas = await grantBlobReadSas({ ...common, container, blobName, ttlSeconds: settings.bundleSasTtlSeconds });
    // The queue SAS last as long as the job may: worker start plus the backup's own deadline.
    const queueTtl = jobBudgetSeconds + 3600;
    const jobSas = await grantQueueSas({ ...common, queue: jobQueue, permissions: 'rp', ttlSeconds: queueTtl });
    const reportSas = await grantQueueSas({ ...common, queue: reportQueue, permissions: 'ra', ttlSeconds: queueTtl });

    const runCommand = {
      location: doc.region,
      source: { script: installScript({ httpsOnly: settings.sasProtocol === 'https' }) },
      parameters: [
        { name: 'BUNDLE_SHA256', value: bundle.sha256 },
        { name: 'TENDER_WORKER_ID', value: names.vm },
        ...(settings.workerIdentity ? [{ name: 'AZURE_CLIENT_ID', value: settings.workerIdentity.clientId }] : []),
      ],
      protectedParameters: [
        { name: 'BUNDLE_URL', value: bundleSas.url },
        { name: 'TENDER_JOB_QUEUE_URL', value: jobSas.url },
        { name: 'TENDER_REPORT_QUEUE_URL', value: reportSas.url },
      ],
      asyncExecution: false,
      timeoutInSeconds: 600,
      treatFailureAsDeploymentFailure: false,
    };
    await arm(`running the install command on worker ${names.vm}`, () => compute.virtualMachineRunCommands.createOrUpdate(rg, names.vm, names.runCommand, runCommand));
    const done = await arm(`reading the install command's result on worker ${names.vm}`, () =>
      compute.virtualMachineRunCommands.getByVirtualMachine(rg, names.vm, names.runCommand, { expand: 'instanceView' }),
    );
    const iv = done.instanceView;
    const exit = iv?.exitCode;
    const stderr = (iv?.error ?? '').trim().split('\n').slice(-3).join(' | ');
    if (exit === 0 && (iv?.output ?? '').includes(`${INSTALLED_MARKER} ${bundle.sha256}`)) {
      await state.update<WorkerDoc>(workerKey(names.vm), (cur) => ({ ...(cur ?? doc), installedSha256: bundle.sha256 }));
      return { bundleSha256: bundle.sha256 };
    }
    if (exit === EXIT.integrity) {
      throw new BundleIntegrityError(`worker ${names.vm} refused the bundle ${blobName}: ${stderr} — it was not run; the staged bundle changed after its digest was taken: deploy the Function app again`);
    }
    if (exit === EXIT.refused) {
      throw new AccessDeniedError(`worker ${names.vm} could not download its bundle: ${stderr} — the SAS expired or was revoked before the download; run again`);
    }
    if (exit === EXIT.unreachable) {
      throw new TransientError(
        `worker ${names.vm} could not reach ${doc.account.name}: ${stderr} — check the blob private endpoint of ${doc.account.name} in the worker VNET and its privatelink.blob DNS record (tender check-network azure)`,
      );
    }
    throw new WorkerFailedError(
      `the install command on worker ${names.vm} ended ${iv?.executionState ?? 'without a state'}${exit !== undefined ? ` with exit code ${exit}` : ''}: ${stderr || iv?.executionMessage || 'no output'}`,
    );
  }

  async function deleteQuietly(what: string, fn: () => PromiseLike<unknown>, problems: string[]): Promise<void> {
    try {
      await fn();
    } catch (e) {
      if (isNotFound(e)) return;
      const err = normaliseArmError(e, what);
      problems.push(`${what}: ${err.message}`);
    }
  }

  async function deallocateWorker(req: { runId: string; vmId: string; worker?: WorkerRef }): Promise<void> {
    const names: WorkerNames = workerNames(req.runId, req.vmId);
    const problems: string[] = [];
    const vm = await armMaybe(`reading worker VM ${names.vm}`, () => compute.virtualMachines.get(rg, names.vm));
    if (vm) {
      // Deallocated first: billing stops at once, whatever the delete then takes.
      await deleteQuietly(`deallocating worker VM ${names.vm}`, () => compute.virtualMachines.deallocate(rg, names.vm), problems);
      await deleteQuietly(`deleting worker VM ${names.vm}`, () => compute.virtualMachines.delete(rg, names.vm), problems);
    }
    // The VM deletes its NIC and OS disk itself (deleteOption Delete); these catch a VM that never got that far.
    await deleteQuietly(`deleting network interface ${names.nic}`, () => network.networkInterfaces.beginDeleteAndWait(rg, names.nic), problems);
    await deleteQuietly(`deleting public IP ${names.publicIp}`, () => network.publicIPAddresses.beginDeleteAndWait(rg, names.publicIp), problems);
    await deleteQuietly(`deleting OS disk ${names.osDisk}`, () => compute.disks.delete(rg, names.osDisk), problems);
    const doc = await state.read<WorkerDoc>(workerKey(names.vm));
    if (doc) {
      const st = await opts.storageFor(doc.value.account);
      await deleteQuietly(`deleting container ${names.bundleContainer}`, () => st.blob.getContainerClient(names.bundleContainer).deleteIfExists(), problems);
      await deleteQuietly(`deleting queue ${names.jobQueue}`, () => st.queue.getQueueClient(names.jobQueue).deleteIfExists(), problems);
      await deleteQuietly(`deleting queue ${names.reportQueue}`, () => st.queue.getQueueClient(names.reportQueue).deleteIfExists(), problems);
    }
    if (problems.length > 0) {
      throw new TransientError(`worker ${names.vm} is not fully removed (${problems.join('; ')}) — it is retried`);
    }
    if (doc) await state.delete(workerKey(names.vm));
    logger.info('worker removed', { workerId: names.vm });
  }

  // ---- WorkerChannel ---------------------------------------------------------

  async function grantSnapshot(runId: string, vmId: string, region: string, snapshotId: string): Promise<string> {
    await recordGrant(runId, vmId, region, undefined, { kind: 'snapshot-read', target: snapshotId });
    const { resourceGroup, name } = snapshotLocator(snapshotId);
    const access = await arm(`granting read access to snapshot ${name}`, () =>
      compute.snapshots.grantAccess(resourceGroup, name, { access: 'Read', durationInSeconds: jobBudgetSeconds }),
    );
    if (!access.accessSAS) throw new TransientError(`granting read access to snapshot ${name} returned no SAS; it is retried`);
    return access.accessSAS;
  }

  async function startJob(worker: WorkerRef, job: WorkerJob): Promise<void> {
    const existing = await state.read<JobDoc>(jobKey(job.jobId));
    if (existing?.value.sent) return;
    const doc = await workerDoc(worker.workerId);
    if (!doc.installedSha256) throw new WorkerFailedError(`worker ${worker.workerId} has no worker software installed — installWorker must run first`);
    const names = workerNames(job.runId, job.vm.vmId);
    const disks: JobMessageDisk[] = [];
    for (const d of job.disks) {
      const sasUrl = await grantSnapshot(job.runId, job.vm.vmId, doc.region, d.snapshotId);
      const parentSasUrl = d.parentSnapshotId ? await grantSnapshot(job.runId, job.vm.vmId, doc.region, d.parentSnapshotId) : undefined;
      disks.push({ diskId: d.diskId, snapshotId: d.snapshotId, sasUrl, ...(d.parentSnapshotId ? { parentSnapshotId: d.parentSnapshotId, parentSasUrl } : {}) });
    }
    const message = encodeMessage({ type: 'job', job, disks } satisfies JobMessage);
    if (message.length > MAX_QUEUE_MESSAGE_BYTES) {
      throw new WorkerFailedError(`the job of VM ${job.vm.vmId} is ${message.length} bytes, over the queue's 64 KiB — the VM has too many disks for one message`);
    }
    if (!existing) {
      await state.write(jobKey(job.jobId), {
        jobId: job.jobId,
        workerId: worker.workerId,
        runId: job.runId,
        vmId: job.vm.vmId,
        region: doc.region,
        account: doc.account,
        status: { state: 'queued', updatedAt: clock.now().toISOString() },
        heardAt: clock.now().getTime(),
        sent: false,
      } satisfies JobDoc);
    }
    const st = await opts.storageFor(doc.account);
    await arm(`sending the job to queue ${names.jobQueue}`, () => st.queue.getQueueClient(names.jobQueue).sendMessage(message, { messageTimeToLive: jobBudgetSeconds }));
    // Marked sent only now: a crash before this sends again, and the agent runs a job id once.
    await state.update<JobDoc>(jobKey(job.jobId), (d) => ({ ...(d ?? (existing?.value as JobDoc)), sent: true, heardAt: clock.now().getTime() }));
    logger.info('job sent to worker', { jobId: job.jobId, workerId: worker.workerId, disks: disks.length });
  }

  async function getJobStatus(worker: WorkerRef, jobId: string): Promise<JobStatus> {
    const cur = await state.read<JobDoc>(jobKey(jobId));
    if (!cur) throw new NotFoundError(`job ${jobId} was never started on worker ${worker.workerId}`);
    let doc = cur.value;
    if (doc.status.state === 'succeeded' || doc.status.state === 'failed') return doc.status;
    const names = workerNames(doc.runId, doc.vmId);
    const st = await opts.storageFor(doc.account);
    const queue = st.queue.getQueueClient(names.reportQueue);
    const received: Array<{ messageId: string; popReceipt: string; report?: ReportMessage; insertedOn?: Date }> = [];
    for (let round = 0; round < 8; round++) {
      const res = await arm(`reading reports from queue ${names.reportQueue}`, () => queue.receiveMessages({ numberOfMessages: 32, visibilityTimeout: 120 }));
      for (const m of res.receivedMessageItems) {
        received.push({ messageId: m.messageId, popReceipt: m.popReceipt, report: decodeMessage<ReportMessage>(m.messageText), insertedOn: m.insertedOn });
      }
      if (res.receivedMessageItems.length < 32) break;
    }
    if (received.length > 0) {
      doc = await state.update<JobDoc>(jobKey(jobId), (d) => {
        const next = { ...(d ?? doc) };
        for (const r of received) {
          const heard = r.insertedOn?.getTime() ?? clock.now().getTime();
          next.heardAt = Math.max(next.heardAt, Math.min(heard, clock.now().getTime()));
          const rep = r.report;
          if (!rep || next.status.state === 'succeeded' || next.status.state === 'failed') continue;
          if (rep.type === 'progress' && rep.jobId === jobId) next.status = { state: 'running', progress: rep.progress, updatedAt: rep.at };
          else if (rep.type === 'heartbeat' && next.status.state === 'queued' && rep.jobId === jobId) next.status = { state: 'running', updatedAt: rep.at };
          else if (rep.type === 'result' && rep.jobId === jobId) {
            next.status = rep.state === 'succeeded' ? { state: 'succeeded', result: rep.result, updatedAt: rep.at } : { state: 'failed', error: rep.error, updatedAt: rep.at };
          }
        }
        return next;
      });
      // Deleted only after the fold is stored: a crash in between re-reads them, which folds to the same status.
      for (const r of received) {
        await queue.deleteMessage(r.messageId, r.popReceipt).catch((e) => logger.warn('could not delete a report message', { error: toError(e).message }));
      }
    }
    if (doc.status.state === 'succeeded' || doc.status.state === 'failed') return doc.status;
    const silentMs = clock.now().getTime() - doc.heardAt;
    if (silentMs > settings.heartbeatTimeoutSeconds * 1000) {
      return {
        state: 'failed',
        error: { name: WorkerFailedError.name, message: `worker ${worker.workerId} has not reported for ${Math.round(silentMs / 1000)}s (heartbeat timeout ${settings.heartbeatTimeoutSeconds}s) — see the tender-agent journal on the worker, or its boot diagnostics` },
        updatedAt: clock.now().toISOString(),
      };
    }
    return doc.status;
  }

  // ---- Access ------------------------------------------------------------------

  async function revokeOne(doc: GrantsDoc, item: GrantItem): Promise<string> {
    // Snapshot SAS are revoked through ARM alone: an unreachable storage account must not keep them alive.
    const st = item.kind !== 'snapshot-read' && doc.account ? await opts.storageFor(doc.account) : undefined;
    switch (item.kind) {
      case 'bundle-sas': {
        if (!st) return `bundle SAS ${item.target} (no account recorded)`;
        const container = st.blob.getContainerClient(item.target);
        try {
          await dropContainerPolicies(container);
        } catch (e) {
          if (!isNotFound(e)) throw normaliseArmError(e, `removing the access policy of container ${item.target}`);
        }
        // The same parameters give the same signature: the probe uses the SAS the worker had.
        const url = blobPolicySasUrl(container, item.blobName!, item.policyId!, st.signer, settings.sasProtocol);
        await waitUntilRefused({ url, what: `the bundle SAS of ${item.target}`, clock, fetch: opts.fetch, waitSeconds: opts.revokeWaitSeconds });
        return `bundle SAS ${item.target}/${item.blobName}`;
      }
      case 'job-queue-sas':
      case 'report-queue-sas': {
        if (!st) return `${item.kind} ${item.target} (no account recorded)`;
        const queue = st.queue.getQueueClient(item.target);
        try {
          await dropQueuePolicies(queue);
        } catch (e) {
          if (!isNotFound(e)) throw normaliseArmError(e, `removing the access policy of queue ${item.target}`);
        }
        const sasUrl = queuePolicySasUrl(queue, item.policyId!, st.signer, settings.sasProtocol);
        // Both queue SAS carry `r`, so a peek is a probe that neither takes nor adds a message.
        await waitUntilRefused({ url: sasUrl.replace('?', '/messages?peekonly=true&'), what: `the SAS of queue ${item.target}`, clock, fetch: opts.fetch, waitSeconds: opts.revokeWaitSeconds });
        return `${item.kind === 'job-queue-sas' ? 'job' : 'report'} queue SAS ${item.target}`;
      }
      case 'snapshot-read': {
        const { resourceGroup, name } = snapshotLocator(item.target);
        const tries = opts.snapshotRevokeTries ?? 6;
        for (let i = 1; ; i++) {
          try {
            await arm(`revoking read access to snapshot ${name}`, () => compute.snapshots.revokeAccess(resourceGroup, name));
          } catch (e) {
            if (e instanceof NotFoundError) return `snapshot read SAS ${name} (snapshot gone)`;
            throw e;
          }
          const snap = await armMaybe(`reading snapshot ${name}`, () => compute.snapshots.get(resourceGroup, name));
          // A failed revoke leaves "ActiveSAS" behind (field notes): only its absence counts.
          if (!snap || !/ActiveSAS/i.test(snap.diskState ?? '')) return `snapshot read SAS ${name}`;
          if (i >= tries) throw new TransientError(`snapshot ${name} still reports ${snap.diskState} after ${tries} revocations; it is retried`);
          await clock.sleep(2000 * i);
        }
      }
    }
  }

  async function revokeAccess(req: { runId: string; vmId: string }): Promise<{ revoked: string[] }> {
    const key = grantsKey(req.runId, req.vmId);
    const cur = await state.read<GrantsDoc>(key);
    if (!cur) return { revoked: [] };
    const revoked: string[] = [];
    const failures = failureCollector();
    // Every grant is tried even when one fails, snapshot read SAS first: they can read whole disks.
    const items = [...cur.value.items.filter((i) => i.kind === 'snapshot-read'), ...cur.value.items.filter((i) => i.kind !== 'snapshot-read')];
    for (const item of items) {
      if (item.revoked) continue;
      await failures.attempt(`${item.kind} ${item.target}`, async () => {
        revoked.push(await revokeOne(cur.value, item));
        // Marked one by one: a retry after a failure does not revoke (and probe) again what already holds.
        await state.update<GrantsDoc>(key, (d) => {
          const doc = d ?? cur.value;
          for (const i of doc.items) if (i.kind === item.kind && i.target === item.target) i.revoked = true;
          return doc;
        });
      });
    }
    if (revoked.length) logger.info('access revoked', { runId: req.runId, vmId: req.vmId, revoked });
    failures.throwIfAny(`not every grant of run ${req.runId} on VM ${req.vmId} could be revoked; revoking is retried`);
    return { revoked };
  }

  return { deployWorker, getWorkerState, installWorker, deallocateWorker, startJob, getJobStatus, revokeAccess };
}
