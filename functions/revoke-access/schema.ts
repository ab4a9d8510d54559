import { z } from 'zod';
import { RunContextSchema, VmSchema } from '../../shared/core/run-schemas.js';

export const RevokeAccessInput = z.object({ run: RunContextSchema, vm: VmSchema });
export type RevokeAccessInput = z.input<typeof RevokeAccessInput>;
export const RevokeAccessOutput = z.object({ revoked: z.array(z.string()) });
export type RevokeAccessOutput = z.infer<typeof RevokeAccessOutput>;
