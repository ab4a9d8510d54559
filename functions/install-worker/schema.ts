import { z } from 'zod';
import { RunContextSchema, VmSchema, WorkerStateSchema } from '../../shared/core/run-schemas.js';

export const InstallWorkerInput = z.object({ run: RunContextSchema, vm: VmSchema, worker: WorkerStateSchema });
export type InstallWorkerInput = z.input<typeof InstallWorkerInput>;
export const InstallWorkerOutput = z.object({ bundleSha256: z.string().regex(/^[0-9a-f]{64}$/) });
export type InstallWorkerOutput = z.infer<typeof InstallWorkerOutput>;
