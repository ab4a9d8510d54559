// The shapes that travel between steps through the state machine. Step input
// schemas are non-strict on purpose: a state carries the results of earlier
// steps, and each step takes what it needs from it.

import { z } from 'zod';
import { PROVIDERS, RepositorySchema, WorkerSettingsSchema, RetentionSchema, MaintenanceSchema, DEFAULT_MAINTENANCE } from './config.js';

const Iso = z.string().min(1);

export const VmSchema = z.object({
  vmId: z.string().min(1),
  name: z.string().min(1),
  region: z.string().min(1),
  disks: z.array(z.object({ diskId: z.string().min(1), sizeBytes: z.number().int().min(0), device: z.string().optional() })),
  tags: z.record(z.string(), z.string()),
});
export type VmInput = z.infer<typeof VmSchema>;

/** Everything about the run that every per-VM step may need; made once by planBackup. */
export const RunContextSchema = z.object({
  runId: z.string().min(1),
  applianceId: z.string().min(1),
  policy: z.string().min(1),
  policyId: z.string().min(1),
  provider: z.enum(PROVIDERS),
  startedAt: Iso,
  repository: RepositorySchema,
  retention: RetentionSchema,
  /** Absent in a run planned before maintenance existed: the defaults. */
  maintenance: MaintenanceSchema.default(DEFAULT_MAINTENANCE),
  worker: WorkerSettingsSchema,
  /** Tags put on the restore points and snapshots of this run. */
  tags: z.record(z.string(), z.string()),
});
export type RunContext = z.infer<typeof RunContextSchema>;

export const DiskSnapshotSchema = z.object({
  diskId: z.string(),
  snapshotId: z.string(),
  sizeBytes: z.number(),
  device: z.string().optional(),
});

export const SnapshotStateSchema = z.object({
  setId: z.string().min(1),
  state: z.enum(['pending', 'ready', 'failed']),
  ready: z.boolean(),
  createdAt: Iso,
  disks: z.array(DiskSnapshotSchema),
  /** After this, a set still pending is given up on. */
  deadline: Iso,
  /** Seconds to wait before this stage is polled again (grows as the stage goes on). */
  waitSeconds: z.number().int().positive().optional(),
});
export type SnapshotState = z.infer<typeof SnapshotStateSchema>;

export const WorkerStateSchema = z.object({
  workerId: z.string().min(1),
  region: z.string().min(1),
  profile: z.string(),
  instanceType: z.string(),
  ready: z.boolean(),
  deadline: Iso,
  /** Seconds to wait before this stage is polled again (grows as the stage goes on). */
  waitSeconds: z.number().int().positive().optional(),
});
export type WorkerStateOut = z.infer<typeof WorkerStateSchema>;

export const JobProgressSchema = z.object({
  bytesDone: z.number(),
  bytesTotal: z.number(),
  bytesPerSecond: z.number(),
  diskId: z.string().optional(),
});

export const DiskBackupResultSchema = z.object({
  diskId: z.string(),
  sizeBytes: z.number(),
  blocksRead: z.number(),
  bytesRead: z.number(),
  blocksNew: z.number(),
  bytesStored: z.number(),
  incremental: z.boolean(),
  reason: z.string().optional(),
});

export const BackupResultSchema = z.object({
  restorePointId: z.string().min(1),
  disks: z.array(DiskBackupResultSchema),
  seconds: z.number(),
});

export const JobStateSchema = z.object({
  jobId: z.string().min(1),
  parentSnapshotSetId: z.string().optional(),
  /** Why no parent was used, when there is none. */
  parentNote: z.string().optional(),
  done: z.boolean(),
  progress: JobProgressSchema.optional(),
  result: BackupResultSchema.optional(),
  deadline: Iso,
  /** Seconds to wait before this stage is polled again (grows as the stage goes on). */
  waitSeconds: z.number().int().positive().optional(),
});
export type JobState = z.infer<typeof JobStateSchema>;

export const ErrorInfoSchema = z.object({ name: z.string(), message: z.string() });

/** One VM's line in the execution's output. */
export const VmOutcomeSchema = z.object({
  vmId: z.string(),
  vmName: z.string(),
  outcome: z.enum(['succeeded', 'failed']),
  restorePointId: z.string().optional(),
  snapshotSetId: z.string().optional(),
  incremental: z.boolean().optional(),
  bytesTotal: z.number().optional(),
  bytesRead: z.number().optional(),
  bytesStored: z.number().optional(),
  seconds: z.number().optional(),
  /** The step that failed (failed outcomes). */
  step: z.string().optional(),
  error: ErrorInfoSchema.optional(),
  cleanup: z
    .object({
      revoked: z.array(z.string()),
      workerRemoved: z.boolean(),
      snapshotSetDeleted: z.string().optional(),
      snapshotSetKept: z.string().optional(),
      problems: z.array(z.string()),
    })
    .optional(),
});
export type VmOutcome = z.infer<typeof VmOutcomeSchema>;
