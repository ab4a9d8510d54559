// The Durable Functions orchestration of one backup run: the same steps, in
// the same order, with the same compensation as statemachines/backup.asl.json,
// both read from shared/core/pipeline.ts. Plan once, then one sub-orchestration
// per VM (at most policy.maxConcurrency at a time, like the Map state), then
// retention. Per VM: each stage's step, its polling step behind a durable
// timer until the result says ready, and on any failure the cleanup path with
// the failed step's name and the error — exactly the ASL's Catch → Caught<Step>
// → Cleanup. Activities are the run<Step> functions (azure/activities.ts).
//
// Orchestrator code is replayed: it reads time only from currentUtcDateTime,
// draws no random numbers (retry jitter is a hash of instance, step and
// attempt) and does its I/O only through activities.

import type * as df from 'durable-functions';
import * as errors from '../shared/core/errors.js';
import { RETRYABLE_ERROR_NAMES } from '../shared/core/errors.js';
import { AFTER_VMS, BEFORE_VMS, CLEANUP_STEPS, PER_VM_STAGES, STEP, type StepName } from '../shared/core/pipeline.js';
import type { VmOutcome } from '../shared/core/run-schemas.js';

export const ORCHESTRATOR = 'tenderBackup';
export const VM_ORCHESTRATOR = 'tenderBackupVm';

/** Activity function names are the step names, as the ASL's Lambda ARNs end in them. */
export function activityNameOf(step: StepName): string {
  return step;
}

/**
 * What each per-VM step reads from the VM's state and where its result goes:
 * the ASL's `Parameters` and `ResultPath`, held equal to them by a test.
 */
export const STAGE_IO: Readonly<Record<string, { input: readonly string[]; result: string }>> = {
  [STEP.snapshot]: { input: ['run', 'vm'], result: 'snapshot' },
  [STEP.checkSnapshot]: { input: ['run', 'vm', 'snapshot'], result: 'snapshot' },
  [STEP.deployWorker]: { input: ['run', 'vm'], result: 'worker' },
  [STEP.checkWorker]: { input: ['run', 'vm', 'worker'], result: 'worker' },
  [STEP.installWorker]: { input: ['run', 'vm', 'worker'], result: 'install' },
  [STEP.startBackup]: { input: ['run', 'vm', 'snapshot', 'worker'], result: 'job' },
  [STEP.checkBackup]: { input: ['run', 'vm', 'worker', 'job'], result: 'job' },
  [STEP.revokeAccess]: { input: ['run', 'vm'], result: 'revoked' },
  [STEP.deallocateWorker]: { input: ['run', 'vm', 'worker'], result: 'deallocated' },
  [STEP.recordOutcome]: { input: ['run', 'vm', 'snapshot', 'job'], result: 'outcome' },
};

/** The flag a polled stage's result sets when it is done (the ASL's Choice variable). */
export const READY_FLAG: Readonly<Record<string, string>> = {
  [STEP.snapshot]: 'ready',
  [STEP.deployWorker]: 'ready',
  [STEP.startBackup]: 'done',
};

export interface RetryPolicy {
  intervalSeconds: number;
  maxAttempts: number;
  backoffRate: number;
  maxDelaySeconds: number;
  /** Error names retried besides Tender's retryable ones (matched whole, or as the last part of a dotted name). */
  alsoRetry?: readonly string[];
}

/** The ASL's Retry on every Task (held equal by a test). */
export const STEP_RETRY: RetryPolicy = { intervalSeconds: 2, maxAttempts: 6, backoffRate: 2, maxDelaySeconds: 60 };
/**
 * Cleanup is idempotent and the last line of defence: it gets more tries, and an activity the
 * host stopped at functionTimeout (a cleanup waiting on many long-running operations) is tried
 * again too — the operations it started go on, so the next try finds less to do. The ASL's
 * Cleanup retries Lambda's and Step Functions' timeouts the same way.
 */
export const CLEANUP_RETRY: RetryPolicy = { ...STEP_RETRY, maxAttempts: 8, alsoRetry: ['FunctionTimeoutException', 'TimeoutException'] };

function retries(policy: RetryPolicy, name: string): boolean {
  if ((RETRYABLE_ERROR_NAMES as readonly string[]).includes(name)) return true;
  return (policy.alsoRetry ?? []).some((n) => name === n || name.endsWith(`.${n}`));
}

/** Every error name Tender throws, so a name can be found in the text the Durable host hands back. */
export const TENDER_ERROR_NAMES: ReadonlySet<string> = new Set(
  (Object.values(errors) as unknown[])
    .filter((v): v is { name: string; prototype: unknown } => typeof v === 'function' && (v as { prototype: unknown }).prototype instanceof errors.TenderError)
    .map((c) => c.name),
);

export interface CaughtError {
  name: string;
  message: string;
}

/**
 * The name and message of an activity failure as the orchestrator sees it:
 * a TaskFailedError with structured failure details (newer hosts), or an
 * Error whose message is the host's "Reason \n Details" (older hosts). The
 * activity wrapper puts "<Name>: " before every message, so the name survives
 * both.
 */
export function caughtError(thrown: unknown): CaughtError {
  const e = thrown as { name?: string; message?: string; failureDetails?: { errorType?: string; errorMessage?: string } } | undefined;
  const fd = e?.failureDetails;
  const text = fd ? `${fd.errorType ?? 'Error'}: ${fd.errorMessage ?? ''}` : `${e?.name ?? 'Error'}: ${e?.message ?? String(thrown)}`;
  const re = /\b([A-Z][A-Za-z0-9]*Error): /g;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    if (TENDER_ERROR_NAMES.has(m[1]!)) {
      let message = text.slice(m.index + m[0].length);
      // The host may have prefixed the type again ("TransientError: TransientError: …").
      while (message.startsWith(`${m[1]}: `)) message = message.slice(m[1]!.length + 2);
      return { name: m[1]!, message: message.trim() };
    }
  }
  return { name: fd?.errorType ?? e?.name ?? 'Error', message: (fd?.errorMessage ?? e?.message ?? String(thrown)).trim() };
}

/** A step that failed for good (retries spent or not retryable). */
export class StepFailure extends Error {
  constructor(
    readonly step: StepName,
    readonly caught: CaughtError,
  ) {
    super(`${step} failed: ${caught.name}: ${caught.message}`);
    this.name = 'StepFailure';
  }
}

/** Deterministic stand-in for Math.random() in [0, 1): replays draw the same value. */
export function replaySafeUnit(...parts: Array<string | number>): number {
  let h = 2166136261;
  for (const ch of parts.join('\u0000')) {
    h ^= ch.codePointAt(0)!;
    h = Math.imul(h, 16777619) >>> 0;
  }
  return h / 2 ** 32;
}

/** Full-jitter delay before retry `attempt` (1 = first retry), at least one second. */
export function retryDelaySeconds(policy: RetryPolicy, attempt: number, unit: number): number {
  const window = Math.min(policy.maxDelaySeconds, policy.intervalSeconds * policy.backoffRate ** (attempt - 1));
  return Math.max(1, Math.floor(unit * window));
}

type Ctx = df.OrchestrationContext;
type Gen<T> = Generator<df.Task, T, any>;

const at = (ctx: Ctx, seconds: number) => new Date(ctx.df.currentUtcDateTime.getTime() + seconds * 1000);

/** Calls one step's activity; retries the retryable error names behind durable timers, as the ASL's Retry does. */
export function* callStep(ctx: Ctx, step: StepName, input: unknown, policy: RetryPolicy = STEP_RETRY): Gen<any> {
  for (let attempt = 1; ; attempt++) {
    try {
      return yield ctx.df.callActivity(activityNameOf(step), input);
    } catch (thrown) {
      const caught = caughtError(thrown);
      const retryable = retries(policy, caught.name);
      if (!retryable || attempt >= policy.maxAttempts) throw new StepFailure(step, caught);
      if (!ctx.df.isReplaying) ctx.warn?.(`${step} failed with ${caught.name}, retry ${attempt} of ${policy.maxAttempts - 1}: ${caught.message}`);
      yield ctx.df.createTimer(at(ctx, retryDelaySeconds(policy, attempt, replaySafeUnit(ctx.df.instanceId, step, attempt))));
    }
  }
}

const pick = (state: Record<string, unknown>, keys: readonly string[]) => Object.fromEntries(keys.filter((k) => state[k] !== undefined).map((k) => [k, state[k]]));

/** One VM: the stages of the spec, polls behind timers, cleanup on any failure. Never throws: its outcome says what happened. */
export function* backupVmOrchestrator(ctx: Ctx): Gen<VmOutcome> {
  const input = ctx.df.getInput<{ run: Record<string, unknown>; vm: { vmId: string; name: string } }>();
  const state: Record<string, unknown> = { run: input.run, vm: input.vm };
  let current: StepName = PER_VM_STAGES[0]!.step;
  const status = (step: StepName) => ctx.df.setCustomStatus({ vmId: input.vm.vmId, step, progress: (state.job as { progress?: unknown } | undefined)?.progress });
  try {
    for (const stage of PER_VM_STAGES) {
      current = stage.step;
      status(current);
      const io = STAGE_IO[stage.step]!;
      state[io.result] = yield* callStep(ctx, stage.step, pick(state, io.input));
      if (!stage.poll) continue;
      const poll = stage.poll;
      const flag = READY_FLAG[stage.step]!;
      const pollIo = STAGE_IO[poll.step]!;
      // The check steps enforce their own deadlines; this only stops a loop whose step never does.
      const giveUpAt = ctx.df.currentUtcDateTime.getTime() + (poll.timeoutSeconds + 4 * poll.maxPollSeconds) * 1000;
      while (!(state[io.result] as Record<string, unknown>)[flag]) {
        if (ctx.df.currentUtcDateTime.getTime() > giveUpAt) {
          throw new StepFailure(poll.step, { name: 'TimedOutError', message: `${poll.step} did not report ready within ${poll.timeoutSeconds}s` });
        }
        // As long as the last result says (the ASL's Wait reads the same field): it grows as the stage goes on.
        const wait = (state[io.result] as { waitSeconds?: unknown }).waitSeconds;
        yield ctx.df.createTimer(at(ctx, typeof wait === 'number' && wait > 0 ? wait : poll.pollSeconds));
        current = poll.step;
        state[pollIo.result] = yield* callStep(ctx, poll.step, pick(state, pollIo.input));
        status(current);
      }
    }
    return state.outcome as VmOutcome;
  } catch (thrown) {
    const failure = thrown instanceof StepFailure ? thrown : new StepFailure(current, caughtError(thrown));
    if (!ctx.df.isReplaying) ctx.warn?.(`VM ${input.vm.vmId}: ${failure.step} failed (${failure.caught.name}); cleaning up`);
    const cleanupStep = CLEANUP_STEPS[0]!;
    ctx.df.setCustomStatus({ vmId: input.vm.vmId, step: cleanupStep, failedStep: failure.step });
    // The same input the ASL's Cleanup state gets: the VM's state plus the failed step and what was caught.
    const cleanupInput = { ...state, failedStep: failure.step, error: { Error: failure.caught.name, Cause: failure.caught.message } };
    try {
      return (yield* callStep(ctx, cleanupStep, cleanupInput, CLEANUP_RETRY)) as VmOutcome;
    } catch (cleanupThrown) {
      return cleanupIncomplete(input.vm, failure.step, failure.caught, cleanupThrown);
    }
  }
}

export interface RunSummary {
  runId: string;
  policy: string;
  startedAt: string;
  vms: VmOutcome[];
  retention: unknown;
}

/**
 * A VM whose orchestration failed at host level (terminated, or a replay that is no longer
 * deterministic) never ran its own cleanup: the run runs it, with what the VM's cleanup finds by
 * the run's names and tags alone (its worker, grants and snapshot set), so nothing is left behind.
 */
function* cleanUpLostVm(ctx: Ctx, run: Record<string, unknown>, vm: { vmId: string; name: string }, caught: CaughtError): Gen<VmOutcome> {
  if (!ctx.df.isReplaying) ctx.warn?.(`VM ${vm.vmId}: its orchestration failed (${caught.name}); cleaning up`);
  const input = { run, vm, failedStep: 'orchestration', error: { Error: caught.name, Cause: caught.message } };
  try {
    return (yield* callStep(ctx, CLEANUP_STEPS[0]!, input, CLEANUP_RETRY)) as VmOutcome;
  } catch (thrown) {
    return cleanupIncomplete(vm, 'orchestration', caught, thrown);
  }
}

/** The ASL's CleanupIncomplete: the VM is reported failed with both errors, and the run still ends. */
function cleanupIncomplete(vm: { vmId: string; name: string }, step: string, error: CaughtError, cleanupThrown: unknown): VmOutcome {
  const c = cleanupThrown instanceof StepFailure ? cleanupThrown.caught : caughtError(cleanupThrown);
  return { vmId: vm.vmId, vmName: vm.name, outcome: 'failed', step, error, cleanup: { revoked: [], workerRemoved: false, problems: [`cleanup did not complete: ${c.name}: ${c.message}`] } };
}

/** The run: plan, every VM (bounded concurrency), retention; the output mirrors the ASL's Summarize state. */
export function* backupOrchestrator(ctx: Ctx): Gen<RunSummary> {
  const input = ctx.df.getInput<unknown>();
  const plan = (yield* callStep(ctx, BEFORE_VMS[0]!, input)) as {
    run: { runId: string; policy: string; startedAt: string };
    maxConcurrency: number;
    vms: Array<{ vmId: string; name: string }>;
  };
  const outcomes: VmOutcome[] = new Array(plan.vms.length);
  const running: Array<{ index: number; task: df.Task }> = [];
  let next = 0;
  while (next < plan.vms.length || running.length > 0) {
    while (running.length < Math.max(1, plan.maxConcurrency) && next < plan.vms.length) {
      const index = next++;
      const instanceId = `${ctx.df.instanceId}:vm:${index}`;
      running.push({ index, task: ctx.df.callSubOrchestrator(VM_ORCHESTRATOR, { run: plan.run, vm: plan.vms[index] }, instanceId) });
    }
    const winner: df.Task = yield ctx.df.Task.any(running.map((r) => r.task));
    const k = running.findIndex((r) => r.task === winner);
    const { index } = running.splice(k, 1)[0]!;
    const vm = plan.vms[index]!;
    outcomes[index] = winner.isFaulted ? yield* cleanUpLostVm(ctx, plan.run, vm, caughtError(winner.result)) : (winner.result as VmOutcome);
  }
  let retention: unknown;
  try {
    retention = yield* callStep(ctx, AFTER_VMS[0]!, { run: plan.run, vms: plan.vms, outcomes });
  } catch (thrown) {
    const c = thrown instanceof StepFailure ? thrown.caught : caughtError(thrown);
    retention = { error: c };
  }
  return { runId: plan.run.runId, policy: plan.run.policy, startedAt: plan.run.startedAt, vms: outcomes, retention };
}
