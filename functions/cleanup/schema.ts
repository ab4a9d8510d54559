import { z } from 'zod';
import { JobStateSchema, RunContextSchema, SnapshotStateSchema, VmOutcomeSchema, VmSchema, WorkerStateSchema } from '../../shared/core/run-schemas.js';

export const CleanupInput = z.object({
  run: RunContextSchema,
  vm: VmSchema,
  snapshot: SnapshotStateSchema.optional(),
  worker: WorkerStateSchema.optional(),
  job: JobStateSchema.optional(),
  /** The name of the step that failed, set by the state machine's catch path. */
  failedStep: z.string().min(1),
  /** What the state machine caught: { Error, Cause }. */
  error: z.object({ Error: z.string(), Cause: z.unknown().optional() }),
});
export type CleanupInput = z.input<typeof CleanupInput>;
export const CleanupOutput = VmOutcomeSchema;
export type CleanupOutput = z.infer<typeof CleanupOutput>;
