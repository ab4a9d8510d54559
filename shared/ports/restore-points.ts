// What the orchestrator needs of a repository: list the restore points of a
// policy, forget the ones retention removes, and prune what they alone held. Implemented locally over the
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

export interface PruneSettings {
  /** Who prunes, recorded in the lock (a run's id). */
  owner: string;
  /** Repack packs restore points need less than this share of (0 never repacks). */
  repackBelow: number;
  /** At most this many bytes of blocks copied by one prune; the sparsest packs go first. */
  maxRepackBytes: number;
}

export type PruneOutcome =
  | {
      status: 'pruned';
      packsDeleted: number;
      bytesFreed: number;
      /** Marked now, deleted by a prune at least the safety margin (24 h) later. */
      packsMarked: number;
      packsRepacked: number;
      bytesRepacked: number;
      /** Due for a repack, left for a later run by the cap. */
      packsLeftForLater: number;
      /** Due for a repack, left as they are: a block in them does not authenticate. */
      packsNotRepacked: number;
    }
  /** Nothing done: another prune holds the lock, or there is no repository yet. */
  | { status: 'skipped'; reason: string };

export interface RestorePoints {
  /** Complete restore points only, in no guaranteed order. A repository that does not exist yet has none. */
  list(repository: RepositoryRef, filter?: { vmId?: string; policy?: string }): Promise<RestorePointInfo[]>;
  /** Removes the restore points (their data goes at the next prune). Idempotent: unknown ids are ignored. */
  forget(repository: RepositoryRef, ids: string[]): Promise<void>;
  /** Frees the space of blocks no restore point needs (under the repository's exclusive lock). */
  prune(repository: RepositoryRef, settings: PruneSettings): Promise<PruneOutcome>;
}
