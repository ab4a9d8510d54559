import { z } from 'zod';
import { RunContextSchema, SnapshotStateSchema, VmSchema } from '../../shared/core/run-schemas.js';

export const CheckSnapshotInput = z.object({ run: RunContextSchema, vm: VmSchema, snapshot: SnapshotStateSchema });
export type CheckSnapshotInput = z.input<typeof CheckSnapshotInput>;
export const CheckSnapshotOutput = SnapshotStateSchema;
export type CheckSnapshotOutput = z.infer<typeof CheckSnapshotOutput>;
