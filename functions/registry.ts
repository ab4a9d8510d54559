// Every step by its pipeline name, with its schemas: what the local runner and
// the tests use to call a step the way an entry point would.

import type { z } from 'zod';
import { STEP, type StepName } from '../shared/core/pipeline.js';
import type { StepDeps } from './step-deps.js';
import { runPlanBackup } from './plan-backup/step.js';
import { PlanBackupInput, PlanBackupOutput } from './plan-backup/schema.js';
import { runSnapshot } from './snapshot/step.js';
import { SnapshotInput, SnapshotOutput } from './snapshot/schema.js';
import { runCheckSnapshot } from './check-snapshot/step.js';
import { CheckSnapshotInput, CheckSnapshotOutput } from './check-snapshot/schema.js';
import { runDeployWorker } from './deploy-worker/step.js';
import { DeployWorkerInput, DeployWorkerOutput } from './deploy-worker/schema.js';
import { runCheckWorker } from './check-worker/step.js';
import { CheckWorkerInput, CheckWorkerOutput } from './check-worker/schema.js';
import { runInstallWorker } from './install-worker/step.js';
import { InstallWorkerInput, InstallWorkerOutput } from './install-worker/schema.js';
import { runStartBackup } from './start-backup/step.js';
import { StartBackupInput, StartBackupOutput } from './start-backup/schema.js';
import { runCheckBackup } from './check-backup/step.js';
import { CheckBackupInput, CheckBackupOutput } from './check-backup/schema.js';
import { runRevokeAccess } from './revoke-access/step.js';
import { RevokeAccessInput, RevokeAccessOutput } from './revoke-access/schema.js';
import { runDeallocateWorker } from './deallocate-worker/step.js';
import { DeallocateWorkerInput, DeallocateWorkerOutput } from './deallocate-worker/schema.js';
import { runRecordOutcome } from './record-outcome/step.js';
import { RecordOutcomeInput, RecordOutcomeOutput } from './record-outcome/schema.js';
import { runCleanup } from './cleanup/step.js';
import { CleanupInput, CleanupOutput } from './cleanup/schema.js';
import { runApplyRetention } from './apply-retention/step.js';
import { ApplyRetentionInput, ApplyRetentionOutput } from './apply-retention/schema.js';

export interface StepEntry {
  input: z.ZodType;
  output: z.ZodType;
  run: (input: any, deps: StepDeps) => Promise<unknown>;
}

export const STEPS: Record<StepName, StepEntry> = {
  [STEP.planBackup]: { input: PlanBackupInput, output: PlanBackupOutput, run: runPlanBackup },
  [STEP.snapshot]: { input: SnapshotInput, output: SnapshotOutput, run: runSnapshot },
  [STEP.checkSnapshot]: { input: CheckSnapshotInput, output: CheckSnapshotOutput, run: runCheckSnapshot },
  [STEP.deployWorker]: { input: DeployWorkerInput, output: DeployWorkerOutput, run: runDeployWorker },
  [STEP.checkWorker]: { input: CheckWorkerInput, output: CheckWorkerOutput, run: runCheckWorker },
  [STEP.installWorker]: { input: InstallWorkerInput, output: InstallWorkerOutput, run: runInstallWorker },
  [STEP.startBackup]: { input: StartBackupInput, output: StartBackupOutput, run: runStartBackup },
  [STEP.checkBackup]: { input: CheckBackupInput, output: CheckBackupOutput, run: runCheckBackup },
  [STEP.revokeAccess]: { input: RevokeAccessInput, output: RevokeAccessOutput, run: runRevokeAccess },
  [STEP.deallocateWorker]: { input: DeallocateWorkerInput, output: DeallocateWorkerOutput, run: runDeallocateWorker },
  [STEP.recordOutcome]: { input: RecordOutcomeInput, output: RecordOutcomeOutput, run: runRecordOutcome },
  [STEP.cleanup]: { input: CleanupInput, output: CleanupOutput, run: runCleanup },
  [STEP.applyRetention]: { input: ApplyRetentionInput, output: ApplyRetentionOutput, run: runApplyRetention },
};

/** The state-machine state name of a step: its name in PascalCase (`deployWorker` → `DeployWorker`). */
export function stateNameOf(step: StepName): string {
  return step[0].toUpperCase() + step.slice(1);
}

/** The kebab-case folder of a step (`deployWorker` → `deploy-worker`). */
export function folderOf(step: StepName): string {
  return step.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
}
