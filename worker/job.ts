// A worker job turned into a backup request. Kept apart from the data mover so
// that code which only plans (a Lambda, an agent before it starts) does not
// load the native codec.

import type { BlockSource } from '../shared/ports/block-source.js';
import type { JobDisk, JobProgress, WorkerJob } from '../shared/ports/cloud.js';
import type { BackupDisk, BackupRequest } from './backup.js';

/**
 * The backup request for a worker job, with each disk's source opened by `open`
 * (EBS, Azure SAS, local image). Opened sources are pushed to `opened` as they
 * open, so the caller closes them whatever happens.
 */
export async function backupRequestForJob(
  job: WorkerJob,
  open: (disk: JobDisk) => Promise<BlockSource>,
  opened: BlockSource[],
  onProgress?: (p: JobProgress) => void,
): Promise<BackupRequest> {
  const disks: BackupDisk[] = [];
  for (const d of job.disks) {
    const source = await open(d);
    opened.push(source);
    // The snapshot id is what the repository records, so the next run finds this restore point as its parent.
    disks.push({ diskId: d.diskId, source, snapshotRef: d.snapshotId, ...(d.parentSnapshotId ? { parentSnapshotRef: d.parentSnapshotId } : {}), ...(d.device ? { device: d.device } : {}) });
  }
  return { runId: job.runId, policy: job.policy, vm: job.vm, tags: job.tags, snapshotSetId: job.snapshotSetId, disks, ...(onProgress ? { onProgress } : {}) };
}

