// Shared set-up for the orchestrator tests: the Durable orchestrations driven
// by the fake host over the in-memory cloud of the state-machine tests, with
// the real activity handlers in between and failures injected per step.

import { fixedClock } from '../../shared/core/clock.js';
import { silentLogger } from '../../shared/core/logger.js';
import type { Vm } from '../../shared/ports/cloud.js';
import { activityHandlers, toActivityError } from '../../azure/activities.js';
import { ORCHESTRATOR, VM_ORCHESTRATOR, backupOrchestrator, backupVmOrchestrator, type RunSummary } from '../../azure/orchestrator.js';
import { createFakeCloud, fakeVm, testPolicy } from '../statemachine/fake-cloud.js';
import { createDurableDriver } from './fake-durable.js';

export interface Injection {
  step: string;
  vmId?: string;
  /** Fail only the first `times` calls (default: every call). */
  times?: number;
  error: () => Error;
}

/**
 * The VM orchestrator, failing at host level after `yields` of its tasks (as a replay that is no
 * longer deterministic, or a terminated instance, fails it): the parent sees a faulted sub-orchestration.
 */
function crashingVmOrchestrator(yields: number) {
  return function* (ctx: any): Generator<any, any, any> {
    const inner = backupVmOrchestrator(ctx);
    let r = inner.next();
    for (let i = 1; !r.done; i++) {
      if (i > yields) throw new Error('Non-Deterministic workflow detected: a previous execution of this orchestration scheduled a different task');
      try {
        r = inner.next(yield r.value);
      } catch (e) {
        r = inner.throw(e);
      }
    }
    return r.value;
  };
}

export function durableRun(opts: { vms?: Vm[]; inject?: Injection[]; failureStyle?: 'structured' | 'legacy'; maxConcurrency?: number; runId?: string; crashVmAfterYields?: number } = {}) {
  const clock = fixedClock('2024-03-01T02:00:00Z');
  const vms = opts.vms ?? [fakeVm('vm-a'), fakeVm('vm-b', [4, 2])];
  const { cloud, restorePoints, world } = createFakeCloud(vms, { pendingPolls: 1 });
  const handlers = activityHandlers(async () => ({ cloud, restorePoints, clock, logger: silentLogger }));
  const calls: Array<{ step: string; vmId?: string; input: any; at: string }> = [];
  const counts = new Map<Injection, number>();
  const activities = Object.fromEntries(
    Object.entries(handlers).map(([name, handler]) => [
      name,
      async (input: any, ctx: any) => {
        calls.push({ step: name, vmId: input?.vm?.vmId, input, at: clock.now().toISOString() });
        for (const inj of opts.inject ?? []) {
          if (inj.step !== name || (inj.vmId && input?.vm?.vmId !== inj.vmId)) continue;
          const n = counts.get(inj) ?? 0;
          if (inj.times !== undefined && n >= inj.times) continue;
          counts.set(inj, n + 1);
          throw toActivityError(inj.error());
        }
        return handler(input, ctx);
      },
    ]),
  );
  const driver = createDurableDriver({
    activities,
    orchestrators: { [ORCHESTRATOR]: backupOrchestrator, [VM_ORCHESTRATOR]: opts.crashVmAfterYields === undefined ? backupVmOrchestrator : crashingVmOrchestrator(opts.crashVmAfterYields) },
    clock,
    failureStyle: opts.failureStyle,
  });
  const runId = opts.runId ?? 'r1';
  const input = { runId, applianceId: 'tender', policy: { ...testPolicy, maxConcurrency: opts.maxConcurrency ?? 4 } };
  return {
    clock,
    world,
    calls,
    driver,
    run: () => driver.run(ORCHESTRATOR, input, `tender-${runId}`) as Promise<RunSummary>,
  };
}
