// What every Lambda entry point shares: the step's dependencies built once per
// container from the AWS adapters (module-scope clients, reused by warm
// invocations), and the middy handler that parses the event with the step's
// zod schema, calls run<Step> and returns its JSON. Errors keep their names:
// Lambda reports `errorType` from `error.name`, which is what the state
// machine's Retry/Catch match.

import middy from '@middy/core';
import { z } from 'zod';
import type { StepDeps } from './step-deps.js';
import { ValidationError } from '../shared/core/errors.js';
import { systemClock } from '../shared/core/clock.js';
import { createJsonLogger, type LogLevel } from '../shared/core/logger.js';
import { awsSettingsFromEnv } from '../shared/aws/settings.js';
import { createAwsCloud } from '../shared/aws/aws-cloud.js';

let deps: StepDeps | undefined;

/** The step dependencies of this container (built at the first invocation, then reused). */
export function awsDeps(): StepDeps {
  if (!deps) {
    const settings = awsSettingsFromEnv();
    const logger = createJsonLogger({ level: (process.env.TENDER_LOG_LEVEL as LogLevel | undefined) ?? 'info', write: (l) => process.stdout.write(l + '\n') });
    const cloud = createAwsCloud({ settings, clock: systemClock, logger });
    deps = { cloud, restorePoints: cloud.restorePoints, clock: systemClock, logger };
  }
  return deps;
}

export function parseStepInput<T extends z.ZodType>(schema: T, raw: unknown, step: string): z.infer<T> {
  const res = schema.safeParse(raw);
  if (!res.success) {
    throw new ValidationError(`${step}: its input does not match its schema: ${res.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
  }
  return res.data;
}

export interface AwsHandlerOptions {
  /** Dependencies (default: awsDeps()). Tests pass mocked adapters. */
  deps?: () => StepDeps;
  /** Turns the event into the step's input before it is parsed (planBackup resolves a policy name). */
  prepare?: (event: unknown, deps: StepDeps) => Promise<unknown>;
}

export function awsHandler<I extends z.ZodType, O extends z.ZodType>(
  step: string,
  input: I,
  output: O,
  run: (input: z.infer<I>, deps: StepDeps) => Promise<unknown>,
  opts: AwsHandlerOptions = {},
) {
  return middy().handler(async (event: unknown) => {
    const d = (opts.deps ?? awsDeps)();
    const raw = opts.prepare ? await opts.prepare(event, d) : event;
    const parsed = parseStepInput(input, raw, step);
    const out = await run(parsed, d);
    return JSON.parse(JSON.stringify(output.parse(out))) as z.infer<O>;
  });
}
