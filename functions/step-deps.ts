// What every step may be given. Entry points (Lambda, Durable activity, the
// local runner) build this from adapters; a step takes only the parts it uses.

import type { CloudPorts } from '../shared/ports/cloud.js';
import type { RestorePoints } from '../shared/ports/restore-points.js';
import type { Clock } from '../shared/core/clock.js';
import type { Logger } from '../shared/core/logger.js';
import { pollOf, pollWaitSeconds, type StepName } from '../shared/core/pipeline.js';

export interface StepDeps {
  cloud: CloudPorts;
  restorePoints: RestorePoints;
  clock: Clock;
  logger: Logger;
}

export function deadlineAfter(clock: Clock, seconds: number): string {
  return new Date(clock.now().getTime() + seconds * 1000).toISOString();
}

export function isPast(clock: Clock, deadline: string): boolean {
  return clock.now().getTime() > new Date(deadline).getTime();
}

/** Seconds before `step` (or the poll of its stage) is polled next, for a stage that gives up at `deadline`. */
export function nextPollSeconds(clock: Clock, step: StepName, deadline: string): number {
  const poll = pollOf(step);
  const elapsed = poll.timeoutSeconds - (new Date(deadline).getTime() - clock.now().getTime()) / 1000;
  return pollWaitSeconds(poll, Math.max(0, elapsed));
}
