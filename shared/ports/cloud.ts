// The ports pipeline steps use to act on a cloud. Implemented by shared/local
// (raw image files, child-process worker), shared/aws (EC2, EBS, SSM, S3) and
// shared/azure (Compute, Storage, Run Command). Every method states its
// idempotency: Lambda, Step Functions and Durable Functions all re-invoke on
// failure, so a second call with the same input must not make a second thing.
//
// No method takes or returns a secret: repository keys are referenced by
// KeyRef and fetched by the worker itself; URLs that carry signatures stay
// inside the adapter (they are staged, used and revoked there).

import type { WorkerProfile, Placement, KeyRef } from '../core/config.js';

export type Tags = Record<string, string>;

export interface VmDisk {
  diskId: string;
  sizeBytes: number;
  /** Device name / LUN as the VM sees it, for restore. */
  device?: string;
}

export interface Vm {
  vmId: string;
  name: string;
  region: string;
  disks: VmDisk[];
  tags: Tags;
}

export interface VmSelection {
  ids?: string[];
  /** Every VM carrying all of these tags. */
  tags?: Tags;
}

export interface DiskSnapshot {
  diskId: string;
  snapshotId: string;
  sizeBytes: number;
  device?: string;
}

export type SnapshotSetState = 'pending' | 'ready' | 'failed';

export interface SnapshotSet {
  /** Stable id of the set (all disks of one VM at one moment). */
  setId: string;
  vmId: string;
  region: string;
  runId: string;
  state: SnapshotSetState;
  createdAt: string;
  disks: DiskSnapshot[];
  /** Set when state is 'failed'. */
  failureReason?: string;
  /** The tags the set was made with (tender:policy, tender:run, …), where the adapter can read them back. */
  tags?: Tags;
}

export interface Snapshots {
  /** VMs matching the selection; an id that does not exist throws NotFoundError. */
  findVms(selection: VmSelection): Promise<Vm[]>;
  /**
   * Starts a crash-consistent snapshot of every disk of the VM, tagged with
   * `tags` plus the run and VM ids so the set is found again as one unit.
   * Idempotent per (runId, vmId): a second call returns the existing set.
   */
  /** `privateNetwork`: the policy's workers have no public IP, so the snapshots must not be readable from the internet either. */
  createSnapshotSet(req: { runId: string; vm: Vm; tags: Tags; privateNetwork?: boolean }): Promise<SnapshotSet>;
  /** Current state of the set. Throws NotFoundError when it is gone. */
  getSnapshotSet(setId: string): Promise<SnapshotSet>;
  /** Every Tender snapshot set of this VM, oldest first. */
  listSnapshotSets(vmId: string): Promise<SnapshotSet[]>;
  /** Deletes every snapshot of the set. Idempotent: a missing set is not an error. */
  deleteSnapshotSet(setId: string): Promise<void>;
}

export type WorkerState = 'starting' | 'ready' | 'failed' | 'gone';

export interface WorkerRef {
  workerId: string;
  region: string;
}

export interface DeployWorkerRequest {
  runId: string;
  vm: Vm;
  profile: WorkerProfile;
  placement?: Placement;
  /** No public IP, endpoints only. */
  privateNetwork: boolean;
  tags: Tags;
  /** The repository key reference (never a secret): which endpoints a private worker needs for it. */
  repositoryKey?: KeyRef;
}

export interface Workers {
  /**
   * Starts one temporary worker for this VM in this run. Idempotent per
   * (runId, vmId): a re-invoked step gets the same worker, never a second one.
   */
  deployWorker(req: DeployWorkerRequest): Promise<WorkerRef>;
  getWorkerState(ref: WorkerRef): Promise<WorkerState>;
  /**
   * Stages the worker bundle, makes a short-lived URL for it, and has the worker
   * download it, check its sha256 and start. Resolves once the worker runs the
   * bundle; throws BundleIntegrityError when the digest did not match.
   * Idempotent: a second call on a worker that already runs the bundle returns.
   */
  installWorker(req: { runId: string; vmId: string; worker: WorkerRef }): Promise<{ bundleSha256: string }>;
  /**
   * Terminates / deallocates the worker and deletes what was made for it (its
   * folder, NIC, OS disk). Without `worker`, finds the run's worker by its tags.
   * Idempotent: a worker already gone is not an error.
   */
  deallocateWorker(req: { runId: string; vmId: string; worker?: WorkerRef }): Promise<void>;
}

export interface JobDisk extends DiskSnapshot {
  /** Snapshot id of the same disk in the parent set, for changed blocks. */
  parentSnapshotId?: string;
}

/** What the worker is asked to do: back up one VM's snapshot set into a repository. */
export interface WorkerJob {
  jobId: string;
  runId: string;
  policy: string;
  vm: { vmId: string; name: string; tags: Tags };
  snapshotSetId: string;
  parentSnapshotSetId?: string;
  disks: JobDisk[];
  repository: { url: string; key: KeyRef };
  /** Restore-point tags (policy, schedule, …). */
  tags: Tags;
}

export interface JobProgress {
  bytesDone: number;
  bytesTotal: number;
  bytesPerSecond: number;
  /** Disk currently read. */
  diskId?: string;
}

export interface DiskBackupResult {
  diskId: string;
  sizeBytes: number;
  blocksRead: number;
  bytesRead: number;
  blocksNew: number;
  bytesStored: number;
  /** False when a parent was given but the diff was impossible (full read instead). */
  incremental: boolean;
  reason?: string;
}

export interface BackupResult {
  restorePointId: string;
  disks: DiskBackupResult[];
  seconds: number;
}

export type JobStatus =
  | { state: 'queued' | 'running'; progress?: JobProgress; updatedAt: string }
  | { state: 'succeeded'; result: BackupResult; updatedAt: string }
  | { state: 'failed'; error: { name: string; message: string }; updatedAt: string };

export interface WorkerChannel {
  /**
   * Grants the worker what this job needs (snapshot read access, repository
   * write access, job credentials), all bounded in time, and hands it the job.
   * Idempotent per jobId.
   */
  startJob(worker: WorkerRef, job: WorkerJob): Promise<void>;
  /**
   * The job's latest status. A worker that has not reported within the
   * adapter's heartbeat timeout yields state 'failed' with WorkerFailedError.
   */
  getJobStatus(worker: WorkerRef, jobId: string): Promise<JobStatus>;
}

export interface Access {
  /**
   * Ends every URL, SAS, grant and credential made for this run and VM
   * (bundle URL, snapshot read access, job credentials). Idempotent, and
   * retried inside until revocation holds. Returns what was revoked.
   */
  revokeAccess(req: { runId: string; vmId: string }): Promise<{ revoked: string[] }>;
}

/** Run records: what happened, for the summary and for the next run. */
export interface RunRecord {
  runId: string;
  policy: string;
  vmId: string;
  outcome: 'succeeded' | 'failed';
  step?: string;
  error?: { name: string; message: string };
  restorePointId?: string;
  snapshotSetId?: string;
  finishedAt: string;
}

export interface Catalog {
  /** Idempotent per (runId, vmId): the last record written wins. */
  recordRun(record: RunRecord): Promise<void>;
  listRuns(filter?: { policy?: string; vmId?: string }): Promise<RunRecord[]>;
}

/** Everything a cloud provides to the pipeline. */
export interface CloudPorts {
  snapshots: Snapshots;
  workers: Workers;
  channel: WorkerChannel;
  access: Access;
  catalog: Catalog;
}
