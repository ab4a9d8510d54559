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

export interface PipelineStage {
  /** The step that acts. */
  step: StepName;
  /**
   * A polling step run after `step` until it reports done: the orchestrator
   * waits `pollSeconds` between calls and gives up after `timeoutSeconds`.
   */
  poll?: { step: StepName; pollSeconds: number; timeoutSeconds: number };
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
  { step: STEP.snapshot, poll: { step: STEP.checkSnapshot, pollSeconds: 15, timeoutSeconds: 6 * 3600 }, compensated: true },
  { step: STEP.deployWorker, poll: { step: STEP.checkWorker, pollSeconds: 10, timeoutSeconds: 1800 }, compensated: true },
  { step: STEP.installWorker, compensated: true },
  { step: STEP.startBackup, poll: { step: STEP.checkBackup, pollSeconds: 30, timeoutSeconds: 24 * 3600 }, compensated: true },
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
