import { z } from 'zod';
import { PolicySchema } from '../../shared/core/config.js';
import { RunContextSchema, VmSchema } from '../../shared/core/run-schemas.js';

export const PlanBackupInput = z.object({
  /** Given by whoever starts the run; made here when absent (a schedule). */
  runId: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,79}$/, 'must be letters, digits, _ and - (≤ 80)').optional(),
  applianceId: z.string().min(1).default('tender'),
  policy: PolicySchema,
});
export type PlanBackupInput = z.input<typeof PlanBackupInput>;

export const PlanBackupOutput = z.object({
  run: RunContextSchema,
  maxConcurrency: z.number().int().min(1),
  vms: z.array(VmSchema),
});
export type PlanBackupOutput = z.infer<typeof PlanBackupOutput>;
