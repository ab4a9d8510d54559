// The one pipeline spec. The AWS state machine (statemachines/backup.asl.json,
// also run locally) and the Azure Durable orchestrator both sequence exactly
// these steps with exactly this compensation; tests hold both to this list.

/** Names of the step functions (functions/<kebab-name>/step.ts exports run<PascalName>). */
export const STEP = {
  planBackup: 'planBackup',
  snapshot: 'snapshot',
  checkSnapshot: 'checkSnapshot',
  deployWorker: 'deployWorker',
  checkWorker: 'checkWorker',
  installWorker: 'installWorker',
  startBackup: 'startBackup',
  checkBackup: 'checkBackup',
  revokeAccess: 'revokeAccess',
  deallocateWorker: 'deallocateWorker',
  recordOutcome: 'recordOutcome',
  cleanup: 'cleanup',
  applyRetention: 'applyRetention',
} as const;
export type StepName = (typeof STEP)[keyof typeof STEP];

export interface PollSpec {
  step: StepName;
  pollSeconds: number;
  maxPollSeconds: number;
  timeoutSeconds: number;
}

export interface PipelineStage {
  /** The step that acts. */
  step: StepName;
  /**
   * A polling step run after `step` until it reports done: the orchestrator
   * waits `waitSeconds` from the last result between calls (`pollWaitSeconds`:
   * `pollSeconds` at first, growing to `maxPollSeconds`) and gives up after
   * `timeoutSeconds`.
   */
  poll?: PollSpec;
  /** A failure in this stage (or later) must run the cleanup path. */
  compensated: boolean;
}

/**
 * Per VM, in order. The snapshot is the first thing that changes the world, so
 * everything from it on is compensated: cleanup revokes access, deallocates the
 * worker, deletes the run's snapshot set unless a restore point was made, and
 * records the failure with its step and reason.
 */
export const PER_VM_STAGES: readonly PipelineStage[] = [
  { step: STEP.snapshot, poll: { step: STEP.checkSnapshot, pollSeconds: 15, maxPollSeconds: 60, timeoutSeconds: 6 * 3600 }, compensated: true },
  { step: STEP.deployWorker, poll: { step: STEP.checkWorker, pollSeconds: 10, maxPollSeconds: 30, timeoutSeconds: 1800 }, compensated: true },
  { step: STEP.installWorker, compensated: true },
  { step: STEP.startBackup, poll: { step: STEP.checkBackup, pollSeconds: 30, maxPollSeconds: 120, timeoutSeconds: 24 * 3600 }, compensated: true },
  { step: STEP.revokeAccess, compensated: true },
  { step: STEP.deallocateWorker, compensated: true },
  { step: STEP.recordOutcome, compensated: false },
];

/** The compensation path, in order. Each step is idempotent. */
export const CLEANUP_STEPS: readonly StepName[] = [STEP.cleanup];

/** Before the per-VM stages (once per run) and after them. */
export const BEFORE_VMS: readonly StepName[] = [STEP.planBackup];
export const AFTER_VMS: readonly StepName[] = [STEP.applyRetention];

/** Flat list of the acting steps per VM, in order (polling steps excluded). */
export function perVmStepOrder(): StepName[] {
  return PER_VM_STAGES.map((s) => s.step);
}

/** The poll that follows a stage's step, or that a polling step belongs to. */
export function pollOf(step: StepName): PollSpec {
  const stage = PER_VM_STAGES.find((s) => s.step === step || s.poll?.step === step);
  if (!stage?.poll) throw new Error(`step ${step} is not polled`);
  return stage.poll;
}

/**
 * How long to wait before the next poll, `elapsedSeconds` into the stage: `pollSeconds` at first,
 * then a twentieth of the time already waited, at most `maxPollSeconds`. A long stage is then
 * polled a few hundred times, not thousands: every poll is about nine events of a Step Functions
 * execution's history (Choice, Wait, Task), which holds at most 25,000. A 24 h backup polled
 * every 30 s would need 26,000; this way it takes about 750 polls.
 */
export function pollWaitSeconds(poll: PollSpec, elapsedSeconds: number): number {
  return Math.min(poll.maxPollSeconds, Math.max(poll.pollSeconds, Math.floor(elapsedSeconds / 20)));
}
