import { z } from 'zod';
import { RunContextSchema, VmOutcomeSchema, VmSchema } from '../../shared/core/run-schemas.js';

export const ApplyRetentionInput = z.object({ run: RunContextSchema, vms: z.array(VmSchema), outcomes: z.array(VmOutcomeSchema) });
export type ApplyRetentionInput = z.input<typeof ApplyRetentionInput>;
export const ApplyRetentionOutput = z.object({
  kept: z.array(z.object({ id: z.string(), vmId: z.string(), time: z.string(), reasons: z.array(z.string()) })),
  removed: z.array(z.object({ id: z.string(), vmId: z.string(), time: z.string() })),
  snapshotSetsDeleted: z.array(z.string()),
});
export type ApplyRetentionOutput = z.infer<typeof ApplyRetentionOutput>;
