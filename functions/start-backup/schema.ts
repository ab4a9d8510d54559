import { z } from 'zod';
import { JobStateSchema, RunContextSchema, SnapshotStateSchema, VmSchema, WorkerStateSchema } from '../../shared/core/run-schemas.js';

export const StartBackupInput = z.object({ run: RunContextSchema, vm: VmSchema, snapshot: SnapshotStateSchema, worker: WorkerStateSchema });
export type StartBackupInput = z.input<typeof StartBackupInput>;
export const StartBackupOutput = JobStateSchema;
export type StartBackupOutput = z.infer<typeof StartBackupOutput>;
