import { z } from 'zod';
import { RunContextSchema, VmSchema } from '../../shared/core/run-schemas.js';

/**
 * `outcomes` is not read here (retention goes by the catalog), and an entry may be the error of a
 * VM whose child execution failed (the Map tolerates it so the other VMs' retention still runs).
 */
export const ApplyRetentionInput = z.object({ run: RunContextSchema, vms: z.array(VmSchema), outcomes: z.array(z.unknown()) });
export type ApplyRetentionInput = z.input<typeof ApplyRetentionInput>;
export const ApplyRetentionOutput = z.object({
  kept: z.array(z.object({ id: z.string(), vmId: z.string(), time: z.string(), reasons: z.array(z.string()) })),
  removed: z.array(z.object({ id: z.string(), vmId: z.string(), time: z.string() })),
  snapshotSetsDeleted: z.array(z.string()),
});
export type ApplyRetentionOutput = z.infer<typeof ApplyRetentionOutput>;
