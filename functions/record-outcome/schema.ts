import { z } from 'zod';
import { JobStateSchema, RunContextSchema, SnapshotStateSchema, VmOutcomeSchema, VmSchema } from '../../shared/core/run-schemas.js';

export const RecordOutcomeInput = z.object({ run: RunContextSchema, vm: VmSchema, snapshot: SnapshotStateSchema, job: JobStateSchema });
export type RecordOutcomeInput = z.input<typeof RecordOutcomeInput>;
export const RecordOutcomeOutput = VmOutcomeSchema;
export type RecordOutcomeOutput = z.infer<typeof RecordOutcomeOutput>;
