import { z } from 'zod';
import { RunContextSchema, VmSchema, WorkerStateSchema } from '../../shared/core/run-schemas.js';

export const DeployWorkerInput = z.object({ run: RunContextSchema, vm: VmSchema });
export type DeployWorkerInput = z.input<typeof DeployWorkerInput>;
export const DeployWorkerOutput = WorkerStateSchema;
export type DeployWorkerOutput = z.infer<typeof DeployWorkerOutput>;
