import { z } from 'zod';
import { RunContextSchema, SnapshotStateSchema, VmSchema } from '../../shared/core/run-schemas.js';

export const SnapshotInput = z.object({ run: RunContextSchema, vm: VmSchema });
export type SnapshotInput = z.input<typeof SnapshotInput>;
export const SnapshotOutput = SnapshotStateSchema;
export type SnapshotOutput = z.infer<typeof SnapshotOutput>;
