// What the orchestrator needs of a repository: list the restore points of a
// policy and forget the ones retention removes. Implemented locally over the
// data mover (shared/local/restore-points.ts); in the cloud by whatever can
// open the repository with its key (a worker or a Lambda with key access).

import type { KeyRef } from '../core/config.js';

export interface RepositoryRef {
  url: string;
  key: KeyRef;
}

export interface RestorePointInfo {
  id: string;
  vmId: string;
  vmName: string;
  policy: string;
  runId: string;
  /** ISO time the snapshot was taken. */
  time: string;
  disks: Array<{ diskId: string; sizeBytes: number }>;
  tags: Record<string, string>;
  parentId?: string;
}

export interface RestorePoints {
  /** Complete restore points only, in no guaranteed order. A repository that does not exist yet has none. */
  list(repository: RepositoryRef, filter?: { vmId?: string; policy?: string }): Promise<RestorePointInfo[]>;
  /** Removes the restore points (their data goes at the next prune). Idempotent: unknown ids are ignored. */
  forget(repository: RepositoryRef, ids: string[]): Promise<void>;
}
