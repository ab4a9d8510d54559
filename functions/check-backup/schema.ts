import { z } from 'zod';
import { JobStateSchema, RunContextSchema, VmSchema, WorkerStateSchema } from '../../shared/core/run-schemas.js';

export const CheckBackupInput = z.object({ run: RunContextSchema, vm: VmSchema, worker: WorkerStateSchema, job: JobStateSchema });
export type CheckBackupInput = z.input<typeof CheckBackupInput>;
export const CheckBackupOutput = JobStateSchema;
export type CheckBackupOutput = z.infer<typeof CheckBackupOutput>;
