import { z } from 'zod';
import { RunContextSchema, VmSchema, WorkerStateSchema } from '../../shared/core/run-schemas.js';

export const DeallocateWorkerInput = z.object({ run: RunContextSchema, vm: VmSchema, worker: WorkerStateSchema.optional() });
export type DeallocateWorkerInput = z.input<typeof DeallocateWorkerInput>;
export const DeallocateWorkerOutput = z.object({ workerId: z.string().optional(), deallocated: z.literal(true) });
export type DeallocateWorkerOutput = z.infer<typeof DeallocateWorkerOutput>;
