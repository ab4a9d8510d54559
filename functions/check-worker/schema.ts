import { z } from 'zod';
import { RunContextSchema, VmSchema, WorkerStateSchema } from '../../shared/core/run-schemas.js';

export const CheckWorkerInput = z.object({ run: RunContextSchema, vm: VmSchema, worker: WorkerStateSchema });
export type CheckWorkerInput = z.input<typeof CheckWorkerInput>;
export const CheckWorkerOutput = WorkerStateSchema;
export type CheckWorkerOutput = z.infer<typeof CheckWorkerOutput>;
