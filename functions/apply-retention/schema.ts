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
  /** The prune after retention (absent when the policy turns it off). */
  maintenance: z
    .discriminatedUnion('status', [
      z.object({
        status: z.literal('pruned'),
        packsDeleted: z.number(),
        bytesFreed: z.number(),
        packsMarked: z.number(),
        packsRepacked: z.number(),
        bytesRepacked: z.number(),
        packsLeftForLater: z.number(),
        packsNotRepacked: z.number(),
      }),
      z.object({ status: z.literal('skipped'), reason: z.string() }),
    ])
    .optional(),
});
export type ApplyRetentionOutput = z.infer<typeof ApplyRetentionOutput>;
