// One Durable activity per step: parse the input with the step's schema,
// build the dependencies, call run<Step>, return the output as JSON. No
// business branching here (conventions: handlers only translate). Errors
// leave with "<Name>: " before the message so the orchestrator finds the name
// whatever form the Durable host hands failures back in.

import { z } from 'zod';
import type { InvocationContext } from '@azure/functions';
import { STEPS } from '../functions/registry.js';
import type { StepDeps } from '../functions/step-deps.js';
import { STEP, type StepName } from '../shared/core/pipeline.js';
import { ValidationError, toError } from '../shared/core/errors.js';
import type { Logger, LogFields } from '../shared/core/logger.js';
import { redact } from '../shared/core/logger.js';
import { activityNameOf } from './orchestrator.js';

/** The error an activity throws: its name kept, and repeated at the start of the message. */
export function toActivityError(thrown: unknown): Error {
  const err = toError(thrown);
  const name = err.name || 'Error';
  const out = new Error(err.message.startsWith(`${name}: `) ? err.message : `${name}: ${err.message}`, { cause: err });
  out.name = name;
  return out;
}

/** A Logger over the invocation's context.log, so lines land in Application Insights with the invocation. */
export function contextLogger(context: Pick<InvocationContext, 'debug' | 'info' | 'warn' | 'error'>, base: LogFields = {}): Logger {
  const line = (msg: string, fields?: LogFields) => {
    const f = redact({ ...base, ...fields });
    return Object.keys(f).length ? `${msg} ${JSON.stringify(f)}` : msg;
  };
  return {
    debug: (m, f) => context.debug(line(m, f)),
    info: (m, f) => context.info(line(m, f)),
    warn: (m, f) => context.warn(line(m, f)),
    error: (m, f) => context.error(line(m, f)),
    child: (fields) => contextLogger(context, { ...base, ...fields }),
  };
}

export type DepsFor = (context: InvocationContext) => Promise<StepDeps>;

export function activityHandler(step: StepName, depsFor: DepsFor) {
  const entry = STEPS[step];
  return async (input: unknown, context: InvocationContext): Promise<unknown> => {
    try {
      let parsed: unknown;
      try {
        parsed = entry.input.parse(input);
      } catch (e) {
        if (e instanceof z.ZodError) throw new ValidationError(`${step}: its input does not match its schema: ${e.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
        throw e;
      }
      const out = await entry.run(parsed, await depsFor(context));
      // Durable serialises results as JSON: so does this, so undefined never leaks into the orchestrator's state.
      return JSON.parse(JSON.stringify(entry.output.parse(out) ?? null));
    } catch (e) {
      throw toActivityError(e);
    }
  };
}

/** Every step's activity, by activity name. */
export function activityHandlers(depsFor: DepsFor): Record<string, (input: unknown, context: InvocationContext) => Promise<unknown>> {
  return Object.fromEntries(Object.values(STEP).map((step) => [activityNameOf(step), activityHandler(step, depsFor)]));
}
